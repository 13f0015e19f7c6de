"""HaH building blocks, the HaH cost, layer-local gradients and activation hooks."""

from hahrobust.nn.cost import hah_cost
from hahrobust.nn.hooks import ActivationExtractor
from hahrobust.nn.layers import (
    DivisiveNorm2d,
    FractionalThreshold,
    HaHBlock,
    ImplicitNormConv2d,
    KWinnersTakeAll,
    MeanThreshold,
    kept_count,
)
from hahrobust.nn.local import local_conv2d

__all__ = [
    "ActivationExtractor",
    "DivisiveNorm2d",
    "FractionalThreshold",
    "HaHBlock",
    "ImplicitNormConv2d",
    "KWinnersTakeAll",
    "MeanThreshold",
    "hah_cost",
    "kept_count",
    "local_conv2d",
]
