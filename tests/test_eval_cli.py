"""`hahrobust sparsity`, `snr` and `noise-sweep` driven as a user would: tiny checkpoints, --out files, bad input."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from hahrobust.cli import app, commands
from hahrobust.cli._eval import takes_subset_option
from hahrobust.provenance import sha256_file

runner = CliRunner()
OLD_NAME = re.compile(r"--n\b")  # the subset option's name before --images


pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest.single_thread explains why

#: Per command: fast arguments, the CSV's columns, and the Markdown table's header row.
COMMANDS = {
    "sparsity": (
        [],
        ["model", "block", "block_name", "block_type", "tensor", "channels", "hoyer", "nonzero", "zero_locations"],
        "| block   | Hoyer HaH   | Hoyer base   | non-zero HaH   | non-zero base   | all-zero locations HaH   |",
    ),
    "snr": (
        ["--sigma", "0.1", "--repeats", "2"],
        ["model", "block", "block_name", "block_type", "sigma", "noise", "repeats", "snr_db", "snr_db_std"],
        "| block   | HaH",
    ),
    "noise-sweep": (
        ["--sigmas", "0,0.1", "--repeats", "2"],
        ["model", "noise", "sigma", "repeats", "accuracy", "accuracy_std", "n", "accuracy_low", "accuracy_high"],
        "| σ   | HaH",
    ),
}
ROWS = {"sparsity": 2 * 4, "snr": 2 * 8, "noise-sweep": 2 * 2}  # hah-vgg11: 4 HaH blocks of 8; two σ


@pytest.fixture(scope="module")
def models(make_checkpoint: Callable[..., Path]) -> list[Path]:
    return [make_checkpoint("hah-vgg11", seed=0), make_checkpoint("vgg11", seed=1)]


def invoke(command: str, models: list[Path], data: Path, *args: str) -> Result:
    base = [command, *map(str, models), "--data", str(data), "--device", "cpu", "--batch-size", "16"]
    return runner.invoke(app, [*base, *args])


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_writes_deterministic_files(command: str, models: list[Path], tiny_data: Path, tmp_path: Path) -> None:
    extra, columns, header = COMMANDS[command]
    outputs = []
    for run in ("first", "second"):
        out = tmp_path / run
        result = invoke(command, models, tiny_data, *extra, "--images", "20", "--seed", "3", "-l", "HaH", "-l", "base",
                        "--out", str(out))
        assert result.exit_code == 0, result.output
        outputs.append(out)
    first, second = outputs
    names = [f"{command}{suffix}" for suffix in (".csv", ".md", ".json", ".png")]
    assert sorted(p.name for p in first.iterdir()) == sorted(names)
    for name in names[:2]:  # CSV and Markdown are byte-identical across runs
        assert (first / name).read_bytes() == (second / name).read_bytes()
    rows = pd.read_csv(first / f"{command}.csv")
    assert list(rows.columns) == columns and len(rows) == ROWS[command]
    assert rows["model"].unique().tolist() == ["HaH", "base"]
    assert header in (first / f"{command}.md").read_text()
    doc = json.loads((first / f"{command}.json").read_text())
    assert doc["seed"] == 3 and doc["settings"]["n"] == 20 and doc["settings"]["subset"] is True
    assert doc["checkpoints"]["HaH"]["sha256"] == sha256_file(models[0])
    assert len(doc["rows"]) == ROWS[command]


def test_sparsity_values_are_fractions_and_blocks_option(models: list[Path], tiny_data: Path, tmp_path: Path) -> None:
    result = invoke("sparsity", models, tiny_data, "--images", "10", "--blocks", "2", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "sparsity.csv")
    assert rows["block"].tolist() == [1, 2, 1, 2]
    assert rows["model"].tolist() == ["hah-vgg11"] * 2 + ["vgg11"] * 2  # labels default to the model names
    for column in ("hoyer", "nonzero", "zero_locations"):
        assert rows[column].between(0, 1).all()
    assert rows.loc[rows["model"] == "vgg11", "tensor"].eq("BatchNorm input (rectified activations)").all()


def test_snr_sigma_zero_shows_infinity(models: list[Path], tiny_data: Path, tmp_path: Path) -> None:
    result = invoke("snr", models[:1], tiny_data, "--images", "10", "--sigma", "0", "--repeats", "1", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "∞" in result.output and "∞" in (tmp_path / "snr.md").read_text()
    assert (pd.read_csv(tmp_path / "snr.csv")["snr_db"] == float("inf")).all()


def test_noise_sweep_uniform_without_out(models: list[Path], tiny_data: Path) -> None:
    result = invoke("noise-sweep", models[1:], tiny_data, "--images", "10", "--sigmas", "0,0.3", "--repeats", "1",
                    "--noise", "uniform")
    assert result.exit_code == 0, result.output
    assert "(Fig. 4)" in result.output and "vgg11" in result.output and "wrote" not in result.output


def test_same_model_name_twice_is_labelled_by_file(make_checkpoint: Callable[..., Path], tiny_data: Path) -> None:
    twins = [make_checkpoint("vgg11", seed=5), make_checkpoint("vgg11", seed=6)]
    result = invoke("noise-sweep", twins, tiny_data, "--images", "10", "--sigmas", "0", "--repeats", "1")
    assert result.exit_code == 0, result.output
    assert twins[0].stem[:12] in result.output


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("snr", ["--sigma", "-0.1"], "≥ 0"),
        ("noise-sweep", ["--sigmas", "0,-0.05"], "≥ 0"),
        ("noise-sweep", ["--sigmas", "0,x"], "--sigmas must be comma-separated numbers"),
        ("noise-sweep", ["--noise", "laplace"], "unknown noise 'laplace'"),
        ("snr", ["--repeats", "0"], "--repeats must be at least 1"),
        ("sparsity", ["--images", "1000"], "--images 1000 is larger than the test set (100 images"),
        ("noise-sweep", ["--images", "0"], "--images must be at least 1"),
        ("sparsity", ["--blocks", "9"], "--blocks 9"),
        ("sparsity", ["-l", "only-one"], "1 --label value(s) for 2 checkpoint(s)"),
        ("snr", ["-l", "same", "-l", "same"], "must be distinct"),
        ("snr", ["--device", "tpu"], "device"),
        ("noise-sweep", ["--batch-size", "0"], "--batch-size must be at least 1"),
        ("sparsity", ["--data", "/nonexistent/cifar"], "no such file"),
    ],
)
def test_bad_input(
    command: str, args: list[str], message: str, models: list[Path], tiny_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "new" / "out"
    result = invoke(command, models, tiny_data, *args, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1  # one line
    assert list(tmp_path.iterdir()) == []  # nothing written, not even an empty --out folder


def test_old_subset_name_still_works_but_is_shown_nowhere(models: list[Path], tiny_data: Path, tmp_path: Path) -> None:
    """``--n``, the name --images had before torchrun's parser turned out to reject it, still runs outside
    torchrun (old scripts keep working); no help text or document shows it."""
    args = ["--sigmas", "0", "--repeats", "1"]
    for spelling, run in ((["--n", "10"], "old"), (["--n=10"], "old="), (["--images", "10"], "new")):
        result = invoke("noise-sweep", models[:1], tiny_data, *spelling, *args, "--out", str(tmp_path / run))
        assert result.exit_code == 0, result.output
    csvs = {(tmp_path / run / "noise-sweep.csv").read_bytes() for run in ("old", "old=", "new")}
    assert len(csvs) == 1 and json.loads((tmp_path / "old" / "noise-sweep.json").read_text())["settings"]["n"] == 10
    subset_commands = [name for name, c in commands().items() if takes_subset_option(c.callback)]
    assert {"sparsity", "snr", "noise-sweep", "attack", "ablate"} <= set(subset_commands)
    for command in subset_commands:
        shown = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        assert "--images" in shown and not OLD_NAME.search(shown), command
    root = Path(__file__).resolve().parents[1]
    docs = [p.relative_to(root) for p in (root / "docs").rglob("*.md")]
    for doc in ("README.md", "checkpoints/README.md", "benchmarks/README.md", "checkpoints/expected/manifest.json", *docs):
        assert not OLD_NAME.search((root / doc).read_text(encoding="utf-8")), doc


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x00" * 64])
def test_file_that_is_not_a_checkpoint(content: bytes, models: list[Path], tiny_data: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(content)
    result = invoke("snr", [models[0], fake], tiny_data, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "not a hahrobust checkpoint" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


def test_unwritable_out_fails_before_any_work(models: list[Path], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # No --data at all: the --out check must come first, so the error is about --out.
    result = runner.invoke(app, ["noise-sweep", str(models[0]), "--out", str(blocker / "sub")])
    assert result.exit_code == 2 and "--out" in result.stderr and "cannot write" in result.stderr
    assert blocker.read_text() == "x"


# --------------------------------------------------------------------------------------------- real data


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("sparsity", []),
        ("snr", ["--repeats", "1"]),
        ("noise-sweep", ["--sigmas", "0,0.1", "--repeats", "1"]),
    ],
)
def test_real_cifar(command: str, args: list[str], models: list[Path], shared_cifar: Path, tmp_path: Path) -> None:
    result = invoke(command, models, shared_cifar, "--images", "200", "--batch-size", "100", *args, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / f"{command}.csv")
    doc = json.loads((tmp_path / f"{command}.json").read_text())
    assert doc["settings"]["n"] == 200 and "cifar10-jpeg" in doc["settings"]["data"]
    if command == "noise-sweep":
        assert rows["accuracy"].between(0, 1).all()
    elif command == "snr":  # block 1 sees the same normalized image in every model
        first = rows[rows["block"] == 1]["snr_db"]
        assert first.nunique() == 1 and 0 < first.iloc[0] < 40
    else:
        assert rows["hoyer"].between(0, 1).all() and len(rows) == 8
