"""Randomized smoothing (hahrobust.metrics.smoothing and `hahrobust certify`): the closed-form linear case, the
Clopper–Pearson bound against scipy, a cross-check against ART's implementation, batch-size independence,
bad input and resume."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import beta, binom, binomtest, norm
from torch import nn
from typer.testing import CliRunner

import hahrobust.evaluate.certification as certify_cli  # the command's library function calls certify_set
from hahrobust.cli import app
from hahrobust.data import ImageSet
from hahrobust.metrics import smoothing
from hahrobust.metrics.smoothing import (
    ABSTAIN, certified_accuracy, certify, certify_counts, certify_set, lower_confidence_bound, noise_generator,
    paired_comparison,
    predict_counts, sample_counts,
)
from hahrobust.seeding import numpy_global_seed

pytestmark = pytest.mark.usefixtures("one_thread_per_module")
runner = CliRunner()
SHAPE = (3, 4, 4)  # small images: the closed form does not care, and 100,000 samples stay fast


class TwoClassLinear(nn.Module):
    """f(x) = argmax(Wx + b) over 10 logits where only classes 0 and 1 compete (the others sit at −10⁴):
    class 0 iff u·x > t for a unit vector u. Under N(0, σ²I) noise u·δ ~ N(0, σ²), so the smoothed classifier
    is known exactly: p_0 = Φ((u·x − t)/σ), and the exact certified radius σ·Φ⁻¹(p_0) = u·x − t is the distance
    to the decision hyperplane."""

    def __init__(self, u: torch.Tensor, t: float) -> None:
        super().__init__()
        self.u, self.t = u.flatten() / u.norm(), t

    def margin(self, x: torch.Tensor) -> float:
        return float(self.u @ x.flatten() - self.t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.u - self.t
        logits = torch.full((len(x), 10), -1e4)
        logits[:, 0], logits[:, 1] = score / 2, -score / 2
        return logits


def linear_model() -> TwoClassLinear:
    return TwoClassLinear(torch.linspace(-1.0, 1.0, math.prod(SHAPE)).reshape(SHAPE), t=0.0)


def image_at_margin(model: TwoClassLinear, margin: float) -> torch.Tensor:
    """0.5 everywhere, moved along u to sit ``margin`` from the hyperplane (on class 0's side when positive)."""
    base = torch.full(SHAPE, 0.5)
    return base + (margin - model.margin(base)) * model.u.reshape(SHAPE)


# ------------------------------------------------------------------------------------------- closed form


def test_linear_model_closed_form_probability_matches_sampling() -> None:
    """The closed form itself: the sampled frequency of class 0 matches Φ(margin/σ) (binomial test)."""
    model, sigma = linear_model(), 0.25
    x = image_at_margin(model, 0.1)
    counts = sample_counts(model, x, sigma, 20_000, 4096, noise_generator(1, sigma, 0, "n"))
    exact = norm.cdf(model.margin(x) / sigma)
    assert counts[2:].sum() == 0
    assert binomtest(int(counts[0]), 20_000, exact).pvalue > 1e-3


def test_certified_radius_never_exceeds_the_exact_one_and_approaches_it() -> None:
    model, sigma, alpha = linear_model(), 0.25, 0.001
    gaps: dict[int, list[float]] = {1_000: [], 100_000: []}
    for i, true_radius in enumerate([0.05, 0.2, 0.4, 0.6]):
        x = image_at_margin(model, true_radius)
        assert sigma * norm.ppf(norm.cdf(model.margin(x) / sigma)) == pytest.approx(true_radius, abs=1e-5)
        for n in gaps:
            # Seed 1: under seed 0 the first image's 100,000 counts land 3.2 standard deviations high, the
            # α-probability event (p ≈ 0.0007) in which a certificate may exceed the truth (0.0501 > 0.05).
            cert = certify(model, x, sigma, 100, n, alpha, 8192, noise_generator(1, sigma, i, "n0"),
                           noise_generator(1, sigma, i, "n"))
            assert cert.prediction == 0
            assert 0 < cert.radius <= true_radius  # holds with probability ≥ 1 − α per image; seeded here
            gaps[n].append(true_radius - cert.radius)
    assert all(big < small for small, big in zip(gaps[1_000], gaps[100_000]))
    assert max(gaps[100_000]) < 0.03  # at N = 100,000 the bound is within a few hundredths of the truth


def test_abstains_on_the_decision_boundary() -> None:
    model, sigma = linear_model(), 0.25
    x = image_at_margin(model, 0.0)  # p_0 = ½ exactly: no lower bound can exceed ½
    cert = certify(model, x, sigma, 100, 2_000, 0.001, 512, noise_generator(0, sigma, 0, "n0"), noise_generator(0, sigma, 0, "n"))
    assert cert.prediction == ABSTAIN and cert.radius == 0.0 and cert.p_lower < 0.5
    assert cert.predicted == ABSTAIN  # the top two counts are not told apart at α = 0.001


# ---------------------------------------------------------------------------------------- Clopper–Pearson


@pytest.mark.parametrize(("k", "n", "alpha"), [(0, 10, 0.05), (7, 10, 0.05), (10, 10, 0.001), (990, 1000, 0.001),
                                               (51, 100, 0.01), (99_950, 100_000, 0.001)])
def test_clopper_pearson_matches_scipy(k: int, n: int, alpha: float) -> None:
    """One-sided (1 − α) lower bound = the lower end of the two-sided exact interval at confidence 1 − 2α
    (scipy's binomtest) = the α-quantile of Beta(k, n − k + 1)."""
    ours = lower_confidence_bound(k, n, alpha)
    scipy_ci = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
    assert ours == pytest.approx(scipy_ci, rel=1e-9, abs=1e-12)
    assert ours == pytest.approx(beta.ppf(alpha, k, n - k + 1) if k else 0.0, rel=1e-9, abs=1e-12)


def test_clopper_pearson_is_one_sided_at_level_alpha() -> None:
    """Exact coverage: over p, P(bound > p) ≤ α and comes close to α (a two-sided bound at α would stay ≤ α/2)."""
    n, alpha = 60, 0.05
    bounds = np.array([lower_confidence_bound(k, n, alpha) for k in range(n + 1)])
    misses = [binom.pmf(np.flatnonzero(bounds > p), n, p).sum() for p in np.linspace(0.01, 0.99, 397)]
    assert max(misses) <= alpha + 1e-12
    assert max(misses) > 0.75 * alpha


def test_predict_counts_is_cohens_two_sided_test() -> None:
    counts = np.array([0, 60, 0, 40, 0, 0, 0, 0, 0, 0])
    label, pvalue = predict_counts(counts, 0.05)
    assert pvalue == pytest.approx(binomtest(60, 100, 0.5, alternative="two-sided").pvalue)
    assert label == ABSTAIN  # p ≈ 0.057 > 0.05
    assert predict_counts(counts, 0.06)[0] == 1


# -------------------------------------------------------------------------------- reproducibility, speed path


def test_counts_do_not_depend_on_the_batch_size() -> None:
    model = linear_model()
    x = image_at_margin(model, 0.05)
    a, b, c = (sample_counts(model, x, 0.5, 1_001, size, noise_generator(3, 0.5, 7, "n")) for size in (7, 64, 5000))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert a.sum() == 1_001


def tiny_images(count: int = 6) -> ImageSet:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, *SHAPE), generator=generator, dtype=torch.uint8)
    model = linear_model()
    labels = torch.tensor([0 if model.margin(x.float() / 255) > 0 else 1 for x in images])
    labels[0] = 1 - labels[0]  # one wrong label: certified-correct must not count it
    return ImageSet(images, labels, source="random")


def test_certify_set_is_the_same_for_any_batch_size_and_counts_correctly() -> None:
    data = tiny_images()
    runs = [certify_set(linear_model(), data, (0.12, 0.5), n0=50, n=500, alpha=0.01, batch_size=size, seed=4)
            for size in (7, 64)]
    pd.testing.assert_frame_equal(*(r.drop(columns="seconds") for r in runs))
    rows = runs[0]
    assert len(rows) == 2 * len(data) and list(rows["sigma"].unique()) == [0.12, 0.5]
    assert not rows.loc[rows["index"] == 0, "correct"].any()
    table = certified_accuracy(rows, [0.0, 0.1])
    at0 = table[(table["sigma"] == 0.12) & (table["radius"] == 0.0)].iloc[0]
    part = rows[rows["sigma"] == 0.12]
    assert at0["certified_acc"] == part["correct"].mean() and at0["n"] == len(data)
    assert at0["certified_acc_low"] <= at0["certified_acc"] <= at0["certified_acc_high"]


# ---------------------------------------------------------------------------------------- ART cross-check

HAVE_ART = importlib.util.find_spec("art") is not None


def art_smoother(model: nn.Module, sigma: float, n0: int, alpha: float):  # noqa: ANN201 (ART's class)
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    return PyTorchRandomizedSmoothing(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=SHAPE, nb_classes=10, device_type="cpu",
        sample_size=n0, scale=sigma, alpha=alpha,
    )


@pytest.mark.skipif(not HAVE_ART, reason="adversarial-robustness-toolbox (pip install '.[dev]') is not installed")
def test_art_certifies_identically_from_the_same_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same class counts fed into ART's CERTIFY and ours give the same class, abstention and radius (to float
    rounding): the selection, the Clopper–Pearson bound, the abstention rule and σ·Φ⁻¹ agree exactly."""
    model, sigma, alpha, n0, n = linear_model(), 0.25, 0.001, 100, 2_000
    smoother = art_smoother(model, sigma, n0, alpha)
    for i, margin in enumerate([-0.3, -0.02, 0.0, 0.01, 0.15, 0.5]):
        x = image_at_margin(model, margin)
        counts0 = sample_counts(model, x, sigma, n0, 512, noise_generator(0, sigma, i, "n0"))
        counts = sample_counts(model, x, sigma, n, 512, noise_generator(0, sigma, i, "n"))
        served = iter([counts0.astype(float), counts.astype(float)])
        monkeypatch.setattr(smoother, "_prediction_counts", lambda *a, **kw: next(served))
        art_class, art_radius = smoother.certify(x.unsqueeze(0).numpy(), n=n)
        ours, radius, _ = certify_counts(counts0, counts, sigma, alpha)
        assert int(art_class[0]) == ours
        assert float(art_radius[0]) == pytest.approx(radius, abs=1e-12)


@pytest.mark.skipif(not HAVE_ART, reason="adversarial-robustness-toolbox (pip install '.[dev]') is not installed")
def test_art_agrees_within_sampling_error_with_its_own_noise() -> None:
    """End to end with independent noise (ART draws from NumPy's global RNG): same class, and radii within five
    standard deviations of their difference. The radius's sampling SD is σ·sd(p̂)/φ(Φ⁻¹(p)) with
    sd(p̂) = √(p(1−p)/n) (delta method); two independent runs differ by √2 of that."""
    model, sigma, alpha, n0, n = linear_model(), 0.25, 0.001, 100, 20_000
    smoother = art_smoother(model, sigma, n0, alpha)
    for i, margin in enumerate([0.1, 0.3, -0.2]):
        x = image_at_margin(model, margin)
        with numpy_global_seed(i):
            art_class, art_radius = smoother.certify(x.unsqueeze(0).numpy(), n=n, batch_size=4096)
        ours = certify(model, x, sigma, n0, n, alpha, 4096, noise_generator(0, sigma, i, "n0"), noise_generator(0, sigma, i, "n"))
        p = norm.cdf(abs(margin) / sigma)
        sd = sigma * math.sqrt(p * (1 - p) / n) / norm.pdf(norm.ppf(p))
        assert int(art_class[0]) == ours.prediction == (0 if margin > 0 else 1)
        assert abs(float(art_radius[0]) - ours.radius) <= 5 * math.sqrt(2) * sd


# ------------------------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def checkpoint(make_checkpoint: Callable[..., Path]) -> Path:
    return make_checkpoint("vgg11", seed=0)


FAST = ["--sigma", "0.12,0.25", "--n0", "10", "--samples", "40", "--batch-size", "32", "--images", "10",
        "--device", "cpu"]


def invoke(checkpoint: Path, data: Path, *args: str):  # noqa: ANN201 (click's Result)
    return runner.invoke(app, ["certify", str(checkpoint), "--data", str(data), *args])


def test_command_writes_table_curve_and_images(checkpoint: Path, tiny_data: Path, tmp_path: Path) -> None:
    result = invoke(checkpoint, tiny_data, *FAST, "--radii", "0,0.1", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    names = {p.name for p in tmp_path.iterdir()}
    assert {f"certify{s}" for s in (".csv", ".md", ".json", ".png")} <= names
    assert {f"certify-curve{s}" for s in (".csv", ".md", ".json", ".png")} | {"certify-images.csv"} <= names
    assert "journal" not in names  # removed once the results are written
    table = pd.read_csv(tmp_path / "certify.csv")
    assert sorted(table["radius"].unique()) == [0.0, 0.1] and set(table["n"]) == {10}
    images = pd.read_csv(tmp_path / "certify-images.csv")
    assert len(images) == 2 * 10
    recomputed = certified_accuracy(images, [0.0, 0.1])
    np.testing.assert_allclose(recomputed["certified_acc"], table["certified_acc"])
    markdown = (tmp_path / "certify.md").read_text()
    assert "r = 0.1" in markdown and "McNemar" not in markdown  # one model: nothing to pair


@pytest.mark.parametrize(("args", "message"), [
    (["--sigma", "0"], "--sigma must be finite and > 0"),
    (["--sigma", "-0.1"], "--sigma must be finite and > 0"),
    (["--n0", "0"], "--n0 must be at least 1"),
    (["--samples", "0"], "--samples must be at least 1"),
    (["--failure-probability", "0"], "--failure-probability must lie strictly between 0 and 1"),
    (["--failure-probability", "1"], "--failure-probability must lie strictly between 0 and 1"),
    (["--radii", "0,-0.1"], "--radii must be finite and ≥ 0"),
    (["--sigma", "a"], "--sigma must be comma-separated numbers"),
])
def test_bad_input_fails_in_one_line_before_loading(args: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # A checkpoint and data that do not exist: the options must fail first.
    result = runner.invoke(app, ["certify", str(tmp_path / "missing.safetensors"), "--data", str(tmp_path / "none"),
                                 *args, "--out", str(out)])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_killed_run_resumes_to_the_same_table(
    checkpoint: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = invoke(checkpoint, tiny_data, *FAST, "--out", str(tmp_path / "fresh"))
    assert fresh.exit_code == 0, fresh.output
    real = certify_cli.certify_set

    def killed_after_four_images(*a, **kw):
        def on_image(i: int) -> None:
            if i == 3:
                raise KeyboardInterrupt

        return real(*a, **kw, on_image=on_image)

    out = tmp_path / "run"
    monkeypatch.setattr(certify_cli, "certify_set", killed_after_four_images)
    killed = invoke(checkpoint, tiny_data, *FAST, "--out", str(out))
    assert killed.exit_code == 130 and "--resume" in killed.output
    assert not (out / "certify.csv").exists()
    journal = out / "journal" / "certify-vgg11.jsonl"
    assert len(journal.read_text().splitlines()) == 1 + 4  # header + four images

    monkeypatch.setattr(certify_cli, "certify_set", real)
    again = invoke(checkpoint, tiny_data, *FAST, "--out", str(out))
    assert again.exit_code == 2 and "pass --resume" in again.output
    other = invoke(checkpoint, tiny_data, *[a if a != "40" else "41" for a in FAST], "--out", str(out), "--resume")
    assert other.exit_code == 2 and "different settings (n)" in other.output

    computed: list[int] = []
    real_certify = smoothing.certify
    monkeypatch.setattr(smoothing, "certify", lambda *a, **kw: (computed.append(1), real_certify(*a, **kw))[1])
    # Another batch size: the numbers do not depend on it, so the journal resumes under it.
    resumed = invoke(checkpoint, tiny_data, *[a if a != "32" else "9" for a in FAST], "--out", str(out), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert len(computed) == 2 * 6  # only the six unfinished images, at both σ
    for name in ("certify.csv", "certify-curve.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "fresh" / name), pd.read_csv(out / name))
    a, b = (pd.read_csv(p / "certify-images.csv").drop(columns="seconds") for p in (tmp_path / "fresh", out))
    pd.testing.assert_frame_equal(a, b)
    assert not journal.exists()


def test_two_models_get_the_paired_test(checkpoint: Path, make_checkpoint: Callable[..., Path], tiny_data: Path,
                                        tmp_path: Path) -> None:
    other = make_checkpoint("hah-vgg11", seed=2)
    result = runner.invoke(app, ["certify", str(checkpoint), str(other), "-l", "A", "-l", "B", "--data", str(tiny_data),
                                 *FAST, "--radii", "0", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    images = pd.read_csv(tmp_path / "certify-images.csv")
    a, b = (images[images["model"] == m].reset_index(drop=True) for m in "AB")
    pd.testing.assert_series_equal(a["label"], b["label"])  # the same images, in the same order
    assert "McNemar exact p" in (tmp_path / "certify.md").read_text()


def test_paired_comparison_counts_discordant_images_and_tests_them() -> None:
    rows = []
    for model, hits in (("A", [1, 1, 1, 1, 1, 1, 0, 0]), ("B", [1, 0, 0, 0, 0, 0, 0, 1])):
        for i, hit in enumerate(hits):
            rows.append({"model": model, "sigma": 0.25, "index": i, "correct": bool(hit), "radius": 0.3 if hit else 0.0})
    (row,) = paired_comparison(pd.DataFrame(rows), "A", "B", [0.25]).to_dict(orient="records")
    assert (row["only_A"], row["only_B"], row["n"]) == (5, 1, 8)
    assert row["mcnemar_p"] == pytest.approx(binomtest(5, 6, 0.5).pvalue)
    assert row["A_acc"] == 6 / 8 and row["B_acc"] == 2 / 8
