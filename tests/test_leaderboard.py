"""hahrobust leaderboard on tiny models, end to end: every model × measure with its interval and paired test, Holm over
the table, ranked by worst case; a killed run resumed with --jobs 2 writes the same files; ``check`` holds its numbers;
bad input is one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import train_tiny_vgg11
from hahrobust.cli import app
from hahrobust.checkpoint import checkpoint_metadata, save_checkpoint
from hahrobust.data import load_cifar10
from hahrobust.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_REGRESSION, HahrobustError
from hahrobust.evaluate import open_models
from hahrobust.leaderboard import run_leaderboard
from hahrobust.leaderboard.table import MEASURES, rows
from hahrobust.models import build, resolve_config
from hahrobust.report import resolve

pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest.single_thread explains why

TINY = dict(images=20, attack_images=4, steps=3, restarts=1, repeats=1)
LABELS = ["HaH", "LWTA", "base"]


@pytest.fixture(scope="module")
def trio(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three tiny checkpoints: a trained HaH and baseline VGG-11, an untrained LWTA VGG-16 (a third kind of layer)."""
    folder = tmp_path_factory.mktemp("leaderboard-models")
    train = load_cifar10(tiny_data, "train", cache_dir=folder / "cache")
    paths = []
    for name, model in (("hah-vgg11", train_tiny_vgg11(train, epochs=4, hah=True)),
                        ("lwta-vgg16", build("lwta-vgg16", width=0.125)),
                        ("vgg11", train_tiny_vgg11(train, epochs=4))):
        family, _ = resolve_config(name, width=0.125)
        path = folder / f"{name}.safetensors"
        save_checkpoint(path, model.eval(), checkpoint_metadata(model, name, family, seed=0))
        paths.append(path)
    return paths


def _board(trio: list[Path], tiny_data: Path, out: Path, **kwargs):
    models = open_models(list(trio), labels=LABELS)
    return run_leaderboard(models, load_cifar10(tiny_data, "test"), resolve("quick", **TINY), baseline="base",
                           out=out, seed=0, batch_size=8, **kwargs)


@pytest.fixture(scope="module")
def whole(trio, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("leaderboard")
    return _board(trio, tiny_data, out), out


def test_every_model_and_measure_with_interval_paired_test_and_holm(whole) -> None:
    board, out = whole
    rows = board.rows
    measures = {m.key for m in MEASURES} - {"corruptions"}  # none asked for
    assert set(zip(rows["model"], rows["measure"])) == {(label, m) for label in LABELS for m in measures}
    assert ((rows["low"] <= rows["accuracy"]) & (rows["accuracy"] <= rows["high"])).all()
    assert rows.loc[rows["model"] == "base", "p_value"].isna().all()  # the baseline is not tested against itself
    others = rows[rows["model"] != "base"]
    assert others["p_value"].notna().all() and (others["p_holm"] >= others["p_value"]).all()
    assert set(others["resolved"]) <= {"higher", "lower", "not resolved"}
    worst = rows[rows["measure"].str.startswith("worst")]
    assert (worst["verdict"] != "").all()
    # the worst case is never above AutoAttack's robust accuracy on the same images (the audit runs more attacks)
    wide = rows.pivot(index="model", columns="measure", values="accuracy")
    assert (wide["worst-linf"] <= wide["autoattack-linf"] + 1e-9).all()
    ranks = board.ranking.set_index("model")["rank"].reindex(wide.index)
    order = sorted(wide.index, key=lambda m: (-wide.loc[m, "worst-linf"], -wide.loc[m, "worst-l2"]))
    assert list(ranks[order]) == sorted(ranks)  # ranked by worst case
    for name in ("leaderboard.md", "leaderboard.html", "leaderboard.json", "leaderboard.csv", "leaderboard.png"):
        assert (out / name).stat().st_size > 0
    document = json.loads((out / "leaderboard.json").read_text())
    assert document["command"] == "leaderboard" and document["settings"]["baseline"] == "base"
    assert "AutoAttack rank" in (out / "leaderboard.md").read_text()


def test_a_killed_run_leaves_no_board_and_resumes_only_under_resume(trio, tiny_data: Path, tmp_path: Path) -> None:
    def kill(name: str) -> None:
        if name == "HaH noise":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _board(trio, tiny_data, tmp_path, after_step=kill)
    assert not (tmp_path / "leaderboard.json").exists()
    assert (tmp_path / "models" / "HaH" / "steps" / "noise.json").exists()  # the finished steps are kept
    with pytest.raises(HahrobustError, match="--resume"):
        _board(trio, tiny_data, tmp_path)
    with pytest.raises(HahrobustError, match="other settings"):
        models = open_models(list(trio), labels=LABELS)
        run_leaderboard(models, load_cifar10(tiny_data, "test"), resolve("quick", **TINY), baseline="base",
                        out=tmp_path, seed=1, batch_size=8, resume=True)


def test_resumed_with_two_jobs_it_writes_the_same_files(whole, trio, tiny_data: Path, tmp_path: Path) -> None:
    """The last model's two longest steps lost (as a kill during them leaves it), the rest resumed: recomputed in two
    worker processes, the files are those of the uninterrupted one-process run."""
    _, reference = whole
    shutil.copytree(reference / "models", tmp_path / "models")
    for step in ("audit", "certify"):
        for suffix in (".json", ".npz"):
            (tmp_path / "models" / "base" / "steps" / f"{step}{suffix}").unlink()
    shutil.rmtree(tmp_path / "models" / "base" / "journal")
    resumed = _board(trio, tiny_data, tmp_path, resume=True, jobs=2)
    assert set(resumed.seconds) == {"base audit", "base certify"}  # the finished steps were read back
    for name in ("leaderboard.md", "leaderboard.json", "leaderboard.csv", "leaderboard.png"):
        assert (tmp_path / name).read_bytes() == (reference / name).read_bytes(), name


def test_check_holds_the_leaderboards_numbers(whole, tmp_path: Path) -> None:
    _, out = whole
    runner = CliRunner()
    same = runner.invoke(app, ["check", str(out / "leaderboard.json"), "--expected", str(out / "leaderboard.json")])
    assert same.exit_code == EXIT_OK, same.output
    expected = json.loads((out / "leaderboard.json").read_text())
    for row in expected["rows"]:
        if row["model"] == "HaH" and row["measure"] == "clean":
            row["accuracy"] += 0.2  # the expectation was 20 points better: the run regressed
    path = tmp_path / "expected.json"
    path.write_text(json.dumps(expected))
    worse = runner.invoke(app, ["check", str(out / "leaderboard.json"), "--expected", str(path)])
    assert worse.exit_code == EXIT_REGRESSION, worse.output


@pytest.mark.parametrize(("arguments", "message"), [
    (["--baseline", "nobody"], "none of the models"),
    (["--baseline", "base", "--jobs", "0"], "--jobs"),
    (["--baseline", "base", "--budget", "huge"], "budget"),
])
def test_bad_input_is_one_line(trio, tiny_data: Path, tmp_path: Path, arguments: list[str], message: str) -> None:
    labels = [flag for label in LABELS for flag in ("-l", label)]
    result = CliRunner().invoke(app, ["leaderboard", *map(str, trio), *labels, "--data", str(tiny_data), "--out",
                                      str(tmp_path / "lb"), "--images", "20", "--attack-images", "4", *arguments])
    assert result.exit_code == EXIT_BAD_INPUT
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "lb" / "leaderboard.json").exists()


def test_one_model_is_not_a_leaderboard(trio, tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(HahrobustError, match="at least two"):
        run_leaderboard(open_models([trio[0]], labels=["HaH"]), load_cifar10(tiny_data, "test"),
                        resolve("quick", **TINY), baseline="HaH", out=tmp_path)


def test_rows_are_tidy_for_check(whole) -> None:
    board, out = whole
    csv = pd.read_csv(out / "leaderboard.csv")
    assert list(csv.columns)[:3] == ["model", "measure", "verdict"]
    assert np.allclose(csv["accuracy"], board.rows["accuracy"])


def test_the_worst_case_counts_what_autoattack_broke() -> None:
    """An image AutoAttack broke and no audit member did is not robust in the worst case (the audit does not run
    AutoAttack): the worst case is never above AutoAttack's figure, for the model and for the baseline it is tested
    against."""
    audit_robust = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    aa_robust = np.array([1, 0, 1, 1, 0, 0, 0, 0], dtype=bool)  # broke image 1, which the audit left

    def steps(worst: np.ndarray, aa: np.ndarray) -> dict:
        return {"audit": {"arrays": {"linf.worst": worst, "l2.worst": worst}, "facts": {"word": "no sign of masking"}},
                "autoattack-linf": {"arrays": {"robust": aa}, "facts": {}}}

    table = rows({"A": steps(audit_robust, aa_robust), "B": steps(aa_robust, aa_robust)}, "B", seed=0, resamples=100)
    worst = table.set_index(["model", "measure"])["correct"]
    assert worst[("A", "worst-linf")] == 2 and worst[("A", "autoattack-linf")] == 3  # images 0 and 2
    assert worst[("A", "worst-l2")] == 3  # no AutoAttack ℓ2 step here: the audit's alone
    assert worst[("B", "worst-linf")] == 3
