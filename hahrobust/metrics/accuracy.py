"""Clean accuracy, streamed in batches."""

from __future__ import annotations

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from hahrobust import distributed
from hahrobust.data import ImageSet, batches, num_batches
from hahrobust.distributed import Shard
from hahrobust.metrics._progress import progress_task


@torch.no_grad()
def accuracy(
    model: nn.Module,
    data: ImageSet,
    *,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    description: str = "accuracy",
    shard: Shard | None = None,
) -> float:
    """Fraction of ``data`` that ``model`` (switched to eval mode) classifies correctly: the mean of
    :func:`correct_per_image` (under torchrun each rank classifies its batches)."""
    hits = correct_per_image(model, data, batch_size=batch_size, device=device, progress=progress,
                             description=description, shard=shard)
    return int(hits.sum()) / len(data)


@torch.no_grad()
def correct_per_image(
    model: nn.Module,
    data: ImageSet,
    *,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    description: str = "accuracy",
    shard: Shard | None = None,
) -> np.ndarray:
    """Whether ``model`` (switched to eval mode) classifies each image of ``data`` correctly: bool [N], in ``data``'s
    order (its mean is :func:`accuracy`); under torchrun each rank classifies its batches and they are gathered."""
    shard = shard or distributed.current()
    model.eval()
    parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with progress_task(progress, description, shard.own_count(num_batches(len(data), batch_size, False))) as advance:
        for x, y, idx in batches(data, batch_size, device=device, shard=shard):
            parts[int(idx[0])] = (idx.numpy(), (model(x).argmax(dim=1) == y).cpu().numpy())
            advance()
    correct = np.zeros(len(data), dtype=bool)
    for idx, hits in distributed.gather(parts, shard).values():
        correct[idx] = hits
    return correct
