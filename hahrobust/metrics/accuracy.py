"""Clean accuracy, streamed in batches."""

from __future__ import annotations

import torch
from rich.progress import Progress
from torch import nn

from hahrobust.data import ImageSet, batches, num_batches


@torch.no_grad()
def accuracy(
    model: nn.Module,
    data: ImageSet,
    *,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    description: str = "accuracy",
) -> float:
    """Fraction of ``data`` that ``model`` (switched to eval mode) classifies correctly."""
    model.eval()
    task = progress.add_task(description, total=num_batches(len(data), batch_size, False)) if progress else None
    correct = 0
    for x, y, _ in batches(data, batch_size, device=device):
        correct += int((model(x).argmax(dim=1) == y).sum())
        if progress is not None and task is not None:
            progress.advance(task)
    if progress is not None and task is not None:
        progress.remove_task(task)
    return correct / len(data)
