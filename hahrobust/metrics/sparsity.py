"""Activation sparsity of the leading conv blocks (the paper's Fig. 2).

For each measured block and each spatial location of each image, the activation vector ``a`` across the
block's ``N`` channels gets the normalized Hoyer measure

    H(a) = (‖a‖₁ / ‖a‖₂ − 1) / (√N − 1)  ∈ [0, 1]

which is 0 when exactly one channel is active and 1 when all channels are equal (lower = sparser).

**Which tensor.** The block output that feeds the next block — except where that output is a BatchNorm's:
a block that ends in BatchNorm (VGG's regular block conv → ReLU → BatchNorm, the HaH ablation with BatchNorm
and no threshold, a Hebbian net's conv → ReLU → pool → BatchNorm stage) is measured at the **BatchNorm's
input**, i.e. the rectified (and pooled) activations. In eval mode BatchNorm is a fixed per-channel affine
map ``γ·(a − μ)/√(v + ε) + β``: it sends every zero to a per-channel constant, so its output has almost no
zeros, can be negative, and its Hoyer value reflects the learnt offsets rather than which neurons fired.
An affine per-channel map carries no information of its own (the next layer could absorb it into its
weights and bias, up to zero-padding at the borders), so the activity pattern the next block receives is
that of the BatchNorm's input. HaH blocks are measured at their true output (after divisive normalization
and thresholding, or BatchNorm and thresholding in the ablation): the threshold writes exact zeros, so that
output is itself a sparse code. Both are then rectified tensors measured the same way, so HaH and baseline
blocks compare like with like. The ``tensor`` column of the result names what was measured for each block.
Dense blocks ([batch, features] outputs) have one "location" per image.

**All-zero locations.** Where every channel is 0 the Hoyer measure is 0/0, undefined: such locations are
left out of the Hoyer average (counting them as 0, "maximally sparse", would reward silencing a location,
which the non-zero fraction already measures). Their share of all locations is reported as
``zero_locations``. The Hoyer value is the mean over all remaining (image, location) pairs, pooled over the
data set; NaN if there are none, or if the block has one channel.

``nonzero`` is the fraction of non-zero entries of the measured tensor (images × channels × locations).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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
from hahrobust.models import HahrobustModel
from hahrobust.nn import ActivationExtractor

TENSOR_OUTPUT = "block output"
TENSOR_BN_INPUT = "BatchNorm input (rectified activations)"
TENSOR_LAYER_OUTPUT = "layer output"

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class MeasuredTensor:
    """Where a block's sparsity is measured: the ``side`` (input or output) of submodule ``module``."""

    module: str
    side: Literal["input", "output"]
    description: str


def hoyer(a: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Normalized Hoyer measure (‖a‖₁/‖a‖₂ − 1)/(√N − 1) along ``dim``; NaN where ``a`` is all zero or N = 1."""
    n = a.shape[dim]
    l1 = a.abs().sum(dim=dim)
    l2 = a.square().sum(dim=dim).sqrt()
    if n < 2:
        return torch.full_like(l1, math.nan)
    ratio = l1 / l2  # NaN exactly where the vector is all zero (0/0)
    return (ratio - 1.0) / (math.sqrt(n) - 1.0)


def measured_tensor(model: nn.Module, block_name: str) -> MeasuredTensor:
    """The tensor whose sparsity stands for block ``block_name`` (see the module docstring for why).

    A block whose ``norm`` submodule is a BatchNorm with no thresholding after it (no ``threshold``
    submodule, or an identity one) is measured at that BatchNorm's input; any other block at its output.
    """
    block = dict(model.named_modules())[block_name]
    norm, threshold = getattr(block, "norm", None), getattr(block, "threshold", None)
    if isinstance(norm, _BATCHNORMS) and (threshold is None or isinstance(threshold, nn.Identity)):
        return MeasuredTensor(f"{block_name}.norm", "input", TENSOR_BN_INPUT)
    return MeasuredTensor(block_name, "output", TENSOR_OUTPUT)


def default_block_count(models: Sequence[HahrobustModel]) -> int:
    """The issue's default: the most HaH blocks any of ``models`` has; all conv blocks if none has any."""
    most = max((len(m.hah_block_names()) for m in models), default=0)
    return most if most > 0 else min(len(m.block_names()) for m in models)


@torch.no_grad()
def sparsity(
    model: nn.Module,
    data: ImageSet,
    blocks: int | None = None,
    *,
    layers: Sequence[str] | None = None,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    description: str = "sparsity",
    shard: Shard | None = None,
) -> pd.DataFrame:
    """Sparsity of the first ``blocks`` conv blocks (default: the model's HaH blocks) on ``data``; a row per block.

    ``layers`` (full module names, e.g. from :func:`hahrobust.nn.hooks.select_layers`) measures the output
    of each of those modules instead, as it is, for any model; ``blocks`` then takes the first ones.
    Without ``layers`` the model must be a :class:`HahrobustModel` (it names its blocks).

    Columns: ``block`` (1-based), ``block_name``, ``block_type`` (the block's class, e.g. ``HaHBlock``,
    ``ConvBlock``), ``tensor`` (what was measured), ``channels``, ``hoyer``, ``nonzero``, ``zero_locations``
    (fractions in [0, 1]). Under torchrun each rank takes whole batches, and the per-batch sums are added
    in batch order: the same floats as one process.
    """
    shard = shard or distributed.current()
    if layers is None and not isinstance(model, HahrobustModel):
        raise HahrobustError("a model that is not a hahrobust model has no blocks: name the layers to measure")
    names = list(layers) if layers is not None else model.block_names()
    if blocks is None:
        blocks = len(names) if layers is not None else (len(model.hah_block_names()) or len(names))
    if not 1 <= blocks <= len(names):
        what = "selected layers" if layers is not None else "conv blocks"
        raise HahrobustError(f"cannot measure {blocks} blocks: the model has {len(names)} {what}")
    names = names[:blocks]
    modules = dict(model.named_modules())
    measured = [
        MeasuredTensor(name, "output", TENSOR_LAYER_OUTPUT) if layers is not None else measured_tensor(model, name)
        for name in names
    ]
    model.eval()
    # Per block: Σ Hoyer over non-zero locations, #non-zero locations, #zero locations, #non-zero entries,
    # #entries. float64 so 10,000 images × 1,024 locations sum without rounding drift.
    totals = BatchSum(torch.zeros(len(names), 5, dtype=torch.float64), shard)
    channels = [0] * len(names)
    with ActivationExtractor(model, [m.module for m in measured]) as acts, progress_task(
        progress, description, shard.own_count(num_batches(len(data), batch_size, False))
    ) as advance:
        for x, _, idx in batches(data, batch_size, device=device, shard=shard):
            model(x)
            part = torch.zeros(len(names), 5, dtype=torch.float64, device=device)
            for b, m in enumerate(measured):
                a = (acts.inputs if m.side == "input" else acts.outputs)[m.module]
                channels[b] = a.shape[1]
                h = hoyer(a, dim=1)  # [B, H, W] ([B] for a dense block)
                silent = ~(a != 0).any(dim=1)
                part[b, 0] = torch.where(silent, 0.0, h).double().sum()  # NaN (N = 1) is handled below
                part[b, 1] = (~silent).sum()
                part[b, 2] = silent.sum()
                part[b, 3] = (a != 0).sum()
                part[b, 4] = a.numel()
            totals.add(int(idx[0]), part)
            advance()
    for seen in distributed.gather({shard.rank: channels}, shard).values():  # a rank may have had no batch
        channels = [max(a, b) for a, b in zip(channels, seen)]
    t = totals.total().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_hoyer = np.where((t[:, 1] > 0) & (np.array(channels) > 1), t[:, 0] / t[:, 1], np.nan)
    return pd.DataFrame(
        {
            "block": np.arange(1, len(names) + 1),
            "block_name": names,
            "block_type": [type(modules[name]).__name__ for name in names],
            "tensor": [m.description for m in measured],
            "channels": channels,
            "hoyer": mean_hoyer,
            "nonzero": t[:, 3] / t[:, 4],
            "zero_locations": t[:, 2] / (t[:, 1] + t[:, 2]),
        }
    )


@torch.no_grad()
def hoyer_per_image(
    model: nn.Module,
    data: ImageSet,
    blocks: int | None = None,
    *,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    description: str = "sparsity per image",
) -> np.ndarray:
    """Per image and block, the mean Hoyer measure over the image's non-silent locations: float64 [N, blocks]
    (NaN where every location of the image is silent). The same tensors as :func:`sparsity` (one process only):
    these are the pairs the report's paired bootstrap resamples, so their mean over images weights each image
    equally, where :func:`sparsity` pools all locations (the two agree when every image has as many non-silent
    locations)."""
    if not isinstance(model, HahrobustModel):
        raise HahrobustError("a model that is not a hahrobust model has no blocks: name the layers to measure")
    names = model.block_names()
    blocks = blocks if blocks is not None else (len(model.hah_block_names()) or len(names))
    if not 1 <= blocks <= len(names):
        raise HahrobustError(f"cannot measure {blocks} blocks: the model has {len(names)} conv blocks")
    measured = [measured_tensor(model, name) for name in names[:blocks]]
    model.eval()
    out = np.full((len(data), blocks), np.nan)
    with ActivationExtractor(model, [m.module for m in measured]) as acts, progress_task(
        progress, description, num_batches(len(data), batch_size, False)
    ) as advance:
        for x, _, idx in batches(data, batch_size, device=device):
            model(x)
            for b, m in enumerate(measured):
                a = (acts.inputs if m.side == "input" else acts.outputs)[m.module]
                h = hoyer(a, dim=1).double().reshape(len(x), -1)  # [B, locations]
                live = (a != 0).any(dim=1).reshape(len(x), -1)
                mean = torch.where(live, h, 0.0).sum(dim=1) / live.sum(dim=1)  # 0/0 → NaN: all silent
                out[idx.numpy(), b] = mean.cpu().numpy()
            advance()
    return out
