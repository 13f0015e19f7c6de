"""What every hahrobust model provides, whatever its architecture."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hahrobust.data import CIFAR10_MEAN, CIFAR10_STD, ImageSet
from hahrobust.nn import HaHBlock


class InputNormalization(nn.Module):
    """(x − mean) / std per channel, inside the model so every tool feeds images in [0, 1]."""

    def __init__(self, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class HahrobustModel(nn.Module):
    """Base class: named conv blocks in order, and the HaH loss of the blocks that carry one.

    Subclasses set ``self.config`` (a dataclass with ``alpha`` and ``hah_loss``) and name their
    blocks so that :meth:`block_names` lists them in forward order.
    """

    config: object

    def block_names(self) -> list[str]:
        """Full module names of the conv blocks, in forward order (inputs of these feed SNR, outputs sparsity)."""
        raise NotImplementedError

    def hah_block_names(self) -> list[str]:
        modules = dict(self.named_modules())
        return [name for name in self.block_names() if isinstance(modules[name], HaHBlock)]

    def _hah_blocks(self) -> list[HaHBlock]:
        modules = dict(self.named_modules())
        return [modules[name] for name in self.hah_block_names()]  # type: ignore[misc]

    def loss_weights(self) -> list[float]:
        """α per HaH block (0 for all when the HaH loss is switched off)."""
        blocks = self._hah_blocks()
        if not getattr(self.config, "hah_loss", False):
            return [0.0] * len(blocks)
        alpha = list(getattr(self.config, "alpha", ()))
        return [alpha[i] if i < len(alpha) else (alpha[-1] if alpha else 0.0) for i in range(len(blocks))]

    def record_hah_costs(self, enabled: bool) -> None:
        """Make blocks with α > 0 compute their HaH cost during forward (the trainer turns this on)."""
        for block, alpha in zip(self._hah_blocks(), self.loss_weights()):
            block.record_cost = enabled and alpha > 0
            block.cost = None

    def fit_unsupervised(self, data: ImageSet, *, seed: int, device: torch.device) -> dict[str, float]:
        """Learn the layers this model learns without labels (a dictionary, Hebbian filters) from ``data``; the trainer
        calls it once, before the first supervised epoch, and keeps what it returns (figures for the log). A pure
        function of (weights at initialisation, data, seed) on the CPU. Most models learn nothing here."""
        return {}

    def hah_objective(self) -> torch.Tensor | None:
        """Σ α_l·L_l over the blocks of the last forward pass (to be *subtracted* from the loss, Eq. 5)."""
        terms = [a * b.cost for b, a in zip(self._hah_blocks(), self.loss_weights()) if b.cost is not None]
        return torch.stack(terms).sum() if terms else None
