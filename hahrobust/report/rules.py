"""The report's verdict rules: how a paired comparison, its Holm-adjusted p and its simultaneous interval become one
of :data:`VERDICTS`.

The statistics are :mod:`hahrobust.stats`'; the words and their thresholds are the report's and live here, each
stated as a rule the report prints beside its claims. Decisions a reader can check against one interval:

- **holds / reverses**: the Holm-adjusted p ≤ α, in the claimed direction or against it (family-wise error ≤ α).
- **holds, below the smallest effect of interest**: holds, but the simultaneous interval lies entirely below the
  smallest effect of interest, so a larger n cannot turn "does not hold" into an unqualified "holds" (the verdict
  no longer flips with n for an effect too small to matter; Lakens, Scheel & Isager 2018 call this "statistically
  different from zero and statistically equivalent").
- **does not hold**: not significant, and the simultaneous interval rules out effects as large as the smallest
  effect of interest. Deciding with simultaneous intervals (Bonferroni, each at 1 − α/m: all m cover their true
  effects at once with probability ≥ 1 − α) puts this verdict under the same family-wise control as the others.
- **not resolved**: otherwise, with the images that would resolve it at the claim's Holm multiplier (α / (m − rank
  + 1), the level its step of Holm's procedure tests at).

A claim Holm leaves unrejected has m·p ≥ its Holm p > α, so its simultaneous interval holds 0 wherever test and
interval agree: "not resolved" no longer sits beside an interval that excludes 0. The converse need not hold (Holm
rejects more than Bonferroni), so a claim may hold with a simultaneous interval that touches 0; its own 95 %
interval then excludes it, and the report shows both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from hahrobust import stats
from hahrobust.errors import HahrobustError

BELOW_INTEREST = "holds, below the smallest effect of interest"
Verdict = Literal["holds", "holds, below the smallest effect of interest", "does not hold", "reverses", "not resolved"]
VERDICTS: tuple[str, ...] = get_args(Verdict)
Comparison = stats.PairedComparison | stats.PairedMeanDifference | stats.PairedRankComparison


@dataclass(frozen=True)
class ClaimVerdict:
    """A verdict on "A better than B", the general ``rule`` it follows and the ``reason`` this case met.

    ``low``/``high``: the comparison's own interval (at its level); ``joint_low``/``joint_high``: the simultaneous
    one at ``joint_level`` that the verdict is decided with; ``multiplier``: the claim's Holm multiplier."""

    verdict: Verdict
    rule: str
    reason: str
    effect: float
    low: float
    high: float
    joint_low: float
    joint_high: float
    joint_level: float
    p_value: float
    alpha: float
    min_effect: float | None
    multiplier: int
    n_needed: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _signed(comparison: Comparison, sign: float) -> tuple[float, float, float]:
    low, high = sorted((sign * comparison.low, sign * comparison.high))
    return sign * comparison.difference, low, high


def verdict(comparison: Comparison, alpha: float = 0.05, *, p_value: float | None = None,
            joint: Comparison | None = None, multiplier: int = 1, min_effect: float | None = None,
            higher_is_better: bool = True, power: float = 0.8) -> ClaimVerdict:
    """Verdict on the directional claim "A better than B" from a paired comparison (A − B; ``higher_is_better``
    False flips the sign, e.g. for a Hoyer measure where sparser is the claim), by the module's rules.

    ``p_value``: the two-sided p to judge by (the Holm-adjusted one of the claim's family), defaulting to the
    comparison's own; ``joint``: the same comparison with its simultaneous interval (default: ``comparison``, a
    family of one); ``multiplier``: the claim's Holm multiplier, for the images that would resolve it."""
    if not 0 < alpha < 1:
        raise HahrobustError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    if multiplier < 1:
        raise HahrobustError(f"a Holm multiplier is at least 1, got {multiplier}")
    p = comparison.p_value if p_value is None else float(p_value)
    sign = 1.0 if higher_is_better else -1.0
    effect, low, high = _signed(comparison, sign)
    _, joint_low, joint_high = _signed(joint if joint is not None else comparison, sign)
    joint_level = (joint if joint is not None else comparison).level
    interest = "" if min_effect is None else (
        f"; holds but the simultaneous CI's upper bound < {min_effect:g} → {BELOW_INTEREST}; not significant and "
        f"that bound < {min_effect:g} → does not hold")
    rule = (f"effect = A − B{'' if higher_is_better else ' with its sign flipped (lower is better)'}: two-sided "
            f"p (Holm) ≤ α = {alpha:g} and effect > 0 → holds; p ≤ α and effect < 0 → reverses{interest}; "
            f"otherwise → not resolved (simultaneous CI: {100 * joint_level:.3g} %)")
    stated = (f"effect = {effect:+.4g} [{joint_low:+.4g}, {joint_high:+.4g}] ({100 * joint_level:.3g} % "
              f"simultaneous), p = {p:.3g}")
    negligible = min_effect is not None and joint_high < min_effect
    n_needed = None
    if p <= alpha and effect > 0:
        result, reason = ((BELOW_INTEREST, f"{stated} ≤ α, but the CI excludes effects ≥ {min_effect:g}")
                          if negligible else ("holds", f"{stated} ≤ α in the claimed direction"))
    elif p <= alpha and effect < 0:
        result, reason = "reverses", f"{stated} ≤ α against the claimed direction"
    elif negligible:
        result, reason = "does not hold", f"{stated}: the CI excludes effects ≥ {min_effect:g}"
    else:
        n_needed = comparison.images_needed(alpha / multiplier, power).n_images
        more = "" if n_needed is None else (f"; about {n_needed} images would resolve it at {100 * power:g} % power "
                                            f"(α/{multiplier}, its Holm step)")
        result, reason = "not resolved", f"{stated} > α{more}"
    return ClaimVerdict(verdict=result, rule=rule, reason=reason, effect=effect, low=low, high=high,
                        joint_low=joint_low, joint_high=joint_high, joint_level=joint_level, p_value=p, alpha=alpha,
                        min_effect=min_effect, multiplier=multiplier, n_needed=n_needed)
