"""Accuracy under the common corruptions of CIFAR-10-C, per model × corruption × severity, with the summaries of
Hendrycks & Dietterich (ICLR 2019): means over severities and corruptions, and the corruption error (CE) and
relative CE of each model against a reference model.

Two steps, usable from a notebook:

- :func:`corruption_correct`: per model × (clean test set, and every corruption × severity) and image, correct or
  not, each set from a :mod:`hahrobust.data.cifar10c` source (generated and cached, or the official files).
  Batches are classified per rank and gathered, so the outcomes are the same for any batch size and process
  count; the corrupted images themselves depend only on (seed, corruption, severity, image index).
  :func:`corruption_accuracy`: their accuracies, one row per set.
- :func:`summarize`: the tidy result table (see :data:`COLUMNS`), means, CE and 95 % intervals added.

The paper's CE normalises by AlexNet's errors; here the reference is a model of the same comparison (the
baseline), so CE < 100 % reads "fewer errors under this corruption than the reference".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from torch import nn

from hahrobust import distributed
from hahrobust.data import ImageSet
from hahrobust.data.cifar10c import CorruptionSource
from hahrobust.data.corruptions import BENCHMARK, FAMILIES, SEVERITIES, family_of
from hahrobust.distributed import Shard
from hahrobust.errors import HahrobustError
from hahrobust.metrics._progress import progress_task
from hahrobust.metrics.accuracy import correct_per_image
from hahrobust.results import Figure, Layout
from hahrobust.stats import accuracy_intervals, clustered_interval

#: Columns of :func:`summarize`'s table. ``severity`` is 0 for the clean test set, 1–5, or ``"mean"`` (over the
#: swept severities); ``corruption`` is a corruption name, ``"clean"``, or ``"mean (<family>)"`` / ``"mean (all)"``
#: (over the swept corruptions of that family / all of them). ``ce`` and ``relative_ce`` fill the ``"mean"``
#: rows when a reference model is given. ``n``: the images of each set; ``accuracy_low``/``accuracy_high``: the
#: accuracy's 95 % interval (:func:`summarize` says which).
COLUMNS = ("model", "family", "corruption", "severity", "accuracy", "ce", "relative_ce", "n", "accuracy_low",
           "accuracy_high")
#: Per (model, corruption, severity): whether each image of that set was classified correctly, bool [N].
Outcomes = Mapping[tuple[str, str, int], np.ndarray]

CLEAN = "clean"
MEAN = "mean"


def check_reference(reference: str | None, labels: Sequence[str]) -> str | None:
    if reference is not None and reference not in labels:
        raise HahrobustError(f"--reference {reference!r} is not a model label; labels are: {', '.join(labels)}")
    return reference


@torch.no_grad()
def corruption_correct(
    models: Mapping[str, nn.Module],
    clean: ImageSet,
    source: CorruptionSource,
    corruptions: Sequence[str],
    severities: Sequence[int] = SEVERITIES,
    *,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    shard: Shard | None = None,
) -> dict[tuple[str, str, int], np.ndarray]:
    """Whether each model classifies each image correctly (:data:`Outcomes`), on ``clean`` (corruption ``"clean"``,
    severity 0) and on every corruption × severity that ``source`` gives.

    One corrupted set is held at a time: it is generated (or read from the cache or the files), every model
    is evaluated on it, and it is dropped.
    """
    shard = shard or distributed.current()
    sets = [(name, severity) for name in corruptions for severity in severities]
    to_generate = sum(not source.cached(name, severity) for name, severity in sets) * source.own_images()
    outcomes: dict[tuple[str, str, int], np.ndarray] = {}

    def evaluate(name: str, severity: int, data: ImageSet, advance: Callable[[], None]) -> None:
        for label, model in models.items():
            outcomes[label, name, severity] = correct_per_image(model, data, batch_size=batch_size, device=device,
                                                                shard=shard)
            advance()

    with (
        progress_task(progress if to_generate else None, "corrupting test images", to_generate) as generated,
        progress_task(progress, "evaluating", (1 + len(sets)) * len(models)) as evaluated,
    ):
        evaluate(CLEAN, 0, clean, evaluated)
        for name, severity in sets:
            evaluate(name, severity, source(name, severity, generated), evaluated)
    return outcomes


def accuracy_rows(outcomes: Outcomes) -> pd.DataFrame:
    """One row per set of :func:`corruption_correct`'s outcomes: ``model``, ``corruption``, ``severity``,
    ``accuracy`` (a fraction) and ``n`` (the set's images)."""
    return pd.DataFrame([{"model": label, "corruption": name, "severity": severity,
                          "accuracy": int(hits.sum()) / len(hits), "n": len(hits)}
                         for (label, name, severity), hits in outcomes.items()])


def corruption_accuracy(
    models: Mapping[str, nn.Module],
    clean: ImageSet,
    source: CorruptionSource,
    corruptions: Sequence[str],
    severities: Sequence[int] = SEVERITIES,
    *,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    shard: Shard | None = None,
) -> pd.DataFrame:
    """Accuracy (a fraction) of each model on ``clean`` (corruption ``"clean"``, severity 0) and on every
    corruption × severity that ``source`` gives (:func:`accuracy_rows` of :func:`corruption_correct`)."""
    return accuracy_rows(corruption_correct(models, clean, source, corruptions, severities, batch_size=batch_size,
                                            device=device, progress=progress, shard=shard))


def summarize(raw: pd.DataFrame, reference: str | None = None,
              outcomes: Outcomes | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The result table (:data:`COLUMNS`) from :func:`corruption_accuracy`'s rows, and notes on undefined values.

    Per model: the clean row; per family, each corruption's rows for every severity and its ``"mean"`` row
    (mean accuracy over the severities, CE, relative CE), then ``"mean (<family>)"`` rows when more than one
    family is swept; last, ``"mean (all)"``. With ``reference`` (a model label), for corruption c and model m::

        CE_c = Σ_s E(m, c, s) / Σ_s E(ref, c, s)
        relative CE_c = Σ_s (E(m, c, s) − E(m, clean)) / Σ_s (E(ref, c, s) − E(ref, clean))

    with E = 1 − accuracy (Hendrycks & Dietterich, Sec. 3, with the reference in AlexNet's place); a family's
    or all corruptions' CE is the mean of its corruptions' CEs (mCE). A ratio whose reference denominator is
    not positive is undefined (NaN; a note names it) and left out of the means.

    Intervals (95 %): a row of one set (clean, a corruption at a severity) has Wilson's interval of its count of
    ``n``. A mean row pools sets of the same images: with ``outcomes`` (:func:`corruption_correct`'s), the
    clustered interval of its per-image outcomes (:func:`hahrobust.stats.clustered_interval`); without them, the
    Wilson interval at the mean's nearest count of one set's n images, which errs wide (the clustered interval's
    effective n is never below n − 1). ``raw`` without ``n`` gives NaN n and intervals.
    """
    accuracy_of = raw.set_index(["model", "corruption", "severity"])["accuracy"].to_dict()
    images_of = raw.set_index(["model", "corruption", "severity"])["n"].to_dict() if "n" in raw.columns else {}
    models = list(pd.unique(raw["model"]))
    swept = raw[raw["corruption"] != CLEAN]
    corruptions = list(pd.unique(swept["corruption"]))
    severities = list(pd.unique(swept["severity"]))
    families = [family for family, members in FAMILIES.items() if any(c in members for c in corruptions)]
    undefined: dict[str, set[str]] = {"CE": set(), "relative CE": set()}

    def ratio(numerator: float, denominator: float, kind: str, name: str) -> float:
        if denominator > 0:
            return numerator / denominator
        undefined[kind].add(name)
        return math.nan

    def errors(model: str, name: str) -> tuple[float, float]:
        if reference is None:
            return math.nan, math.nan
        err = {m: sum(1 - accuracy_of[m, name, s] for s in severities) for m in (model, reference)}
        drop = {m: sum(accuracy_of[m, CLEAN, 0] - accuracy_of[m, name, s] for s in severities) for m in (model, reference)}
        return (ratio(err[model], err[reference], "CE", name),
                ratio(drop[model], drop[reference], "relative CE", name))

    rows: list[dict[str, object]] = []
    pooled: list[list[tuple[str, int]]] = []  # per row: the sets its accuracy pools

    def add(new: list[dict[str, object]], sets: list[list[tuple[str, int]]]) -> None:
        rows.extend(new)
        pooled.extend(sets)

    for model in models:
        add([_row(model, CLEAN, CLEAN, 0, accuracy_of[model, CLEAN, 0])], [[(CLEAN, 0)]])
        per_corruption: dict[str, tuple[float, float, float]] = {}  # name -> (mean accuracy, CE, relative CE)
        for family in families:
            members = [c for c in corruptions if family_of(c) == family]
            for name in members:
                values = [accuracy_of[model, name, s] for s in severities]
                add([_row(model, family, name, s, a) for s, a in zip(severities, values)],
                    [[(name, s)] for s in severities])
                per_corruption[name] = (sum(values) / len(values), *errors(model, name))
                add([_row(model, family, name, MEAN, *per_corruption[name])], [[(name, s) for s in severities]])
            if len(families) > 1:
                add(*_means(model, family, members, severities, accuracy_of, per_corruption))
        add(*_means(model, "all", corruptions, severities, accuracy_of, per_corruption))
    notes = [
        f"{kind} is undefined for {', '.join(sorted(names))}: the reference {reference} "
        + ("made no errors there" if kind == "CE" else "lost no accuracy there") + "; left out of the means"
        for kind, names in undefined.items() if names
    ]
    table = pd.DataFrame(rows, columns=list(COLUMNS[:7]))
    table["n"] = [images_of.get((r["model"], *sets[0]), math.nan) for r, sets in zip(rows, pooled)]
    table = accuracy_intervals(table, ["accuracy"])
    if outcomes is not None:
        for i, (row, sets) in enumerate(zip(rows, pooled)):
            if len(sets) > 1:
                per_image = np.stack([outcomes[row["model"], c, s] for c, s in sets])  # type: ignore[index]
                table.loc[i, ["accuracy_low", "accuracy_high"]] = clustered_interval(per_image)
    return table[list(COLUMNS)], notes


def _row(model: str, family: str, corruption: str, severity: int | str, accuracy: float,
         ce: float = math.nan, relative_ce: float = math.nan) -> dict[str, object]:
    return {"model": model, "family": family, "corruption": corruption, "severity": severity,
            "accuracy": accuracy, "ce": ce, "relative_ce": relative_ce}


def _means(
    model: str, family: str, members: Sequence[str], severities: Sequence[int],
    accuracy_of: Mapping[tuple[str, str, int], float], per_corruption: Mapping[str, tuple[float, float, float]],
) -> tuple[list[dict[str, object]], list[list[tuple[str, int]]]]:
    """``mean (<family>)`` rows: per severity the mean accuracy over ``members``, then their mean and mCEs; and
    the sets each row pools."""
    label = f"mean ({family})"
    rows = [_row(model, family, label, s, _mean([accuracy_of[model, c, s] for c in members])) for s in severities]
    columns = list(zip(*(per_corruption[c] for c in members)))
    sets = [[(c, s) for c in members] for s in severities] + [[(c, s) for c in members for s in severities]]
    return [*rows, _row(model, family, label, MEAN, *(_mean(column) for column in columns))], sets


def _mean(values: Sequence[float]) -> float:
    """Mean of the defined (non-NaN) values; NaN when none is."""
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


def layout(
    corruptions: Sequence[str], severities: Sequence[int], reference: str | None, official: str | None
) -> Layout:
    """How the table is shown: model × corruption down, severities across (0 = clean, 1–5, mean), then CE and
    relative CE; and a heat map per model."""
    source = (
        f"read from the official CIFAR-10-C files in {official}; the clean row is the --data test set"
        if official else
        "generated with the CIFAR parameters of Hendrycks' make_cifar_c.py, image i of severity s drawn from "
        "the seed of (seed, corruption, s, i)"
    )
    notes = [
        f"Corruptions of Hendrycks & Dietterich (ICLR 2019), {source}. Severity 0 is the clean test set; "
        "'mean' averages the swept severities; 'mean (family)' and 'mean (all)' average the swept corruptions.",
        "The CSV and JSON give each accuracy's n (images per set) and 95 % interval (accuracy_low, accuracy_high): "
        "Wilson's for one set, for a mean the clustered interval over its images (a corruption's sets hold the same "
        "images); the table leaves them out to stay readable.",
    ]
    if reference is not None:
        notes.append(
            f"CE = Σ_s E(c, s) / Σ_s E_{reference}(c, s) and rCE (relative CE) = Σ_s (E(c, s) − E(clean)) / "
            f"Σ_s (E_{reference}(c, s) − E_{reference}(clean)), E = 1 − accuracy: Hendrycks & Dietterich's "
            f"corruption errors normalised by {reference} instead of AlexNet; on the mean rows, mCE and relative "
            f"mCE. Below 100 %: fewer errors than {reference}."
        )
        if tuple(corruptions) != BENCHMARK or tuple(severities) != SEVERITIES:
            notes.append("The benchmark's mCE averages all 15 corruptions at severities 1–5; these means cover the "
                         "swept ones only.")
    return Layout(
        title="Accuracy under common corruptions (CIFAR-10-C)",
        index=("model", "corruption"),
        columns=("severity",),
        values=("accuracy", "ce", "relative_ce"),
        formats={"accuracy": "{:.1%}", "ce": "{:.1%}", "relative_ce": "{:.1%}"},
        labels={"accuracy": "accuracy", "ce": "CE", "relative_ce": "relative CE"},
        header={"accuracy": "{severity}", "ce": "CE", "relative_ce": "rCE"},
        drop_empty_columns=True,
        notes=tuple(notes),
        figure=Figure(
            kind="heatmap", x="severity", y=("accuracy",), facet="model", index="corruption",
            percent=("accuracy",), xlabel="severity (0 = clean)",
        ),
    )
