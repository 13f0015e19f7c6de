"""Hebbian learning (Amato et al. 2019): the rule on hand-computed tiny cases, WTA, teacher groups, ZCA,
the hebb-net model, its staged resumable trainer, ``train --model hebb-net`` and ``hebbian-sweep``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from hahrobust.checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint
from hahrobust.cli import app
from hahrobust.data import load_cifar10
from hahrobust.errors import HahrobustError
from hahrobust.models import build
from hahrobust.nn.hebbian import (
    HebbianConv2d, HebbianLearner, HebbianLinear, HebbianRule, aggregated_delta, kernel_matrix, layer_patches,
    similarity, teacher_signal, winner_take_all,
)
from hahrobust.nn.zca import ZCAWhitening
from hahrobust.studies.hebbian_sweep import sweep_rows
from hahrobust.training import hebbian as hebbian_module
from hahrobust.training import run_paths
from hahrobust.training.hebbian import split_validation, train_hebbnet
from hahrobust.training.hebbian_config import HebbianTrainConfig, plan

runner = CliRunner()
T = torch.tensor


# --------------------------------------------------------------------------------------------- the rule


def test_winner_moves_toward_the_patch_by_eta() -> None:
    """One patch x = (1, 0), kernels w1 = (0.6, 0.8) (cos 0.6) and w2 = (0, 1) (cos 0): w1 wins and moves
    by η(x − w1) = 0.5·(0.4, −0.8); w2, which did not win, does not move (no decay toward 0)."""
    layer = nn.Linear(2, 2, bias=False)
    layer.weight.data = T([[0.6, 0.8], [0.0, 1.0]])
    stats = HebbianLearner(layer, HebbianRule(lr=0.5), reseed_every=0).step(T([[1.0, 0.0]]))
    assert torch.allclose(layer.weight, T([[0.8, 0.4], [0.0, 1.0]]))
    assert (stats.patches, stats.active, stats.reseeded) == (1, 1, 0)


@pytest.mark.parametrize(
    ("coef", "expected"),
    [
        # binary: (Rᵀ X)_k / count_k − w_k = mean of the two patches − w
        ([[1.0], [1.0]], [[0.5 - 1.0, 0.5 - 0.0]]),
        # weights r = (1, 0.5): (1·x1 + 0.25·x2 − 1.25·w) / 1.5 = ((1 − 1.25)/1.5, 0.25/1.5)
        ([[1.0], [0.5]], [[-0.25 / 1.5, 0.25 / 1.5]]),
        # only x2 counts: x2 − w
        ([[0.0], [1.0]], [[-1.0, 1.0]]),
        # no coefficient: no step at all (not −w)
        ([[0.0], [0.0]], [[0.0, 0.0]]),
        # coefficients are clipped to [0, 1]: 2 → 1, −1 → 0
        ([[2.0], [-1.0]], [[0.0, 0.0]]),
    ],
)
def test_aggregation_is_the_coefficient_weighted_average(coef, expected) -> None:
    weight = T([[1.0, 0.0]])
    patches = T([[1.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(aggregated_delta(weight, patches, T(coef)), T(expected))


@pytest.mark.parametrize(
    ("kind", "winner"),
    [("angular", 0), ("euclidean", 1)],  # w1 points exactly at x but is twice as long; w2 is close but tilted
)
def test_wta_picks_the_most_similar_kernel(kind: str, winner: int) -> None:
    x = T([[1.0, 0.0]])
    kernels = T([[2.0, 0.0], [0.9, 0.3]])  # cos 1 / dist² 1  vs  cos 0.949 / dist² 0.1
    scores = similarity(x, kernels, kind)  # type: ignore[arg-type]
    assert torch.equal(winner_take_all(scores), torch.eye(2)[[winner]])


def test_similarity_values() -> None:
    x, w = T([[3.0, 4.0]]), T([[1.0, 0.0], [0.0, 0.0]])
    assert torch.allclose(similarity(x, w, "angular"), T([[0.6, 0.0]]))  # a zero kernel scores 0, not NaN
    assert torch.allclose(similarity(x, w, "euclidean"), T([[-20.0, -25.0]]))


def test_teacher_groups() -> None:
    """3 classes, 1 kernel per class + 2 common: kernel k < 3 belongs to class k, kernels 3 and 4 to all."""
    signal = teacher_signal(T([2, 0]), num_kernels=5, per_class=1, num_classes=3)
    assert torch.equal(signal, T([[0.0, 0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 1.0, 1.0]]))
    signal = teacher_signal(T([1]), num_kernels=7, per_class=2, num_classes=3)  # kernels 2, 3 are class 1's
    assert torch.equal(signal, T([[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]]))
    assert torch.equal(teacher_signal(T([1]), 4, 0, 3), torch.ones(1, 4))  # no groups: all common
    with pytest.raises(HahrobustError, match="teacher groups"):
        teacher_signal(T([0]), num_kernels=5, per_class=2, num_classes=3)


def test_wta_competes_only_among_the_kernels_the_teacher_allows() -> None:
    """Kernel 0 (class 0) matches the patch best, but the sample is of class 1: the class-1 kernel or the
    common kernel must win; the common one is more similar, so it moves and the others do not."""
    layer = nn.Linear(2, 3, bias=False)
    layer.weight.data = T([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])  # class 0, class 1, common
    rule = HebbianRule(lr=1.0, per_class=1, num_classes=2)
    HebbianLearner(layer, rule, reseed_every=0).step(T([[1.0, 0.1]]), T([1]))
    assert torch.allclose(layer.weight, T([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]]))  # η = 1: common kernel := x
    with pytest.raises(HahrobustError, match="labels"):
        HebbianLearner(layer, rule).step(T([[1.0, 0.1]]))


def test_teacher_rule_moves_each_class_kernel_to_its_class_mean() -> None:
    """The classifier's rule: y = one-hot label, no competition; η = 1 puts w_c at the mean of class c."""
    layer = HebbianLinear(2, 2, output="projection")
    x, labels = T([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]]), T([0, 0, 1])
    HebbianLearner(layer, HebbianRule(lr=1.0, mode="teacher", per_class=1, num_classes=2)).step(x, labels)
    assert torch.allclose(layer.weight, T([[2.0, 1.0], [0.0, 5.0]]))


def test_plain_hebbian_rule_uses_the_activation_as_coefficient() -> None:
    """mode="hebb": r = max(0, cos): patch (1, 0) has r = 1, patch (0, 1) r = 0 for w = (1, 0) → no change;
    for w = (1, 1)/√2 both have r = 1/√2 and the step is η·(Σr²x − Σr²w)/Σr."""
    layer = nn.Linear(2, 1, bias=False)
    w0 = T([[1.0, 1.0]]) / math.sqrt(2)
    layer.weight.data = w0.clone()
    x = T([[1.0, 0.0], [0.0, 1.0]])
    HebbianLearner(layer, HebbianRule(lr=0.5, mode="hebb")).step(x)
    r = 1 / math.sqrt(2)
    expected = w0 + 0.5 * (r * r * x.sum(0) - 2 * r * r * w0) / (2 * r)
    assert torch.allclose(layer.weight, expected)


def _reference_wta_update(weight: torch.Tensor, x: torch.Tensor, lr: float, stride: int, padding: int) -> torch.Tensor:
    """Loop over every location of every image: per-location WTA, then the per-kernel mean of Δw (Sec. 3.4)."""
    k, c, kh, kw = weight.shape
    xp = torch.nn.functional.pad(x, (padding,) * 4)
    steps: list[list[torch.Tensor]] = [[] for _ in range(k)]
    for b in range(x.shape[0]):
        for i in range(0, xp.shape[2] - kh + 1, stride):
            for j in range(0, xp.shape[3] - kw + 1, stride):
                patch = xp[b, :, i : i + kh, j : j + kw].reshape(-1)
                cos = [float(patch @ weight[q].reshape(-1) / (patch.norm() * weight[q].norm())) for q in range(k)]
                win = max(range(k), key=lambda q: cos[q])
                steps[win].append(patch - weight[win].reshape(-1))
    out = weight.clone().reshape(k, -1)
    for q in range(k):
        if steps[q]:
            out[q] += lr * torch.stack(steps[q]).mean(0)
    return out.view_as(weight)


@pytest.mark.parametrize(("stride", "padding"), [(1, 0), (2, 1)])
def test_vectorised_conv_update_matches_a_loop_over_locations(stride: int, padding: int) -> None:
    """Any nn.Conv2d: the one-matmul update equals the per-location loop (stride and padding honoured)."""
    g = torch.Generator().manual_seed(3)
    conv = nn.Conv2d(2, 3, 3, stride=stride, padding=padding)
    conv.weight.data = torch.randn(3, 2, 3, 3, generator=g)
    x = torch.randn(2, 2, 5, 6, generator=g)
    expected = _reference_wta_update(conv.weight.data.clone(), x, 0.3, stride, padding)
    HebbianLearner(conv, HebbianRule(lr=0.3), reseed_every=0).step(x)
    assert torch.allclose(conv.weight, expected, atol=1e-6)


def test_patches_and_kernels_line_up_with_the_convolution() -> None:
    """patches @ kernelsᵀ, reshaped, is the layer's convolution: the same (channel, row, column) order."""
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
    x = torch.randn(2, 3, 7, 7, generator=g)
    patches, locations = layer_patches(conv, x)
    y = conv(x)
    assert locations == y.shape[2] * y.shape[3]
    prod = (patches @ kernel_matrix(conv).t()).view(2, locations, 4).transpose(1, 2).reshape_as(y)
    assert torch.allclose(prod, y, atol=1e-5)


def test_weights_stay_bounded_and_bad_input_is_refused() -> None:
    """η = 1 for 200 steps of large random inputs: each kernel stays a convex combination, so
    ‖w‖ ≤ max(‖w₀‖, max ‖x‖); non-finite inputs and η outside (0, 1] are errors, not NaN weights."""
    g = torch.Generator().manual_seed(1)
    layer = nn.Linear(4, 3, bias=False)
    bound = layer.weight.norm(dim=1).max().item()
    learner = HebbianLearner(layer, HebbianRule(lr=1.0, mode="hebb"))
    for _ in range(200):
        x = 50 * torch.randn(8, 4, generator=g)
        bound = max(bound, x.norm(dim=1).max().item())
        learner.step(x)
    assert layer.weight.norm(dim=1).max().item() <= bound + 1e-4
    with pytest.raises(HahrobustError, match="non-finite"):
        learner.step(T([[float("nan"), 1.0, 0.0, 0.0]]))
    for lr in (0.0, 1.5):
        with pytest.raises(HahrobustError, match="learning rate"):
            HebbianRule(lr=lr)


def test_dead_units_are_reseeded_with_a_patch_of_their_own_class() -> None:
    """Kernel 1 (class 1) points away from every input and never wins; after the 2-batch window it is
    set to one of the class-1 patches, never to the class-0 one. reseed_every=0 leaves it dead."""
    x, labels = T([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]]), T([0, 1, 1])
    for every, dead_after in ((2, False), (0, True)):
        layer = nn.Linear(2, 3, bias=False)
        layer.weight.data = T([[1.0, 0.0], [-1.0, -1.0], [0.5, 0.5]])  # class 0, class 1, common
        learner = HebbianLearner(layer, HebbianRule(lr=0.1, per_class=1, num_classes=2), reseed_every=every,
                                 generator=torch.Generator().manual_seed(0))
        reseeded = sum(learner.step(x, labels).reseeded for _ in range(2))
        if dead_after:
            assert reseeded == 0 and torch.equal(layer.weight[1], T([-1.0, -1.0]))
        else:
            assert reseeded == 1
            assert any(torch.equal(layer.weight[1], row) for row in x[1:])


def test_hebbian_conv_output_is_the_clamped_cosine() -> None:
    conv = HebbianConv2d(1, 2, 2)
    conv.weight.data = T([[[[1.0, 0.0], [0.0, 0.0]]], [[[-1.0, 0.0], [0.0, 0.0]]]])
    x = T([[[[3.0, 0.0], [4.0, 0.0]]]])  # one 2×2 patch (3, 0, 4, 0): cos with e1 = 0.6, with −e1 = −0.6 → 0
    assert torch.allclose(conv(x).flatten(), T([0.6, 0.0]))
    conv.output = "projection"
    assert torch.allclose(conv(x).flatten(), T([3.0, -3.0]))  # <x, w>/‖w‖
    zero = torch.zeros(1, 1, 2, 2, requires_grad=True)  # a blank patch: output 0, finite gradient
    HebbianConv2d(1, 2, 2)(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


# --------------------------------------------------------------------------------------------------- ZCA


def test_zca_whitens_the_data_it_was_fitted_on() -> None:
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(12, 12, generator=g)
    data = (torch.randn(3000, 12, generator=g) @ mixing + 5).view(3000, 3, 2, 2)
    zca = ZCAWhitening((3, 2, 2), eps=0.0)
    assert zca.fit(data.split(500)) == 3000
    white = zca(data).flatten(1)
    assert torch.allclose(white.mean(0), torch.zeros(12), atol=1e-4)
    assert torch.allclose(torch.cov(white.t()), torch.eye(12), atol=1e-3)
    assert torch.allclose(zca.matrix, zca.matrix.t(), atol=1e-5)  # ZCA: the symmetric whitening matrix
    assert set(zca.state_dict()) == {"mean", "matrix"}
    smoothed = ZCAWhitening((3, 2, 2), eps=0.1)
    smoothed.fit([data])
    variances = torch.cov(smoothed(data).flatten(1).t()).diagonal()
    assert (variances < 1).all() and (variances > 0.5).all()  # ε shrinks the small-variance directions
    with pytest.raises(HahrobustError, match="at least 2"):
        ZCAWhitening((3, 2, 2)).fit([data[:1]])


# ------------------------------------------------------------------------------------------------- model


def test_hebbnet_architecture() -> None:
    model = build("hebb-net", layers="HRGGGH")
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert model.block_names() == [f"features.block{i}" for i in range(1, 6)]
    assert model.hah_block_names() == [] and model.loss_weights() == []
    shapes = [m.layer.weight.shape for m in model.stages()]
    assert shapes == [(96, 3, 5, 5), (128, 96, 3, 3), (192, 128, 3, 3), (256, 192, 3, 3), (300, 2304), (10, 300)]
    assert model.config.group_sizes() == (0, 8, 16, 24, 28)  # commons: 96, 48, 32, 16, 20
    block1, block2 = model.features.block1, model.features.block2
    assert isinstance(block1.layer, HebbianConv2d) and not block1.norm.affine  # Hebbian: BN without scale/shift
    assert not any(p.requires_grad for p in block2.parameters())  # R: frozen at its random init
    assert all(p.requires_grad for p in model.features.block3.parameters())
    for layers in ("HHGG", "HHXGGG"):
        with pytest.raises(HahrobustError, match="6 letters"):
            build("hebb-net", layers=layers)


def test_checkpoint_rebuilds_a_hebbnet_with_its_zca_buffers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build("hebb-net", layers="HHGGGG", zca=True, width=0.125).eval()
    model.zca.mean.normal_()
    model.zca.matrix.copy_(torch.eye(3072) + 0.01 * torch.randn(3072, 3072))
    path = tmp_path / "h.safetensors"
    save_checkpoint(path, model, checkpoint_metadata(model, "hebb-net", "hebbnet"))
    loaded, meta = load_checkpoint(path)
    assert meta["model"]["config"]["layers"] == "HHGGGG" and meta["model"]["config"]["zca"] is True
    assert torch.equal(loaded.zca.matrix, model.zca.matrix) and torch.equal(loaded.zca.mean, model.zca.mean)
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))


# ---------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize(
    ("layers", "zca", "phases"),
    [
        ("GGGGGG", False, ["sgd", "sgd"]),
        ("HHGGGG", True, ["zca", "hebbian conv1", "calibrate conv1", "hebbian conv2", "calibrate conv2", "sgd", "sgd"]),
        ("RGGGGG", False, ["calibrate conv1", "sgd", "sgd"]),
        ("GGGGGH", False, ["base", "hebbian classifier"]),
        ("GHGGGG", False, ["base", "hebbian conv2", "calibrate conv2", "sgd", "sgd"]),
    ],
)
def test_plan(layers: str, zca: bool, phases: list[str]) -> None:
    config = build("hebb-net", layers=layers, zca=zca).config
    steps = plan(config, HebbianTrainConfig(hebbian_epochs=1, epochs=2)).steps
    assert [s.describe().removesuffix(" epoch 1").removesuffix(" epoch 2") for s in steps] == phases


def test_plan_refuses_gradient_layers_between_hebbian_ones() -> None:
    with pytest.raises(HahrobustError, match="contiguous"):
        plan(build("hebb-net", layers="HGHGGG").config, HebbianTrainConfig())


def test_paper_lr_schedule() -> None:
    config = HebbianTrainConfig()  # 20 epochs: 1e-3 for ten, then halved every epoch
    assert [config.lr_at(e) for e in (0, 9, 10, 11, 19)] == [1e-3, 1e-3, 5e-4, 2.5e-4, 1e-3 / 2**10]


def test_validation_split_is_balanced_disjoint_and_seeded(splits) -> None:
    train, _ = splits
    rest, val = split_validation(train, 30, seed=1)
    assert len(rest) + len(val) == len(train) and torch.bincount(val.labels).tolist() == [3] * 10
    again, _ = split_validation(train, 30, seed=1)
    assert torch.equal(again.images, rest.images)
    with pytest.raises(HahrobustError, match="validation size"):
        split_validation(train, len(train), seed=1)


@pytest.fixture(scope="module")
def splits(tiny_data: Path):
    return load_cifar10(tiny_data, "train"), load_cifar10(tiny_data, "test")


TINY = HebbianTrainConfig(hebbian_epochs=1, epochs=2, batch_size=32, hebbian_batch_size=32, val_size=20, seed=3,
                          reseed_every=2)


def test_interrupted_hebbian_run_resumes_to_identical_weights(splits, tmp_path, monkeypatch) -> None:
    """Stop after the conv1 calibration (step 2 of HHGGGG), resume: same weights, log and metrics."""
    overrides = {"layers": "HHGGGG", "width": 0.125}
    rng = torch.get_rng_state()
    reference = train_hebbnet(*splits, tmp_path / "ref.safetensors", model_overrides=overrides, config=TINY)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's global RNG is left alone

    real_run = hebbian_module._Runner.run

    def stop_at_step_3(self, index):
        if index == 2:
            raise KeyboardInterrupt
        return real_run(self, index)

    out = tmp_path / "run.safetensors"
    monkeypatch.setattr(hebbian_module._Runner, "run", stop_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_hebbnet(*splits, out, model_overrides=overrides, config=TINY)
    monkeypatch.setattr(hebbian_module._Runner, "run", real_run)
    assert run_paths(out)[0].exists() and not out.exists()
    with pytest.raises(HahrobustError, match="--resume"):
        train_hebbnet(*splits, out, model_overrides=overrides, config=TINY)
    resumed = train_hebbnet(*splits, out, model_overrides=overrides, config=TINY, resume=True)
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed.metadata["metrics"] == reference.metadata["metrics"]
    history = pd.read_csv(run_paths(out)[1])
    assert list(history["phase"]) == ["hebbian", "calibrate", "hebbian", "calibrate", "sgd", "sgd"]
    assert not run_paths(out)[0].exists() and not hebbian_module.best_path(out).exists()


def test_full_hebbian_run_with_zca_and_best_epoch(splits, tmp_path) -> None:
    """HHHHHH with ZCA: every layer Hebbian, the classifier validated per epoch, ZCA buffers in the checkpoint."""
    out = tmp_path / "hebb.safetensors"
    config = HebbianTrainConfig(hebbian_epochs=2, hebbian_batch_size=32, val_size=20, seed=0)
    result = train_hebbnet(*splits, out, model_overrides={"layers": "HHHHHH", "zca": True, "width": 0.125},
                           config=config)
    model, meta = load_checkpoint(out)
    assert not torch.equal(model.zca.matrix, torch.eye(3072))  # fitted, saved, restored
    assert torch.equal(model.zca.matrix, result.model.zca.matrix)
    val_rows = [h for h in meta["history"] if h.get("val_acc") is not None]
    assert [h["layer"] for h in val_rows] == ["classifier", "classifier"]
    best = max(val_rows, key=lambda h: (h["val_acc"], -h["step"]))
    assert meta["metrics"]["best_step"] == best["step"] and meta["metrics"]["val_acc"] == best["val_acc"]
    assert meta["metrics"]["test_acc"] > 0.2  # the synthetic classes are separable; chance is 0.1


def test_lower_gradient_layers_come_from_the_base(splits, tmp_path) -> None:
    base = tmp_path / "base.safetensors"
    train_hebbnet(*splits, base, model_overrides={"width": 0.125}, config=TINY)
    out = tmp_path / "top.safetensors"
    with pytest.raises(HahrobustError, match="--base"):
        train_hebbnet(*splits, out, model_overrides={"layers": "GGGGGH", "width": 0.125}, config=TINY)
    result = train_hebbnet(*splits, out, model_overrides={"layers": "GGGGGH", "width": 0.125}, config=TINY, base=base)
    base_state = load_checkpoint(base)[0].state_dict()
    for key, value in result.model.state_dict().items():
        if key.startswith("features."):
            assert torch.equal(value, base_state[key]), key
    assert result.metadata["metrics"]["test_acc"] > 0.2
    wrong = tmp_path / "wrong.safetensors"
    with pytest.raises(HahrobustError, match="width"):
        train_hebbnet(*splits, wrong, model_overrides={"layers": "GGGGGH", "width": 0.25}, config=TINY, base=base)


# --------------------------------------------------------------------------------------------------- CLI


def test_train_cli_hebb_net_then_info(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "h.safetensors"
    args = ["train", "--model", "hebb-net", "--preset", "paper", "--rule", "hebbian", "--hebbian-layers", "1",
            "--no-zca", "--width", "0.125", "--epochs", "1", "--hebbian-epochs", "1", "--val-size", "20", "--data", str(tiny_data),
            "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = json.loads(runner.invoke(app, ["info", str(out), "--json"]).output)
    assert meta["model"]["config"]["layers"] == "HGGGGG" and meta["train"]["val_size"] == 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "hebb-net", "--layers", "HHQGGG"], "6 letters"),
        (["--model", "hebb-net", "--layers", "HHGGGG", "--rule", "sgd"], "either --rules"),
        (["--model", "hebb-net", "--rule", "hebbian", "--hebbian-layers", "7"], "layers 1-6"),
        (["--model", "hebb-net", "--lam", "0.5"], "--lam does not apply"),
        (["--model", "hebb-net", "--layers", "GGGGGH"], "--base"),
        (["--model", "vgg11", "--layers", "HHGGGG"], "only to hebb-net"),
    ],
)
def test_train_cli_bad_hebbian_input(args: list[str], message: str, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.safetensors"
    common = ["--preset", "paper", "--width", "0.125", "--val-size", "20", "--data", str(tiny_data), "--out", str(out)]
    result = runner.invoke(app, ["train", *args, *common])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


def test_sweep_writes_the_table_and_resumes_per_row(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = ["hebbian-sweep", "--preset", "paper", "--rows", "GGGGGH,RGGGGG", "--width", "0.125", "--epochs", "1",
            "--hebbian-epochs", "1", "--val-size", "20", "--data", str(tiny_data), "--out", str(out)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    rows = pd.read_csv(out / "hebbian-sweep.csv")
    measured = rows[rows["source"] == "measured"]
    assert list(measured["layers"]) == ["GGGGGG", "GGGGGH", "RGGGGG"]  # the base row is added and trained first
    paper = rows[rows["source"] == "paper (Table 2)"].set_index("layers")["accuracy"]
    assert paper["GGGGGH"] == pytest.approx(0.8488)
    assert {p.suffix for p in out.iterdir() if p.is_file()} == {".csv", ".md", ".json", ".png"}
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "--resume" in refused.output
    (out / "checkpoints" / "hebb-net-RGGGGG.safetensors").unlink()  # as if the run had stopped before this row
    again = runner.invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    timeless = rows.drop(columns="train_seconds")
    assert pd.read_csv(out / "hebbian-sweep.csv").drop(columns="train_seconds").equals(timeless)
    changed = runner.invoke(app, [*args, "--resume", "--epochs", "2"])
    assert changed.exit_code == 2 and "other settings" in changed.output


def test_sweep_rows() -> None:
    assert len(sweep_rows("table2")) == 27
    assert [r.layers for r in sweep_rows("hhggggg"[:6] + ",core")][:2] == ["HHGGGG", "GGGGGG"]
    with pytest.raises(HahrobustError, match="6 letters"):
        sweep_rows("HHG")
