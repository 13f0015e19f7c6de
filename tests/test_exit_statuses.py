"""One exit status per outcome, so CI can tell them apart: 0 success, 1 a regression (check), 2 bad input, 3 an
adversarial example that failed verification, 4 an internal error (traceback in a file, never on the terminal),
130 Ctrl-C; and `hahrobust --help` lists them."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import hahrobust
import hahrobust.regression as regression_module
from hahrobust.attacks import registry
from hahrobust.attacks.registry import AttackSpec
from hahrobust.checkpoint import checkpoint_metadata, save_checkpoint
from hahrobust.cli import app
from hahrobust.errors import EXIT_STATUSES
from hahrobust.models import resolve_config

runner = CliRunner()

ROWS = pd.DataFrame({"model": ["hah", "base"], "sigma": [0.1, 0.1], "accuracy": [0.6, 0.3]})


def results_pair(tmp_path: Path, accuracy: float) -> list[str]:
    """`check` arguments comparing a noise-sweep CSV whose first accuracy is ``accuracy`` with ROWS."""
    (tmp_path / "expected").mkdir()
    ROWS.to_csv(tmp_path / "expected" / "noise-sweep.csv", index=False)
    ROWS.assign(accuracy=[accuracy, 0.3]).to_csv(tmp_path / "noise-sweep.csv", index=False)
    return ["check", str(tmp_path / "noise-sweep.csv"), "--expected", str(tmp_path / "expected" / "noise-sweep.csv")]


def test_help_lists_every_exit_status() -> None:
    shown = re.sub(r"[\s│]+", " ", runner.invoke(app, ["--help"]).output)
    for code, meaning in EXIT_STATUSES.items():
        assert f"{code} {meaning}" in shown


def test_0_success(tmp_path: Path) -> None:
    assert runner.invoke(app, results_pair(tmp_path, 0.6)).exit_code == 0


def test_1_check_found_a_regression(tmp_path: Path) -> None:
    result = runner.invoke(app, results_pair(tmp_path, 0.4))
    assert result.exit_code == 1 and "regression" in result.output


def test_2_bad_input(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(tmp_path / "missing.csv"), "--expected", str(tmp_path / "also.csv")])
    assert result.exit_code == 2 and "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def out_of_the_box(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float,
                   indices: torch.Tensor, seed: int, config: object) -> torch.Tensor:
    """A defective attack: its examples leave [0, 1]."""
    return x + 2.0


@dataclasses.dataclass(frozen=True)
class NoConfig:
    pass


def test_3_an_example_failed_verification(tiny_data: Path, tmp_path: Path) -> None:
    """A registered attack whose examples leave [0, 1] is a toolkit defect, not the user's input: status 3,
    one line, nothing written."""
    family, _ = resolve_config("vgg11", width=0.125)
    torch.manual_seed(0)
    model = hahrobust.build("vgg11", width=0.125).eval()
    ckpt = tmp_path / "vgg11.safetensors"
    save_checkpoint(ckpt, model, checkpoint_metadata(model, "vgg11", family))
    spec = registry.register(AttackSpec("out-of-the-box", ("linf",), NoConfig, out_of_the_box, title="broken"))
    try:
        result = runner.invoke(app, ["attack", str(ckpt), "--attack", "out-of-the-box", "--eps", "8/255",
                                     "--images", "10", "--data", str(tiny_data), "--device", "cpu",
                                     "--out", str(tmp_path / "out")])
    finally:
        registry.unregister(spec.name)
    assert result.exit_code == 3, result.output
    assert "leaves the [0, 1] box" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "attack.csv").exists()


def test_4_internal_error_saves_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero in a comparison")

    monkeypatch.setattr(regression_module, "compare", crash)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    result = runner.invoke(app, results_pair(tmp_path, 0.6))
    assert result.exit_code == 4
    (line,) = result.output.strip().splitlines()
    assert "internal error: ZeroDivisionError" in line and "Traceback" not in line
    (saved,) = (tmp_path / "tmp").glob("hahrobust-crash-*.txt")
    assert str(saved) in line
    text = saved.read_text()
    assert text.startswith("Traceback") and "in crash" in text and "division by zero in a comparison" in text


def test_130_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(regression_module, "compare", interrupt)
    result = runner.invoke(app, results_pair(tmp_path, 0.6))
    assert result.exit_code == 130 and "interrupted" in result.output
