"""SoftHebb (Journé, Rodríguez, Guo & Moraitis, ICLR 2023, "Hebbian deep learning without feedback") at the small scale.

Three convolutional layers learned without labels by soft winner-take-all Hebbian plasticity
(:mod:`hahrobust.nn.softhebb`), then a linear readout trained with labels on their frozen features. Each layer is
the paper's: BatchNorm without affine parameters → convolution without bias → the triangle activation
ReLU(u − mean_c u)^p (:class:`~hahrobust.nn.competition.Triangle`) → pooling (max 4/2 after layers 1–2, average
2/2 after layer 3); the readout takes the flattened map through dropout.

At this scale, and where it differs from the paper: channels 96/384/1536 × ``width`` (¼: 24/96/384, so the readout
sees 384·4·4 = 6,144 features as the paper's 1536·2·2: our layer 3 pools to 4×4, not 2×2); one Hebbian epoch per
layer, greedily in order, on the 10,000-image subset (the paper: one epoch of all 50,000); the plain soft-WTA rule
without the paper's anti-Hebbian losers and adaptive rates; the readout with the preset's Adam schedule. The paper
reports 80.3 % on CIFAR-10 at full scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hahrobust.data import ImageSet, batches
from hahrobust.models.base import HahrobustModel, InputNormalization
from hahrobust.nn.competition import Triangle
from hahrobust.nn.softhebb import conv_patches, softhebb_delta

CHANNELS = (96, 384, 1536)  # the paper's
KERNELS = (5, 3, 3)
POWERS = (0.7, 1.4, 1.4)  # the triangle's exponent per layer (the paper's code)


@dataclass(frozen=True)
class SoftHebbConfig:
    width: float = 0.25
    num_classes: int = 10
    temperature: float = 1.0  # softmax temperature τ of the soft competition
    hebbian_lr: float = 0.01  # η of the Hebbian update (per batch-averaged step)
    hebbian_epochs: int = 1  # per layer
    hebbian_batch: int = 64
    dropout: float = 0.5
    hah_loss: bool = False  # (no HaH block; read by HahrobustModel.loss_weights)

    def channels(self) -> tuple[int, ...]:
        return tuple(max(1, round(c * self.width)) for c in CHANNELS)


class SoftHebbLayer(nn.Module):
    """BatchNorm (no affine) → conv (no bias, frozen: learned by the Hebbian rule) → triangle → pool."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, power: float, pool: nn.Module) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels, affine=False)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.conv.weight.requires_grad_(False)
        with torch.no_grad():  # unit-norm kernels: where Oja's term keeps them
            w = self.conv.weight
            w.div_(w.flatten(1).norm(dim=1)[:, None, None, None])
        self.activation = Triangle(power)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.activation(self.conv(self.norm(x))))

    def hebbian_step(self, x: torch.Tensor, lr: float, temperature: float) -> None:
        """One soft-WTA Hebbian update of the kernels from the batch ``x`` (this layer's input)."""
        conv = self.conv
        patches = conv_patches(self.norm(x), conv.kernel_size[0], conv.padding[0])
        weight = conv.weight.flatten(1)
        conv.weight.add_((lr * softhebb_delta(weight, patches, temperature)).reshape(conv.weight.shape))


class SoftHebb(HahrobustModel):
    def __init__(self, config: SoftHebbConfig) -> None:
        super().__init__()
        self.config = config
        self.normalize = InputNormalization()
        widths = (3, *config.channels())
        pools = (nn.MaxPool2d(4, 2, padding=1), nn.MaxPool2d(4, 2, padding=1), nn.AvgPool2d(2, 2))
        self.layers = nn.Sequential(*(SoftHebbLayer(widths[i], widths[i + 1], KERNELS[i], POWERS[i], pools[i])
                                      for i in range(3)))
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(widths[-1] * 4 * 4, config.num_classes)

    def block_names(self) -> list[str]:
        return [f"layers.{i}" for i in range(len(self.layers))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.layers(self.normalize(x)).flatten(1)))

    @torch.no_grad()
    def fit_unsupervised(self, data: ImageSet, *, seed: int, device: torch.device) -> dict[str, float]:
        """The Hebbian phase: layer by layer, ``hebbian_epochs`` passes over ``data`` (no labels used); BatchNorm's
        running statistics of each layer are learned in the same pass. Returns each layer's mean kernel norm."""
        config = self.config
        was_training = self.training
        figures: dict[str, float] = {}
        for index, layer in enumerate(self.layers):
            self.eval()  # the layers below are learned: their BatchNorm statistics stay as they are
            layer.train()  # this one's BatchNorm normalizes by the batch and learns its running statistics
            for epoch in range(config.hebbian_epochs):
                for x, _, _ in batches(data, config.hebbian_batch, shuffle=True, seed=seed, epoch=1000 * index + epoch,
                                       device=device):
                    h = self.normalize(x)
                    for below in self.layers[:index]:
                        h = below(h)
                    layer.hebbian_step(h, config.hebbian_lr, config.temperature)
            figures[f"layer{index + 1}_kernel_norm"] = layer.conv.weight.flatten(1).norm(dim=1).mean().item()
        self.train(was_training)
        return figures
