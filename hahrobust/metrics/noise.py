"""Additive input noise: reproducible per-image draws, and accuracy under noise (the paper's Fig. 4).

Noise scheme (shared with :mod:`hahrobust.metrics.snr`): the noise added to image ``i`` (its position in the
evaluated :class:`~hahrobust.data.ImageSet`) in repeat ``r`` is ``σ·z``, where ``z`` is a zero-mean,
unit-standard-deviation [3, H, W] draw from a ``torch.Generator`` seeded by a hash of ``(seed, r, i)``.
So a result never depends on the batch size, the device or what ran before, and the global RNG is untouched.
The same ``z`` serves every σ (common random numbers): the accuracy-vs-σ curves of one repeat differ only
by the noise scale, not by a fresh draw per σ. The noisy image is ``clip(x + σ·z, 0, 1)`` in [0, 1] pixel
units, before the model's own input normalization.

- ``gaussian``: ``z ~ N(0, 1)``.
- ``uniform``: ``z ~ U(−√3, √3)``, which has standard deviation 1, so σ means the same for both kinds.

Generating one image's noise costs a generator seeding plus a 3·32·32 draw (≈ 30 µs on one CPU core),
about what a bulk draw of the same size costs, so the per-image loop is not the bottleneck.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from torch import nn

from hahrobust import distributed
from hahrobust.data import ImageSet, batches, num_batches
from hahrobust.distributed import BatchSum, Shard
from hahrobust.errors import HahrobustError
from hahrobust.metrics._progress import progress_task
from hahrobust.seeding import derived_seed

NoiseKind = Literal["gaussian", "uniform"]
NOISE_KINDS: tuple[str, ...] = ("gaussian", "uniform")

#: The paper's Fig. 4 noise levels.
DEFAULT_SIGMAS: tuple[float, ...] = tuple(round(0.02 * k, 2) for k in range(11))


def check_noise(kind: str) -> NoiseKind:
    if kind not in NOISE_KINDS:
        raise HahrobustError(f"unknown noise {kind!r}; choose one of: {', '.join(NOISE_KINDS)}")
    return kind  # type: ignore[return-value]


def check_sigmas(sigmas: Sequence[float]) -> tuple[float, ...]:
    """The σ values as floats: at least one, each finite, ≥ 0 and listed once."""
    values = tuple(float(s) for s in sigmas)
    if not values:
        raise HahrobustError("no noise level given")
    bad = [s for s in values if not math.isfinite(s) or s < 0]
    if bad:
        raise HahrobustError(f"noise σ must be a finite number ≥ 0, got {bad[0]:g}")
    if len(set(values)) != len(values):
        raise HahrobustError(f"noise σ values must be distinct, got {', '.join(f'{s:g}' for s in values)}")
    return values


def check_repeats(repeats: int) -> int:
    if repeats < 1:
        raise HahrobustError(f"--repeats must be at least 1, got {repeats}")
    return repeats


def noise_seed(seed: int, repeat: int, index: int) -> int:
    """A 63-bit generator seed for image ``index`` in repeat ``repeat``: distinct triples never share a stream."""
    return derived_seed("noise", seed, repeat, index)


def unit_noise(
    indices: torch.Tensor,
    shape: Sequence[int],
    *,
    kind: NoiseKind = "gaussian",
    seed: int = 0,
    repeat: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Zero-mean, unit-std noise [len(indices), *shape] for the images at ``indices`` (see the module docstring).

    Drawn on the CPU from one generator per image, then moved to ``device``: the same numbers on any device.
    """
    check_noise(kind)
    out = torch.empty((len(indices), *shape), dtype=torch.float32)
    generator = torch.Generator()
    for row, index in zip(out, indices.tolist()):
        generator.manual_seed(noise_seed(seed, repeat, index))
        if kind == "gaussian":
            torch.randn(row.shape, generator=generator, out=row)
        else:
            torch.rand(row.shape, generator=generator, out=row)
    if kind == "uniform":
        out.mul_(2 * math.sqrt(3)).sub_(math.sqrt(3))  # U(0, 1) → U(−√3, √3): standard deviation 1
    return out.to(device)


def add_noise(x: torch.Tensor, z: torch.Tensor, sigma: float) -> torch.Tensor:
    """``clip(x + σ·z, 0, 1)``; σ = 0 returns ``x`` itself (exactly the clean images)."""
    if sigma == 0:
        return x
    return (x + sigma * z).clamp_(0.0, 1.0)


@torch.no_grad()
def noise_accuracy(
    model: nn.Module,
    data: ImageSet,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    *,
    noise: NoiseKind = "gaussian",
    repeats: int = 3,
    seed: int = 0,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    description: str = "noise sweep",
    shard: Shard | None = None,
) -> pd.DataFrame:
    """Accuracy of ``model`` on ``data`` under additive noise, one row per σ.

    Columns: ``noise``, ``sigma``, ``repeats``, ``accuracy`` (mean over repeats, a fraction in [0, 1]),
    ``accuracy_std`` (sample standard deviation over repeats; NaN for one repeat; 0 at σ = 0, where every
    repeat is the clean accuracy and is computed once). Streams ``data`` in batches; each batch's noise is
    drawn once per repeat and reused for every σ. Under torchrun each rank takes whole batches and the
    counts are gathered (``shard``, default: the process group): the same table as one process.
    """
    shard = shard or distributed.current()
    sigmas = check_sigmas(sigmas)
    noise = check_noise(noise)
    repeats = check_repeats(repeats)
    model.eval()
    correct = BatchSum(torch.zeros(repeats, len(sigmas), dtype=torch.int64), shard)
    steps = _forward_passes(len(data), batch_size, shard.own_count, sigmas, repeats)
    with progress_task(progress, description, steps) as advance:
        for idx, hits in _correct_per_batch(model, data, sigmas, noise, repeats, seed, batch_size, device, shard, advance):
            correct.add(int(idx[0]), hits.sum(dim=2, dtype=torch.int64))
    counts = correct.total().numpy()  # [repeats, sigmas]: images classified correctly
    # Whole counts, divided by the number of images once: identical repeats give exactly their accuracy and
    # a spread of exactly 0 (the mean of three copies of 0.2 as floats is 0.20000000000000004 ± 3e-17).
    mean = counts.sum(axis=0) / (repeats * len(data))
    std = counts.std(axis=0, ddof=1) / len(data) if repeats > 1 else np.full(len(sigmas), np.nan)
    return pd.DataFrame(
        {
            "noise": noise,
            "sigma": list(sigmas),
            "repeats": repeats,
            "accuracy": mean,
            "accuracy_std": std,
        }
    )



@torch.no_grad()
def noise_correct(
    model: nn.Module,
    data: ImageSet,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    *,
    noise: NoiseKind = "gaussian",
    repeats: int = 3,
    seed: int = 0,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    description: str = "noise per image",
) -> np.ndarray:
    """Per repeat, σ and image, whether ``model`` classifies the noisy image correctly: bool [repeats, σ, N], with
    the draws of :func:`noise_accuracy` (whose ``accuracy`` is this array's mean over repeats and images; one
    process only). σ = 0 is the clean image in every repeat."""
    sigmas, noise, repeats = check_sigmas(sigmas), check_noise(noise), check_repeats(repeats)
    model.eval()
    out = np.zeros((repeats, len(sigmas), len(data)), dtype=bool)
    steps = _forward_passes(len(data), batch_size, lambda count: count, sigmas, repeats)
    with progress_task(progress, description, steps) as advance:
        for idx, hits in _correct_per_batch(model, data, sigmas, noise, repeats, seed, batch_size, device, None, advance):
            out[:, :, idx.numpy()] = hits.numpy()
    return out


def _forward_passes(n: int, batch_size: int, own: Callable[[int], int], sigmas: Sequence[float], repeats: int) -> int:
    """The progress steps of :func:`_correct_per_batch`: one per forward pass (the clean one once per batch)."""
    noisy = sum(s > 0 for s in sigmas)
    return own(num_batches(n, batch_size, False)) * (repeats * noisy + (noisy < len(sigmas)))


def _correct_per_batch(
    model: nn.Module, data: ImageSet, sigmas: Sequence[float], noise: NoiseKind, repeats: int, seed: int,
    batch_size: int, device: torch.device | str, shard: Shard | None, advance: Callable[[], None],
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per batch: its image indices and whether each noisy image is classified correctly, bool [repeats, σ, B].
    Each batch's noise is drawn once per repeat and serves every σ; σ = 0 is the clean pass, made once."""
    noisy = [j for j, s in enumerate(sigmas) if s > 0]
    clean = [j for j, s in enumerate(sigmas) if s == 0]
    for x, y, idx in batches(data, batch_size, device=device, **({"shard": shard} if shard is not None else {})):
        hits = torch.zeros(repeats, len(sigmas), len(x), dtype=torch.bool)
        if clean:
            hits[:, clean] = (model(x).argmax(dim=1) == y).cpu()
            advance()
        for r in range(repeats if noisy else 0):
            z = unit_noise(idx, x.shape[1:], kind=noise, seed=seed, repeat=r, device=x.device)
            for j in noisy:
                hits[r, j] = (model(add_noise(x, z, sigmas[j])).argmax(dim=1) == y).cpu()
                advance()
        yield idx, hits
