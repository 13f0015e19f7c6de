"""Block-wise signal-to-noise ratio under input noise (the paper's Eq. 6 and Fig. 3).

    SNR_n = 10·log10( E_{x, w}[ ‖f_n(x)‖² / ‖f_n(x + w) − f_n(x)‖² ] ) dB

- ``f_n(x)`` is the **input** of conv block ``n`` (every block in ``model.block_names()``), captured with
  :class:`~hahrobust.nn.ActivationExtractor` as the block receives it. Block 1's input is therefore the image
  after the model's input normalization (``model.normalize``), as the issue asks; deeper blocks see the
  previous block's output after any pooling.
- ``w`` is drawn per image and repeat exactly as in :mod:`hahrobust.metrics.noise` (seeded by
  ``(seed, repeat, image index)``), added to the [0, 1] image and clipped: ``x + w := clip(x + σ·z, 0, 1)``.
- ``‖·‖²`` is the squared ℓ2 norm of one image's whole block input (channels × height × width).
- The expectation is of the **linear** ratio, over images and the ``repeats`` noise draws, taken before the
  conversion to dB (as the authors compute it). A zero noise power (σ = 0, or noise that never reaches the
  block) makes that image's ratio +∞, so the SNR is reported as ``inf`` — never a division error.
- ``snr_db_std`` is the sample standard deviation over repeats of each repeat's own SNR in dB (NaN for one
  repeat or when a repeat's SNR is infinite).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

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
from hahrobust.metrics.noise import NoiseKind, add_noise, check_noise, check_repeats, check_sigmas, unit_noise
from hahrobust.models import HahrobustModel
from hahrobust.nn import ActivationExtractor


def power_ratio(clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖clean‖² / ‖noisy − clean‖² in float64 over all but the first axis; +∞ where they are equal."""
    clean64, noisy64 = clean.flatten(1).double(), noisy.flatten(1).double()
    signal = clean64.square().sum(dim=1)
    noise = (noisy64 - clean64).square().sum(dim=1)
    # Zero noise power is an infinite SNR, whatever the signal (also for an all-zero input: nothing was corrupted).
    return torch.where(noise > 0, signal / noise.clamp_min(torch.finfo(torch.float64).tiny), torch.inf)


def to_db(ratio: np.ndarray | float) -> np.ndarray:
    """10·log10(ratio), with 10·log10(∞) = ∞ and 10·log10(0) = −∞ and no warnings."""
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(np.asarray(ratio, dtype=np.float64))


@torch.no_grad()
def snr(
    model: nn.Module,
    data: ImageSet,
    sigma: float = 0.1,
    *,
    layers: Sequence[str] | None = None,
    noise: NoiseKind = "gaussian",
    repeats: int = 3,
    seed: int = 0,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    description: str = "SNR",
    shard: Shard | None = None,
) -> pd.DataFrame:
    """SNR (Eq. 6) at the input of every conv block of ``model`` on ``data``; one row per block.

    ``layers`` (full module names, e.g. from :func:`hahrobust.nn.hooks.select_layers`) takes the input of
    each of those modules instead, for any model; without it the model must be a :class:`HahrobustModel`.

    Columns: ``block`` (1-based), ``block_name``, ``block_type`` (the block's class, e.g. ``HaHBlock``,
    ``ConvBlock``), ``sigma``, ``noise``, ``repeats``, ``snr_db``, ``snr_db_std``. Streams ``data`` in batches:
    memory holds one batch's clean block inputs and one noisy forward pass at a time. Under torchrun each
    rank takes whole batches, and the per-batch sums are added in batch order: the same floats as one process.
    """
    shard = shard or distributed.current()
    (sigma,) = check_sigmas([sigma])
    noise = check_noise(noise)
    repeats = check_repeats(repeats)
    if layers is None and not isinstance(model, HahrobustModel):
        raise HahrobustError("a model that is not a hahrobust model has no blocks: name the layers to measure")
    model.eval()
    names = list(layers) if layers is not None else model.block_names()
    modules = dict(model.named_modules())
    ratio_sum = BatchSum(torch.zeros(len(names), repeats, dtype=torch.float64), shard)  # Σ_images linear ratio
    steps = shard.own_count(num_batches(len(data), batch_size, False)) * (1 + repeats)
    with ActivationExtractor(model, names) as acts, progress_task(progress, description, steps) as advance:
        for idx, ratios in _ratios_per_batch(model, acts, names, data, sigma, noise, repeats, seed, batch_size, device,
                                             shard, advance):
            part = torch.zeros(len(names), repeats, dtype=torch.float64)
            for b in range(len(names)):
                for r in range(repeats):
                    part[b, r] = ratios[b][r].sum().cpu()
            ratio_sum.add(int(idx[0]), part)
    per_repeat = ratio_sum.total().numpy() / len(data)  # [blocks, repeats]: E_x of the ratio for each draw
    per_repeat_db = to_db(per_repeat)
    with np.errstate(invalid="ignore"):  # inf − inf inside std → NaN, which is what we report
        std = per_repeat_db.std(axis=1, ddof=1) if repeats > 1 else np.full(len(names), np.nan)
    return pd.DataFrame(
        {
            "block": np.arange(1, len(names) + 1),
            "block_name": names,
            "block_type": [type(modules[name]).__name__ for name in names],
            "sigma": sigma,
            "noise": noise,
            "repeats": repeats,
            "snr_db": to_db(per_repeat.mean(axis=1)),
            "snr_db_std": std,
        }
    )



@torch.no_grad()
def snr_per_image(
    model: nn.Module,
    data: ImageSet,
    sigma: float = 0.1,
    *,
    noise: NoiseKind = "gaussian",
    repeats: int = 3,
    seed: int = 0,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    description: str = "SNR per image",
) -> np.ndarray:
    """Per image and block input, the linear ratio ‖f(x)‖²/‖f(x + w) − f(x)‖² averaged over the ``repeats`` draws:
    float64 [N, blocks] (one process only), with the noise of :func:`snr`. ``10·log10`` of its mean over images is
    :func:`snr`'s ``snr_db``; the report's paired bootstrap compares the per-image values in dB."""
    (sigma,) = check_sigmas([sigma])
    noise, repeats = check_noise(noise), check_repeats(repeats)
    if not isinstance(model, HahrobustModel):
        raise HahrobustError("a model that is not a hahrobust model has no blocks: name the layers to measure")
    model.eval()
    names = model.block_names()
    out = np.zeros((len(data), len(names)))
    steps = num_batches(len(data), batch_size, False) * (1 + repeats)
    with ActivationExtractor(model, names) as acts, progress_task(progress, description, steps) as advance:
        for idx, ratios in _ratios_per_batch(model, acts, names, data, sigma, noise, repeats, seed, batch_size, device,
                                             None, advance):
            for b in range(len(names)):
                for r in range(repeats):
                    out[idx.numpy(), b] += ratios[b][r].cpu().numpy() / repeats
    return out


def _ratios_per_batch(
    model: nn.Module, acts: ActivationExtractor, names: Sequence[str], data: ImageSet, sigma: float, noise: NoiseKind,
    repeats: int, seed: int, batch_size: int, device: torch.device | str, shard: Shard | None,
    advance: Callable[[], None],
) -> Iterator[tuple[torch.Tensor, list[list[torch.Tensor]]]]:
    """Per batch: its image indices and, per block input and repeat, each image's ratio ‖f(x)‖²/‖f(x + w) − f(x)‖²
    (``ratios[block][repeat]``, [B]). One clean pass, then one noisy pass per repeat (σ = 0: the noise is identically
    zero, so f(x + w) is f(x), bit for bit, and no pass is made)."""
    for x, _, idx in batches(data, batch_size, device=device, **({"shard": shard} if shard is not None else {})):
        model(x)
        clean = {name: acts.inputs[name] for name in names}
        advance()
        ratios: list[list[torch.Tensor]] = [[] for _ in names]
        for r in range(repeats):
            if sigma > 0:
                z = unit_noise(idx, x.shape[1:], kind=noise, seed=seed, repeat=r, device=x.device)
                model(add_noise(x, z, sigma))
                noisy = acts.inputs
            else:
                noisy = clean
            for b, name in enumerate(names):
                ratios[b].append(power_ratio(clean[name], noisy[name]))
            advance()
        yield idx, ratios
