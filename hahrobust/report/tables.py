"""The report's figures as tidy tables (one per paper figure or table), from the steps' per-image arrays.

Every accuracy is a count of n with its Wilson interval (:class:`hahrobust.stats.Proportion`); Table 1's
noisy column is the first noise draw (the one its claim tests), the noise curve the mean over the draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hahrobust import stats
from hahrobust.attacks.norms import NORMS, SYMBOLS
from hahrobust.metrics.snr import to_db
from hahrobust.report.claims import distances, hah_blocks, worst_case
from hahrobust.report.steps import NOISY_SIGMA, SIDES, TABLE_EPS

#: The paper's Table 1 (HaH VGG-16 / VGG-16 on CIFAR-10), in percent.
PAPER_TABLE1 = {"a": {"Clean": 87.3, "Noisy (σ = 0.1)": 64.0, "AutoAttack ℓ∞ 2/255": 21.5, "AutoAttack ℓ2 0.25": 27.6},
                "b": {"Clean": 92.5, "Noisy (σ = 0.1)": 26.6, "AutoAttack ℓ∞ 2/255": 10.4, "AutoAttack ℓ2 0.25": 13.9}}
#: What the paper says beside each figure (its figures give no numbers).
PAPER_SAYS = {
    "sparsity": "Fig. 2: the activations of the first 6 (HaH) blocks are sparser for HaH than for the baseline VGG.",
    "snr": "Fig. 3b: HaH's SNR comfortably exceeds the baseline's, especially in the first 6 HaH blocks.",
    "noise": "Fig. 4: substantial gains at high noise: 64 % vs 26 % at σ = 0.1.",
    "table1": "Table 1: HaH 87.3 / 64.0 / 21.5 / 27.6 %, baseline 92.5 / 26.6 / 10.4 / 13.9 % "
              "(clean / noisy σ = 0.1 / AutoAttack ℓ∞ 2/255 / ℓ2 0.25).",
    "corruptions": "Not in the paper: CIFAR-10-C's common corruptions (Hendrycks & Dietterich 2019), generated "
                   "from the same images.",
    "distances": "Fig. 5: the average norm of minimum-norm adversarial perturbations is higher for HaH for all ℓp "
                 "(p = 0, 1, 2, ∞).",
}


def _accuracy_row(section: str, label: str, item: str, correct: np.ndarray, paper: float | None) -> dict[str, Any]:
    p = stats.Proportion(int(np.sum(correct)), int(correct.size))
    return {"section": section, "model": label, "item": item, "accuracy": p.value, "low": p.low, "high": p.high,
            "k": p.k, "n": p.n, "paper": paper if paper is not None else float("nan")}


def _pooled_row(label: str, item: str, correct: np.ndarray) -> dict[str, Any]:
    low, high = stats.clustered_interval(correct)
    return {**_accuracy_row("corruptions", label, item, correct, None), "low": low, "high": high,
            "images": int(correct.shape[1])}


def table1(steps: dict[str, dict[str, Any]], labels: dict[str, str]) -> pd.DataFrame:
    arr = {name: s["arrays"] for name, s in steps.items()}
    sigma = steps["noise"]["facts"]["sigmas"].index(NOISY_SIGMA)
    rows = []
    for side in SIDES:
        paper = PAPER_TABLE1[side]
        rows.append(_accuracy_row("table1", labels[side], "Clean", arr["clean"][f"{side}.correct"], paper["Clean"]))
        rows.append(_accuracy_row("table1", labels[side], "Noisy (σ = 0.1)", arr["noise"][f"{side}.correct"][0, sigma],
                                  paper["Noisy (σ = 0.1)"]))
        for norm, eps in TABLE_EPS.items():
            at = f"{SYMBOLS[norm]} {'2/255' if norm == 'linf' else f'{eps:g}'}"
            rows.append(_accuracy_row("table1", labels[side], f"AutoAttack {at}", arr[f"autoattack-{side}-{norm}"]["robust"],
                                      paper[f"AutoAttack {at}"]))
            rows.append(_accuracy_row("table1", labels[side], f"worst case {at}", worst_case(arr, side, norm),
                                      None))
    return pd.DataFrame(rows)


def sparsity(steps: dict[str, dict[str, Any]], labels: dict[str, str]) -> pd.DataFrame:
    rows = []
    for side in SIDES:
        h = steps["sparsity"]["arrays"][f"{side}.hoyer"]
        for b in range(h.shape[1]):
            rows.append({"section": "sparsity", "model": labels[side], "item": f"block {b + 1}",
                         "hoyer": float(np.nanmean(h[:, b])), "hoyer_std": float(np.nanstd(h[:, b], ddof=1)),
                         "n": int(np.isfinite(h[:, b]).sum()), "hah": b < hah_blocks(steps)})
    return pd.DataFrame(rows)


def snr(steps: dict[str, dict[str, Any]], labels: dict[str, str]) -> pd.DataFrame:
    rows = []
    for side in SIDES:
        ratio = steps["snr"]["arrays"][f"{side}.ratio"]
        for b in range(ratio.shape[1]):
            rows.append({"section": "snr", "model": labels[side], "item": f"block {b + 1} input",
                         "snr_db": float(to_db(np.mean(ratio[:, b]))), "n": int(ratio.shape[0])})
    return pd.DataFrame(rows)


def noise(steps: dict[str, dict[str, Any]], labels: dict[str, str]) -> pd.DataFrame:
    rows = []
    sigmas = steps["noise"]["facts"]["sigmas"]
    for side in SIDES:
        correct = steps["noise"]["arrays"][f"{side}.correct"]  # [repeats, σ, N]
        per_repeat = correct.mean(axis=2)
        for j, s in enumerate(sigmas):
            rows.append({"section": "noise", "model": labels[side], "item": f"σ = {s:g}", "sigma": s,
                         "accuracy": float(per_repeat[:, j].mean()),
                         "accuracy_std": float(per_repeat[:, j].std(ddof=1)) if len(per_repeat) > 1 else float("nan"),
                         "n": int(correct.shape[2])})
    return pd.DataFrame(rows)


def corruptions(steps: dict[str, dict[str, Any]], labels: dict[str, str]) -> pd.DataFrame:
    """Accuracy per corruption (mean over its severities) and over all sets: the pooled count k of n = sets × images,
    its interval over the images (:func:`hahrobust.stats.clustered_interval`: an image's outcomes under the sets are
    correlated, so the pooled n would make Wilson's interval too narrow)."""
    sets = [tuple(x) for x in steps["corruptions"]["facts"]["sets"]]
    rows = []
    for side in SIDES:
        correct = steps["corruptions"]["arrays"][f"{side}.correct"]  # [sets, N]
        for name in dict.fromkeys(n for n, _ in sets):
            chosen = [k for k, (n, _) in enumerate(sets) if n == name]
            rows.append(_pooled_row(labels[side], name.replace("_", " "), correct[chosen]))
        rows.append(_pooled_row(labels[side], "all", correct))
    return pd.DataFrame(rows)


def minimum_norm(steps: dict[str, dict[str, Any]], labels: dict[str, str]) -> pd.DataFrame:
    rows = []
    for side in SIDES:
        correct = steps[f"fmn-plain-{side}-l2"]["arrays"]["correct"]
        for norm in NORMS:
            for adaptive in (False, True):
                d = distances(steps, side, norm, adaptive)
                summary = {"mean_distance": float(np.mean(d[correct & np.isfinite(d)])) if (correct & np.isfinite(d)).any()
                           else float("nan"), "median_distance": float(np.median(d)),
                           "unfound": int((correct & ~np.isfinite(d)).sum())}
                how = ("any attack" if adaptive else "plain") + (", FMN, DDN" if norm == "l2" else ", FMN") + (
                    ", audit" if adaptive and norm in TABLE_EPS else "")
                rows.append({"section": "distances", "model": labels[side], "item": f"{SYMBOLS[norm]} ({how})",
                             "norm": norm, "gradient": "adaptive" if adaptive else "plain", **summary,
                             "n": int(correct.sum())})
    return pd.DataFrame(rows)


def all_tables(steps: dict[str, dict[str, Any]], labels: dict[str, str]) -> dict[str, pd.DataFrame]:
    return {"table1": table1(steps, labels), "sparsity": sparsity(steps, labels), "snr": snr(steps, labels),
            "noise": noise(steps, labels), "distances": minimum_norm(steps, labels),
            **({"corruptions": corruptions(steps, labels)} if "corruptions" in steps else {})}
