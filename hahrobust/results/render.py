"""Rendering a result as text: the pivoted table (:func:`display_frame`), Markdown (:func:`markdown`) and the
terminal's rich table (:func:`show`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from hahrobust.provenance import sha256_file

from hahrobust.results.model import Layout, Result, _is_file


def format_value(value: Any, template: str = "{:.4g}") -> str:
    """One cell: ``template.format(value)``, with ∞/−∞ for infinities and — for NaN or missing."""
    if value is None:
        return "—"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return template.format(value)
    return str(value)


def _ordered(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Turn ``columns`` into categoricals in order of first appearance, so pivots keep the rows' order."""
    frame = frame.copy()
    for column in columns:
        frame[column] = pd.Categorical(frame[column], categories=pd.unique(frame[column]), ordered=True)
    return frame


def display_frame(result: Result) -> pd.DataFrame:
    """The table shown on the terminal and in Markdown: ``rows`` pivoted by the layout, cells as strings."""
    layout, rows = result.layout, result.rows
    cells = pd.DataFrame(index=rows.index)
    for value in layout.values:
        template = layout.formats.get(value, "{:.4g}")
        text = rows[value].map(lambda v, t=template: format_value(v, t))
        if value in layout.errors:
            std = rows[layout.errors[value]].map(lambda v, t=template: format_value(v, t))
            # No ± for a value without spread (a single draw or σ = 0): it would only read "± 0.00%".
            spread = rows[layout.errors[value]].fillna(0) != 0
            text = text.where(~spread, text + " ± " + std)
        if value in layout.intervals and set(layout.intervals[value]) <= set(rows.columns):
            low, high = (rows[c].map(lambda v, t=template: format_value(v, t)) for c in layout.intervals[value])
            known = rows[layout.intervals[value][0]].notna()
            text = text.where(~known, text + " [" + low + ", " + high + "]")
        cells[value] = text
    keys = [*layout.index, *layout.columns]
    shown = pd.DataFrame({k: _key_text(layout, k, rows[k]) for k in keys}, index=rows.index)
    frame = _ordered(pd.concat([shown, cells], axis=1), keys)
    if not layout.columns:
        table = frame.set_index(list(layout.index))[list(layout.values)]
        table.columns = [layout.label(v) for v in layout.values]
    else:
        table = frame.set_index(keys)[list(layout.values)].unstack(list(layout.columns))
        # Columns: (value, *column key), ordered value-major then by first appearance of each key.
        table = table.reindex(columns=_column_order(frame, layout))
        table.columns = [_header(layout, key) for key in table.columns]
        table = table.dropna(how="all").fillna("—")
        if layout.drop_empty_columns:
            table = table.loc[:, (table != "—").any(axis=0)]
    table.index = table.index.set_names([layout.label(c) for c in layout.index])
    return table.reset_index().astype(str)


def _key_text(layout: Layout, column: str, values: pd.Series) -> pd.Series:
    """Index/column keys as shown: through ``layout.formats`` when it names the column, else ``str``."""
    if column in layout.formats:
        return values.map(lambda v: format_value(v, layout.formats[column]))
    return values.astype(str)


def _column_order(frame: pd.DataFrame, layout: Layout) -> list[tuple[Any, ...]]:
    keys = list(dict.fromkeys(map(tuple, frame[list(layout.columns)].astype(object).itertuples(index=False))))
    return [(value, *key) for value in layout.values for key in keys]


def _header(layout: Layout, key: tuple[Any, ...]) -> str:
    value, *parts = key
    template = layout.header.get(value) if isinstance(layout.header, Mapping) else layout.header
    if template is not None:
        return template.format(value=layout.label(value), **dict(zip(layout.columns, parts)))
    shown = [str(p) for p in parts]
    return " ".join([layout.label(value), *shown] if len(layout.values) > 1 else shown)


def markdown(result: Result) -> str:
    """The Markdown report: title, pivoted table, notes, settings and checkpoints (deterministic)."""
    layout = result.layout
    parts = [f"# {layout.title}", display_frame(result).to_markdown(index=False, disable_numparse=True)]
    if result.all_notes:
        parts.append("\n".join(f"- {note}" for note in result.all_notes))
    flat = setting_rows(result.settings)
    settings = pd.DataFrame({"setting": [k for k, _ in flat], "value": [v for _, v in flat]})
    parts += ["## Settings", settings.to_markdown(index=False, disable_numparse=True)]
    sources = list(result.checkpoints.values())
    checkpoints = pd.DataFrame(
        {
            "model": list(result.checkpoints),
            "checkpoint": [Path(p).name if _is_file(p) else p.display for p in sources],
            "sha256": [(sha256_file(p) if _is_file(p) else p.sha256)[:16] for p in sources],
        }
    )
    if not all(_is_file(p) for p in sources):  # model specs: their code is part of what produced the numbers
        checkpoints["factory source, sha256"] = ["" if _is_file(p) else p.factory_display for p in sources]
    parts += ["## Checkpoints", checkpoints.to_markdown(index=False, disable_numparse=True)]
    return "\n\n".join(parts) + "\n"


def setting_rows(settings: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """One (dotted name, value) per setting: nested mappings are opened (``config.pgd.steps``), so a settings
    table is two narrow columns instead of one configuration in one cell; lists read as comma-separated."""
    rows: list[tuple[str, str]] = []
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows += setting_rows(value, f"{name}.")
        else:
            rows.append((name, _setting_text(value)))
    return rows


def _setting_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_setting_text(v) for v in value)
    return str(value)




#: A terminal cell longer than this becomes a numbered note under the table: in an 80-column terminal or a CI log
#: a long reason column otherwise wraps into one word per line, dozens of lines tall.
LONG_CELL = 36


def narrow(frame: pd.DataFrame, keep: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """``frame`` with every cell longer than :data:`LONG_CELL` (outside the first ``keep`` columns) replaced by a
    note marker ``[n]``, and the notes, in order (a text that repeats shares its number)."""
    notes: dict[str, int] = {}
    out = frame.copy()
    for column in frame.columns[keep:]:
        cells = out[column].astype(str)
        if cells.str.len().max() > LONG_CELL:
            out[column] = [f"[{notes.setdefault(c, len(notes) + 1)}]" if len(c) > LONG_CELL else c for c in cells]
    return out, [f"[{n}] {text}" for text, n in notes.items()]


def show(result: Result, console: Console) -> None:
    """Print the pivoted table as a rich table, long cells as numbered notes under it, then the result's notes."""
    frame, long_cells = narrow(display_frame(result), keep=len(result.layout.index))
    table = Table(title=result.layout.title)
    for i, column in enumerate(frame.columns):
        table.add_column(column, justify="left" if i < len(result.layout.index) else "right")
    for row in frame.itertuples(index=False):
        table.add_row(*row)
    console.print(table)
    for note in long_cells:
        console.print(note, markup=False, highlight=False)
    for note in result.all_notes:
        console.print(f"[dim]• {note}[/dim]", highlight=False)
