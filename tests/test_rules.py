"""The report's verdict rules (hahrobust.report.rules, hahrobust.report.claims.judge_all): each defect the
statistician's reading found (issue 32, items 1–4) is a case here that failed on the rules before them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from hahrobust import stats
from hahrobust.report.claims import PLAIN_ONLY, Claim, judge_all
from hahrobust.report.rules import BELOW_INTEREST, VERDICTS, verdict


def test_verdict_holds_reverses_and_not_resolved() -> None:
    better = stats.mcnemar_table(100, 30, 5, 65)
    assert verdict(better).verdict == "holds"
    assert verdict(stats.mcnemar_table(100, 5, 30, 65)).verdict == "reverses"
    assert verdict(better, higher_is_better=False).verdict == "reverses"
    adjusted = verdict(better, p_value=0.2)  # a Holm-adjusted p passed by the caller rules
    assert adjusted.verdict == "not resolved" and adjusted.p_value == 0.2
    unclear = verdict(stats.mcnemar_table(100, 20, 10, 70))
    assert unclear.verdict == "not resolved"
    assert unclear.n_needed == stats.mcnemar_table(100, 20, 10, 70).images_needed().n_images
    assert f"about {unclear.n_needed} images" in unclear.reason and "α = 0.05" in unclear.rule
    assert set(VERDICTS) == {"holds", BELOW_INTEREST, "does not hold", "reverses", "not resolved"}


def test_verdict_does_not_hold_needs_a_minimum_effect() -> None:
    tie = stats.mcnemar_table(5000, 10, 10, 4980)  # large n, b = c: the CI is about ±0.003
    assert verdict(tie).verdict == "not resolved" and verdict(tie).n_needed is None
    judged = verdict(tie, min_effect=0.01)
    assert judged.verdict == "does not hold" and "0.01" in judged.rule
    assert verdict(stats.mcnemar_table(100, 20, 10, 70), min_effect=0.01).verdict == "not resolved"


def test_verdict_on_a_mean_difference_lower_is_better() -> None:
    rng = np.random.default_rng(9)
    b = rng.normal(0.5, 0.1, 80)
    a = b - 0.05 + rng.normal(0, 0.02, 80)  # A lower (e.g. a sparser Hoyer measure) and lower is better
    result = verdict(stats.paired_bootstrap(a, b, seed=0, n_resamples=2000), higher_is_better=False)
    assert result.verdict == "holds" and result.effect > 0 and result.low > 0
    noisy = stats.paired_bootstrap(b + rng.normal(0, 0.1, 80), b, seed=0, n_resamples=2000)
    unresolved = verdict(noisy, alpha=1e-6)
    assert unresolved.verdict == "not resolved" and unresolved.n_needed == noisy.images_needed(1e-6).n_images


def test_a_tiny_effect_does_not_flip_from_does_not_hold_to_holds_with_n() -> None:
    # Item 1: a 0.4-point effect, CI below the 2-point smallest effect of interest at both sizes.
    half = stats.mcnemar_table(2960, 60, 40, 1940)  # n = 5,000: p = 0.057
    double = stats.mcnemar_table(5920, 120, 80, 3880)  # n = 10,000: p = 0.0057
    assert half.p_value > 0.05 > 0.01 > double.p_value and double.high < 0.02
    assert verdict(half, min_effect=0.02).verdict == "does not hold"
    assert verdict(double, min_effect=0.02).verdict == BELOW_INTEREST  # was "holds"
    assert verdict(double).verdict == "holds"  # without a smallest effect of interest nothing qualifies it
    big = stats.mcnemar_table(5000, 400, 100, 4500)  # a 3-point effect stays an unqualified "holds"
    assert verdict(big, min_effect=0.02).verdict == "holds"


def _exact_mcnemar_power_by_simulation(n: int, p10: float, p01: float, alpha: float, draws: int) -> float:
    rng = np.random.default_rng(0)
    cells = rng.multinomial(n, [p10, p01, 1 - p10 - p01], size=draws)
    b, c = cells[:, 0], cells[:, 1]
    p = np.minimum(1.0, 2 * sps.binom.cdf(np.minimum(b, c), b + c, 0.5))
    return float(np.mean(p <= alpha))


def test_images_that_would_resolve_a_claim_use_its_holm_multiplier() -> None:
    # Item 2: the small pair's noise claim (b = 84, c = 54 of 500), 24th smallest p of 28 claims: Holm tests it at
    # α/5. 600 images (the unadjusted figure) give power 0.56 there; the rule now says 893.
    noise = stats.mcnemar_table(262, 84, 54, 100)
    judged = verdict(noise, p_value=0.066, multiplier=5)
    assert judged.verdict == "not resolved" and judged.n_needed == 893 and "α/5" in judged.reason
    assert verdict(noise, p_value=0.066).n_needed == 600  # the old, unadjusted figure
    simulated = _exact_mcnemar_power_by_simulation(893, 84 / 500, 54 / 500, 0.05 / 5, 4000)
    assert simulated == pytest.approx(0.8, abs=0.03)
    assert _exact_mcnemar_power_by_simulation(600, 84 / 500, 54 / 500, 0.05 / 5, 4000) == pytest.approx(0.56, abs=0.03)
    medium = stats.mcnemar_table(200, 68, 53, 179)  # the medium pair's: 27th of 28, α/2
    assert verdict(medium, p_value=0.41, multiplier=2).n_needed == 2554


def _claim(key: str, comparison: stats.PairedComparison, adaptive: str | None = None) -> Claim:
    return Claim(key, key, "group", "accuracy", "exact McNemar", comparison, adaptive=adaptive)


def test_not_resolved_sits_beside_a_simultaneous_interval_that_holds_zero() -> None:
    # Item 4: the small noise claim read "not resolved" beside +6 [+1.4, +10.6]; in a family of 28 its simultaneous
    # interval holds 0, and "does not hold" is decided with that interval too.
    filler = [_claim(f"other{i}", stats.mcnemar_table(100, 10, 10, 80)) for i in range(4)]  # p = 1: after it
    strong = [_claim(f"strong{i}", stats.mcnemar_table(100, 60, 0, 40)) for i in range(23)]  # p ≈ 0: before it
    judged = {j.claim.key: j for j in judge_all([*strong, _claim("noise", stats.mcnemar_table(262, 84, 54, 100)),
                                                 *filler])}
    noise = judged["noise"].verdict
    assert judged["noise"].final == "not resolved" and noise.low > 0  # its own 95 % interval excludes 0 ...
    assert noise.joint_low < 0 < noise.joint_high and noise.joint_level == pytest.approx(1 - 0.05 / 28)  # ... not so
    assert noise.multiplier == 5 and noise.n_needed == 893
    # A does-not-hold decided by a per-claim interval may not survive the simultaneous one.
    edge = stats.mcnemar_table(250, 10, 10, 230)  # per-claim upper bound 1.8 points; jointly 2.8
    alone = judge_all([_claim("edge", edge)])[0]
    family = {j.claim.key: j for j in judge_all([_claim("edge", edge), *filler, *strong])}["edge"]
    assert alone.final == "does not hold" and edge.high < 0.02 < family.verdict.joint_high
    assert family.final == "not resolved"


def test_plain_only_needs_the_adaptive_claim_to_refute_the_plain_estimate() -> None:
    # Item 3: the rule fired on anything but "holds" (a not-resolved counterpart included); now the adaptive claim
    # must not hold and its simultaneous interval must exclude the plain claim's estimate.
    plain = stats.mcnemar_table(10, 40, 5, 145)  # A +17.5 points under a plain-gradient attack
    cases = {"reverses": stats.mcnemar_table(5, 2, 30, 163),  # adaptive: A 14 points worse
             "unresolved, refutes": stats.mcnemar_table(5, 8, 5, 182),  # +1.5 [−2, +5]: excludes +17.5
             "unresolved, consistent": stats.mcnemar_table(5, 30, 20, 145)}  # +5 [−2, +12]... wide enough?
    finals = {}
    for name, adaptive in cases.items():
        judged = judge_all([_claim("plain", plain, adaptive="adaptive"), _claim("adaptive", adaptive)])
        finals[name] = (judged[0].final, judged[1].final, judged[1].verdict.joint_high)
    assert finals["reverses"][:2] == (PLAIN_ONLY, "reverses")
    assert finals["unresolved, refutes"][:2] == (PLAIN_ONLY, "not resolved")
    assert finals["unresolved, consistent"][1] == "not resolved"
    consistent = stats.mcnemar_table(5, 45, 30, 120)  # +7.5 with an interval reaching past +17.5? then "holds" stays
    judged = judge_all([_claim("plain", plain, adaptive="adaptive"), _claim("adaptive", consistent)])
    assert judged[1].final == "not resolved"
    assert (judged[0].final == "holds") == (judged[1].verdict.joint_high >= judged[0].verdict.effect)
