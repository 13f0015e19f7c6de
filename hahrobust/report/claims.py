"""The paper's claims, tested on the report's per-image arrays, with verdicts computed by rules.

Every claim compares model A (the one under test) with B (its baseline) on the same images: exact McNemar
(:func:`hahrobust.stats.mcnemar`) for per-image booleans (clean, noisy, robust, worst case), the paired bootstrap and
sign-flip test (:func:`hahrobust.stats.paired_bootstrap`) for per-image floats (Hoyer, SNR in dB), Wilcoxon's
signed-rank test with censoring (:func:`hahrobust.stats.censored_signed_rank`) for minimum-norm distances, where an
image with no example found is "farther than any found", not missing. The p-values of all claims of one report form
one family, Holm-adjusted (:func:`hahrobust.stats.holm`), and each claim's interval is also taken at the
simultaneous level 1 − α/m; each verdict is :func:`hahrobust.report.rules.verdict` with the smallest effect of
interest in :data:`MIN_EFFECT` (the tolerances ``hahrobust check`` uses). A plain-gradient claim (AutoAttack,
minimum-norm distances by plain gradients) that holds while its adaptive counterpart (the audit's worst case,
distances through BPDA) does not hold, and whose estimate the adaptive claim's simultaneous interval excludes,
becomes **holds only against plain-gradient attacks** (:data:`RULE_PLAIN_ONLY`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from hahrobust import stats
from hahrobust.attacks.norms import NORMS, SYMBOLS
from hahrobust.metrics.snr import to_db
from hahrobust.report import rules
from hahrobust.report.steps import NOISY_SIGMA, TABLE_EPS, minimum_norm_step

ALPHA = 0.05
#: Smallest effect of interest per kind of measure (as ``hahrobust check``'s tolerances): accuracy in fractions
#: (2 points), Hoyer in its own unit, SNR in dB; distances (a rank correlation) have none.
MIN_EFFECT: dict[str, float | None] = {"accuracy": 0.02, "hoyer": 0.01, "snr_db": 0.5, "distance": None}
PLAIN_ONLY = "holds only against plain-gradient attacks"
RULE_PLAIN_ONLY = ("a plain-gradient claim that holds, while its adaptive counterpart (same images, every attack) "
                   "does not hold, reverses, is not resolved or holds only below the smallest effect of interest, "
                   "and the adaptive claim's simultaneous interval excludes the plain claim's estimate (the "
                   f"plain-gradient effect is refuted, not only unconfirmed) → {PLAIN_ONLY}")


@dataclass(frozen=True)
class Claim:
    key: str
    text: str  # "A is sparser than B in block 1"
    group: str  # the paper's claim it belongs to
    measure: str  # a key of MIN_EFFECT
    test: str
    comparison: rules.Comparison
    higher_is_better: bool = True
    adaptive: str | None = None  # the key of the adaptive counterpart of a plain-gradient claim
    measure_at: Callable[[float], rules.Comparison] | None = field(default=None, repr=False, compare=False)

    def at_level(self, level: float) -> rules.Comparison:
        """The comparison with its interval at ``level`` (the same test; a bootstrap's interval recomputed)."""
        if isinstance(self.comparison, stats.PairedComparison):
            return self.comparison.at_level(level)
        assert self.measure_at is not None, "a resampled comparison keeps how to measure it again"
        return self.measure_at(level)


@dataclass(frozen=True)
class Judged:
    claim: Claim
    p_adjusted: float
    verdict: rules.ClaimVerdict
    final: str  # the verdict shown: the rule's, or PLAIN_ONLY

    def row(self) -> dict[str, Any]:
        c, v = self.claim.comparison, self.verdict
        row = {"claim": self.claim.key, "group": self.claim.group, "measure": self.claim.measure,
               "text": self.claim.text, "verdict": self.final, "effect": v.effect, "low": v.low, "high": v.high,
               "joint_low": v.joint_low, "joint_high": v.joint_high, "joint_level": v.joint_level, "n": c.n,
               "p_value": c.p_value, "p_holm": self.p_adjusted, "holm_multiplier": v.multiplier,
               "test": self.claim.test, "reason": v.reason, "rule": v.rule, "n_needed": v.n_needed}
        if isinstance(c, stats.PairedComparison):
            row |= {"a": c.correct_a / c.n if c.n else float("nan"), "b": c.correct_b / c.n if c.n else float("nan"),
                    "discordant_a": c.b, "discordant_b": c.c}
        elif isinstance(c, stats.PairedRankComparison):
            row |= {"a": c.median_a, "b": c.median_b, "tied": c.n_tied, "censored_a": c.n_censored_a,
                    "censored_b": c.n_censored_b, "missing": c.n_missing, "resamples": c.n_resamples, "seed": c.seed}
        else:
            row |= {"a": c.mean_a, "b": c.mean_b, "dropped": c.n_dropped, "resamples": c.n_resamples, "seed": c.seed}
        return row


def _mcnemar(key: str, text: str, group: str, a: np.ndarray, b: np.ndarray, **kw: Any) -> Claim:
    return Claim(key, text, group, "accuracy", "exact McNemar; Newcombe paired CI",
                 stats.mcnemar(a.astype(bool), b.astype(bool)), **kw)


def _bootstrap(key: str, text: str, group: str, measure: str, a: np.ndarray, b: np.ndarray, seed: int,
               resamples: int, **kw: Any) -> Claim:
    measure_at = partial(stats.paired_bootstrap, a, b, seed=seed, n_resamples=resamples)
    return Claim(key, text, group, measure, f"paired bootstrap (BCa, {resamples} resamples) + sign-flip test",
                 measure_at(level=0.95), measure_at=lambda level: measure_at(level=level), **kw)


def _ranks(key: str, text: str, group: str, a: np.ndarray, b: np.ndarray, seed: int, resamples: int,
           **kw: Any) -> Claim:
    measure_at = partial(stats.censored_signed_rank, a, b, seed=seed, n_resamples=resamples)
    found = measure_at(level=0.95)
    test = (f"Wilcoxon signed-rank, no example found = farther than any found ({found.n_censored_a} A, "
            f"{found.n_censored_b} B censored; {found.n_tied} ties, {found.n_missing} missing); effect: rank-biserial "
            f"r, bootstrap CI ({resamples} resamples)")
    return Claim(key, text, group, "distance", test, found, measure_at=lambda level: measure_at(level=level), **kw)


def hah_blocks(steps: dict[str, dict[str, Any]]) -> int:
    """A's HaH blocks (the paper's claims are about them); all measured blocks when A has none."""
    facts = steps["sparsity"]["facts"]
    return int(facts["hah_blocks"]["a"]) or int(facts["blocks"])


def worst_case(arrays: dict[str, dict[str, np.ndarray]], side: str, norm: str) -> np.ndarray:
    """Per attack image, robust in the worst case: left unbroken by every member of the audit *and* by AutoAttack
    (the audit does not run AutoAttack, and an attack's strength is judged per image against the best any attack
    found), so the worst case is never above AutoAttack's figure. ``arrays``: step name → its arrays."""
    worst = np.asarray(arrays[f"audit-{side}"][f"{norm}.worst"], dtype=bool)
    autoattack = arrays.get(f"autoattack-{side}-{norm}")
    return worst & np.asarray(autoattack["robust"], dtype=bool) if autoattack is not None else worst


def distances(steps: dict[str, dict[str, Any]], side: str, norm: str, adaptive: bool) -> np.ndarray:
    """Per image of the attack set, the smallest verified distance of the plain-gradient attacks (ℓ2: FMN and DDN,
    as studies/minimum_norm.best_distances) or, ``adaptive``, of every attack run: BPDA included, and at the
    audit's norms the audit's verified breaks at Table 1's ε (an image it broke is at most ε away). Each is an
    upper bound on the image's true minimal distance, so the per-image best is the tightest (AttackBench's way);
    without the audit's bound, a minimum-norm attack weaker than the audit would credit a masked model with
    distances its worst case refutes."""
    found = [steps[name]["arrays"]["distance"] for name in (
        minimum_norm_step(side, norm, "fmn", "plain"), minimum_norm_step(side, norm, "fmn", "bpda"),
        minimum_norm_step(side, norm, "ddn", "plain")) if name in steps and (adaptive or "bpda" not in name)]
    best = np.min(np.stack(found), axis=0)
    audit = steps.get(f"audit-{side}", {}).get("arrays", {})
    if adaptive and f"{norm}.worst" in audit:
        robust = worst_case({name: step["arrays"] for name, step in steps.items()}, side, norm)
        broken = audit["correct"].astype(bool) & ~robust
        best = np.where(broken, np.minimum(best, TABLE_EPS[norm]), best)
    return best


def claims(steps: dict[str, dict[str, Any]], *, seed: int, resamples: int) -> list[Claim]:
    """Every claim the report tests, from the steps' arrays (see the module docstring)."""
    arr = {name: s["arrays"] for name, s in steps.items()}
    out: list[Claim] = []
    k = hah_blocks(steps)
    boot = {"seed": seed, "resamples": resamples}
    sparse = "sparser activations (Fig. 2)"
    for block in range(k):
        out.append(_bootstrap(f"sparser-block{block + 1}", f"A sparser than B in block {block + 1} (lower Hoyer)",
                              sparse, "hoyer", arr["sparsity"]["a.hoyer"][:, block], arr["sparsity"]["b.hoyer"][:, block],
                              higher_is_better=False, **boot))
    mean_hoyer = {s: np.nanmean(arr["sparsity"][f"{s}.hoyer"][:, :k], axis=1) for s in "ab"}
    out.append(_bootstrap("sparser", f"A sparser than B over blocks 1–{k} (mean Hoyer per image)", sparse, "hoyer",
                          mean_hoyer["a"], mean_hoyer["b"], higher_is_better=False, **boot))
    db = {s: to_db(arr["snr"][f"{s}.ratio"]) for s in "ab"}
    inputs = range(1, min(k + 1, db["a"].shape[1]))  # block n+1's input is block n's output
    snr = "higher SNR in the HaH blocks (Fig. 3)"
    for j in inputs:
        out.append(_bootstrap(f"snr-block{j + 1}", f"A's SNR higher than B's at block {j + 1}'s input", snr, "snr_db",
                              db["a"][:, j], db["b"][:, j], **boot))
    if len(inputs):
        with np.errstate(invalid="ignore"):
            mean_db = {s: db[s][:, list(inputs)].mean(axis=1) for s in "ab"}
        out.append(_bootstrap("snr", f"A's SNR higher than B's after the HaH blocks (mean dB, block inputs "
                              f"{inputs[0] + 1}–{inputs[-1] + 1})", snr, "snr_db", mean_db["a"], mean_db["b"], **boot))
    sigma = steps["noise"]["facts"]["sigmas"].index(NOISY_SIGMA)
    out.append(_mcnemar("noise", f"A more accurate than B under Gaussian noise σ = {NOISY_SIGMA:g} (first draw)",
                        "more accurate under noise (Fig. 4, Table 1)", arr["noise"]["a.correct"][0, sigma],
                        arr["noise"]["b.correct"][0, sigma]))
    if "corruptions" in steps:
        sets = len(steps["corruptions"]["facts"]["sets"])
        out.append(_bootstrap("corruptions", f"A more accurate than B under common corruptions (per image, the share "
                              f"of its {sets} CIFAR-10-C versions classified correctly)",
                              "more accurate under common corruptions (beyond the paper)", "accuracy",
                              arr["corruptions"]["a.correct"].mean(axis=0), arr["corruptions"]["b.correct"].mean(axis=0),
                              **boot))
    out.append(_mcnemar("clean-cost", "A less accurate than B on clean images (A's clean-accuracy cost)",
                        "the clean-accuracy cost (Table 1)", arr["clean"]["a.correct"], arr["clean"]["b.correct"],
                        higher_is_better=False))
    for norm, eps in TABLE_EPS.items():
        at = f"{SYMBOLS[norm]} ε = {'2/255' if norm == 'linf' else f'{eps:g}'}"
        out.append(_mcnemar(f"autoattack-{norm}", f"A more robust than B under AutoAttack {at}",
                            "more robust under AutoAttack (Table 1)", arr[f"autoattack-a-{norm}"]["robust"],
                            arr[f"autoattack-b-{norm}"]["robust"], adaptive=f"worst-{norm}"))
        out.append(_mcnemar(f"worst-{norm}", f"A more robust than B in the audit's worst case {at}",
                            "more robust under adaptive attack (beyond the paper)", worst_case(arr, "a", norm),
                            worst_case(arr, "b", norm)))
    both = arr[minimum_norm_step("a", "l2", "ddn", "plain")]["correct"] & arr[minimum_norm_step("b", "l2", "ddn", "plain")]["correct"]
    for norm in NORMS:
        for adaptive in (False, True):
            a, b = (distances(steps, s, norm, adaptive)[both] for s in "ab")
            how = ("any attack: BPDA" + (", the audit's breaks at ε" if norm in TABLE_EPS else "")
                   if adaptive else "plain gradients")
            out.append(_ranks(
                f"distance-{norm}{'-adaptive' if adaptive else ''}",
                f"A's minimum {SYMBOLS[norm]} distances larger than B's ({how}; images both classify correctly)",
                "larger minimum-norm distances (Fig. 5)" + ("" if not adaptive else ", adaptive"), a, b,
                adaptive=None if adaptive else f"distance-{norm}-adaptive", **boot))
    return out


def judge_all(found: list[Claim], alpha: float = ALPHA) -> list[Judged]:
    """Holm over the family, each claim's simultaneous interval (1 − α/m), its verdict, then the plain-only rule."""
    family = stats.holm([c.comparison.p_value for c in found], alpha)
    joint_level = 1 - alpha / max(len(found), 1)
    verdicts = {}
    for c, p, multiplier in zip(found, family.adjusted, family.multipliers):
        verdicts[c.key] = (p, rules.verdict(
            c.comparison, alpha, p_value=p if np.isfinite(p) else 1.0, joint=c.at_level(joint_level),
            multiplier=max(multiplier, 1), min_effect=MIN_EFFECT[c.measure], higher_is_better=c.higher_is_better))
    out = []
    for c in found:
        p, v = verdicts[c.key]
        final = v.verdict
        if c.adaptive is not None and v.verdict == "holds":
            counter = verdicts[c.adaptive][1]
            if counter.verdict != "holds" and not counter.joint_low <= v.effect <= counter.joint_high:
                final = PLAIN_ONLY
        out.append(Judged(c, float(p), v, final))
    return out
