"""Minimum-norm distances as per-image minima over several attacks.

A minimum-norm attack's distance is an upper bound on an image's true minimal adversarial distance, and no
single attack is tightest everywhere: on the HaH reference model hahrobust's ℓ2 FMN is 12 % above DDN on
average (40 % on a 2-epoch HaH model) while the two agree on the baseline. As AttackBench judges attacks, an
image's minimum distance is the smallest *verified* distance any attack found for it; this module combines the
per-image outcomes of attacks run on the same images (:func:`hahrobust.attacks.run.run_attack_images`) into
that best-of row, and says how many images each attack supplied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from hahrobust.attacks.outcome import AttackOutcome, robust_at, summary_rows
from hahrobust.attacks.registry import minimum_norm_names
from hahrobust.errors import HahrobustError


def best_name(attacks: Sequence[str]) -> str:
    """The ``attack`` value of the best-of row, e.g. ``best of fmn, ddn``."""
    return "best of " + ", ".join(attacks)


def best_distances(outcomes: Mapping[str, AttackOutcome]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image (in the attacked set's order): (correct [N], the smallest distance any attack found [N],
    the attack that found it [N], ``""`` where none did or the image was misclassified clean).

    Ties go to the attack listed first. Every outcome must come from a minimum-norm attack on the same images.
    """
    if not outcomes:
        raise HahrobustError("no minimum-norm outcomes to combine")
    names = list(outcomes)
    first = outcomes[names[0]]
    for name, outcome in outcomes.items():
        if outcome.distance is None:
            raise HahrobustError(f"{name} is not a minimum-norm attack ({', '.join(minimum_norm_names())} are)")
        if not np.array_equal(outcome.index, first.index) or not np.array_equal(outcome.correct, first.correct):
            raise HahrobustError(f"{name} attacked other images than {names[0]}: distances cannot be combined")
    stacked = np.stack([outcomes[n].distance for n in names])  # type: ignore[misc]
    choice = np.argmin(stacked, axis=0)  # first minimum: ties go to the attack listed first
    best = stacked[choice, np.arange(stacked.shape[1])]
    source = np.array(names, dtype=object)[choice]
    source[~first.correct | ~np.isfinite(best)] = ""
    return first.correct, best, source


def best_rows(
    outcomes: Mapping[str, AttackOutcome], *, norm: str, eps: Sequence[float], dim: int, seed: int
) -> pd.DataFrame:
    """The best-of row per ε (the columns of :data:`hahrobust.attacks.run.COLUMNS` plus ``best_from``: how
    many attacked images each attack supplied the smallest distance for, e.g. ``ddn 120 · fmn 58``)."""
    correct, best, source = best_distances(outcomes)
    seconds = [float(sum(o.table["seconds"].iloc[0] for o in outcomes.values()))] * len(eps)
    rows = summary_rows(best_name(list(outcomes)), norm, eps, correct, robust_at(best, correct, eps, norm, dim),
                        best, seed, seconds)
    counts = {name: int((source == name).sum()) for name in outcomes}
    rows["best_from"] = " · ".join(f"{name} {count}" for name, count in counts.items())
    return rows


__all__ = ["best_distances", "best_name", "best_rows"]
