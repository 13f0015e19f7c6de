"""hahrobust.stats against scipy/statsmodels, brute-force enumeration, seeded simulation and worked examples."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.proportion import confint_proportions_2indep

from hahrobust import stats
from hahrobust.errors import HahrobustError


def _plain(value: object) -> bool:
    """Only Python's own types (what json writes without a custom encoder), recursively."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(map(_plain, value))
    return value is None or type(value) in (bool, int, float, str)


# --- Wilson ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k, n, low, high", [
    # Newcombe (1998, Stat Med 17:857) Table I, method 3 (score, no continuity correction).
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_newcombes_worked_examples(k, n, low, high):
    p = stats.Proportion(k, n)
    assert (round(p.low, 4), round(p.high, 4)) == (low, high)


@pytest.mark.parametrize("k, n, level", [(8, 200, 0.95), (17, 200, 0.95), (3, 7, 0.9), (999, 1000, 0.99), (5, 10, 0.5)])
def test_wilson_matches_the_closed_form(k, n, level):
    z = sps.norm.ppf(0.5 + level / 2)
    centre, half = (k + z**2 / 2) / (n + z**2), z / (n + z**2) * math.sqrt(k * (n - k) / n + z**2 / 4)
    p = stats.Proportion(k, n, level)
    assert p.value == k / n
    assert p.low == pytest.approx(centre - half, abs=1e-12) and p.high == pytest.approx(centre + half, abs=1e-12)


def test_wilson_worked_example_8_of_200_and_the_format():
    # By hand: z = 1.959964, centre = 9.920729/203.841459 = 0.048669, half = z·√(7.68 + 0.960365)/203.841459 = 0.028263.
    p = stats.Proportion(8, 200)
    assert p.low == pytest.approx(0.020406, abs=2e-6) and p.high == pytest.approx(0.076932, abs=2e-6)
    assert stats.Proportion(17, 200).format() == "8.5 % [5.4, 13.2] (17/200)"
    assert stats.Proportion(17, 200).format(digits=2) == "8.50 % [5.37, 13.19] (17/200)"


def test_wilson_edge_cases():
    assert stats.Proportion(0, 50).low == 0.0 and stats.Proportion(50, 50).high == 1.0
    assert stats.Proportion(50, 50).low == pytest.approx(1 - stats.Proportion(0, 50).high)
    empty = stats.Proportion(0, 0)
    assert all(math.isnan(x) for x in (empty.value, empty.low, empty.high))
    assert empty.format() == "n/a (0/0)"
    assert stats.Proportion(np.int64(3), np.int64(9)).k == 3  # numpy counts are accepted
    assert _plain(stats.Proportion(np.int64(3), 9).to_dict())
    narrow, wide = stats.Proportion(30, 100, 0.9), stats.Proportion(30, 100, 0.99)
    assert wide.low < narrow.low and wide.high > narrow.high


@pytest.mark.parametrize("k, n, level", [(5, 4, 0.95), (-1, 4, 0.95), (1.0, 4, 0.95), (True, 4, 0.95), (1, 4, 1.0)])
def test_proportion_rejects_bad_input(k, n, level):
    with pytest.raises(HahrobustError):
        stats.Proportion(k, n, level)


# --- McNemar + Newcombe paired interval --------------------------------------------------------------------------

TABLES = [(59, 6, 16, 80), (36, 12, 2, 0), (20, 12, 2, 16), (100, 0, 0, 100), (0, 7, 0, 3), (500, 40, 25, 435),
          (3, 1, 9, 1), (0, 0, 0, 0)]


@pytest.mark.parametrize("table", TABLES)
def test_mcnemar_p_values_match_statsmodels_and_scipy(table):
    both, b, c, neither = table
    result = stats.mcnemar_table(*table)
    assert (result.b, result.c, result.n) == (b, c, sum(table))
    expected = sm_mcnemar([[both, b], [c, neither]], exact=True).pvalue if b + c else 1.0
    assert result.p_value == pytest.approx(expected, rel=1e-12)
    if b + c:
        assert result.p_a_better == pytest.approx(sps.binomtest(b, b + c, 0.5, alternative="greater").pvalue)
        assert result.p_b_better == pytest.approx(sps.binomtest(b, b + c, 0.5, alternative="less").pvalue)
    else:
        assert result.p_a_better == result.p_b_better == 1.0


def test_mcnemar_from_boolean_arrays():
    rng = np.random.default_rng(3)
    a, b = rng.random(500) < 0.7, rng.random(500) < 0.6
    result = stats.mcnemar(a, b)
    assert (result.b, result.c) == (int(np.sum(a & ~b)), int(np.sum(~a & b)))
    assert result.accuracy_a.k == a.sum() and result.accuracy_b.k == b.sum()
    assert result.difference == pytest.approx(a.mean() - b.mean())
    assert result.low < result.difference < result.high
    d = result.to_dict()
    assert _plain(d) and d["accuracy_a"]["k"] == a.sum()
    json.dumps(d)
    for bad in [(a, b[:-1]), (a.astype(int), b), (a[None], b[None])]:
        with pytest.raises(HahrobustError):
            stats.mcnemar(*bad)


def test_newcombe_paired_interval_worked_example():
    # Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (2017) §8, Cavo et al. (2012):
    # estimate -0.0621, Newcombe square-and-add 95 % CI -0.1186 to -0.0046 (R package contingencytables' tests).
    result = stats.mcnemar_table(59, 6, 16, 80)
    assert round(result.difference, 4) == -0.0621
    assert (round(result.low, 4), round(result.high, 4)) == (-0.1186, -0.0046)


@pytest.mark.parametrize("table", [(10, 5, 4, 2), (0, 5, 0, 3), (40, 10, 10, 3), (7, 2, 3, 1)])
def test_newcombe_paired_reduces_to_the_independent_interval_when_phi_is_zero(table):
    # φ = 0 (0 <= ad - bc <= n/2, or an empty margin): method 10 is Newcombe's independent-samples hybrid score
    # interval at n and n, which statsmodels implements separately.
    both, b, c, neither = table
    n = sum(table)
    result = stats.mcnemar_table(*table)
    low, high = confint_proportions_2indep(both + b, n, both + c, n, method="newcomb", compare="diff")
    assert (result.low, result.high) == pytest.approx((low, high), abs=1e-12)


def test_newcombe_paired_is_narrower_with_positive_correlation():
    correlated, independent = stats.mcnemar_table(60, 10, 2, 28), stats.mcnemar_table(42, 28, 20, 10)
    assert correlated.difference == independent.difference
    assert correlated.high - correlated.low < independent.high - independent.low


def test_newcombe_paired_coverage_by_simulation():
    # 95 % interval, p10 = 0.08, p01 = 0.03, n = 200: coverage within Monte-Carlo error of 0.95 (Newcombe reports
    # 0.94-0.96 for method 10 in this range).
    rng = np.random.default_rng(11)
    tables = rng.multinomial(200, [0.6, 0.08, 0.03, 0.29], size=1500)
    hits = [(r.low <= 0.05 <= r.high) for r in (stats.mcnemar_table(*map(int, t)) for t in tables)]
    assert abs(np.mean(hits) - 0.95) < 0.02


# --- sample size ------------------------------------------------------------------------------------------------

def test_connor_sample_size_worked_example():
    # Connor (1987) p. 209 as in powerandsamplesize.com: p01 = 0.45, p10 = 0.05, α = 0.05 two-sided, 80 % → 23.
    for p10, p01 in [(0.05, 0.45), (0.45, 0.05)]:
        size = stats.mcnemar_sample_size(p10, p01, alpha=0.05, power=0.8)
        assert size.n_images == 23 and size.n == pytest.approx(22.01, abs=0.01)
    zero = stats.mcnemar_sample_size(0.1, 0.1)
    assert zero.n == math.inf and zero.n_images is None


def test_exact_power_matches_brute_force_enumeration():
    n, p10, p01, alpha = 18, 0.25, 0.05, 0.05
    probs = [1 - p10 - p01, p10, p01]
    power = 0.0
    for b, c in itertools.product(range(n + 1), repeat=2):
        if b + c <= n and b + c and sps.binomtest(b, b + c, 0.5).pvalue <= alpha:
            power += sps.multinomial.pmf([n - b - c, b, c], n, probs)
    assert stats.mcnemar_exact_power(n, p10, p01, alpha) == pytest.approx(power, abs=1e-12)


def test_sample_size_reaches_its_power_in_simulation():
    p10, p01 = 0.10, 0.04
    size = stats.mcnemar_sample_size(p10, p01)
    rng = np.random.default_rng(7)
    tables = rng.multinomial(size.n_images, [1 - p10 - p01, p10, p01], size=3000)
    b, c = tables[:, 1], tables[:, 2]
    z_test = np.abs(b - c) / np.sqrt(np.maximum(b + c, 1)) >= sps.norm.ppf(0.975)  # Connor's normal-approx test
    exact = [sm_mcnemar([[0, x], [y, 0]], exact=True).pvalue <= 0.05 for x, y in zip(b, c)]
    assert abs(z_test.mean() - 0.8) < 0.03
    assert abs(np.mean(exact) - size.exact_power) < 0.03
    assert 0.7 < size.exact_power < 0.8  # the exact test is somewhat conservative at Connor's n


# --- paired bootstrap ---------------------------------------------------------------------------------------------

def test_sign_flip_p_value_worked_example_and_scipy():
    # d = (1, 2, 3): of the 8 sign assignments only (+,+,+) and (-,-,-) reach |mean| >= 2, so p = 2/8.
    assert stats.sign_flip_p_value([1.0, 2.0, 3.0], 1000, np.random.default_rng(0)) == 0.25
    rng = np.random.default_rng(4)
    d = rng.normal(0.4, 1.0, 11)
    expected = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=10_000).pvalue
    assert stats.sign_flip_p_value(d, 10_000, np.random.default_rng(0)) == pytest.approx(expected, rel=1e-12)
    d = rng.normal(0.3, 1.0, 40)
    expected = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=20_000,
                                    **{stats._RNG_KW: np.random.default_rng(1)}).pvalue
    assert stats.sign_flip_p_value(d, 20_000, np.random.default_rng(2)) == pytest.approx(expected, abs=0.01)


def test_paired_bootstrap_is_scipys_paired_bootstrap_and_deterministic():
    rng = np.random.default_rng(5)
    a = rng.normal(1.0, 1.0, 60)
    b = a - 0.3 + rng.normal(0, 0.5, 60)
    result = stats.paired_bootstrap(a, b, seed=42, n_resamples=2000)
    boot_rng = np.random.default_rng(np.random.SeedSequence(42).spawn(2)[0])
    ci = sps.bootstrap((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), paired=True, n_resamples=2000,
                       **{stats._RNG_KW: boot_rng}).confidence_interval
    assert (result.low, result.high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert result.difference == pytest.approx(np.mean(a - b), abs=1e-12)
    assert result.p_value < 0.01 and result.low > 0
    assert stats.paired_bootstrap(a, b, seed=42, n_resamples=2000) == result
    other = stats.paired_bootstrap(a, b, seed=43, n_resamples=2000)
    assert (other.low, other.p_value) != (result.low, result.p_value)
    assert _plain(result.to_dict())


def test_paired_bootstrap_nan_policy_and_degenerate_inputs():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=30), rng.normal(size=30)
    a_bad, b_bad = a.copy(), b.copy()
    a_bad[[1, 5]], b_bad[[5, 9]] = np.nan, np.inf
    clean = np.ones(30, bool)
    clean[[1, 5, 9]] = False
    dirty = stats.paired_bootstrap(a_bad, b_bad, seed=1, n_resamples=500)
    assert (dirty.n, dirty.n_dropped) == (27, 3)
    kept = stats.paired_bootstrap(a[clean], b[clean], seed=1, n_resamples=500)
    assert (dirty.low, dirty.high, dirty.p_value) == (kept.low, kept.high, kept.p_value)
    same = stats.paired_bootstrap(np.full(8, 2.0), np.full(8, 1.5), seed=0)
    assert (same.difference, same.low, same.high) == (0.5, 0.5, 0.5) and same.p_value == pytest.approx(2 / 256)
    one = stats.paired_bootstrap([1.0, np.nan], [0.0, 1.0], seed=0)
    assert one.n == 1 and math.isnan(one.low) and math.isnan(one.p_value)
    with pytest.raises(HahrobustError):
        stats.paired_bootstrap(a, b[:-1], seed=0)
    with pytest.raises(HahrobustError):
        stats.paired_bootstrap(a, b, seed=0, n_resamples=0)
    with pytest.raises(HahrobustError):
        stats.paired_bootstrap(a, b, seed=-1)


def test_paired_bootstrap_null_is_not_rejected_too_often():
    # 40 null data sets: the sign-flip test rejects at 5 % in about 2 of them; more than 8 would be wrong (P < 0.001).
    rng = np.random.default_rng(8)
    rejections = sum(stats.paired_bootstrap(rng.normal(size=50), rng.normal(size=50), seed=i, n_resamples=999,
                                            ci_method="percentile").p_value <= 0.05 for i in range(40))
    assert rejections <= 8


# --- Holm -------------------------------------------------------------------------------------------------------

def test_holm_worked_example_keeps_the_input_order():
    # Sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → monotone 0.06.
    result = stats.holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    assert result.adjusted == pytest.approx((0.03, 0.06, 0.06, 0.02))
    assert result.reject == (True, False, False, True)
    assert _plain(result.to_dict())


def test_holm_equals_statsmodels_on_random_families():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for size in (1, 2, 5, 28, 100):
        for _ in range(20):
            p = rng.uniform(0, 0.2, size) ** rng.uniform(0.5, 3)
            p[rng.random(size) < 0.2] = p[0]  # ties
            reject, adjusted = multipletests(p, alpha=0.05, method="holm")[:2]
            result = stats.holm(p)
            assert result.adjusted == pytest.approx(tuple(adjusted), rel=1e-12)
            assert result.reject == tuple(map(bool, reject))


def test_holm_leaves_nan_out_of_the_family():
    result = stats.holm([0.01, float("nan"), 0.04])
    assert result.adjusted[0] == pytest.approx(0.02) and result.adjusted[2] == pytest.approx(0.04)
    assert math.isnan(result.adjusted[1]) and result.reject == (True, False, True)
    assert stats.holm([]).adjusted == ()
    with pytest.raises(HahrobustError):
        stats.holm([0.2, 1.5])


# --- masking --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("b", range(7))
def test_masking_test_without_plain_only_breaks_is_half_to_the_b(b):
    result = stats.masking_test(b, 0, 3, 100)
    assert result.p_value == pytest.approx(0.5**b) and result.smallest_p == pytest.approx(0.5**b)
    assert (result.p_value <= 0.05) == (b >= 5)
    assert result.share == b / 100 and result.low <= result.share <= result.high


def test_masking_test_is_the_one_sided_exact_mcnemar_on_both_discordant_cells():
    result = stats.masking_test(8, 2, 5, 100)
    assert result.p_value == pytest.approx(56 / 1024)  # P(Bin(10, ½) ≥ 8) = (45 + 10 + 1)/1024
    assert result.p_value == pytest.approx(sps.binomtest(8, 10, 0.5, alternative="greater").pvalue)
    table = stats.mcnemar_table(5, 8, 2, 85)  # the share and its interval are the paired difference's
    assert (result.share, result.low, result.high) == (table.difference, table.low, table.high) == (
        pytest.approx(0.06), table.low, table.high)
    # The old rule's defect: 5 images of 5,000 gave p = 0.031 and "masked" for a 0.1 % share; with the plain side
    # observed, 5 against 4 is no evidence at all.
    assert stats.masking_test(5, 4, 0, 5000).p_value == pytest.approx(0.5)  # P(Bin(9, ½) ≥ 5)
    with pytest.raises(HahrobustError):
        stats.masking_test(8, 2, 1, 10)


# ------------------------------------------------------------------------------- clustered (pooled) accuracies


def test_a_clustered_interval_of_one_set_is_about_wilsons() -> None:
    rng = np.random.default_rng(0)
    correct = rng.random((1, 400)) < 0.3
    low, high = stats.clustered_interval(correct)
    w_low, w_high = stats.wilson_interval(int(correct.sum()), 400)
    assert w_low - 0.002 < low < w_low and w_high < high < w_high + 0.002  # n* = 399: barely wider


def test_sets_that_agree_per_image_count_as_the_images_not_as_their_pooled_n() -> None:
    rng = np.random.default_rng(1)
    per_image = rng.random(300) < 0.6
    same = np.tile(per_image, (5, 1))  # five severities with identical outcomes per image
    independent = rng.random((5, 300)) < 0.6
    width = lambda c: np.subtract(*stats.clustered_interval(c)[::-1])  # noqa: E731
    pooled_wilson = np.subtract(*stats.wilson_interval(int(same.sum()), same.size)[::-1])
    assert width(same) == pytest.approx(np.subtract(*stats.wilson_interval(int(per_image.sum()), 299)[::-1]), rel=0.02)
    assert width(same) > 2 * pooled_wilson  # √5 wider than pretending 1,500 independent trials
    assert width(independent) == pytest.approx(np.subtract(*stats.wilson_interval(int(independent.sum()), 1500)[::-1]),
                                               rel=0.15)


def test_a_clustered_interval_at_the_bounds_and_bad_shapes() -> None:
    assert stats.clustered_interval(np.ones((3, 50), bool))[1] == 1.0
    assert stats.clustered_interval(np.zeros((3, 50), bool))[0] == 0.0
    with pytest.raises(HahrobustError, match=r"\[sets, images\]"):
        stats.clustered_interval(np.ones(5))


def test_a_clustered_interval_does_not_jump_when_every_share_is_equal() -> None:
    # 2 sets × 100 images, each image right exactly once: every share ½, Var̂ = 0. The formula's limit is the cap
    # (sets·images); it fell back to the images instead: [0.404, 0.596], against [0.436, 0.574] one cell away.
    equal = np.zeros((2, 100), bool)
    equal[0, :50] = equal[1, 50:] = True
    nearby = equal.copy()
    nearby[1, 0] = True  # one image right twice: shares no longer all equal
    low, high = stats.clustered_interval(equal)
    assert (low, high) == pytest.approx(stats.wilson_interval(100, 200), abs=1e-12)
    near_low, near_high = stats.clustered_interval(nearby)
    assert abs(low - near_low) < 0.01 and abs(high - near_high) < 0.01


# --- censored paired ranks (minimum-norm distances with "no example found") -----------------------------------------

def test_censored_signed_rank_ranks_no_example_found_above_every_distance() -> None:
    rng = np.random.default_rng(3)
    b = rng.exponential(1.0, 40)
    a = b * rng.uniform(0.9, 1.1, 40)
    a[:8] = np.inf  # A: no example found on 8 images; B's were found
    b[30] = np.inf  # B censored once
    a[39] = b[39] = np.inf  # both censored: a tie
    a[38] = np.nan  # not measured
    found = stats.censored_signed_rank(a, b, seed=0, n_resamples=2000)
    assert (found.n, found.n_tied, found.n_censored_a, found.n_censored_b, found.n_missing) == (39, 1, 8, 1, 1)
    # The test is scipy's signed-rank test on the differences with each censored one above every finite |d|.
    keep = np.isfinite(a) & np.isfinite(b)
    d = np.where(keep, np.nan_to_num(a, posinf=0.0) - np.nan_to_num(b, posinf=0.0), 0.0)
    d[:8], d[30] = 1e6, -1e6
    d = np.delete(d, [38, 39])
    assert found.p_value == pytest.approx(sps.wilcoxon(d).pvalue)
    ranks = sps.rankdata(np.abs(d))
    assert found.difference == pytest.approx(np.sum(np.sign(d) * ranks) / ranks.sum())
    assert found.low < found.difference < found.high and found.difference > 0
    # Dropping the censored pairs (the old way) loses exactly the evidence that A's distances are larger.
    dropped = stats.censored_signed_rank(np.where(np.isinf(a), np.nan, a), np.where(np.isinf(b), np.nan, b), seed=0,
                                         n_resamples=2000)
    assert dropped.n_missing == 11 and dropped.p_value > 0.2 > 0.05 > found.p_value
    assert stats.censored_signed_rank(a, b, seed=0, n_resamples=2000) == found  # deterministic for a seed
    with pytest.raises(HahrobustError, match="-inf"):
        stats.censored_signed_rank([-np.inf, 1.0], [1.0, 2.0], seed=0)


def test_censored_signed_rank_bootstrap_matches_a_per_resample_loop() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(1.2, 0.3, 25), rng.normal(1.0, 0.3, 25)
    a[0] = np.inf
    found = stats.censored_signed_rank(a, b, seed=11, n_resamples=300)
    d = a - b
    d[0] = 1.0 + 2 * np.max(np.abs(d[1:]))
    draws = np.random.default_rng(np.random.SeedSequence(11)).integers(0, 25, (300, 25))
    r = [np.sum(np.sign(x) * sps.rankdata(np.abs(x))) / sps.rankdata(np.abs(x)).sum() for x in d[draws]]
    assert (found.low, found.high) == pytest.approx(tuple(np.quantile(r, [0.025, 0.975])))


def test_holm_reports_each_claims_multiplier() -> None:
    result = stats.holm([0.04, 0.001, float("nan"), 0.02])
    assert result.multipliers == (1, 3, 0, 2)


@pytest.mark.parametrize("n", [1, 3, 7, 17, 200])
def test_zero_breaks_bound_is_exact_for_equal_images_and_holds_for_unequal_ones(n: int) -> None:
    """At the bound, equal per-image break probabilities make "0 of n" exactly as likely as α; any unequal
    probabilities with the same expected breaks make it less likely (so the observed zero rejects them too), and
    the bound stays below −ln α ≈ 3.0."""
    bound = stats.zero_breaks_bound(n, alpha=0.05)
    assert (1 - bound / n) ** n == pytest.approx(0.05)
    assert bound < -math.log(0.05)
    rng = np.random.default_rng(n)
    for _ in range(200):
        p = rng.dirichlet(np.full(n, 0.3)) * bound  # unequal, summing to the bound
        if (p <= 1).all():
            assert np.prod(1 - p) <= 0.05 + 1e-12
    assert stats.zero_breaks_bound(0) == 0.0
    with pytest.raises(HahrobustError):
        stats.zero_breaks_bound(-1)
