"""CI's robustness regression check: re-evaluate the reference checkpoints on the real CIFAR-10 and compare
with checkpoints/expected/ through `hahrobust check` (any change that silently moves a number fails here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hahrobust.studies.ablation import VARIANTS
from hahrobust.checkpoint import read_metadata
from hahrobust.cli import app
from hahrobust.models import make_config, resolve_config
from hahrobust.training import TrainConfig, preset

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ROOT / "checkpoints" / "expected"
COMMANDS = json.loads((EXPECTED / "manifest.json").read_text(encoding="utf-8"))["commands"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_reference_results_have_not_moved(name: str, shared_cifar: Path, tmp_path: Path, monkeypatch) -> None:
    expected = EXPECTED / f"{name}.json"
    if not expected.is_file():
        pytest.fail(f"{expected} is missing: run checkpoints/make_expected.py")
    monkeypatch.chdir(ROOT)  # the manifest's checkpoint paths are relative to the repository root
    args = [a.format(data=shared_cifar, out=tmp_path) for a in COMMANDS[name]]
    runner = CliRunner()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    written = tmp_path / f"{args[0]}.json"  # named by the command; the expected file by the manifest's key
    check = runner.invoke(app, ["check", str(written), "--expected", str(expected), "--all"])
    assert check.exit_code == 0, check.output


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_ablation_checkpoints_are_the_variants_of_the_small_preset(variant: str) -> None:
    """checkpoints/ablation/ holds one checkpoint per ablation variant, each trained with exactly the
    variant's config overrides on the `small` preset (so `ablate --from checkpoints/ablation` reuses them)."""
    path = ROOT / "checkpoints" / "ablation" / f"{variant}.safetensors"
    metadata = read_metadata(path)
    chosen = VARIANTS[variant]
    _, config = resolve_config(chosen.model, **{**preset("small").model, **chosen.overrides})
    assert metadata["model"]["name"] == chosen.model
    # As loaded: a field added since (with the default the checkpoint was trained under) is filled in.
    assert make_config(metadata["model"]["family"], metadata["model"]["config"]) == config
    assert TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in metadata["train"].items()}) == \
        TrainConfig(**preset("small").train)
