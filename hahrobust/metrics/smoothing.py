"""Randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019): an ℓ2 robustness no attack can lower.

The smoothed classifier of a base classifier f is g(x) = argmax_c P(f(x + δ) = c), δ ~ N(0, σ²I). If the top
class has probability p_A ≥ p̲_A > ½, g is constant on the ℓ2 ball of radius R = σ·Φ⁻¹(p̲_A) around x
(Cohen et al., Theorem 1). This module implements the paper's two Monte-Carlo procedures exactly as its
reference code (``locuslab/smoothing``, ``core.py``) does:

- CERTIFY: n0 noisy samples guess the top class ĉ_A; n fresh samples count it (n_A); p̲_A is the one-sided
  (1 − α) Clopper–Pearson lower bound on n_A / n; abstain if p̲_A < ½, else certify ĉ_A at radius
  σ·Φ⁻¹(p̲_A). With probability ≥ 1 − α over the noise, a returned class is g(x) and g is robust at that radius.
- PREDICT: the two most frequent classes among n samples; abstain when the two-sided binomial test of
  their counts against ½ has p > α. Here PREDICT reuses CERTIFY's n counts (no extra forward passes): its
  guarantee (P[returns a class ≠ g(x)] ≤ α) holds for any n samples drawn independently of the question.

Why ``metrics/`` and not ``attacks/``: certification never differentiates or searches; like
:mod:`hahrobust.metrics.noise` it evaluates a model under seeded Gaussian input noise, and it shares that
module's seeding scheme (:func:`hahrobust.seeding.derived_seed`). Radii are in [0, 1]-pixel ℓ2 units before
the model's own normalization, the units of the attacks' ε (ℓ2 0.25 in the audit). Noisy images are *not*
clipped to [0, 1], as in Cohen et al.'s code (clipping would smooth a different base classifier).

Reproducibility: the noise for image ``i`` at σ in phase ``n0``/``n`` comes from one ``torch.Generator``
seeded by ``derived_seed("smoothing", seed, σ, i, phase)``, drawn on the CPU in fixed blocks of
:data:`NOISE_BLOCK` samples whatever the batch size: the noise does not depend on the batch size, the device,
the process count or the order of the σ list, so on the CPU neither do the counts (tested: batch sizes 7, 64 and
5,000; one process against two under torchrun). Every model sees the same noise (paired comparisons).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from scipy.stats import binomtest, norm
from statsmodels.stats.proportion import proportion_confint
from torch import nn

from hahrobust import distributed
from hahrobust.data import ImageSet
from hahrobust.distributed import Shard
from hahrobust.errors import HahrobustError
from hahrobust.seeding import derived_seed
from hahrobust.stats import accuracy_intervals, wilson_interval  # wilson_interval: re-exported

#: Cohen et al.'s CIFAR-10 protocol (their Table/Figure settings) and their reported radii.
DEFAULT_N0, DEFAULT_N, DEFAULT_ALPHA = 100, 100_000, 0.001
DEFAULT_SIGMAS: tuple[float, ...] = (0.12, 0.25)
DEFAULT_RADII: tuple[float, ...] = (0.0, 0.125, 0.25, 0.5)
#: Noise is drawn in blocks of this many samples, so the stream does not depend on the batch size.
NOISE_BLOCK = 32
ABSTAIN = -1
#: Bumped when the noise scheme or the procedure changes: journals of another version are not resumed.
SCHEME = "hahrobust.smoothing/1"


# ------------------------------------------------------------------------------------------------- checks


def check_settings(
    sigmas: Sequence[float], n0: int, n: int, alpha: float, radii: Sequence[float] = DEFAULT_RADII
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(σ values, radii) after checking every setting; a :class:`HahrobustError` names the first bad one."""
    values = tuple(float(s) for s in sigmas)
    if not values:
        raise HahrobustError("no --sigma given")
    bad = [s for s in values if not math.isfinite(s) or s <= 0]
    if bad:
        raise HahrobustError(f"--sigma must be finite and > 0 (σ = 0 is no smoothing), got {bad[0]:g}")
    if len(set(values)) != len(values):
        raise HahrobustError(f"--sigma values must be distinct, got {', '.join(f'{s:g}' for s in values)}")
    if n0 < 1:
        raise HahrobustError(f"--n0 must be at least 1, got {n0}")
    if n < 1:
        raise HahrobustError(f"--samples must be at least 1, got {n}")
    if not (math.isfinite(alpha) and 0 < alpha < 1):
        raise HahrobustError(f"--failure-probability must lie strictly between 0 and 1, got {alpha:g}")
    levels = tuple(float(r) for r in radii)
    if not levels:
        raise HahrobustError("no --radii given")
    bad = [r for r in levels if not math.isfinite(r) or r < 0]
    if bad:
        raise HahrobustError(f"--radii must be finite and ≥ 0, got {bad[0]:g}")
    return values, tuple(sorted(set(levels)))


# ------------------------------------------------------------------------------------------ statistics


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided (1 − α) Clopper–Pearson lower bound on a binomial proportion from ``k`` successes in ``n``.

    The two-sided Clopper–Pearson interval at level 2α has the one-sided (1 − α) bound as its lower end
    (each tail holds α), which is how Cohen et al. call statsmodels: ``proportion_confint(k, n, alpha=2α,
    method="beta")[0]`` = the α-quantile of Beta(k, n − k + 1) (0 when k = 0).
    """
    return float(proportion_confint(k, n, alpha=2 * alpha, method="beta")[0])


def radius(p_lower: float, sigma: float) -> float:
    """The certified ℓ2 radius σ·Φ⁻¹(p̲_A) (Cohen et al., Theorem 1 with p̲_B = 1 − p̲_A)."""
    return float(sigma * norm.ppf(p_lower))


@dataclass(frozen=True)
class Certificate:
    """CERTIFY's and PREDICT's answers for one image at one σ (classes are :data:`ABSTAIN` when abstaining)."""

    prediction: int  # CERTIFY's class
    radius: float  # 0 when abstaining (as in Cohen et al.'s output)
    p_lower: float  # p̲_A: lower confidence bound on P(f(x + δ) = ĉ_A)
    guess: int  # ĉ_A, the top class among the n0 selection samples
    count: int  # n_A, how often ĉ_A came up among the n estimation samples
    predicted: int  # PREDICT's class on the n estimation samples
    predict_pvalue: float  # its two-sided binomial test p-value


def certify_counts(counts0: np.ndarray, counts: np.ndarray, sigma: float, alpha: float) -> tuple[int, float, float]:
    """CERTIFY from class counts: (class or :data:`ABSTAIN`, radius, p̲_A). ``counts0`` from the n0 selection
    samples, ``counts`` from the n estimation samples. Ties for ĉ_A go to the lowest class (``argmax``)."""
    guess = int(np.argmax(counts0))
    p_lower = lower_confidence_bound(int(counts[guess]), int(counts.sum()), alpha)
    if p_lower < 0.5:
        return ABSTAIN, 0.0, p_lower
    return guess, radius(p_lower, sigma), p_lower


def predict_counts(counts: np.ndarray, alpha: float) -> tuple[int, float]:
    """PREDICT from class counts: (class or :data:`ABSTAIN`, p-value of the two-sided binomial test of the top
    two counts against ½). Cohen et al.'s ``binom_test`` is two-sided; so is this."""
    order = np.argsort(-counts, kind="stable")
    top, second = int(counts[order[0]]), int(counts[order[1]]) if len(counts) > 1 else 0
    pvalue = float(binomtest(top, top + second, 0.5).pvalue) if top + second else 1.0
    return (ABSTAIN if pvalue > alpha else int(order[0])), pvalue


# -------------------------------------------------------------------------------------------- sampling


def noise_generator(seed: int, sigma: float, index: int, phase: str) -> torch.Generator:
    """The CPU generator of image ``index``'s noise at ``sigma`` in ``phase`` (``"n0"`` or ``"n"``)."""
    return torch.Generator().manual_seed(derived_seed("smoothing", seed, repr(float(sigma)), index, phase))


@torch.no_grad()
def sample_counts(
    model: nn.Module, x: torch.Tensor, sigma: float, num: int, batch_size: int, generator: torch.Generator,
    num_classes: int | None = None,
) -> np.ndarray:
    """Class counts of ``model`` on ``num`` copies of one image ``x`` [C, H, W] plus N(0, σ²I) noise.

    The copies go through the model in chunks of ``batch_size`` (no per-sample Python). Noise comes from
    ``generator`` in fixed blocks of :data:`NOISE_BLOCK` samples, drawn on the CPU and moved to ``x``'s device,
    so the i-th sample's noise is the same for every batch size and device. ``num_classes`` defaults to the
    model's number of logits.
    """
    if num < 1 or batch_size < 1:
        raise HahrobustError(f"need at least one sample and a positive batch size, got {num} and {batch_size}")
    shape = tuple(x.shape)
    buffer = torch.empty((batch_size + NOISE_BLOCK, *shape))  # leftover noise of the last block stays at the front
    have = 0
    counts: torch.Tensor | None = None
    remaining = num
    while remaining:
        size = min(batch_size, remaining)
        while have < size:
            torch.randn((NOISE_BLOCK, *shape), generator=generator, out=buffer[have : have + NOISE_BLOCK])
            have += NOISE_BLOCK
        noisy = torch.add(x.unsqueeze(0), buffer[:size].to(x.device, non_blocking=True), alpha=sigma)
        logits = model(noisy)
        if counts is None:
            counts = torch.zeros(num_classes or logits.shape[1], dtype=torch.int64, device=logits.device)
        counts += torch.bincount(logits.argmax(dim=1), minlength=len(counts))
        buffer[: have - size] = buffer[size:have].clone()
        have -= size
        remaining -= size
    assert counts is not None
    return counts.cpu().numpy()


def certify(
    model: nn.Module, x: torch.Tensor, sigma: float, n0: int, n: int, alpha: float, batch_size: int,
    generator0: torch.Generator, generator: torch.Generator,
) -> Certificate:
    """Cohen et al.'s CERTIFY (and PREDICT on its n estimation samples) for one image ``x`` [C, H, W];
    ``generator0`` draws the n0 selection noise, ``generator`` the n estimation noise."""
    counts0 = sample_counts(model, x, sigma, n0, batch_size, generator0)
    counts = sample_counts(model, x, sigma, n, batch_size, generator)
    prediction, r, p_lower = certify_counts(counts0, counts, sigma, alpha)
    predicted, pvalue = predict_counts(counts, alpha)
    guess = int(np.argmax(counts0))
    return Certificate(prediction, r, p_lower, guess, int(counts[guess]), predicted, pvalue)


def predict(
    model: nn.Module, x: torch.Tensor, sigma: float, n: int, alpha: float, batch_size: int, generator: torch.Generator,
) -> tuple[int, float]:
    """Cohen et al.'s PREDICT alone on ``n`` fresh samples: (class or :data:`ABSTAIN`, p-value)."""
    return predict_counts(sample_counts(model, x, sigma, n, batch_size, generator), alpha)


# ------------------------------------------------------------------------------------------ image sets


class ImageJournal(Protocol):
    """What :func:`certify_set` needs of a journal (:class:`hahrobust.attacks.journal.Journal` fits):
    the record of a finished key, and appending one (``entry["batch"]`` is the key: here the image index)."""

    def done(self, batch: int) -> dict[str, Any] | None: ...

    def record(self, entry: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None: ...


#: Per-image columns of :func:`certify_set`.
IMAGE_COLUMNS = (
    "sigma", "index", "label", "prediction", "radius", "p_lower", "guess", "count", "predicted", "predict_pvalue",
    "correct", "predict_correct", "seconds",
)


def settings(sigmas: Sequence[float], n0: int, n: int, alpha: float, seed: int) -> dict[str, Any]:
    """Everything that determines :func:`certify_set`'s numbers, except the model and the images (the batch
    size, device and process count do not); a journal resumes only under the same settings."""
    return {"scheme": SCHEME, "sigmas": [float(s) for s in sigmas], "n0": n0, "n": n, "alpha": alpha, "seed": seed}


def certify_set(
    model: nn.Module,
    data: ImageSet,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    *,
    n0: int = DEFAULT_N0,
    n: int = DEFAULT_N,
    alpha: float = DEFAULT_ALPHA,
    batch_size: int = 500,
    seed: int = 0,
    device: torch.device | str = "cpu",
    journal: ImageJournal | None = None,
    progress: Progress | None = None,
    description: str = "certify",
    on_image: Callable[[int], None] | None = None,
    shard: Shard | None = None,
) -> pd.DataFrame:
    """CERTIFY and PREDICT every image of ``data`` at every σ: one row per σ × image (:data:`IMAGE_COLUMNS`,
    σ-major, images in ``data``'s order). ``prediction``/``predicted`` are :data:`ABSTAIN` (−1) when abstaining.

    With a ``journal`` each image (all its σ) is recorded when done and skipped when already recorded.
    ``on_image(i)`` is called after image ``i`` is recorded. Under torchrun image ``i`` goes to rank
    ``i mod world_size`` and the rows are gathered: the same table as one process (per-image seeds).
    """
    shard = shard or distributed.current()
    sigmas, _ = check_settings(sigmas, n0, n, alpha)
    if batch_size < 1:
        raise HahrobustError(f"batch size must be positive, got {batch_size}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    records: dict[int, dict[str, Any]] = {}
    own = [i for i in range(len(data)) if shard.owns(i)]
    task = progress.add_task(description, total=len(own)) if progress is not None else None
    started, computed = time.perf_counter(), 0
    try:
        for i in own:
            record = journal.done(i) if journal is not None else None
            if record is None:
                x = data.images[i].to(device).float().div_(255)
                record = {"batch": i, "label": int(data.labels[i]), "results": []}
                for sigma in sigmas:
                    start = time.perf_counter()
                    cert = certify(model, x, sigma, n0, n, alpha, batch_size,
                                   noise_generator(seed, sigma, i, "n0"), noise_generator(seed, sigma, i, "n"))
                    record["results"].append({**asdict(cert), "seconds": time.perf_counter() - start})
                computed += 1
                if journal is not None:
                    journal.record(record)
            records[i] = record
            if progress is not None and task is not None:
                rate = computed / max(time.perf_counter() - started, 1e-9)  # images computed now, not resumed
                progress.update(task, advance=1, description=f"{description} · {rate:.2f} images/s")
            if on_image is not None:
                on_image(i)
    finally:
        model.train(was_training)
        if progress is not None and task is not None:
            progress.remove_task(task)
    gathered = distributed.gather(records, shard)
    rows = [
        {"sigma": sigma, "index": i, "label": rec["label"], **rec["results"][j]}
        for j, sigma in enumerate(sigmas) for i, rec in gathered.items()
    ]
    frame = pd.DataFrame(rows, columns=[c for c in IMAGE_COLUMNS if c not in ("correct", "predict_correct")])
    frame["correct"] = frame["prediction"] == frame["label"]
    frame["predict_correct"] = frame["predicted"] == frame["label"]
    return frame[list(IMAGE_COLUMNS)]


# --------------------------------------------------------------------------------------------- summaries


def certified_accuracy(images: pd.DataFrame, radii: Sequence[float]) -> pd.DataFrame:
    """Per σ and radius r: the fraction of images certified correct with radius ≥ r (``certified_acc``, with its
    Wilson 95 % interval and ``n``), plus per σ the abstention rate, the mean radius of the correctly certified
    images, and PREDICT's accuracy (``predict_acc``, with its interval, appended as ``predict_acc_low``/``_high``)
    and abstention rate. ``images``: :func:`certify_set`'s rows (optionally with a leading ``model`` column, kept
    as a key)."""
    keys = [k for k in ("model", "sigma") if k in images.columns]
    rows = []
    for key, part in images.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        count = len(part)
        correct = part["correct"].to_numpy()
        radius_ = part["radius"].to_numpy()
        for r in radii:
            hits = int((correct & (radius_ >= r)).sum())
            rows.append({
                **dict(zip(keys, key)), "radius": float(r), "n": count, "certified": hits,
                "certified_acc": hits / count,
                "abstain_rate": float((part["prediction"] == ABSTAIN).mean()),
                "mean_radius_correct": float(radius_[correct].mean()) if correct.any() else math.nan,
                "predict_acc": float(part["predict_correct"].mean()),
                "predict_abstain_rate": float((part["predicted"] == ABSTAIN).mean()),
            })
    table = accuracy_intervals(pd.DataFrame(rows), ["certified_acc", "predict_acc"])
    first = [*keys, "radius", "n", "certified", "certified_acc", "certified_acc_low", "certified_acc_high"]
    return table[[*first, *(c for c in table.columns if c not in first)]]


def paired_comparison(images: pd.DataFrame, first: str, second: str, radii: Sequence[float]) -> pd.DataFrame:
    """Two models certified on the same images (and the same noise): per σ and radius r, how many images
    each certifies correct at radius ≥ r that the other does not, and the exact McNemar test of those
    discordant images (two-sided binomial test against ½; p = 1 without discordant images).

    ``images``: :func:`certify_set` rows with a ``model`` column holding ``first`` and ``second``."""
    rows = []
    for sigma, part in images.groupby("sigma", sort=False):
        a = part[part["model"] == first].set_index("index")
        b = part[part["model"] == second].set_index("index").reindex(a.index)
        for r in radii:
            hit_a = (a["correct"] & (a["radius"] >= r)).to_numpy()
            hit_b = (b["correct"] & (b["radius"] >= r)).to_numpy()
            only_a, only_b = int((hit_a & ~hit_b).sum()), int((hit_b & ~hit_a).sum())
            pvalue = float(binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0
            rows.append({"sigma": sigma, "radius": float(r), "n": len(a), f"{first}_acc": hit_a.mean(),
                         f"{second}_acc": hit_b.mean(), f"only_{first}": only_a, f"only_{second}": only_b,
                         "mcnemar_p": pvalue})
    return pd.DataFrame(rows)


def certified_curve(images: pd.DataFrame, step: float = 0.005, stop: float | None = None) -> pd.DataFrame:
    """Certified accuracy on a fine radius grid (0, step, …, past the largest radius): the step curve of
    Cohen et al.'s figures, as rows (model, sigma, radius, certified_acc, n and its Wilson interval) for a line
    plot."""
    top = stop if stop is not None else float(images["radius"].max()) + 2 * step
    grid = np.round(np.arange(0.0, max(top, step) + step / 2, step), 10)
    return certified_accuracy(images, grid)[[*[k for k in ("model", "sigma") if k in images.columns],
                                             "radius", "certified_acc", "n", "certified_acc_low", "certified_acc_high"]]


__all__ = [
    "ABSTAIN", "DEFAULT_ALPHA", "DEFAULT_N", "DEFAULT_N0", "DEFAULT_RADII", "DEFAULT_SIGMAS", "IMAGE_COLUMNS",
    "NOISE_BLOCK", "Certificate", "certified_accuracy", "certified_curve", "certify", "certify_counts",
    "paired_comparison",
    "certify_set", "check_settings", "lower_confidence_bound", "noise_generator", "predict", "predict_counts",
    "radius", "sample_counts", "settings", "wilson_interval",
]
