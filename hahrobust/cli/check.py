"""hahrobust check: fail CI when robustness numbers regress against an expected results file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hahrobust.cli._common import console, error_console, handle_errors
from hahrobust.errors import HahrobustError

NAME = "check"

STYLES = {"ok": "green", "improved": "cyan", "regression": "bold red", "changed": "bold red"}


def parse_tolerances(items: list[str]) -> dict[str, float]:
    tolerances = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            tolerances[name.strip()] = float(value)
        except ValueError:
            raise HahrobustError(f"--tol-metric expects METRIC=VALUE, got {item!r}") from None
        if not sep:
            raise HahrobustError(f"--tol-metric expects METRIC=VALUE, got {item!r}")
    return tolerances


@handle_errors
def command(
    results: Path = typer.Argument(..., help="Results to check (<command>.csv or .json from --out)."),
    expected: Path = typer.Option(..., "--expected", "-e", help="The expected results file."),
    tol: float = typer.Option(1.0, help="Tolerance for accuracy-like metrics, in percentage points."),
    tol_metric: list[str] = typer.Option([], "--tol-metric", help="Per-metric tolerance, METRIC=VALUE (repeatable)."),
    strict: bool = typer.Option(False, help="Also fail when a metric improves beyond tolerance."),
    show_all: bool = typer.Option(False, "--all", help="List every compared value, not only those outside tolerance."),
) -> None:
    from hahrobust.regression import Status, compare, read_results  # pandas: only when the command runs (fast --help)

    comparison = compare(read_results(results), read_results(expected), tol=tol,
                         tol_metric=parse_tolerances(tol_metric), strict=strict)
    rows = comparison.table if show_all else comparison.table[comparison.table["verdict"] != "ok"]
    if len(rows):
        table = Table(title=f"{results} vs {expected}")
        for column in ("key", "metric", "expected", "actual", "delta", "tolerance", "verdict"):
            table.add_column(column, overflow="fold")
        for row in rows.itertuples():
            table.add_row(row.key, row.metric, f"{row.expected:.6g}", f"{row.actual:.6g}",
                          f"{row.delta:+.4g} {'pts' if row.unit == 'points' else ('×' if row.unit == 'rel' else '')}".rstrip(),
                          f"{row.tolerance:g}", f"[{STYLES[row.verdict]}]{row.verdict}[/]")
        console.print(table)
    if comparison.status == Status.UNUSABLE:
        error_console.print(f"error: {comparison.verdict}", markup=False)
    else:
        console.print(comparison.verdict, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(int(comparison.status))
