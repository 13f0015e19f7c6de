"""`hahrobust check`: exit 0 within tolerance, 1 on a regression, 2 on unusable input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hahrobust.cli import app
from hahrobust.regression import ResultsFile, Status, compare

runner = CliRunner()

EXPECTED = pd.DataFrame({
    "model": ["hah", "hah", "base", "base"],
    "sigma": [0.0, 0.1, 0.0, 0.1],
    "accuracy": [0.80, 0.60, 0.90, 0.30],
    "accuracy_std": [0.0, 0.01, 0.0, 0.02],
})


def frame(*changes: tuple[str, float, float]) -> pd.DataFrame:
    """EXPECTED with (model, sigma, new accuracy) changes."""
    rows = EXPECTED.copy()
    for model, sigma, value in changes:
        rows.loc[(rows["model"] == model) & (rows["sigma"] == sigma), "accuracy"] = value
    return rows


@pytest.mark.parametrize(
    ("actual", "kwargs", "status", "verdicts"),
    [
        (frame(), {}, Status.OK, {"ok": 4}),
        (frame(("hah", 0.1, 0.605)), {}, Status.OK, {"ok": 4}),  # +0.5 points, within 1.0
        (frame(("hah", 0.1, 0.585)), {}, Status.REGRESSION, {"ok": 3, "regression": 1}),  # −1.5 points
        (frame(("hah", 0.1, 0.585)), {"tol": 2.0}, Status.OK, {"ok": 4}),
        (frame(("hah", 0.1, 0.585)), {"tol_metric": {"accuracy": 2.0}}, Status.OK, {"ok": 4}),
        (frame(("hah", 0.1, 0.65)), {}, Status.OK, {"ok": 3, "improved": 1}),  # better: reported, passes
        (frame(("hah", 0.1, 0.65)), {"strict": True}, Status.REGRESSION, {"ok": 3, "improved": 1}),
    ],
)
def test_compare_table(actual: pd.DataFrame, kwargs: dict, status: Status, verdicts: dict) -> None:
    comparison = compare(ResultsFile("noise-sweep", actual, None), ResultsFile("noise-sweep", EXPECTED, None), **kwargs)
    assert comparison.status == status
    assert comparison.table["verdict"].value_counts().to_dict() == verdicts


def test_success_rate_tolerance_is_one_point_of_the_images_not_of_the_correct_ones() -> None:
    """43 of 100 correct: one more image fooled moves robust accuracy 1 point and success rate 2.3 points; both
    are within the default 1-point tolerance; two more images are not."""
    rows = lambda robust: pd.DataFrame({"model": ["m"], "eps": [0.01], "clean_acc": [0.43], "robust_acc": [robust],  # noqa: E731
                                        "success_rate": [(0.43 - robust) / 0.43]})
    one = compare(ResultsFile("attack", rows(0.07), None), ResultsFile("attack", rows(0.08), None))
    assert one.table["verdict"].tolist() == ["ok", "ok", "ok"]
    two = compare(ResultsFile("attack", rows(0.06), None), ResultsFile("attack", rows(0.08), None))
    assert two.table.set_index("metric")["verdict"].to_dict() == {"clean_acc": "ok", "robust_acc": "regression",
                                                                   "success_rate": "regression"}


@pytest.mark.parametrize(
    ("metric", "expected", "actual", "verdict"),
    [
        ("hoyer", 0.40, 0.405, "ok"),  # 0.01 absolute default
        ("hoyer", 0.40, 0.45, "regression"),  # less sparse
        ("hoyer", 0.40, 0.30, "improved"),
        ("snr_db", 10.0, 9.0, "regression"),  # 0.5 dB default
        ("snr_db", math.inf, math.inf, "ok"),  # a noise-free pass stays infinite
        ("snr_db", math.inf, 30.0, "regression"),
        ("success_rate", 0.5, 0.6, "regression"),  # attacks succeed more often
        ("mean_distance", 1.0, 1.04, "ok"),  # 5 % relative default
        ("mean_distance", 1.0, 0.9, "regression"),
        ("zero_locations", 0.1, 0.2, "changed"),  # no direction: any change beyond tolerance fails
    ],
)
def test_metric_directions_and_units(metric: str, expected: float, actual: float, verdict: str) -> None:
    rows = lambda v: pd.DataFrame({"model": ["m"], "block": [1], metric: [v]})  # noqa: E731
    comparison = compare(ResultsFile("x", rows(actual), None), ResultsFile("x", rows(expected), None))
    assert comparison.table["verdict"].tolist() == [verdict]


@pytest.mark.parametrize(
    ("actual", "problem"),
    [
        (EXPECTED.iloc[:3], "missing"),
        (pd.concat([EXPECTED, EXPECTED.iloc[:1].assign(sigma=0.2)]), "not in the expectation"),
        (EXPECTED.assign(extra_key="x"), "different columns"),
        (EXPECTED.assign(sigma=EXPECTED["sigma"] + 0.05), "missing"),
        (EXPECTED.drop(columns="accuracy"), "different columns: accuracy"),  # a metric that is not there is no pass
    ],
)
def test_unusable_comparisons(actual: pd.DataFrame, problem: str) -> None:
    comparison = compare(ResultsFile("noise-sweep", actual, None), ResultsFile("noise-sweep", EXPECTED, None))
    assert comparison.status == Status.UNUSABLE
    assert any(problem in p for p in comparison.problems)


def _json(path: Path, rows: pd.DataFrame, settings: dict, command: str = "noise-sweep") -> Path:
    document = {"command": command, "settings": settings, "columns": list(rows.columns),
                "rows": json.loads(rows.to_json(orient="records"))}
    path.write_text(json.dumps(document))
    return path


def test_numeric_columns_that_are_not_metrics_do_not_become_keys() -> None:
    expected = EXPECTED.assign(unfound=[0, 1, 2, 3])
    comparison = compare(ResultsFile("x", expected.assign(unfound=[3, 2, 1, 0]), None), ResultsFile("x", expected, None))
    assert comparison.status == Status.OK



def test_counts_and_intervals_added_since_an_expectation_leave_it_usable() -> None:
    """Results whose accuracies carry n and a Wilson interval (issue 32) check against an expected file written
    before them: the bounds are not compared and an n the expectation lacks is not matched on; one it has is."""
    newer = EXPECTED.assign(n=100, accuracy_low=EXPECTED["accuracy"] - 0.1, accuracy_high=EXPECTED["accuracy"] + 0.1)
    comparison = compare(ResultsFile("noise-sweep", newer, None), ResultsFile("noise-sweep", EXPECTED, None))
    assert comparison.status == Status.OK and comparison.table["verdict"].value_counts().to_dict() == {"ok": 4}
    older = compare(ResultsFile("noise-sweep", EXPECTED, None), ResultsFile("noise-sweep", newer, None))
    assert older.status == Status.UNUSABLE and older.problems == ["different columns: n"]
    other_n = compare(ResultsFile("noise-sweep", newer.assign(n=50), None), ResultsFile("noise-sweep", newer, None))
    assert other_n.status == Status.UNUSABLE


def test_an_interval_not_measured_is_a_number_in_json_not_a_key(tmp_path: Path) -> None:
    """JSON spells an unmeasured accuracy's bounds "nan": they still read as numbers, so bounds that differ between
    two runs never make their rows differ."""
    def written(name: str, low: float) -> Path:
        rows = EXPECTED.assign(n=100, accuracy_low=[low, "nan", 0.8, 0.2], accuracy_high=[0.9, "nan", 0.95, 0.4])
        document = {"command": "noise-sweep", "settings": {"seed": 0}, "columns": list(rows.columns),
                    "rows": rows.to_dict(orient="records")}
        (tmp_path / name).write_text(json.dumps(document))
        return tmp_path / name

    result = runner.invoke(app, ["check", str(written("a.json", 0.7)), "-e", str(written("b.json", 0.71))])
    assert result.exit_code == 0, result.output

def test_cli_exit_codes(tmp_path: Path) -> None:
    expected = tmp_path / "expected.csv"
    EXPECTED.to_csv(expected, index=False)
    same, worse = tmp_path / "noise-sweep.csv", tmp_path / "worse" / "noise-sweep.csv"
    EXPECTED.to_csv(same, index=False)
    worse.parent.mkdir()
    frame(("base", 0.1, 0.2)).to_csv(worse, index=False)
    expected_named = tmp_path / "exp" / "noise-sweep.csv"
    expected_named.parent.mkdir()
    EXPECTED.to_csv(expected_named, index=False)

    ok = runner.invoke(app, ["check", str(same), "--expected", str(expected_named)])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["check", str(worse), "--expected", str(expected_named)])
    assert bad.exit_code == 1 and "regression" in bad.output and "-10" in bad.output
    loose = runner.invoke(app, ["check", str(worse), "--expected", str(expected_named), "--tol-metric", "accuracy=15"])
    assert loose.exit_code == 0


def test_cli_csv_expectation_under_a_name_of_ones_own(tmp_path: Path) -> None:
    """A CSV holds no command name and its file name is the user's choice: its columns say what it holds."""
    expected = tmp_path / "expected-hah.csv"
    EXPECTED.to_csv(expected, index=False)
    actual = tmp_path / "out" / "noise-sweep.csv"
    actual.parent.mkdir()
    frame(("hah", 0.1, 0.5), ("base", 0.1, 0.2)).to_csv(actual, index=False)
    result = runner.invoke(app, ["check", str(actual), "--expected", str(expected)])
    assert result.exit_code == 1, result.output
    assert result.stderr == "" and result.stdout.splitlines()[-1] == "regression: 2 ok, 2 regression"

    snr = tmp_path / "out" / "snr.csv"  # another command's results: other columns
    EXPECTED.rename(columns={"accuracy": "snr_db", "accuracy_std": "snr_db_std"}).assign(block=1).to_csv(snr, index=False)
    result = runner.invoke(app, ["check", str(snr), "--expected", str(expected)])
    assert result.exit_code == 2 and "regression" not in result.output
    assert result.stderr == "error: unusable: different columns: accuracy, block, snr_db\n"


def test_cli_verdict_agrees_with_the_table(tmp_path: Path) -> None:
    """Rows missing make the input unusable; the values that could be compared are still shown, and the
    verdict line counts what the table shows."""
    expected = tmp_path / "expected.csv"
    EXPECTED.to_csv(expected, index=False)
    actual = tmp_path / "noise-sweep.csv"
    frame(("base", 0.1, 0.2)).iloc[1:].to_csv(actual, index=False)  # hah σ=0 missing, base σ=0.1 regressed
    result = runner.invoke(app, ["check", str(actual), "--expected", str(expected)])
    assert result.exit_code == 2
    assert result.stdout.count("regression") == 1  # the table's one row
    assert result.stderr == ("error: unusable: 1 expected row(s) missing, e.g. model=hah sigma=0.0; "
                             "of the values compared: 2 ok, 1 regression\n")


def test_cli_json_of_another_command(tmp_path: Path) -> None:
    expected = _json(tmp_path / "expected.json", EXPECTED, {"seed": 0}, command="noise-sweep")
    other = _json(tmp_path / "other.json", frame(("hah", 0.1, 0.1)), {"seed": 0}, command="attack-table1")
    result = runner.invoke(app, ["check", str(other), "-e", str(expected)])
    assert result.exit_code == 2 and "regression" not in result.output  # another command's values are not judged
    assert result.stderr == "error: unusable: different commands: attack-table1 vs expected noise-sweep\n"


def test_cli_settings_must_match_but_volatile_ones_may_differ(tmp_path: Path) -> None:
    expected = _json(tmp_path / "expected.json", EXPECTED, {"seed": 0, "n": 100, "device": "cuda", "batch_size": 500})
    same = _json(tmp_path / "same.json", EXPECTED, {"seed": 0, "n": 100, "device": "cpu", "batch_size": 64})
    other_seed = _json(tmp_path / "other.json", EXPECTED, {"seed": 1, "n": 100})
    assert runner.invoke(app, ["check", str(same), "-e", str(expected)]).exit_code == 0
    result = runner.invoke(app, ["check", str(other_seed), "-e", str(expected)])
    assert result.exit_code == 2 and "seed" in result.output


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda p: p / "none.csv", [], "not found"),
        (lambda p: (p / "r.txt").write_text("x") and p / "r.txt", [], ".csv or .json"),
        (lambda p: (p / "r.json").write_text("{not json") and p / "r.json", [], "unreadable"),
        (lambda p: EXPECTED.to_csv(p / "r.csv", index=False) or p / "r.csv", ["--tol-metric", "speed=1"], "unknown metric"),
        (lambda p: EXPECTED.to_csv(p / "r.csv", index=False) or p / "r.csv", ["--tol-metric", "accuracy"], "METRIC=VALUE"),
    ],
)
def test_cli_unusable_input(tmp_path: Path, make, args: list[str], message: str) -> None:
    expected = tmp_path / "expected.csv"
    EXPECTED.to_csv(expected, index=False)
    result = runner.invoke(app, ["check", str(make(tmp_path)), "--expected", str(expected), *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_check_real_noise_sweep_output(make_checkpoint, tiny_data: Path, tmp_path: Path) -> None:
    """End to end: a results file written by the toolkit passes against itself and fails against a better one."""
    checkpoint = make_checkpoint("hah-vgg11")
    out = tmp_path / "run"
    args = ["noise-sweep", str(checkpoint), "--data", str(tiny_data), "--sigmas", "0,0.1", "--repeats", "2",
            "--out", str(out), "--device", "cpu"]
    assert runner.invoke(app, args).exit_code == 0
    produced = out / "noise-sweep.json"
    assert runner.invoke(app, ["check", str(produced), "-e", str(produced)]).exit_code == 0
    document = json.loads(produced.read_text())
    for row in document["rows"]:
        row["accuracy"] = min(1.0, row["accuracy"] + 0.2)
    better = tmp_path / "better.json"
    better.write_text(json.dumps(document))
    result = runner.invoke(app, ["check", str(produced), "-e", str(better)])
    assert result.exit_code == 1 and "regression" in result.output


def test_the_data_hash_is_compared_when_both_results_record_it() -> None:
    """data_sha256 (the images' content hash) tells two machines' data apart whatever the path; an expectation
    written before results recorded it still compares (its settings cannot say)."""
    older = ResultsFile("noise-sweep", EXPECTED, {"seed": 0, "data": "/a/cifar.tar.gz"})
    newer = ResultsFile("noise-sweep", EXPECTED, {"seed": 0, "data": "../b/cifar.tar.gz", "data_sha256": "ab"})
    assert compare(newer, older).status is Status.OK
    other = ResultsFile("noise-sweep", EXPECTED, {"seed": 0, "data": "/a/cifar.tar.gz", "data_sha256": "cd"})
    unusable = compare(newer, other)
    assert unusable.status is Status.UNUSABLE and "data_sha256" in unusable.problems[0]
