"""HaH building blocks (Cekic, Bakiskan & Madhow, ICIP 2022, Sec. 2.1).

Every layer here takes and returns [B, C, H, W] tensors and is scale-equivariant (thresholds, the
suppression field) or scale-invariant (divisive normalization), which is what makes a HaH block's
output invariant to scaling its input by c > 0 (tested in tests/test_nn.py).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hahrobust.nn.cost import kth_largest, relu_hah_cost
from hahrobust.nn.local import local_conv2d
from hahrobust.nn.surrogate import SurrogateLayer

#: Added to each filter's weight norm, as the authors do, so a zero filter does not divide by zero.
WEIGHT_NORM_EPS = 1e-6
#: Added to the divisive-normalization denominator; the authors use 1e-7.
DIVISIVE_EPS = 1e-7

ThresholdKind = Literal["fraction", "mean", "none"]


class ImplicitNormConv2d(nn.Conv2d):
    """Conv2d whose output is divided by each filter's ℓ2 weight norm (Eq. 1): y = <w, x> / (‖w‖₂ + 1e-6).

    The division is applied to the weights, <w/(‖w‖+1e-6), x>, which has the same value (the bias,
    if any, is divided too): a weight-sized op and its weight-sized backward are far cheaper than
    dividing the [B, C_out, H, W] output, whose backward alone takes several passes over it.

    :meth:`forward_with_local_branch` also returns a second tensor equal to the output through
    which gradients reach this layer's weights but never its input; the HaH cost is computed on
    that tensor so the cost trains only its own block (see :func:`hahrobust.nn.local.local_conv2d`).
    """

    def weight_norms(self) -> torch.Tensor:
        return self.weight.flatten(1).norm(dim=1) + WEIGHT_NORM_EPS

    def _normalized(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) divided by the filter norms: the parameters the convolution actually uses."""
        norms = self.weight_norms()
        weight = self.weight / norms.view(-1, *([1] * (self.weight.dim() - 1)))
        return weight, None if self.bias is None else self.bias / norms

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self._conv_forward(x, *self._normalized())

    def forward_with_local_branch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(output, the same values again): the second one's gradient updates weights only."""
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError("layer-local HaH gradients need numeric zero padding")
        weight, bias = self._normalized()
        return local_conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class DivisiveNorm2d(nn.Module):
    """Divisive normalization (Eq. 2): z = y / (σ·M_max + (1−σ)·M(loc) + ε).

    M(loc) is the channel mean of a suppression field F at each location and M_max its maximum over
    locations, per image. ``pool=1``: F = y, the paper's equation. ``pool=3``: F = 3×3 stride-1
    max-pool of |y|, what the authors' released code (and hahtorch) does: each location is then
    suppressed by the strongest response in its neighbourhood, which gives more suppression.

    Default ``pool=1`` because it is the published equation; the ``authors`` training preset
    selects ``pool=3``. Both are exactly scale-invariant up to ε: F scales with y.
    """

    def __init__(self, sigma: float = 0.1, pool: int = 1, eps: float = DIVISIVE_EPS) -> None:
        super().__init__()
        if not 0.0 <= sigma <= 1.0:
            raise ValueError(f"sigma must be in [0, 1], got {sigma}")
        if pool < 1 or pool % 2 == 0:
            raise ValueError(f"pool must be an odd size >= 1, got {pool}")
        self.sigma, self.pool, self.eps = sigma, pool, eps

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        # At least fp32, for the denominators and for the output: under bf16 autocast a small mean would
        # lose most of its digits, and the threshold that follows would select among rounded values
        # (ties). The next convolution casts back to bf16 itself.
        dtype = torch.promote_types(y.dtype, torch.float32)
        y = y.to(dtype)
        field = y if self.pool == 1 else F.max_pool2d(y.abs(), self.pool, stride=1, padding=self.pool // 2)
        local_mean = field.mean(dim=1, keepdim=True)
        global_max = local_mean.amax(dim=(2, 3), keepdim=True)
        denominator = self.sigma * global_max + (1.0 - self.sigma) * local_mean + self.eps
        # Multiply by the [B,1,H,W] reciprocal: autograd's backward of a broadcast product takes two
        # passes over [B,C,H,W] (grad·1/d, and Σ_c grad·y); that of a quotient takes five.
        return y * denominator.reciprocal()

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, pool={self.pool}"


def kept_count(keep: float, locations: int) -> int:
    """How many of ``locations`` values a FractionalThreshold keeps: ceil(keep·locations), at least 1."""
    return max(1, min(locations, math.ceil(keep * locations - 1e-9)))


def keep_top(layer: SurrogateLayer, z: torch.Tensor, fraction: float, start_dim: int) -> torch.Tensor:
    """``z`` with the top ceil(``fraction``·m) values of each group of its last dims from ``start_dim`` kept (ties at
    the k-th value τ all kept) and the rest zeroed; τ detached, the backward ``layer``'s surrogate under BPDA.
    start_dim 2: per image and channel (HaH's threshold); 1: per image over the whole layer (k-WTA)."""
    flat = z.detach().flatten(start_dim)
    k = kept_count(fraction, flat.shape[-1])
    if k == flat.shape[-1]:
        return z
    tau = kth_largest(flat, k, dim=-1).reshape(*z.shape[:start_dim], *([1] * (z.dim() - start_dim)))
    # A float mask straight from the comparison (out=): a bool mask would be cast to float by
    # the product, forward and backward, and that cast costs more than the comparison.
    exact = z * torch.ge(z.detach(), tau, out=torch.empty_like(z))
    return layer.with_surrogate(z, exact, tau)


class FractionalThreshold(SurrogateLayer):
    """Adaptive threshold (Eq. 3) with τ at a percentile: per image and channel keep the top ``keep``
    fraction of spatial locations and zero the rest.

    Definition: k = ceil(keep·H·W) (at least 1); τ = the k-th largest value of the channel; values
    ≥ τ are kept. Ties at τ are all kept, so a channel keeps at least k values and more only when
    values tie at τ. H·W = 1 keeps everything; an all-zero channel stays zero. τ is an exact
    selection (:func:`hahrobust.nn.cost.kth_largest`: no full sort of a 32×32 map), and is
    detached: the mask is piecewise constant, so plain gradients never see a unit turn on or off; under
    :class:`~hahrobust.nn.surrogate.BPDA` the backward is a smooth mask around τ instead.
    """

    def __init__(self, keep: float = 0.2) -> None:
        super().__init__()
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep must be in (0, 1], got {keep}")
        self.keep = keep

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return keep_top(self, z, self.keep, start_dim=2)

    def extra_repr(self) -> str:
        return f"keep={self.keep}"


class MeanThreshold(SurrogateLayer):
    """Adaptive threshold (Eq. 3) with τ = the per-image, per-channel spatial mean: keep values ≥ τ.

    H·W = 1 keeps the value (it equals its mean); an all-zero channel stays zero. τ is detached, as in
    :class:`FractionalThreshold`, and has the same BPDA surrogate.
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        tau = z.detach().mean(dim=(2, 3), keepdim=True)
        return self.with_surrogate(z, z * (z >= tau), tau)


class KWinnersTakeAll(SurrogateLayer):
    """k-winners-take-all activation (Xiao, Zhong & Zheng, ICLR 2020), in place of a ReLU: per image, keep the
    k = ceil(``ratio``·C·H·W) largest values of the whole layer output (their ``Sparsify2D_vol``, the variant of
    their CIFAR results, at their sparsity ratio 0.1) and zero the rest.

    Ties at the k-th value τ are all kept. τ is detached, so plain gradients never see a unit win or lose: the
    gradient masking Tramèr et al. (NeurIPS 2020) exploited to break the defence. Under
    :class:`~hahrobust.nn.surrogate.BPDA` the backward is the same smooth mask around τ as HaH's thresholds.
    """

    def __init__(self, ratio: float = 0.1) -> None:
        super().__init__()
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"k-WTA ratio must be in (0, 1], got {ratio}")
        self.ratio = ratio

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return keep_top(self, z, self.ratio, start_dim=1)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}"


def make_threshold(kind: ThresholdKind, keep: float) -> nn.Module:
    if kind == "fraction":
        return FractionalThreshold(keep)
    if kind == "mean":
        return MeanThreshold()
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown threshold kind {kind!r} (expected fraction, mean or none)")


class HaHBlock(nn.Module):
    """ImplicitNormConv2d → ReLU → DivisiveNorm2d (or BatchNorm2d, for ablation) → threshold.

    The conv has no bias: a bias would break the block's invariance to input scale.
    When ``record_cost`` is set (the trainer sets it when the block's α > 0), forward stores the
    block's HaH cost (Eq. 4) of ReLU(conv), before divisive normalization as the authors compute it,
    in ``self.cost``; its gradient reaches only this block's conv weights.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        sigma: float = 0.1,
        pool: int = 1,
        threshold: ThresholdKind = "fraction",
        keep: float = 0.2,
        norm: Literal["divisive", "batch"] = "divisive",
        k_ratio: float = 0.1,
        lam: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv = ImplicitNormConv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        if norm == "divisive":
            self.norm: nn.Module = DivisiveNorm2d(sigma=sigma, pool=pool)
        elif norm == "batch":
            self.norm = nn.BatchNorm2d(out_channels)
        else:
            raise ValueError(f"unknown norm {norm!r} (expected divisive or batch)")
        self.threshold = make_threshold(threshold, keep)
        self.k_ratio, self.lam = k_ratio, lam
        self.record_cost = False
        self.cost: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.threshold, nn.Identity) or not torch.is_autocast_enabled(x.device.type):
            return self._forward(x)
        # A thresholded block's convolution stays fp32 under autocast: the hard threshold turns bf16's
        # rounding (0.3 % here) into flipped locations near τ, ~4 % error per block, and 14 % of a trained
        # HaH VGG-16's predictions changed when these convolutions ran in bf16 (0.2 % for the baseline;
        # tests/test_scale.py).
        with torch.autocast(x.device.type, enabled=False):
            return self._forward(x.float())

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.record_cost and torch.is_grad_enabled():
            y, y_local = self.conv.forward_with_local_branch(x)
            self.cost = relu_hah_cost(y_local, self.k_ratio, self.lam)
        else:
            y = self.conv(x)
            if self.record_cost:  # evaluation of the loss without gradients
                self.cost = relu_hah_cost(y, self.k_ratio, self.lam)
        return self.threshold(self.norm(self.relu(y)))
