"""Checkpoints round-trip through safetensors with metadata, and never unpickle."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hahrobust import load_checkpoint
from hahrobust.checkpoint import FORMAT, read_metadata
from hahrobust.errors import HahrobustError


def test_round_trip_restores_weights_config_and_outputs(make_checkpoint) -> None:
    path = make_checkpoint("hah-vgg11", seed=3, lam=1.0, dn_pool=3)
    model, metadata = load_checkpoint(path)
    assert metadata["model"]["name"] == "hah-vgg11"
    assert metadata["model"]["config"]["lam"] == 1.0 and model.config.dn_pool == 3
    assert metadata["seed"] == 3 and "torch" in metadata["versions"]
    assert not model.training
    again, _ = load_checkpoint(path)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), again(x))


def _write(path: Path, tensors: dict, metadata: dict | None) -> Path:
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.safetensors", "not found"),
        (lambda p: (p / "junk.safetensors").write_bytes(b"not a checkpoint at all") and p / "junk.safetensors", "not a hahrobust checkpoint"),
        (lambda p: _write(p / "plain.safetensors", {"w": torch.zeros(1)}, None), "not a hahrobust checkpoint"),
        (lambda p: _write(p / "nomodel.safetensors", {"w": torch.zeros(1)}, {"format": FORMAT, "hahrobust": "{}"}), "lacks the model"),
        (lambda p: _write(p / "badjson.safetensors", {"w": torch.zeros(1)}, {"format": FORMAT, "hahrobust": "{"}), "corrupt"),
    ],
)
def test_unusable_files_give_one_line_errors(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(HahrobustError, match=message) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_weights_that_do_not_match_the_description(make_checkpoint, tmp_path: Path) -> None:
    source = make_checkpoint("vgg11")
    metadata = read_metadata(source)
    metadata["model"]["config"]["width"] = 0.25
    bad = _write(tmp_path / "mismatch.safetensors", {"w": torch.zeros(1)}, {"format": FORMAT, "hahrobust": json.dumps(metadata)})
    with pytest.raises(HahrobustError, match="do not match"):
        load_checkpoint(bad)


def test_a_pickle_is_never_loaded(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle executed')",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"state": Boom()}))
    with pytest.raises(HahrobustError):
        load_checkpoint(path)


def test_truncated_checkpoint_is_rejected(make_checkpoint, tmp_path: Path) -> None:
    data = make_checkpoint("vgg11").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(HahrobustError, match="corrupt|not a hahrobust"):
        load_checkpoint(cut)
