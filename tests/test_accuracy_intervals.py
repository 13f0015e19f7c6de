"""Every evaluation command's CSV and JSON carry, for each accuracy, its n and its 95 % Wilson interval (issue 32):
each command run on the tiny set with its cheapest settings, then every accuracy column of every results file it
writes checked against :func:`hahrobust.stats.wilson_interval` of its count."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import train_tiny_vgg11
from hahrobust.checkpoint import checkpoint_metadata, save_checkpoint
from hahrobust.cli import app
from hahrobust.data import load_cifar10
from hahrobust.models import resolve_config
from hahrobust.stats import accuracy_intervals, wilson_interval

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest.single_thread explains why

#: Per command: its cheapest arguments (those of its own tests) after the checkpoint, and per results file the
#: accuracy columns with the column counting each one's images.
COMMANDS: dict[str, tuple[list[str], dict[str, dict[str, str]]]] = {
    "attack": (["--attack", "pgd", "--steps", "5", "--restarts", "1", "--norm", "l2", "--eps", "0.5,1", "--images", "20"],
               {"attack": {"clean_acc": "n", "robust_acc": "n", "success_rate": "success_rate_n"}}),
    "noise-sweep": (["--images", "20", "--sigmas", "0,0.1", "--repeats", "2"], {"noise-sweep": {"accuracy": "n"}}),
    "corruption-sweep": (["--images", "20", "--corruptions", "gaussian_noise,fog", "--severities", "1,5"],
                         {"corruption-sweep": {"accuracy": "n"}}),
    "certify": (["--sigma", "0.12,0.25", "--n0", "10", "--samples", "40", "--batch-size", "32", "--images", "10",
                 "--radii", "0,0.1"],
                {"certify": {"certified_acc": "n", "predict_acc": "n"}, "certify-curve": {"certified_acc": "n"}}),
    "audit": (["--norm", "linf", "--steps", "3", "--restarts", "1", "--images", "10",
               "--skip", "AutoAttack,APGD·BPDA,PGD·EOT,Square"],
              {"audit": {"clean_acc": "clean_acc_n", "robust_acc": "robust_acc_n"}}),
    "hebbian-sweep": (["--preset", "paper", "--rows", "GGGGGG", "--width", "0.125", "--epochs", "1",
                       "--hebbian-epochs", "1", "--val-size", "20"],
                      {"hebbian-sweep": {"accuracy": "n", "val_acc": "val_acc_n", "train_acc": "train_acc_n"}}),
}


def is_accuracy(column: str) -> bool:
    """A column holding a fraction of images correct, robust or certified (by the toolkit's naming)."""
    return column == "accuracy" or column.endswith("_acc") or column == "success_rate"


def pooled(command: str, rows: pd.DataFrame) -> pd.Series:
    """Rows whose accuracy pools several sets of the same images (corruption-sweep's means: a clustered interval)."""
    if command != "corruption-sweep":
        return pd.Series(False, index=rows.index)
    return (rows["severity"].astype(str) == "mean") | rows["corruption"].str.startswith("mean")


@pytest.fixture(scope="module")
def checkpoint(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VGG-11 (width 0.125) trained on the tiny set (≈ 5 s): accuracies neither 0 nor 1."""
    model = train_tiny_vgg11(load_cifar10(tiny_data, "train"))
    path = tmp_path_factory.mktemp("intervals") / "vgg11-tiny.safetensors"
    save_checkpoint(path, model.eval(), checkpoint_metadata(model, "vgg11", resolve_config("vgg11", width=0.125)[0]))
    return path


def read(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path)
    document = json.loads(path.read_text())
    rows = pd.DataFrame(document["rows"], columns=document["columns"])
    return rows.replace({"nan": math.nan, "inf": math.inf, "-inf": -math.inf})


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_accuracy_carries_its_n_and_wilson_interval(command: str, checkpoint: Path, tiny_data: Path,
                                                          tmp_path: Path) -> None:
    args, files = COMMANDS[command]
    model = [] if command == "hebbian-sweep" else [str(checkpoint), "--device", "cpu"]
    result = runner.invoke(app, [command, *model, *args, "--data", str(tiny_data), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for stem, accuracies in files.items():
        for suffix in (".csv", ".json"):
            rows = read(tmp_path / f"{stem}{suffix}")
            assert {c for c in rows.columns if is_accuracy(c)} == set(accuracies), f"{stem}{suffix}"
            exact = ~pooled(command, rows)
            for x, n in accuracies.items():
                assert {n, f"{x}_low", f"{x}_high"} <= set(rows.columns), f"{stem}{suffix}: {x}"
                value, count, low, high = (rows[c].astype(float) for c in (x, n, f"{x}_low", f"{x}_high"))
                measured = value.notna() & (count > 0)
                assert measured.any(), f"{stem}{suffix}: {x} is never measured"
                assert low[~measured].isna().all() and high[~measured].isna().all()  # not measured: no interval
                assert (low[measured] <= value[measured]).all() and (value[measured] <= high[measured]).all()
                assert (low[measured] < high[measured]).all()
                counted = measured & exact
                expected = [wilson_interval(round(v * k), int(k)) for v, k in zip(value[counted], count[counted])]
                assert low[counted].tolist() == pytest.approx([e[0] for e in expected], rel=1e-12, abs=1e-15)
                assert high[counted].tolist() == pytest.approx([e[1] for e in expected], rel=1e-12, abs=1e-15)
    shown = (tmp_path / f"{next(iter(files))}.md").read_text()
    if command != "corruption-sweep":  # its table leaves the intervals to the files, to stay readable
        assert "% [" in shown, "the Markdown table shows the intervals"


def test_accuracy_intervals_count_each_accuracy_over_its_own_n() -> None:
    frame = pd.DataFrame({"a": [0.25, math.nan, 0.5, 1 / 3], "n": [8, 8, 0, 3], "b": [0.5, 0.5, 0.5, 0.5],
                          "b_n": [2, 4, 6, 8]})
    out = accuracy_intervals(frame, {"a": "n", "b": "b_n"})
    assert list(out.columns) == [*frame.columns, "a_low", "a_high", "b_low", "b_high"]  # appended, frame untouched
    assert list(frame.columns) == ["a", "n", "b", "b_n"]
    assert (out["a_low"][0], out["a_high"][0]) == wilson_interval(2, 8)
    assert np.isnan(out.loc[1:2, ["a_low", "a_high"]].to_numpy()).all()  # not measured, or no image
    assert (out["a_low"][3], out["a_high"][3]) == wilson_interval(1, 3)  # 1/3 as a float: its count, 1
    assert [(lo, hi) for lo, hi in zip(out["b_low"], out["b_high"])] == [wilson_interval(k // 2, k) for k in (2, 4, 6, 8)]
    assert list(accuracy_intervals(frame, ["a"]).columns) == [*frame.columns, "a_low", "a_high"]  # "n" by default
