"""VGG-11/13/16/19 for 32×32 inputs with leading HaH blocks (the paper's Fig. 1)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from hahrobust.models.base import HahrobustModel, InputNormalization
from hahrobust.nn import HaHBlock, ImplicitNormConv2d, KWinnersTakeAll
from hahrobust.nn.competition import LocalWinnerTakeAll

#: Conv widths per architecture; "M" is a 2×2 max-pool. Five pools take 32×32 to 1×1.
VGG_LAYOUTS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

#: The paper's α (Sec. 3), one per HaH block; blocks beyond the sixth reuse the last value.
PAPER_ALPHA = (4.5e-3, 2.5e-3, 1.3e-3, 1e-3, 8e-4, 5e-4)


@dataclass(frozen=True)
class VGGConfig:
    """Everything that defines a VGG model; stored in checkpoints. Ablations are fields, not forks."""

    arch: Literal["vgg11", "vgg13", "vgg16", "vgg19"] = "vgg16"
    width: float = 1.0  # channel multiplier: 0.25 turns 64…512 into 16…128
    num_classes: int = 10
    hah_blocks: int = 0  # how many leading conv blocks are HaH blocks (paper: 6 of VGG-16's 13)
    norm: Literal["divisive", "batch"] = "divisive"  # "batch": ablation "BatchNorm instead of DN"
    threshold: Literal["fraction", "mean", "none"] = "fraction"  # "none": ablation "no thresholding"
    keep: float = 0.2  # fraction of locations a FractionalThreshold keeps (paper: 20 %)
    sigma: float = 0.1  # divisive normalization's σ (Eq. 2)
    dn_pool: int = 1  # suppression field: 1 = the paper's Eq. 2, 3 = the authors' code
    hah_loss: bool = True  # False: ablation "no HaH loss"
    alpha: tuple[float, ...] = PAPER_ALPHA
    k_ratio: float = 0.1  # K = ceil(k_ratio·N) winners in the HaH cost (Eq. 4)
    lam: float = 0.1  # anti-Hebbian weight λ (paper 0.1; the authors' code effectively 1.0)
    # The regular blocks' activation: "kwta" is k-winners-take-all (Xiao et al. 2020), a defence known to be
    # broken by adaptive attacks (Tramèr et al. 2020): the audit's known positive. "lwta" is local winner-take-all
    # blocks (Panousis et al. 2021, deterministic): of every group of lwta_units channels only the largest passes.
    activation: Literal["relu", "kwta", "lwta"] = "relu"
    kwta_ratio: float = 0.1  # the fraction of a layer's C·H·W values k-WTA keeps (Xiao et al.'s sparsity ratio)
    lwta_units: int = 2  # Panousis et al.'s U = 2 (their best CIFAR-10 setting)

    def channels(self, c: int) -> int:
        return max(1, round(c * self.width))


class ConvBlock(nn.Module):
    """A regular block: ImplicitNormConv2d → ReLU (or k-WTA, or LWTA) → BatchNorm2d."""

    def __init__(self, in_channels: int, out_channels: int, activation: str = "relu", kwta_ratio: float = 0.1,
                 lwta_units: int = 2) -> None:
        super().__init__()
        self.conv = ImplicitNormConv2d(in_channels, out_channels, 3, padding=1)
        activations = {"relu": nn.ReLU, "kwta": lambda: KWinnersTakeAll(kwta_ratio),
                       "lwta": lambda: LocalWinnerTakeAll(lwta_units)}
        if activation not in activations:
            raise ValueError(f"unknown activation {activation!r} (expected {', '.join(activations)})")
        # The attribute keeps its name for every activation, so a ReLU model's weight names never change.
        self.relu: nn.Module = activations[activation]()
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.relu(self.conv(x)))


class VGG(HahrobustModel):
    def __init__(self, config: VGGConfig) -> None:
        super().__init__()
        if config.arch not in VGG_LAYOUTS:
            raise ValueError(f"unknown VGG architecture {config.arch!r}")
        n_convs = sum(1 for v in VGG_LAYOUTS[config.arch] if v != "M")
        if not 0 <= config.hah_blocks <= n_convs:
            raise ValueError(f"hah_blocks must be in [0, {n_convs}] for {config.arch}, got {config.hah_blocks}")
        if config.width <= 0:
            raise ValueError(f"width must be > 0, got {config.width}")
        self.config = config
        self.normalize = InputNormalization()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_channels, n_block, n_pool = 3, 0, 0
        for v in VGG_LAYOUTS[config.arch]:
            if v == "M":
                n_pool += 1
                layers[f"pool{n_pool}"] = nn.MaxPool2d(2)
                continue
            n_block += 1
            out_channels = config.channels(int(v))
            if n_block <= config.hah_blocks:
                layers[f"block{n_block}"] = HaHBlock(
                    in_channels, out_channels, sigma=config.sigma, pool=config.dn_pool, threshold=config.threshold,
                    keep=config.keep, norm=config.norm, k_ratio=config.k_ratio, lam=config.lam,
                )
            else:
                layers[f"block{n_block}"] = ConvBlock(in_channels, out_channels, config.activation, config.kwta_ratio,
                                                       config.lwta_units)
            in_channels = out_channels
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(in_channels, config.num_classes)

    def block_names(self) -> list[str]:
        return [f"features.{name}" for name in self.features._modules if name.startswith("block")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)).flatten(1))
