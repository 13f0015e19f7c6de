"""Training: the loss goes down, interrupted runs resume to bit-identical weights, files stay whole."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from hahrobust import load_checkpoint
from hahrobust.data import load_cifar10
from hahrobust.errors import HahrobustError
from hahrobust.training import TrainConfig, run_paths, train
from hahrobust.training import loop as loop_module

MODEL = {"width": 0.125}
CONFIG = TrainConfig(epochs=3, batch_size=32, lr=3e-3, augment=True, seed=11)


@pytest.fixture(scope="module")
def splits(tiny_data: Path):
    return load_cifar10(tiny_data, "train"), load_cifar10(tiny_data, "test")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0].state_dict()


def test_training_learns_and_writes_checkpoint_and_log(splits, tmp_path: Path) -> None:
    out = tmp_path / "run.safetensors"
    result = train("hah-vgg11", *splits, out, config=TrainConfig(epochs=4, batch_size=25, lr=3e-3, seed=0),
                   model_overrides=MODEL)
    history = pd.read_csv(run_paths(out)[1])
    assert list(history["epoch"]) == [1, 2, 3, 4]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert (history["hah_objective"] > 0).all()  # the HaH term is active for hah models
    assert not run_paths(out)[0].exists()  # the state file is gone once the checkpoint is final
    model, metadata = load_checkpoint(out)
    assert metadata["metrics"]["test_acc"] == result.metadata["metrics"]["test_acc"] > 0.2  # chance is 0.1
    assert metadata["train"]["epochs"] == 4 and metadata["seed"] == 0


def test_same_seed_same_weights(splits, tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, batch_size=32, seed=5, augment=True)
    a = train("hah-vgg11", *splits, tmp_path / "a.safetensors", config=config, model_overrides=MODEL)
    b = train("hah-vgg11", *splits, tmp_path / "b.safetensors", config=config, model_overrides=MODEL)
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key]), key


RESUMED_RUNS = {
    "hah-vgg11": ("hah-vgg11", MODEL, CONFIG),
    # Gaussian data augmentation: the noise of each image and epoch comes from the seed, not the global generator
    "noise": ("vgg11", MODEL, TrainConfig(epochs=3, batch_size=32, lr=3e-3, augment=True, seed=11, noise_sigma=0.25)),
    # a dictionary learned before epoch 1 (not again on resume) and a readout with dropout
    "sparse-coding": ("sparse-coding-vgg16", {"width": 0.125, "atoms": 24, "keep": 4, "dictionary_patches": 500}, CONFIG),
    "softhebb": ("softhebb", {"width": 0.05}, CONFIG),
}


@pytest.mark.parametrize("run", list(RESUMED_RUNS))
def test_interrupted_run_resumes_to_identical_weights(run: str, splits, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    name, model, config = RESUMED_RUNS[run]
    reference = tmp_path / "reference.safetensors"
    train(name, *splits, reference, config=config, model_overrides=model)

    out = tmp_path / "interrupted.safetensors"
    real_batches = loop_module.batches

    def interrupting_batches(*args, **kwargs):
        for i, batch in enumerate(real_batches(*args, **kwargs)):
            if kwargs["epoch"] == 2 and i == 2:  # Ctrl-C in the middle of the third epoch
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(loop_module, "batches", interrupting_batches)
    with pytest.raises(KeyboardInterrupt):
        train(name, *splits, out, config=config, model_overrides=model)
    assert not out.exists() and run_paths(out)[0].exists()
    monkeypatch.setattr(loop_module, "batches", real_batches)

    with pytest.raises(HahrobustError, match="--resume"):
        train(name, *splits, out, config=config, model_overrides=model)
    with pytest.raises(HahrobustError, match="different settings"):
        train(name, *splits, out, config=TrainConfig(epochs=3, batch_size=32, lr=3e-3, augment=True, seed=12),
              model_overrides=model, resume=True)
    train(name, *splits, out, config=config, model_overrides=model, resume=True)

    expected, resumed = _weights(reference), _weights(out)
    for key, value in expected.items():
        assert torch.equal(value, resumed[key]), key
    assert len(pd.read_csv(run_paths(out)[1])) == 3


def test_existing_checkpoint_is_not_overwritten(splits, tmp_path: Path) -> None:
    out = tmp_path / "exists.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(HahrobustError, match="already exists"):
        train("vgg11", *splits, out, config=TrainConfig(epochs=1), model_overrides=MODEL)
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"epochs": 0}, "epochs"), ({"epochs": -3}, "epochs"), ({"batch_size": 0}, "batch size"), ({"lr": 0.0}, "learning rate"),
     ({"noise_sigma": -0.1}, "noise σ"), ({"noise_sigma": float("nan")}, "noise σ"),
     ({"noise_sigma": 0.25, "adversarial_norm": "linf", "adversarial_eps": 0.01}, "choose one")],
)
def test_bad_training_settings(fields: dict, message: str) -> None:
    with pytest.raises(HahrobustError, match=message):
        TrainConfig(**fields)


@pytest.mark.parametrize(("epoch", "lr"), [(0, 1e-3), (59, 1e-3), (60, 1e-4), (79, 1e-4), (80, 1e-5), (99, 1e-5)])
def test_paper_learning_rate_schedule(epoch: int, lr: float) -> None:
    assert TrainConfig(epochs=100).lr_at(epoch) == pytest.approx(lr)


def test_milestones_scale_with_epochs() -> None:
    assert TrainConfig(epochs=10).milestone_epochs() == [6, 8]
