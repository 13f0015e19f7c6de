"""What an attack run yields: per-image outcomes (:class:`AttackOutcome`) and the per-ε summary rows built from them.

One representation serves the runner, the audit, the minimum-norm best-of rows and rechecks of saved examples:
per image, whether it was classified correctly clean, whether it is robust at each ε, and for minimum-norm attacks
the smallest verified adversarial distance (0 when misclassified clean, ∞ when none was found).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from hahrobust.attacks.norms import within
from hahrobust.stats import accuracy_intervals

#: Columns of the table :func:`hahrobust.attacks.run.run_attack` returns: each accuracy with its 95 % Wilson
#: interval over the images (``X_low``, ``X_high``; the success rate's over the ``success_rate_n`` attacked ones).
COLUMNS = (
    "attack", "norm", "eps", "n", "clean_acc", "robust_acc", "success_rate",
    "median_distance", "mean_distance", "unfound", "seed", "seconds",
    "clean_acc_low", "clean_acc_high", "robust_acc_low", "robust_acc_high",
    "success_rate_n", "success_rate_low", "success_rate_high",
)
#: The accuracies of :data:`COLUMNS` and the column counting each one's images.
ACCURACIES = {"clean_acc": "n", "robust_acc": "n", "success_rate": "success_rate_n"}


@dataclass(frozen=True)
class AttackOutcome:
    """What :func:`run_attack_images` returns: the summary table and, per image of the evaluated set (in its
    order), whether it is robust at each ε (``robust[j, i]``), its index in the set, and for minimum-norm
    attacks the smallest verified adversarial distance (0 when misclassified clean, ∞ when none was found)."""

    table: pd.DataFrame
    robust: np.ndarray  # bool [len(eps), N]
    index: np.ndarray  # int [N]
    correct: np.ndarray  # bool [N]: classified correctly clean
    distance: np.ndarray | None  # float [N], minimum-norm attacks only
    flags: tuple[str, ...] = ()  # AutoAttack's own sanity checks that fired
    source_fooled: np.ndarray | None = None  # transfer only: bool [len(eps), N], the example fools the source
    passes: tuple[int, int] = (0, 0)  # forward and backward image-passes (attacks.passes), resumed batches included


def per_image(records: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.concatenate([np.asarray(r[key]) for r in records]) if records else np.zeros(0)


def robust_flags(
    records: list[dict[str, Any]], eps: list[float], norm: str, minimum_norm: bool, dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(clean correct [N], robust [len(eps), N], minimum distances [N] or None) from journal records."""
    label = per_image(records, "label")
    correct = per_image(records, "clean_pred") == label
    if not minimum_norm:
        robust = np.stack([
            correct & (np.concatenate([np.asarray(r["pred"][j]) for r in records]) == label) for j in range(len(eps))
        ]) if records else np.zeros((len(eps), 0), dtype=bool)
        return correct, robust, None
    dist = np.concatenate([np.array([math.inf if d is None else d for d in r["distance"][0]], dtype=float) for r in records])
    dist = np.where(correct, dist, 0.0)  # misclassified clean: distance 0 (never attacked)
    return correct, robust_at(dist, correct, eps, norm, dim), dist


def distance_summary(dist: np.ndarray, correct: np.ndarray) -> dict[str, float | int]:
    """Median, mean and unfound count of per-image minimum distances (0 for misclassified images, ∞ where
    no adversarial example was found).

    The median is over all n images (misclassified ones at 0, ∞ for images never fooled, so it is ∞ only when
    more than half were never fooled): the ε where robust accuracy crosses 50 %. The mean is the paper's Fig. 5
    statistic: over the attacked (correctly classified) images for which an adversarial example was found; the
    misclassified images' zeros would otherwise pull a less accurate model's mean down.
    """
    found = dist[correct & np.isfinite(dist)]
    return {
        "median_distance": float(np.median(dist)) if len(dist) else math.nan,
        "mean_distance": float(found.mean()) if len(found) else math.nan,
        "unfound": int((~np.isfinite(dist)).sum()),
    }


def robust_at(dist: np.ndarray, correct: np.ndarray, eps: Sequence[float], norm: str, dim: int) -> np.ndarray:
    """Robust [len(eps), N] from minimum distances: correct clean and no verified example within ε."""
    dist_t = torch.from_numpy(dist)
    return np.stack([correct & ~within(dist_t, e, norm, dim).numpy() for e in eps])


def summarise(
    records: list[dict[str, Any]], eps: list[float], attack: str, norm: str, seed: int, minimum_norm: bool, dim: int
) -> pd.DataFrame:
    correct, robust, dist = robust_flags(records, eps, norm, minimum_norm, dim)
    seconds = [float(sum(r["seconds"][0 if minimum_norm else j] for r in records)) for j in range(len(eps))]
    return summary_rows(attack, norm, eps, correct, robust, dist, seed, seconds)


def summary_rows(
    attack: str, norm: str, eps: Sequence[float], correct: np.ndarray, robust: np.ndarray, dist: np.ndarray | None,
    seed: int, seconds: Sequence[float],
) -> pd.DataFrame:
    """One row per ε (columns :data:`COLUMNS`) from per-image outcomes: ``correct`` [N], ``robust`` [len(eps), N]
    and, for minimum-norm attacks, ``dist`` [N]; each accuracy with the Wilson interval of its count."""
    count = len(correct)
    clean_acc = correct.sum() / count if count else math.nan  # an audit's survivors-only member may get no image
    rows = []
    for j, e in enumerate(eps):
        robust_acc = robust[j].sum() / count if count else math.nan
        row: dict[str, Any] = {
            "attack": attack, "norm": norm, "eps": e, "n": count, "clean_acc": float(clean_acc),
            "robust_acc": float(robust_acc),
            # Fraction of the correctly classified images the attack fooled.
            "success_rate": float((clean_acc - robust_acc) / clean_acc) if clean_acc > 0 else math.nan,
            "median_distance": math.nan, "mean_distance": math.nan, "unfound": math.nan, "seed": seed,
            "seconds": seconds[j], "success_rate_n": int(correct.sum()),
        }
        if dist is not None:
            row.update(distance_summary(dist, correct))
        rows.append(row)
    return accuracy_intervals(pd.DataFrame(rows, columns=[c for c in COLUMNS if not c.endswith(("_low", "_high"))]),
                              ACCURACIES)[list(COLUMNS)]
