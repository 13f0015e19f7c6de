"""One way to emit a command's result: a rich table on the terminal, and CSV, Markdown, JSON and PNG files.

Every evaluation command builds a :class:`Result` (tidy rows plus how to lay them out) and hands it to
:func:`show` and, with ``--out DIR``, to :func:`write`::

    result = Result(
        command="noise-sweep",
        rows=df,                                  # one row per model × σ; accuracies as fractions in [0, 1]
        settings={"sigmas": [0.0, 0.1], "seed": 0, ...},
        checkpoints={"HaH": Path("hah.safetensors"), "base": Path("base.safetensors")},
        layout=Layout(
            title="Accuracy under Gaussian noise (Fig. 4)",
            index=("sigma",), columns=("model",), values=("accuracy",),
            formats={"accuracy": "{:.2%}"}, errors={"accuracy": "accuracy_std"},
            labels={"sigma": "σ"},
            figure=Figure(kind="line", x="sigma", y=("accuracy",), err={"accuracy": "accuracy_std"}),
        ),
    )
    show(result, console)
    paths = write(result, out_dir)   # <out>/noise-sweep.csv, .md, .json, .png

Files:

- ``<command>.csv``: ``rows`` as they are (tidy, all columns, ``inf``/``nan`` spelled so), deterministic.
- ``<command>.md``: the title, the rows pivoted by ``layout`` (``index`` down, ``columns`` × ``values``
  across, numbers formatted by ``layout.formats``, ±std from ``layout.errors``, ∞ for infinities), the notes,
  a settings table and a checkpoints table (label, file name, SHA-256; for a model spec the spec and its
  weights file, the weights' SHA-256 and the factory's source file and SHA-256). Rendered by pandas ``to_markdown``;
  nothing in it depends on the clock, so the same command twice gives the same file.
- ``<command>.json``: command, title, start time, settings, seed, checkpoints (path + SHA-256; for a model
  spec :meth:`hahrobust.models.foreign.ForeignSource.provenance`), package
  versions, git commit, notes, columns and rows (records). Non-finite floats are written as the strings
  ``"inf"``, ``"-inf"`` and ``"nan"`` so the file is strict JSON.
- ``<command>.png``: the figure described by ``layout.figure`` (matplotlib's Agg canvas, no pyplot, so no
  global backend state changes): one panel per value column or per facet value, models side by side
  (grouped bars) or as lines, labelled axes, legend. Non-finite values are left out of the plot.

All files are written through :func:`hahrobust.provenance.atomic_path` and replaced together at the end, so a
failure leaves none of them half-written. Call :func:`check_out_dir` before computing anything so an
unwritable ``--out`` fails fast; :func:`write` creates the folder when there is something to write.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Union

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from hahrobust.errors import HahrobustError
from hahrobust.provenance import atomic_path, git_commit, sha256_file, versions

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

#: Output files written by :func:`write`, in this order.
SUFFIXES = (".csv", ".md", ".json", ".png")

# The paper draws its own model red and the baseline gray; further models get distinct, colour-blind-safe hues.
PALETTE = ("#d62728", "#7f7f7f", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


@dataclass(frozen=True)
class Figure:
    """How to draw a result: one panel per column in ``y`` (or per value of ``facet``), one series per ``hue``.

    ``kind="bar"``: grouped bars, the ``hue`` groups side by side at each ``x`` (the paper's Figs. 2, 3b).
    ``kind="line"``: one line with markers per ``hue`` value over a numeric ``x`` (Fig. 4).
    ``kind="heatmap"``: one panel per ``facet`` value, a grid of ``index`` (down) × ``x`` (across) coloured and
    labelled by ``y[0]`` (e.g. accuracy per corruption × severity, one panel per model); ``hue`` is unused.
    ``err`` maps a y column to the column holding its standard deviation (error bars).
    ``ylabels`` maps a y column to its axis label (default: ``Layout.labels`` or the column name).
    ``percent``: y columns holding fractions that the axis shows as percentages.
    """

    kind: Literal["bar", "line", "heatmap"]
    x: str
    y: tuple[str, ...]
    hue: str = "model"
    facet: str | None = None
    err: Mapping[str, str] = field(default_factory=dict)
    xlabel: str | None = None
    ylabels: Mapping[str, str] = field(default_factory=dict)
    percent: tuple[str, ...] = ()
    ylim: tuple[float | None, float | None] | None = None
    index: str | None = None  # heatmap rows


@dataclass(frozen=True)
class Layout:
    """How the terminal table and the Markdown table pivot ``rows``, and which figure to draw.

    - ``index``: columns listed down the table (e.g. ``("block",)`` or ``("model",)``).
    - ``columns``: columns spread across (e.g. ``("model",)`` or ``("norm", "eps")``); may be empty.
    - ``values``: the measured columns shown in the cells (several → one cell column per value × column key).
    - ``formats``: ``str.format`` template per value column, e.g. ``"{:.2%}"`` for a fraction, ``"{:.1f} dB"``;
      default ``"{:.4g}"``. Infinities show as ``∞``/``−∞``, NaN as ``—``. A template for an index or
      columns column formats its keys (e.g. ``{"eps": "{:.4f}"}``); keys are otherwise shown with ``str``.
    - ``errors``: value column → its standard-deviation column, shown as ``mean ± std``.
    - ``labels``: display names of columns (headers, axis labels).
    - ``header``: template for a pivoted column's header, formatted with the (already formatted, string)
      column key fields and ``value`` (the value's display label), e.g. ``"{norm} ε={eps}"``. Default: the
      key parts joined by spaces, preceded by the value's label when there are several values. A mapping gives
      one template per value column.
    - ``drop_empty_columns``: leave out pivoted columns without a single value (e.g. a value that only some
      column keys have).
    - ``notes``: fixed sentences about what is measured (a :class:`Result` can add its own).

    Index and column values keep the order of their first appearance in ``rows`` (never sorted).
    """

    title: str
    index: tuple[str, ...]
    values: tuple[str, ...]
    columns: tuple[str, ...] = ()
    formats: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    header: str | Mapping[str, str] | None = None
    drop_empty_columns: bool = False
    notes: tuple[str, ...] = ()
    figure: Figure | None = None

    def label(self, column: str) -> str:
        return self.labels.get(column, column)


class ModelSource(Protocol):
    """A model that is not a checkpoint file (:class:`hahrobust.models.foreign.ForeignSource`): what results
    show and record in place of a checkpoint's name and hash."""

    sha256: str  # of the weights as loaded

    @property
    def display(self) -> str: ...

    @property
    def factory_display(self) -> str: ...

    def provenance(self) -> dict[str, Any]: ...


#: What a model label's numbers came from: a checkpoint file, or a model spec's provenance.
Source = Union[Path, ModelSource]


def _is_file(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike))


@dataclass
class Result:
    """A command's result: tidy rows (one per model × block/σ/ε/…) and everything needed to reproduce them.

    ``settings`` should hold every option that changes the numbers (``seed`` included); ``checkpoints`` maps
    each model label (as used in the ``model`` column of ``rows``) to its checkpoint file, or to the
    :class:`ModelSource` of a model built from a spec.
    ``started`` is when the command began (UTC; JSON only, never in CSV/MD).
    """

    command: str
    rows: pd.DataFrame
    settings: dict[str, Any]
    checkpoints: Mapping[str, Source]
    layout: Layout
    notes: list[str] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def __post_init__(self) -> None:
        layout = self.layout
        needed = [*layout.index, *layout.columns, *layout.values, *layout.errors.values()]
        if layout.figure is not None:
            fig = layout.figure
            needed += [fig.x, *fig.y, fig.hue, *fig.err.values(), *([fig.facet] if fig.facet else [])]
            needed += [fig.index] if fig.index else []
        missing = sorted({c for c in needed if c not in self.rows.columns})
        if missing:  # a programming error in a command, not user input
            raise ValueError(f"{self.command}: layout names columns missing from rows: {', '.join(missing)}")

    @property
    def all_notes(self) -> list[str]:
        return [*self.layout.notes, *self.notes]


# ------------------------------------------------------------------------------------------------ formatting


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
    settings = pd.DataFrame(
        {"setting": list(result.settings), "value": [_setting_text(v) for v in result.settings.values()]}
    )
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


def _setting_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_setting_text(v) for v in value)
    return str(value)


# ----------------------------------------------------------------------------------------------- terminal


def show(result: Result, console: Console) -> None:
    """Print the pivoted table (and the notes) as a rich table."""
    frame = display_frame(result)
    table = Table(title=result.layout.title)
    for i, column in enumerate(frame.columns):
        table.add_column(column, justify="left" if i < len(result.layout.index) else "right")
    for row in frame.itertuples(index=False):
        table.add_row(*row)
    console.print(table)
    for note in result.all_notes:
        console.print(f"[dim]• {note}[/dim]", highlight=False)


# ------------------------------------------------------------------------------------------------- files


def prepare_out_dir(out: str | Path) -> Path:
    """Create ``out`` (with parents) and check that files can be written there, or raise a one-line error."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise HahrobustError(f"--out {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".hahrobust-write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise HahrobustError(f"--out {out}: cannot write there ({reason})") from None
    return out


def check_out_dir(out: str | Path) -> Path:
    """:func:`prepare_out_dir`, then remove the folders it created: the check without its side effect.

    Commands call this before any computation so a bad ``--out`` costs nothing, and a run that then fails
    (a bad checkpoint, too many images asked for) leaves no empty folder behind.
    """
    out = Path(out).expanduser()
    created = [folder for folder in (out, *out.parents) if not folder.exists()]  # deepest first
    try:
        return prepare_out_dir(out)
    finally:
        for folder in created:
            with contextlib.suppress(OSError):  # not empty (another process wrote there): leave it
                folder.rmdir()


def output_paths(command: str, out_dir: str | Path) -> list[Path]:
    """The files :func:`write` produces for ``command`` in ``out_dir``."""
    return [Path(out_dir) / f"{command}{suffix}" for suffix in SUFFIXES]


def write(result: Result, out_dir: str | Path) -> list[Path]:
    """Write ``<command>.csv/.md/.json/.png`` into ``out_dir``; all appear together or none changes."""
    out_dir = prepare_out_dir(out_dir)
    paths = output_paths(result.command, out_dir)
    writers = (_write_csv, _write_markdown, _write_json, _write_png)
    try:
        with contextlib.ExitStack() as stack:
            # Every file goes to a temporary name first; the renames happen only when all were written.
            for path, writer in zip(paths, writers):
                writer(result, stack.enter_context(atomic_path(path)))
    except OSError as exc:
        raise HahrobustError(f"--out {out_dir}: cannot write results ({exc.strerror or type(exc).__name__})") from None
    return paths


def csv_text(result: Result) -> str:
    return result.rows.to_csv(index=False, lineterminator="\n", na_rep="nan")


def _write_csv(result: Result, path: Path) -> None:
    path.write_text(csv_text(result), encoding="utf-8")


def _write_markdown(result: Result, path: Path) -> None:
    path.write_text(markdown(result), encoding="utf-8")


def json_document(result: Result) -> dict[str, Any]:
    """Everything in ``<command>.json``: rows plus the provenance needed to reproduce them."""
    return _jsonable(
        {
            "command": result.command,
            "title": result.layout.title,
            "started": result.started.isoformat(timespec="seconds"),
            "settings": result.settings,
            "seed": result.settings.get("seed"),
            "checkpoints": {
                label: {"path": str(Path(p).resolve()), "sha256": sha256_file(p)} if _is_file(p) else p.provenance()
                for label, p in result.checkpoints.items()
            },
            "versions": versions(),
            "git_commit": git_commit(),
            "notes": result.all_notes,
            "columns": list(result.rows.columns),
            "rows": result.rows.to_dict(orient="records"),
        }
    )


def _write_json(result: Result, path: Path) -> None:
    path.write_text(json.dumps(json_document(result), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars unwrapped, paths as strings, non-finite floats as strings."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# ------------------------------------------------------------------------------------------------ figure


def _write_png(result: Result, path: Path) -> None:
    figure = draw(result)
    # format= because the temporary file's suffix is not .png; no Software/date metadata beyond matplotlib's own.
    figure.savefig(path, format="png", dpi=150, bbox_inches="tight")


def draw(result: Result) -> MplFigure:
    """The result's figure as a matplotlib Figure on an Agg canvas (pyplot is never imported)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure  # noqa: F811  (imported late: matplotlib is slow to import)
    from matplotlib.ticker import PercentFormatter

    layout, spec = result.layout, result.layout.figure
    rows = result.rows
    if spec is None:  # a command without a figure still gets a PNG: its title and "no figure"
        figure = MplFigure(figsize=(4, 1))
        FigureCanvasAgg(figure)
        figure.text(0.5, 0.5, f"{layout.title}\n(no figure for this result)", ha="center", va="center")
        return figure
    if spec.kind == "heatmap":
        return _draw_heatmap(result)
    panels: list[tuple[str, pd.DataFrame, str]] = []  # (y column, rows, panel title)
    if spec.facet is not None:
        for value in pd.unique(rows[spec.facet]):
            for y in spec.y:
                title = f"{layout.label(spec.facet)} = {value}" + (f" · {layout.label(y)}" if len(spec.y) > 1 else "")
                panels.append((y, rows[rows[spec.facet] == value], title))
    else:
        panels = [(y, rows, "") for y in spec.y]
    figure = MplFigure(figsize=(max(4.5, 4.2 * len(panels)), 3.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    hues = list(pd.unique(rows[spec.hue]))
    colors = {h: PALETTE[i % len(PALETTE)] for i, h in enumerate(hues)}
    for ax, (y, part, title) in zip(axes, panels):
        err = spec.err.get(y)
        if spec.kind == "bar":
            xs = list(pd.unique(part[spec.x]))
            width = 0.8 / max(1, len(hues))
            for j, hue in enumerate(hues):
                sub = part[part[spec.hue] == hue].set_index(spec.x).reindex(xs)
                heights = _finite(sub[y])
                ax.bar(
                    np.arange(len(xs)) + (j - (len(hues) - 1) / 2) * width, heights, width,
                    yerr=_finite(sub[err]) if err else None, color=colors[hue], label=str(hue),
                    capsize=2 if err else 0,
                )
            ax.set_xticks(np.arange(len(xs)), [str(x) for x in xs])
        else:
            for hue in hues:
                sub = part[part[spec.hue] == hue]
                ax.errorbar(
                    sub[spec.x].astype(float), _finite(sub[y]), yerr=_finite(sub[err]) if err else None,
                    color=colors[hue], marker="o", markersize=3.5, capsize=2 if err else 0, label=str(hue),
                )
        ax.set_xlabel(spec.xlabel or layout.label(spec.x))
        ax.set_ylabel(spec.ylabels.get(y, layout.label(y)))
        if y in spec.percent:
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        if spec.ylim is not None:
            ax.set_ylim(*spec.ylim)
        if title:
            ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    figure.suptitle(layout.title, fontsize=11)
    return figure


def _draw_heatmap(result: Result) -> MplFigure:
    """One panel per ``facet`` value: ``index`` × ``x`` cells coloured by ``y[0]`` and labelled with it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure  # noqa: F811

    layout, spec, rows = result.layout, result.layout.figure, result.rows
    assert spec is not None and spec.index is not None, "a heatmap needs Figure.index"
    value = spec.y[0]
    facets = list(pd.unique(rows[spec.facet])) if spec.facet else [None]
    index_keys, x_keys = list(pd.unique(rows[spec.index])), list(pd.unique(rows[spec.x]))
    template = "{:.0%}" if value in spec.percent else "{:.3g}"
    finite = _finite(rows[value])
    low, high = spec.ylim or (np.nanmin(finite), np.nanmax(finite))
    figure = MplFigure(figsize=(0.2 + (0.55 * len(x_keys) + 1.6) * len(facets), 0.8 + 0.3 * len(index_keys)),
                       layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(facets), squeeze=False, sharey=True)[0]
    for ax, facet in zip(axes, facets):
        part = rows if facet is None else rows[rows[spec.facet] == facet]
        grid = np.full((len(index_keys), len(x_keys)), np.nan)  # keys may mix types (1…5 and "mean"): no sorting
        rows_at, cols_at = {k: i for i, k in enumerate(index_keys)}, {k: j for j, k in enumerate(x_keys)}
        for row_key, col_key, cell in zip(part[spec.index], part[spec.x], _finite(part[value])):
            grid[rows_at[row_key], cols_at[col_key]] = cell
        image = ax.imshow(grid, cmap="viridis", vmin=low, vmax=high, aspect="auto")
        for (i, j), cell in np.ndenumerate(grid):
            if np.isfinite(cell):
                shade = (cell - low) / ((high - low) or 1)
                ax.text(j, i, template.format(cell), ha="center", va="center", fontsize=6.5,
                        color="black" if shade > 0.6 else "white")
        ax.set_xticks(np.arange(len(x_keys)), [str(x) for x in x_keys])
        ax.set_yticks(np.arange(len(index_keys)), [str(k) for k in index_keys], fontsize=8)
        ax.set_xlabel(spec.xlabel or layout.label(spec.x))
        if facet is not None:
            ax.set_title(str(facet), fontsize=10)
    colorbar = figure.colorbar(image, ax=list(axes), shrink=0.8)
    colorbar.set_label(spec.ylabels.get(value, layout.label(value)))
    if value in spec.percent:
        from matplotlib.ticker import PercentFormatter

        colorbar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    figure.suptitle(layout.title, fontsize=11)
    return figure


def _finite(series: pd.Series) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    return np.where(np.isfinite(values), values, np.nan)


__all__ = [
    "Figure", "Layout", "Result", "SUFFIXES", "csv_text", "display_frame", "draw", "format_value", "json_document",
    "check_out_dir", "markdown", "output_paths", "prepare_out_dir", "show", "write",
]
