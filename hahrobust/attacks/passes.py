"""What an attack costs, counted as AttackBench and A3 count it: forward and backward passes, one per image.

:func:`count_passes` hooks the models an attack touches for the length of a block: every forward call adds its
batch size to ``forward``, and when its output takes part in a backward pass, the batch size to ``backward``
(EOT's jittered copies, AutoAttack's and Square's queries, verification and clean predictions all count). Counts
do not depend on the machine, so they compare ensembles where seconds on a shared CPU would not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PassCount:
    """Image-passes: ``forward`` images through the model, ``backward`` images back through it."""

    forward: int = 0
    backward: int = 0

    def __add__(self, other: PassCount) -> PassCount:
        return PassCount(self.forward + other.forward, self.backward + other.backward)

    @property
    def total(self) -> int:
        return self.forward + self.backward


@contextlib.contextmanager
def count_passes(*models: nn.Module | None) -> Iterator[PassCount]:
    """Count the passes through ``models`` (None entries are ignored) inside the block."""
    count = PassCount()

    def hook(_module: nn.Module, args: tuple[object, ...], output: object) -> None:
        if not isinstance(output, torch.Tensor):
            return
        rows = output.shape[0] if output.dim() else 1
        count.forward += rows
        if output.requires_grad:
            def backward(grad: torch.Tensor, rows: int = rows) -> None:
                count.backward += rows

            output.register_hook(backward)

    handles = [m.register_forward_hook(hook) for m in dict.fromkeys(m for m in models if m is not None)]
    try:
        yield count
    finally:
        for handle in handles:
            handle.remove()
