"""Hebbian learning for conv and linear layers (Amato et al. 2019, Sec. 3).

The rule is Eq. 3, Δw = η·r·(x − w): a kernel steps toward an input patch x by a fraction η·r of the
distance, where the step coefficient r is

- ``"wta"`` (Sec. 3.2): 1 for the kernel most similar to the patch (angular or Euclidean similarity),
  0 for the others; with teacher groups the competition is held among the kernels the teacher allows;
- ``"teacher"`` (Sec. 3.3, the classifier): the teacher signal itself, 1 for the kernels of the sample's
  class and for the common kernels, 0 otherwise, with no competition;
- ``"hebb"`` (Eq. 3 as such): the unit's activation y = max(0, cos(x, w)) (times the teacher mask).

Shared kernels (Sec. 3.4): the per-location steps of one kernel are combined into one update, their
average weighted by the step coefficients. With R the [P, K] coefficient matrix of P patches (all
locations of all images of a batch) and X the [P, D] patch matrix this is

    Δw_k = η · (Σ_p r_pk² x_p − Σ_p r_pk² w_k) / Σ_p r_pk,

and for binary R (WTA, teacher) it reduces to Δw_k = η·((Rᵀ X)_k / count_k − [count_k > 0]·w_k): one
[K, P] × [P, D] matmul. No positions × kernels × patch tensor is ever formed.

Guards (why the weights can neither blow up nor die):

- Blow-up: coefficients are clipped to [0, 1] and η must lie in (0, 1]. Then Σr²/Σr ≤ 1 and each
  kernel's update is a convex combination of its old weights and a weighted mean of its patches, so
  ‖w‖ never exceeds max(‖w₀‖, max ‖x‖) whatever the number of steps. A non-finite result is an error.
- No decay toward 0: a kernel with no patch in a batch (count_k = 0) is left unchanged, not pulled
  to zero by the decay term (the [count_k > 0] factor).
- Dead units: in WTA a kernel that never wins never moves. :class:`HebbianLearner` counts wins over a
  window of batches and re-initialises a kernel that won nothing in the window to a random patch of the
  current batch that it was allowed to learn from (for a teacher-grouped kernel: a patch of its class),
  drawn from an explicit generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hahrobust.errors import HahrobustError

Similarity = Literal["angular", "euclidean"]
RuleMode = Literal["wta", "teacher", "hebb"]

#: Norms below this count as zero: a zero kernel or patch gets similarity 0 instead of NaN.
NORM_EPS = 1e-12


# ------------------------------------------------------------------------------------------------ layers


def _unit_rows(matrix: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit ℓ2 norm; all-zero rows stay zero (as the authors' norm += (norm == 0))."""
    norms = matrix.norm(dim=1, keepdim=True)
    return matrix / torch.where(norms > NORM_EPS, norms, torch.ones_like(norms))


class HebbianConv2d(nn.Module):
    """A bias-free conv layer trained by a Hebbian rule; its output is a similarity, not a dot product.

    ``output="cosine"`` (hidden Hebbian layers, Sec. 5.2): max(0, cos(patch, kernel)).
    ``output="projection"``: <patch, kernel>/‖kernel‖ (the Hebbian classifier, Sec. 5.1).
    The weight is a Parameter without gradient (Hebbian rules update it in place), so it lives in the
    state dict; gradients still flow to the input, which attacks need.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
        output: Literal["cosine", "projection"] = "cosine",
    ) -> None:
        super().__init__()
        if output not in ("cosine", "projection"):
            raise ValueError(f"output must be cosine or projection, got {output!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = (kernel_size, kernel_size), stride, padding, 1
        self.output = output
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.empty(shape), requires_grad=False)
        bound = 1 / math.sqrt(in_channels * kernel_size * kernel_size)  # PyTorch's default conv init range
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unit = _unit_rows(self.weight.flatten(1)).view_as(self.weight)
        proj = F.conv2d(x, unit, stride=self.stride, padding=self.padding)
        if self.output == "projection":
            return proj
        ones = torch.ones(1, *self.weight.shape[1:], dtype=x.dtype, device=x.device)
        # ‖patch‖ at every location as a one-filter convolution of x²; clamped so that the square root's
        # gradient stays finite on all-zero patches (whose projection is 0 anyway).
        patch_norm = F.conv2d(x * x, ones, stride=self.stride, padding=self.padding).clamp_min(NORM_EPS).sqrt()
        return (proj / patch_norm).clamp_min(0)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, output={self.output}")


class HebbianLinear(nn.Module):
    """The fully connected counterpart of :class:`HebbianConv2d` (one "patch" per sample)."""

    def __init__(
        self, in_features: int, out_features: int, *, output: Literal["cosine", "projection"] = "cosine"
    ) -> None:
        super().__init__()
        if output not in ("cosine", "projection"):
            raise ValueError(f"output must be cosine or projection, got {output!r}")
        self.in_features, self.out_features, self.output = in_features, out_features, output
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        bound = 1 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = x @ _unit_rows(self.weight).t()
        if self.output == "projection":
            return proj
        x_norm = (x * x).sum(dim=1, keepdim=True).clamp_min(NORM_EPS).sqrt()
        return (proj / x_norm).clamp_min(0)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, output={self.output}"


def kernel_matrix(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as a [K, D] view (K kernels, D = C·kh·kw or in_features); updates write through."""
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (2, 4):
        raise HahrobustError(f"{type(layer).__name__}: Hebbian rules need a conv or linear weight of 2 or 4 dims")
    if getattr(layer, "groups", 1) != 1:
        raise HahrobustError(f"{type(layer).__name__}: Hebbian rules do not support grouped convolutions")
    return weight.data.view(weight.shape[0], -1)


def layer_patches(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(patches [B·L, D], L): the layer's input windows, rows ordered by (sample, location).

    Works for any layer with a 4-dim conv weight (nn.Conv2d, :class:`HebbianConv2d`: its stride,
    padding and dilation are honoured) or a 2-dim linear weight (the input is flattened per sample).
    Column order matches ``kernel_matrix(layer)``: (channel, row, column).
    """
    weight = layer.weight  # type: ignore[attr-defined]
    if weight.dim() == 2:
        return x.flatten(1), 1
    padding = getattr(layer, "padding", 0)
    if isinstance(padding, str):
        raise HahrobustError(f"{type(layer).__name__}: Hebbian rules need numeric padding, got {padding!r}")
    cols = F.unfold(
        x, weight.shape[2:], dilation=getattr(layer, "dilation", 1), padding=padding, stride=getattr(layer, "stride", 1)
    )  # [B, D, L]
    return cols.transpose(1, 2).reshape(-1, cols.shape[1]), cols.shape[2]


# ------------------------------------------------------------------------------------------ rule pieces


def similarity(patches: torch.Tensor, kernels: torch.Tensor, kind: Similarity = "angular") -> torch.Tensor:
    """[P, K] similarity of each patch to each kernel: cosine (``angular``) or −‖x − w‖² (``euclidean``).

    Both are "larger is more similar", so a winner is always an argmax.
    """
    if kind == "angular":
        return _unit_rows(patches) @ _unit_rows(kernels).t()
    if kind == "euclidean":
        # ‖x − w‖² = ‖x‖² − 2 x·w + ‖w‖², one matmul instead of a [P, K, D] difference tensor.
        sq = (patches * patches).sum(1, keepdim=True) - 2 * patches @ kernels.t() + (kernels * kernels).sum(1)
        return -sq.clamp_min(0)
    raise HahrobustError(f"unknown similarity {kind!r}; choose angular or euclidean")


def teacher_signal(labels: torch.Tensor, num_kernels: int, per_class: int, num_classes: int = 10) -> torch.Tensor:
    """[B, K] teacher signal (Sec. 3.3): 1 for the ``per_class`` kernels of the sample's class and for the
    common kernels, 0 for the kernels of other classes.

    Layout as in the authors' code: kernel k < per_class·num_classes belongs to class k // per_class;
    the remaining num_kernels − per_class·num_classes kernels are common. per_class = 0: all common.
    """
    grouped = per_class * num_classes
    if per_class < 0 or grouped > num_kernels:
        raise HahrobustError(
            f"teacher groups need per_class·classes ≤ kernels, got {per_class}·{num_classes} > {num_kernels}"
        )
    kernel_class = torch.arange(num_kernels, device=labels.device) // max(per_class, 1)
    signal = kernel_class[None, :] == labels[:, None]
    signal[:, grouped:] = True
    return signal.float()


def winner_take_all(scores: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """[P, K] one-hot winners: per row the highest score among the allowed kernels (first on ties).

    A row with no allowed kernel gets no winner (an all-zero row).
    """
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    winners = scores.argmax(dim=1)
    onehot = torch.zeros_like(scores).scatter_(1, winners[:, None], 1.0)
    if allowed is not None:
        onehot = onehot * allowed.any(dim=1, keepdim=True)
    return onehot


def aggregated_delta(weight: torch.Tensor, patches: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """Σ-weighted average of the per-patch steps r·(x − w) of each kernel, weights r (Sec. 3.4).

    ``weight`` [K, D], ``patches`` [P, D], ``coef`` [P, K] (clipped to [0, 1]). Returns [K, D]:
    (Σ_p r² x_p − Σ_p r² · w) / Σ_p r, and 0 for a kernel whose coefficients are all 0. Multiply by η
    for Eq. 3's step. For binary coefficients this is (Rᵀ X)_k / count_k − [count_k > 0]·w_k.
    """
    coef = coef.clamp(0.0, 1.0).to(patches.dtype)
    squared = coef * coef
    count = coef.sum(dim=0)
    pulled = squared.t() @ patches  # [K, D]: the one matmul
    mass = squared.sum(dim=0)
    active = count > 0
    delta = (pulled - mass[:, None] * weight) / torch.where(active, count, torch.ones_like(count))[:, None]
    return delta * active[:, None]


# -------------------------------------------------------------------------------------------- the learner


@dataclass(frozen=True)
class HebbianRule:
    """One layer's Hebbian rule: the step coefficient (``mode``), similarity, learning rate, teacher groups."""

    lr: float = 0.1
    mode: RuleMode = "wta"
    similarity: Similarity = "angular"
    per_class: int = 0  # teacher kernels per class (0 = no teacher: every kernel is common)
    num_classes: int = 10

    def __post_init__(self) -> None:
        if not 0.0 < self.lr <= 1.0:
            # η > 1 would overshoot the patch and lose the convex-combination bound on ‖w‖.
            raise HahrobustError(f"Hebbian learning rate must be in (0, 1], got {self.lr}")
        if self.mode not in ("wta", "teacher", "hebb"):
            raise HahrobustError(f"unknown Hebbian rule {self.mode!r}; choose wta, teacher or hebb")
        if self.similarity not in ("angular", "euclidean"):
            raise HahrobustError(f"unknown similarity {self.similarity!r}; choose angular or euclidean")
        if self.mode == "teacher" and self.per_class <= 0:
            raise HahrobustError("the teacher rule needs teacher groups (per_class ≥ 1)")


def step_coefficients(
    rule: HebbianRule, patches: torch.Tensor, kernels: torch.Tensor, allowed: torch.Tensor | None
) -> torch.Tensor:
    """[P, K] step coefficients r of Eq. 3 for ``rule`` (``allowed``: expanded teacher signal or None)."""
    if rule.mode == "teacher":
        assert allowed is not None
        return allowed.to(patches.dtype)
    if rule.mode == "wta":
        return winner_take_all(similarity(patches, kernels, rule.similarity), allowed)
    activation = similarity(patches, kernels, "angular").clamp_min(0)  # the Hebbian unit's own output
    return activation if allowed is None else activation * allowed


@dataclass
class StepStats:
    patches: int  # patches seen in this step
    active: int  # kernels whose coefficients were not all zero
    reseeded: int  # dead kernels re-initialised after this step


@dataclass
class HebbianLearner:
    """Applies ``rule`` to ``layer`` one batch at a time; re-initialises dead WTA kernels.

    ``reseed_every``: window, in batches, over which a WTA kernel must win at least one patch (0: never
    reseed). ``generator`` (CPU) draws the replacement patches, so runs are reproducible.
    """

    layer: nn.Module
    rule: HebbianRule
    reseed_every: int = 20
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    _wins: torch.Tensor | None = field(default=None, init=False, repr=False)
    _batches: int = field(default=0, init=False, repr=False)

    @torch.no_grad()
    def step(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> StepStats:
        """One Hebbian update of the layer's kernels from input batch ``x`` (the layer's own input)."""
        kernels = kernel_matrix(self.layer)
        patches, locations = layer_patches(self.layer, x.to(kernels.dtype))
        allowed = None
        if self.rule.per_class > 0:
            if labels is None:
                raise HahrobustError("a teacher-supervised Hebbian layer needs the batch labels")
            signal = teacher_signal(labels, kernels.shape[0], self.rule.per_class, self.rule.num_classes)
            allowed = signal.bool().repeat_interleave(locations, dim=0)
        coef = step_coefficients(self.rule, patches, kernels, allowed)
        new = kernels + self.rule.lr * aggregated_delta(kernels, patches, coef)
        if not torch.isfinite(new).all():
            raise HahrobustError(
                f"Hebbian update of {type(self.layer).__name__} produced non-finite weights (non-finite input?)"
            )
        kernels.copy_(new)
        wins = (coef > 0).sum(dim=0)
        reseeded = self._track(wins, patches, allowed) if self.rule.mode == "wta" else 0
        return StepStats(patches=patches.shape[0], active=int((wins > 0).sum()), reseeded=reseeded)

    def _track(self, wins: torch.Tensor, patches: torch.Tensor, allowed: torch.Tensor | None) -> int:
        if self.reseed_every <= 0:
            return 0
        self._wins = wins if self._wins is None else self._wins + wins
        self._batches += 1
        if self._batches < self.reseed_every:
            return 0
        dead = (self._wins == 0).nonzero().flatten()
        self._wins, self._batches = None, 0
        return reseed_dead_units(kernel_matrix(self.layer), dead, patches, allowed, self.generator) if len(dead) else 0

    def reset_window(self) -> None:
        """Forget the win counts (the trainer calls it at each epoch start, so resumed runs match)."""
        self._wins, self._batches = None, 0


def reseed_dead_units(
    kernels: torch.Tensor, dead: torch.Tensor, patches: torch.Tensor, allowed: torch.Tensor | None,
    generator: torch.Generator,
) -> int:
    """Set each dead kernel (indices ``dead``) to a random patch it is allowed to learn from; returns how many.

    Random choice: per dead kernel, an independent uniform draw over the allowed rows (CPU ``generator``).
    A kernel none of whose rows is allowed in this batch is left as it is.
    """
    draws = torch.rand(patches.shape[0], len(dead), generator=generator).to(patches.device)
    if allowed is not None:
        ok = allowed[:, dead]
        draws = draws.masked_fill(~ok, -1.0)
    rows = draws.argmax(dim=0)
    usable = draws.max(dim=0).values >= 0
    kernels[dead[usable]] = patches[rows[usable]].to(kernels.dtype)
    return int(usable.sum())


__all__ = [
    "HebbianConv2d", "HebbianLearner", "HebbianLinear", "HebbianRule", "StepStats", "aggregated_delta",
    "kernel_matrix", "layer_patches", "reseed_dead_units", "similarity", "step_coefficients", "teacher_signal",
    "winner_take_all",
]
