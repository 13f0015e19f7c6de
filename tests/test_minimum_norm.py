"""The per-image best of several minimum-norm attacks (hahrobust.studies.minimum_norm), computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hahrobust.attacks.run import AttackOutcome
from hahrobust.errors import HahrobustError
from hahrobust.studies.minimum_norm import best_distances, best_rows

INF = math.inf


def outcome(distance: list[float], correct: list[bool], index: list[int] | None = None) -> AttackOutcome:
    n = len(distance)
    table = pd.DataFrame({"seconds": [1.5]})
    return AttackOutcome(
        table=table, robust=np.ones((1, n), dtype=bool), index=np.array(index or list(range(n))),
        correct=np.array(correct), distance=np.array(distance, dtype=float),
    )


CORRECT = [True, True, True, True, False]


def test_each_image_takes_the_smallest_distance_and_names_its_attack() -> None:
    fmn = outcome([0.5, 0.2, INF, 0.3, 0.0], CORRECT)
    ddn = outcome([0.4, 0.3, 0.6, 0.3, 0.0], CORRECT)
    correct, best, source = best_distances({"fmn": fmn, "ddn": ddn})
    assert best.tolist() == [0.4, 0.2, 0.6, 0.3, 0.0]
    # A tie goes to the attack listed first; a misclassified image has no source.
    assert source.tolist() == ["ddn", "fmn", "ddn", "fmn", ""]
    assert correct.tolist() == CORRECT


def test_best_rows_summarise_the_minimum() -> None:
    fmn = outcome([0.5, 0.2, INF, 0.3, 0.0], CORRECT)
    ddn = outcome([0.4, 0.3, INF, 0.3, 0.0], CORRECT)
    rows = best_rows({"fmn": fmn, "ddn": ddn}, norm="l2", eps=[0.25, 0.35], dim=1, seed=0)
    assert rows["attack"].tolist() == ["best of fmn, ddn"] * 2
    # Distances 0.4, 0.2, ∞, 0.3 on the correct images: robust at 0.25 are 0.4, ∞, 0.3; at 0.35 are 0.4, ∞.
    assert rows["robust_acc"].tolist() == pytest.approx([3 / 5, 2 / 5])
    assert rows["mean_distance"].iloc[0] == pytest.approx((0.4 + 0.2 + 0.3) / 3)
    assert rows["median_distance"].iloc[0] == pytest.approx(0.3)
    assert rows["unfound"].iloc[0] == 1
    assert rows["best_from"].iloc[0] == "fmn 2 · ddn 1"
    assert rows["seconds"].iloc[0] == pytest.approx(3.0)


def test_outcomes_on_other_images_or_fixed_eps_attacks_are_refused() -> None:
    fmn = outcome([0.5, 0.2, INF, 0.3, 0.0], CORRECT)
    with pytest.raises(HahrobustError, match="attacked other images"):
        best_distances({"fmn": fmn, "ddn": outcome([0.5, 0.2, INF, 0.3, 0.0], CORRECT, index=[1, 2, 3, 4, 5])})
    pgd = AttackOutcome(pd.DataFrame(), np.ones((1, 5), dtype=bool), np.arange(5), np.array(CORRECT), None)
    with pytest.raises(HahrobustError, match="not a minimum-norm attack"):
        best_distances({"fmn": fmn, "pgd": pgd})
