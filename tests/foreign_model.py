"""A classifier written as a user outside hahrobust would write it: plain PyTorch, no hahrobust import.

It is the same network as hahrobust's baseline VGG (weight-normalized 3×3 convolutions → ReLU → BatchNorm,
2×2 max-pools, one linear layer, CIFAR-10 normalization inside), with the same parameter names, so a
hahrobust checkpoint's tensors load into it: ``build()`` matches ``hahrobust.models.build("vgg11",
width=0.125)`` (the tests) and ``vgg16_small()`` matches checkpoints/vgg16-small.safetensors (the README).
Because it computes the same operations in the same order, it gives bit-identical logits, which is what lets
the tests demand the very same attack table from the model spec as from the checkpoint.

``thresholded()`` adds a top-k threshold the way many sparse-coding papers write one, a module hahrobust
knows nothing about: it is what ``--bpda TopKThreshold=sigmoid`` is for.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

LAYOUTS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class Standardize(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4914, 0.4822, 0.4465]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([0.2470, 0.2435, 0.2616]).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class UnitNormConv(nn.Conv2d):
    """3×3 convolution with each filter divided by its ℓ2 norm (+1e-6)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        norms = self.weight.flatten(1).norm(dim=1) + 1e-6
        return F.conv2d(x, self.weight / norms.view(-1, 1, 1, 1), self.bias / norms, padding=self.padding)


class TopKThreshold(nn.Module):
    """Keep the top ``keep`` fraction of each channel's values (per image), zero the rest: not differentiable
    where it switches a unit on or off."""

    def __init__(self, keep: float = 0.2) -> None:
        super().__init__()
        self.keep = keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().flatten(2)
        k = max(1, math.ceil(self.keep * flat.shape[-1]))
        tau = flat.topk(k, dim=-1).values[..., -1:].unsqueeze(-1)
        return x * (x.detach() >= tau)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, threshold: bool = False) -> None:
        super().__init__()
        self.conv = UnitNormConv(cin, cout, 3, padding=1)
        self.relu = nn.ReLU()
        self.norm = nn.BatchNorm2d(cout)
        self.threshold = TopKThreshold() if threshold else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.relu(self.conv(x)))
        return x if self.threshold is None else self.threshold(x)


class PlainVGG(nn.Module):
    def __init__(self, arch: str, width: float, thresholded_blocks: int = 0) -> None:
        super().__init__()
        self.normalize = Standardize()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        cin, blocks, pools = 3, 0, 0
        for v in LAYOUTS[arch]:
            if v == "M":
                pools += 1
                layers[f"pool{pools}"] = nn.MaxPool2d(2)
            else:
                blocks += 1
                cout = max(1, round(int(v) * width))
                layers[f"block{blocks}"] = Block(cin, cout, threshold=blocks <= thresholded_blocks)
                cin = cout
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(cin, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)).flatten(1))


def build() -> PlainVGG:
    return PlainVGG("vgg11", 0.125)


def vgg16_small() -> PlainVGG:
    return PlainVGG("vgg16", 0.25)


def thresholded() -> PlainVGG:
    return PlainVGG("vgg11", 0.125, thresholded_blocks=2)
