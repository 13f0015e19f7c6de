"""Compare a results file with an expected one, row by row: the engine behind ``hahrobust check``.

Any CSV or JSON that :mod:`hahrobust.results` writes can be compared, under any file name. Rows are matched
on their key columns (model, block, σ, ε, norm, attack, n, seed, …: every column that is not a metric and
not a timing); metric columns are compared within a tolerance. Whether a change is a regression depends
on the metric's direction, kept in :data:`METRICS` (data, not code). A JSON file names the command that
wrote it; a CSV holds rows only, so what it is is told by its columns: the two files must have the same
key and metric columns, and, when both name their command, the same command.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from hahrobust.errors import HahrobustError


@dataclass(frozen=True)
class MetricSpec:
    """How a metric is compared: its direction and its default tolerance.

    ``unit="points"``: a fraction in [0, 1] compared in percentage points (the ``--tol`` default applies);
    ``"abs"``: an absolute difference in the metric's own unit; ``"rel"``: a relative difference.
    """

    better: Literal["higher", "lower", "none"]
    unit: Literal["points", "abs", "rel"] = "points"
    tol: float | None = None  # None: the run's default --tol (points metrics only)
    # A fraction of another column's share of the images (success rate = fooled / correctly classified): its
    # tolerance is scaled by 1 / that column's expected value, so one image more or less moves it no more than
    # it moves the accuracies it is derived from (1 of 100 images is 1 point of robust accuracy, and 2.3 points
    # of success rate when 43 are correct).
    per: str | None = None


#: Every metric the toolkit writes. Columns ending in ``_std`` and timings are never compared.
METRICS: dict[str, MetricSpec] = {
    "accuracy": MetricSpec("higher"),
    "clean_acc": MetricSpec("higher"),
    "robust_acc": MetricSpec("higher"),
    "success_rate": MetricSpec("lower", per="clean_acc"),
    "nonzero": MetricSpec("lower"),
    "zero_locations": MetricSpec("none"),
    "hoyer": MetricSpec("lower", "abs", 0.01),
    "snr_db": MetricSpec("higher", "abs", 0.5),
    "mean_distance": MetricSpec("higher", "rel", 0.05),
    "median_distance": MetricSpec("higher", "rel", 0.05),
    "ce": MetricSpec("lower", "abs", 0.02),  # corruption error relative to a reference model (1.0 = 100 %)
    "relative_ce": MetricSpec("lower", "abs", 0.05),
}
#: Columns that describe how long something took: they vary run to run and are never compared.
TIMINGS = {"seconds", "wall_time", "wall_s", "images_per_s", "time_s"}
#: Numeric columns that identify a row (σ, ε, block number, sample size, …). Text columns always do;
#: any other numeric column that is not a metric (a count such as ``unfound``) is reported, not compared.
NUMERIC_KEYS = {
    "block", "sigma", "eps", "n", "seed", "repeats", "channels", "epoch", "width", "hah_blocks", "row", "severity",
}
#: Settings that may differ between the run and the expectation without changing any number.
VOLATILE_SETTINGS = {"out", "device", "batch_size", "data", "checkpoints", "resume", "labels", "label", "progress"}
#: Settings only newer results record: compared when both files have them, skipped when one predates them.
#: ``data_sha256`` (the evaluated images' content hash) is what tells two machines' data apart, whatever the path.
LATER_SETTINGS = {"data_sha256"}


def unshared_later_settings(one: dict[str, Any], other: dict[str, Any]) -> set[str]:
    """The :data:`LATER_SETTINGS` that only one of two settings records has: not comparable, so left out."""
    return {name for name in LATER_SETTINGS if (name in one) != (name in other)}


#: Columns of :attr:`Comparison.table`.
TABLE_COLUMNS = ["key", "metric", "expected", "actual", "delta", "tolerance", "unit", "verdict"]


class Status(IntEnum):
    """Exit status of a check: 0 all within tolerance, 1 a regression, 2 unusable input."""

    OK = 0
    REGRESSION = 1
    UNUSABLE = 2


@dataclass(frozen=True)
class ResultsFile:
    command: str | None  # None for CSV, which carries rows only (and may be saved under any name)
    rows: pd.DataFrame
    settings: dict[str, Any] | None  # None for CSV


@dataclass(frozen=True)
class Comparison:
    table: pd.DataFrame  # one row per key × metric: expected, actual, delta, tolerance, verdict
    status: Status
    problems: list[str]  # why the input is unusable (missing rows, different settings), if it is

    @property
    def verdict(self) -> str:
        """One line: the status, why when unusable, and the verdicts of the values compared (the table's)."""
        counts = self.table["verdict"].value_counts().to_dict() if len(self.table) else {}
        compared = ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items())) or "nothing compared"
        if self.status != Status.UNUSABLE:
            return f"{self.status.name.lower()}: {compared}"
        return f"unusable: {'; '.join(self.problems)}" + (f"; of the values compared: {compared}" if counts else "")


def read_results(path: str | Path) -> ResultsFile:
    """Read a ``<command>.csv`` or ``<command>.json`` written by :func:`hahrobust.results.write`."""
    path = Path(path)
    if not path.is_file():
        raise HahrobustError(f"{path}: results file not found")
    try:
        if path.suffix == ".json":
            document = json.loads(path.read_text(encoding="utf-8"))
            rows = pd.DataFrame(document["rows"], columns=document.get("columns"))
            return ResultsFile(document.get("command"), _numeric(rows), document.get("settings", {}))
        if path.suffix == ".csv":
            return ResultsFile(None, _numeric(pd.read_csv(path)), None)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as exc:
        raise HahrobustError(f"{path}: unreadable results file ({type(exc).__name__})") from None
    raise HahrobustError(f"{path}: results must be a .csv or .json file written by hahrobust")


def _numeric(rows: pd.DataFrame) -> pd.DataFrame:
    """JSON spells non-finite floats as strings: turn metric columns and confidence bounds (``low``/``high``,
    ``X_low``/``X_high``: NaN where an accuracy was not measured) back into numbers, so they are never keys."""
    for column in rows.columns:
        if column in METRICS or column.endswith(("_std", "_low", "_high")) or column in ("low", "high"):
            rows[column] = pd.to_numeric(rows[column].replace({"inf": math.inf, "-inf": -math.inf, "nan": math.nan}))
    return rows


def key_columns(rows: pd.DataFrame) -> list[str]:
    return [
        c for c in rows.columns
        if c not in METRICS and c not in TIMINGS and not c.endswith("_std")
        and (c in NUMERIC_KEYS or not pd.api.types.is_numeric_dtype(rows[c]) or pd.api.types.is_bool_dtype(rows[c]))
    ]


def compare(
    actual: ResultsFile,
    expected: ResultsFile,
    *,
    tol: float = 1.0,
    tol_metric: dict[str, float] | None = None,
    strict: bool = False,
) -> Comparison:
    """Compare ``actual`` with ``expected``: every expected row must be present and every metric within tolerance.

    A metric that got *better* beyond its tolerance is reported as ``improved`` and passes unless
    ``strict``; one that got worse is a ``regression`` (exit 1); a metric without a direction fails
    either way. Missing or extra rows, or different settings, make the comparison unusable (exit 2). An ``n``
    column that only ``actual`` has (results from before accuracies carried their n) is not matched on.
    """
    tol_metric = tol_metric or {}
    unknown = sorted(set(tol_metric) - set(METRICS))
    if unknown:
        raise HahrobustError(f"--tol-metric: unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    if tol < 0 or any(v < 0 for v in tol_metric.values()):
        raise HahrobustError("tolerances must be >= 0")
    if "n" in actual.rows.columns and "n" not in expected.rows.columns:
        # Written before every accuracy carried its n (a key): the images are then told by the settings (JSON).
        actual = ResultsFile(actual.command, actual.rows.drop(columns="n"), actual.settings)
    problems: list[str] = []
    if actual.command is not None and expected.command is not None and actual.command != expected.command:
        problems.append(f"different commands: {actual.command} vs expected {expected.command}")
    if actual.settings is not None and expected.settings is not None:
        differing = _differing_settings(actual.settings, expected.settings)
        if differing:
            problems.append(f"different settings: {', '.join(differing)}")
    keys = key_columns(expected.rows)
    columns, actual_columns = _compared_columns(expected.rows), _compared_columns(actual.rows)
    if columns != actual_columns:
        problems.append("different columns: " + ", ".join(sorted(columns ^ actual_columns)))
    if problems:  # results of another command, settings or shape: no value of one measures what the other did
        return Comparison(_empty_table(), Status.UNUSABLE, problems)

    left, right = _keyed(expected.rows, keys), _keyed(actual.rows, keys)
    missing = left.index.difference(right.index)
    extra = right.index.difference(left.index)
    if len(missing):
        problems.append(f"{len(missing)} expected row(s) missing, e.g. {_describe(keys, missing[0])}")
    if len(extra):
        problems.append(f"{len(extra)} row(s) not in the expectation, e.g. {_describe(keys, extra[0])}")

    records = []
    metrics = [m for m in expected.rows.columns if m in METRICS]
    for key in left.index.intersection(right.index, sort=False):
        for metric in metrics:
            spec = METRICS[metric]
            limit = tol_metric.get(metric, spec.tol if spec.tol is not None else tol)
            want, got = float(left.at[key, metric]), float(right.at[key, metric])
            if spec.per is not None and spec.per in left.columns:
                share = float(left.at[key, spec.per])
                limit = limit / share if share > 0 else limit
            delta, verdict = _judge(spec, want, got, limit, strict)
            records.append({"key": _describe(keys, key), "metric": metric, "expected": want, "actual": got,
                            "delta": delta, "tolerance": limit, "unit": spec.unit, "verdict": verdict})
    table = pd.DataFrame.from_records(records, columns=TABLE_COLUMNS)
    if problems:
        status = Status.UNUSABLE
    elif table["verdict"].isin(["regression", "changed"]).any() or (strict and (table["verdict"] == "improved").any()):
        status = Status.REGRESSION
    else:
        status = Status.OK
    return Comparison(table, status, problems)


def _compared_columns(rows: pd.DataFrame) -> set[str]:
    return {*key_columns(rows), *(c for c in rows.columns if c in METRICS)}


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame(columns=TABLE_COLUMNS)


def _judge(spec: MetricSpec, want: float, got: float, limit: float, strict: bool) -> tuple[float, str]:
    """(signed change in the metric's comparison unit, verdict)."""
    if math.isnan(want) and math.isnan(got) or want == got:  # equal infinities too
        return 0.0, "ok"
    if not (math.isfinite(want) and math.isfinite(got)):
        delta = math.inf if (got > want or math.isnan(want)) else -math.inf
    elif spec.unit == "points":
        delta = 100.0 * (got - want)
    elif spec.unit == "rel":
        delta = (got - want) / abs(want) if want else math.inf * (1 if got > want else -1)
    else:
        delta = got - want
    if math.isnan(got) or math.isnan(want):
        return math.nan, "changed"
    if abs(delta) <= limit + 1e-9:  # a change of exactly the tolerance passes, whatever the last float digit
        return delta, "ok"
    if spec.better == "none":
        return delta, "changed"
    improved = delta > 0 if spec.better == "higher" else delta < 0
    return delta, ("improved" if improved else "regression")


def _keyed(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    # Float keys (σ, ε) are rounded so 0.1 written by two runs matches exactly.
    frame = rows.copy()
    for column in keys:
        if pd.api.types.is_float_dtype(frame[column]):
            frame[column] = frame[column].round(9)
        elif frame[column].dtype == object:  # mixed keys (severity 1…5 and "mean"): JSON keeps ints, CSV text
            frame[column] = frame[column].map(str)
    frame = frame.set_index(keys) if keys else frame.set_index(pd.RangeIndex(len(frame), name="row"))
    if frame.index.has_duplicates:
        raise HahrobustError("results have duplicate rows for the same key; cannot compare them row by row")
    return frame


def _describe(keys: list[str], key: Any) -> str:
    values = key if isinstance(key, tuple) else (key,)
    return " ".join(f"{k}={v}" for k, v in zip(keys or ["row"], values))


def _differing_settings(actual: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    names = (set(actual) | set(expected)) - VOLATILE_SETTINGS
    names -= unshared_later_settings(actual, expected)
    return sorted(name for name in names if actual.get(name) != expected.get(name))
