"""The network of Amato et al. 2019 (Fig. 1), as the authors' code builds it for 32×32 inputs.

    conv1 3→96 5×5 → ReLU → 2×2 max-pool → BN      (32 → 28 → 14)
    conv2 96→128 3×3 → ReLU → BN                    (14 → 12)
    conv3 128→192 3×3 → ReLU → 2×2 max-pool → BN    (12 → 10 → 5)
    conv4 192→256 3×3 → ReLU → BN                   (5 → 3)
    fc5 2304→300 → ReLU → BN
    dropout 0.5 → fc6 300→10

Each of the six layers is trained by gradient descent (``G``), by a Hebbian rule (``H``) or left at its
random initialisation (``R``), as in Table 2's notation: ``layers="HHGGGG"`` is "2-bottom Hebbian".
A Hebbian hidden layer is a bias-free :class:`~hahrobust.nn.hebbian.HebbianConv2d` whose output is
max(0, cos(patch, kernel)) (the clamp replaces the ReLU), followed by BN without learned scale and
shift; a Hebbian classifier outputs <x, w>/‖w‖. ``R`` layers have the ``G`` structure, frozen.
Inputs in [0, 1] are normalised per channel and, with ``zca=True``, ZCA-whitened inside the model.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from hahrobust.models.base import HahrobustModel, InputNormalization
from hahrobust.nn.hebbian import HebbianConv2d, HebbianLinear
from hahrobust.nn.zca import ZCAWhitening

#: (kernel size, 2×2 max-pool after it) of conv1…conv4.
CONV_LAYOUT = ((5, True), (3, False), (3, True), (3, False))
#: Paper widths of conv1…conv4 and fc5.
PAPER_CHANNELS = (96, 128, 192, 256, 300)
#: Teacher kernels per class in conv1…fc5 (Sec. 5.2 / the authors' code); the rest of a layer's kernels
#: are common to all classes: conv1 all 96 (unsupervised), conv2 48, conv3 32, conv4 16, fc5 20.
PAPER_PER_CLASS = (0, 8, 16, 24, 28)
LAYER_KINDS = "HGR"
INPUT_SIZE = 32


@dataclass(frozen=True)
class HebbNetConfig:
    """Everything that defines a hebb-net; stored in checkpoints."""

    layers: str = "GGGGGG"  # learning rule of conv1..conv4, fc5, classifier: H Hebbian, G gradient, R frozen random
    zca: bool = False  # ZCA-whiten inputs (the paper does whenever lower layers are Hebbian)
    zca_eps: float = 0.1  # ZCA smoothing constant (authors: 0.1)
    width: float = 1.0  # channel multiplier for reduced-scale runs (1.0: the paper's 96/128/192/256/300)
    per_class: tuple[int, ...] = PAPER_PER_CLASS  # teacher kernels per class, conv1..fc5 (scaled by width)
    num_classes: int = 10
    dropout: float = 0.5

    def channels(self) -> tuple[int, ...]:
        return tuple(max(1, round(c * self.width)) for c in PAPER_CHANNELS)

    def group_sizes(self) -> tuple[int, ...]:
        """Teacher kernels per class of conv1..fc5 at this width (never more than a layer can hold)."""
        return tuple(
            min(round(p * self.width), c // self.num_classes) for p, c in zip(self.per_class, self.channels())
        )

    def validate(self) -> None:
        if len(self.layers) != 6 or any(c not in LAYER_KINDS for c in self.layers):
            raise ValueError(
                f"layers must be 6 letters from H (Hebbian), G (gradient), R (random) for conv1-4, fc5 and the "
                f"classifier, e.g. HHGGGG; got {self.layers!r}"
            )
        if self.width <= 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if len(self.per_class) != 5 or any(p < 0 for p in self.per_class):
            raise ValueError(f"per_class needs 5 non-negative group sizes (conv1..fc5), got {self.per_class}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.zca_eps < 0:
            raise ValueError(f"zca_eps must be >= 0, got {self.zca_eps}")


class ConvStage(nn.Module):
    """conv → ReLU → [2×2 max-pool] → BN; ``layer`` is the weight-bearing module the rules train."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, kernel_size: int, pool: bool) -> None:
        super().__init__()
        self.kind = kind
        if kind == "H":
            self.layer: nn.Module = HebbianConv2d(in_channels, out_channels, kernel_size)
            self.act: nn.Module = nn.Identity()  # the similarity is already clamped at 0
        else:
            self.layer = nn.Conv2d(in_channels, out_channels, kernel_size)
            self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.norm = nn.BatchNorm2d(out_channels, affine=kind != "H")

    def layer_input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.pool(self.act(self.layer(x))))


class DenseStage(nn.Module):
    """flatten → fc → ReLU → BN (fc5)."""

    def __init__(self, kind: str, in_features: int, out_features: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "H":
            self.layer: nn.Module = HebbianLinear(in_features, out_features)
            self.act: nn.Module = nn.Identity()
        else:
            self.layer = nn.Linear(in_features, out_features)
            self.act = nn.ReLU()
        self.norm = nn.BatchNorm1d(out_features, affine=kind != "H")

    def layer_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.layer(x.flatten(1))))


class ClassifierStage(nn.Module):
    """dropout → fc6; a Hebbian classifier scores a class by <x, w_c>/‖w_c‖ and has no bias."""

    def __init__(self, kind: str, in_features: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.kind = kind
        self.dropout = nn.Dropout(dropout)
        if kind == "H":
            self.layer: nn.Module = HebbianLinear(in_features, num_classes, output="projection")
        else:
            self.layer = nn.Linear(in_features, num_classes)

    def layer_input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.dropout(x))


class HebbNet(HahrobustModel):
    def __init__(self, config: HebbNetConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.normalize = InputNormalization()
        if config.zca:
            self.zca = ZCAWhitening((3, INPUT_SIZE, INPUT_SIZE), eps=config.zca_eps)
        channels = config.channels()
        stages: OrderedDict[str, nn.Module] = OrderedDict()
        in_channels, size = 3, INPUT_SIZE
        for i, (kernel, pool) in enumerate(CONV_LAYOUT):
            stages[f"block{i + 1}"] = ConvStage(config.layers[i], in_channels, channels[i], kernel, pool)
            in_channels, size = channels[i], (size - kernel + 1) // (2 if pool else 1)
        stages["block5"] = DenseStage(config.layers[4], in_channels * size * size, channels[4])
        self.features = nn.Sequential(stages)
        self.classifier = ClassifierStage(config.layers[5], channels[4], config.num_classes, config.dropout)
        for stage in self.stages():
            if stage.kind == "R":
                stage.requires_grad_(False)

    def block_names(self) -> list[str]:
        """conv1..conv4 and fc5, in forward order (the classifier is not a block, as in VGG)."""
        return [f"features.{name}" for name in self.features._modules]

    def stages(self) -> list[nn.Module]:
        """The six trainable stages in forward order: block1..block5, classifier (``stage.kind`` is H/G/R)."""
        return [*self.features, self.classifier]

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        return self.zca(x) if self.config.zca else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.preprocess(x)))

    def forward_to(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """What stage ``index`` receives for images ``x`` (the stages below run in their current mode)."""
        h = self.preprocess(x)
        for stage in self.stages()[:index]:
            h = stage(h)
        return h

    def stage_input(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """The input of stage ``index``'s weight layer (fc5's is flattened): what a Hebbian rule learns from."""
        return self.stages()[index].layer_input(self.forward_to(x, index))


__all__ = ["HebbNet", "HebbNetConfig", "PAPER_CHANNELS", "PAPER_PER_CLASS"]
