"""A result's data model: tidy rows, settings, model sources, and how to lay them out (:class:`Layout`, :class:`Figure`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol, Union

import pandas as pd


#: Output files written by :func:`write`, in this order.
SUFFIXES = (".csv", ".md", ".json", ".png")


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
    - ``intervals``: value column → its (low, high) confidence-interval columns, shown as ``value [low, high]``
      (rows without them, e.g. read from an older file, show the value alone).
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
    intervals: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    header: str | Mapping[str, str] | None = None
    drop_empty_columns: bool = False
    notes: tuple[str, ...] = ()
    figure: Figure | None = None
    # A figure no generic Figure describes (the audit's waterfall of breaks): called with the Result, returns a
    # matplotlib Figure on an Agg canvas. Without ``figure`` and ``drawer`` a result has no PNG at all.
    drawer: Callable[[Any], Any] | None = None

    @property
    def has_figure(self) -> bool:
        return self.figure is not None or self.drawer is not None

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
