"""The leaderboard's statistics: per model and measure an accuracy with its count, n and Wilson interval, the paired
test against the baseline on the same images, Holm over the whole table; the models ranked by the audit's worst
case, with AutoAttack's ranking beside it.

- A binary measure (correct, robust, certified per image): the exact McNemar test of the model against the baseline
  and Newcombe's paired interval of the difference (:func:`hahrobust.stats.mcnemar`).
- CIFAR-10-C's mean over its 75 sets: the interval clustered by image (:func:`hahrobust.stats.clustered_interval`),
  the paired bootstrap of the per-image shares against the baseline's (sign-flip p-value).
- Holm (:func:`hahrobust.stats.holm`) over every test of the table: a difference is *resolved* only when its
  adjusted p ≤ 0.05; otherwise the board says so rather than ranking it.
- Ranking: by the worst case at ℓ∞ 2/255 (the paper's headline ε), ties by ℓ2; models equal at both share a rank
  (listed by clean accuracy). The AutoAttack rank the same way from AutoAttack's columns. Ranks are point estimates:
  the marks of the paired tests say which differences are resolved. The worst case is an upper bound that a stronger attack
  may lower, never raise, and AutoAttack's is a looser one: per image, the worst case counts it robust only when no
  member of the audit *and* no attack of AutoAttack broke it (the audit does not run AutoAttack itself; on the small
  board hebb-net had 3 images at ℓ∞ that only AutoAttack broke), so it is never above AutoAttack's figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hahrobust import stats

ALPHA = 0.05


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    step: str
    array: str
    also_broken_by: tuple[tuple[str, str], ...] = ()  # (step, its robust array): a break there is a break here too


MEASURES: tuple[Measure, ...] = (
    Measure("clean", "clean", "clean", "correct"),
    Measure("noise", "noise σ = 0.1", "noise", "correct"),
    Measure("autoattack-linf", "AutoAttack ℓ∞ 2/255", "autoattack-linf", "robust"),
    Measure("autoattack-l2", "AutoAttack ℓ2 0.25", "autoattack-l2", "robust"),
    Measure("worst-linf", "worst case ℓ∞ 2/255", "audit", "linf.worst", (("autoattack-linf", "robust"),)),
    Measure("worst-l2", "worst case ℓ2 0.25", "audit", "l2.worst", (("autoattack-l2", "robust"),)),
    Measure("certified", "certified ℓ2 r = 0.25 (σ = 0.25)", "certify", "certified"),
    Measure("corruptions", "CIFAR-10-C mean", "corruptions", "correct"),
)
RANK_BY = ("worst-linf", "worst-l2")
AUTOATTACK_RANK_BY = ("autoattack-linf", "autoattack-l2")
ROW_COLUMNS = ["model", "measure", "verdict", "n", "correct", "accuracy", "low", "high", "difference",
               "difference_low", "difference_high", "p_value", "p_holm", "resolved"]


def rows(steps: dict[str, dict[str, dict[str, Any]]], baseline: str, *, seed: int, resamples: int) -> pd.DataFrame:
    """One row per model and measure (``steps``: label → step → {"arrays", "facts"}; measures a model lacks are
    left out). ``verdict`` is the audit's verdict word on the worst-case rows, empty elsewhere."""
    records = []
    for label, model_steps in steps.items():
        for measure in MEASURES:
            if measure.step not in model_steps:
                continue
            outcome = _outcome(model_steps, measure)
            record: dict[str, Any] = {"model": label, "measure": measure.key, "verdict": ""}
            if measure.step == "audit":  # the word only ("masked", "suspect", …): its reasons are on the page
                record["verdict"] = verdict_word(model_steps["audit"]["facts"])
            # sets × images (CIFAR-10-C): the interval clustered by image; n is the images
            low, high = (stats.clustered_interval(outcome) if outcome.ndim == 2
                         else stats.wilson_interval(int(outcome.sum()), len(outcome)))
            record.update(n=outcome.shape[-1], correct=int(outcome.sum()), accuracy=float(outcome.mean()),
                          low=low, high=high)
            if label != baseline:
                record.update(_versus(outcome, _outcome(steps[baseline], measure), seed, resamples))
            records.append(record)
    frame = pd.DataFrame(records).reindex(columns=ROW_COLUMNS)
    tested = frame["p_value"].notna()
    frame["p_holm"] = np.nan
    if tested.any():
        frame.loc[tested, "p_holm"] = stats.holm(frame.loc[tested, "p_value"].to_numpy(float), ALPHA).adjusted
    frame["resolved"] = [_resolution(d, p) for d, p in zip(frame["difference"], frame["p_holm"])]
    return frame


def _outcome(model_steps: dict[str, dict[str, Any]], measure: Measure) -> np.ndarray:
    """A model's per-image outcome of ``measure``, less the images the steps it is bounded by broke."""
    outcome = np.asarray(model_steps[measure.step]["arrays"][measure.array], dtype=bool)
    for step, array in measure.also_broken_by:
        if step in model_steps:
            outcome = outcome & np.asarray(model_steps[step]["arrays"][array], dtype=bool)
    return outcome


def verdict_word(audit_facts: dict[str, Any]) -> str:
    """The audit's verdict word for a model ("masked", "suspect", "no sign of masking"), without its reasons."""
    return str(audit_facts["word"]).split(" (", 1)[0]


def _versus(a: np.ndarray, b: np.ndarray, seed: int, resamples: int) -> dict[str, float]:
    if a.ndim == 2:
        paired = stats.paired_bootstrap(a.mean(axis=0), b.mean(axis=0), seed=seed, n_resamples=resamples)
        return {"difference": paired.difference, "difference_low": paired.low, "difference_high": paired.high,
                "p_value": paired.p_value}
    comparison = stats.mcnemar(a, b)
    return {"difference": comparison.difference, "difference_low": comparison.low,
            "difference_high": comparison.high, "p_value": comparison.p_value}


def _resolution(difference: float, p_holm: float) -> str:
    if np.isnan(p_holm):
        return ""
    if p_holm > ALPHA:
        return "not resolved"
    return "higher" if difference > 0 else "lower"


def ranking(frame: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Per model, in ranked order: its rank by worst case and its rank by AutoAttack (1 = most robust). Models with
    the same accuracies at both norms share a rank (competition ranking: 1, 1, 3); within a tie the table lists the
    more accurate on clean images first."""
    wide = frame.pivot(index="model", columns="measure", values="accuracy").reindex(labels)

    def ranks(by: tuple[str, ...]) -> pd.Series:
        keys = [c for c in by if c in wide.columns]
        values = wide[keys].apply(tuple, axis=1)
        return values.map(lambda v: 1 + int(sum(other > v for other in values)))

    out = pd.DataFrame({"rank": ranks(RANK_BY), "autoattack_rank": ranks(AUTOATTACK_RANK_BY),
                        "clean": wide["clean"] if "clean" in wide.columns else 0.0})
    out = out.sort_values(["rank", "clean"], ascending=[True, False], kind="stable").drop(columns="clean")
    return out.rename_axis("model").reset_index()
