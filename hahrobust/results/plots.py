"""Drawing a result's figure (:func:`draw`): matplotlib's Agg canvas, never pyplot, so no global backend state changes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd


if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure
from hahrobust.results.model import Result


# The paper draws its own model red and the baseline gray; further models get distinct, colour-blind-safe hues.
PALETTE = ("#d62728", "#7f7f7f", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")




def draw(result: Result) -> MplFigure:
    """The result's figure as a matplotlib Figure on an Agg canvas (pyplot is never imported)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure  # noqa: F811  (imported late: matplotlib is slow to import)
    from matplotlib.ticker import PercentFormatter

    layout, spec = result.layout, result.layout.figure
    rows = result.rows
    if layout.drawer is not None:
        return layout.drawer(result)
    if spec is None:
        raise ValueError(f"{result.command}: no figure to draw (write() leaves the PNG out)")
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
                    yerr=_whiskers(sub, y, err, layout.intervals), color=colors[hue], label=str(hue),
                    capsize=2 if err or y in layout.intervals else 0,
                )
            ax.set_xticks(np.arange(len(xs)), [str(x) for x in xs])
        else:
            for hue in hues:
                sub = part[part[spec.hue] == hue]
                ax.errorbar(
                    sub[spec.x].astype(float), _finite(sub[y]), yerr=_finite(sub[err]) if err else None,
                    color=colors[hue], marker="o", markersize=3.5, capsize=2 if err else 0, label=str(hue),
                )
        ax.set_xlabel(spec.xlabel if spec.xlabel is not None else layout.label(spec.x))
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
        ax.set_xlabel(spec.xlabel if spec.xlabel is not None else layout.label(spec.x))
        if facet is not None:
            ax.set_title(str(facet), fontsize=10)
    colorbar = figure.colorbar(image, ax=list(axes), shrink=0.8)
    colorbar.set_label(spec.ylabels.get(value, layout.label(value)))
    if value in spec.percent:
        from matplotlib.ticker import PercentFormatter

        colorbar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    figure.suptitle(layout.title, fontsize=11)
    return figure


def _whiskers(sub: pd.DataFrame, y: str, err: str | None, intervals: Mapping[str, tuple[str, str]]) -> Any:
    """A bar's whiskers: its confidence interval (asymmetric) where the layout names one, else its std, else none."""
    if y in intervals and set(intervals[y]) <= set(sub.columns):
        value = _finite(sub[y])
        low, high = (_finite(sub[c]) for c in intervals[y])
        return np.nan_to_num(np.vstack([value - low, high - value]), nan=0.0)  # no interval: no whisker
    return _finite(sub[err]) if err else None


def _finite(series: pd.Series) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    return np.where(np.isfinite(values), values, np.nan)
