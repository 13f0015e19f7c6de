"""Surrogate gradients for layers whose exact gradient hides the way to an adversarial example (BPDA).

A hard threshold (top-k, a mean threshold, winner-take-all) multiplies its input by a 0/1 mask. Autograd
treats the mask as a constant, so an attacker following plain gradients never learns that moving a value
across τ switches a unit on or off: the k-winners-take-all pattern that Tramer et al. (NeurIPS 2020) broke
by replacing the mask's backward. BPDA (Athalye et al., ICML 2018) keeps the *forward pass exact* and
changes only what the backward sees:

- ``sigmoid``: backward through z·σ((z − τ)/T), a smooth mask around each threshold τ. T is
  ``temperature`` × the per-image, per-channel standard deviation of z, so the surrogate is as
  scale-equivariant as the threshold itself.
- ``identity``: straight-through; backward as if the layer passed z unchanged.

Evidence it matters: on the reference HaH VGG-16 (200 test images, ℓ∞ 2/255, PGD 100 steps), plain
gradients leave 10.5 % robust, the sigmoid surrogate 2.5 % (issue 11's probe; ``hahrobust audit`` measures it).

A layer declares its own surrogate by subclassing :class:`SurrogateLayer` and calling :meth:`with_surrogate`
on its exact output; any other module type (a user's own threshold) can be given one for one model with
``BPDA(model, types={Type: kind})`` (the type names of a user's command line resolve with
:func:`surrogate_types`), or for every model with :func:`register_surrogate` (both applied through a forward
hook: the exact output is kept, the gradient is the surrogate's). hahtorch's thresholds
(``FractionalThreshold``, ``AdaptiveThreshold``: x·[x > τ]) get the sigmoid surrogate out of the box when
hahtorch is imported (:func:`known_surrogates`). :class:`BPDA` wraps a model so that every attack (which
only calls the model) sees it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

SurrogateKind = Literal["sigmoid", "identity"]
SURROGATE_KINDS: tuple[str, ...] = ("sigmoid", "identity")
#: Sigmoid width relative to the channel's spread: 0.1 × std makes the surrogate mask go from 0.27 to 0.73
#: within ±0.1 std of τ, close enough to the hard mask that its gradient points where the forward pass turns.
DEFAULT_TEMPERATURE = 0.1


@dataclass(frozen=True)
class Surrogate:
    """Which backward a non-differentiable layer uses under :class:`BPDA`."""

    kind: SurrogateKind = "sigmoid"
    temperature: float = DEFAULT_TEMPERATURE
    smooth_forward: bool = False  # the smooth layer in the forward pass too: the model's smooth twin

    def __post_init__(self) -> None:
        if self.kind not in SURROGATE_KINDS:
            raise ValueError(f"unknown surrogate {self.kind!r}; choose one of: {', '.join(SURROGATE_KINDS)}")
        if not self.temperature > 0:
            raise ValueError(f"surrogate temperature must be > 0, got {self.temperature}")

    def gradient_of(self, z: torch.Tensor, exact: torch.Tensor, tau: torch.Tensor | None) -> torch.Tensor:
        """``exact`` in the forward pass, the surrogate's gradient w.r.t. ``z`` in the backward pass.

        ``z`` is the layer input, ``exact = z · mask`` its output and ``tau`` the threshold broadcastable to
        ``z`` (None: inferred per channel as the smallest value the mask kept).
        """
        if self.kind == "identity":
            smooth = z
        else:
            if tau is None:
                tau = inferred_threshold(z, exact)
            scale = (self.temperature * spread(z.detach())).clamp_min(torch.finfo(z.dtype).tiny)
            smooth = z * torch.sigmoid((z - tau) / scale)
        if self.smooth_forward:  # a different model: smooth everywhere (a transfer source, verified on the exact one)
            return smooth
        # (smooth − smooth.detach()) is exactly 0 in the forward pass, so the output is bit-identical to exact.
        return exact.detach() + (smooth - smooth.detach())


def spread(z: torch.Tensor) -> torch.Tensor:
    """The sigmoid's width unit per image and channel: the channel's standard deviation over its map, or, for a
    1×1 map (one value: no spread of its own), the image's over all channels, broadcastable to ``z``. Without the
    fallback a 1×1 map's std is NaN and the NaN reaches the forward pass, which must stay exact."""
    per_channel = z.flatten(2).std(dim=-1) if z[0, 0].numel() > 1 else None
    if per_channel is not None:
        return per_channel[..., None, None]
    per_image = z.flatten(1).std(dim=-1) if z[0].numel() > 1 else torch.zeros(len(z), dtype=z.dtype, device=z.device)
    return per_image.reshape(-1, *([1] * (z.dim() - 1)))


def inferred_threshold(z: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """τ per image and channel for a mask layer whose rule is unknown: the smallest input value it kept
    (+∞ where it kept nothing, so the surrogate mask is 0 there too)."""
    kept = exact.detach() != 0
    values = torch.where(kept, z.detach(), torch.full_like(z, torch.inf))
    return values.flatten(2).amin(dim=-1)[..., None, None]


class SurrogateLayer(nn.Module):
    """A layer with a non-differentiable forward that knows its own BPDA surrogate.

    Subclasses compute their exact output and return ``self.with_surrogate(z, exact, tau)``: the exact
    output unchanged unless a :class:`BPDA` wrapper has set ``self.surrogate``.
    """

    surrogate: Surrogate | None = None

    def with_surrogate(self, z: torch.Tensor, exact: torch.Tensor, tau: torch.Tensor | None) -> torch.Tensor:
        return exact if self.surrogate is None else self.surrogate.gradient_of(z, exact, tau)


#: Module types without a built-in surrogate that BPDA should still replace (see :func:`register_surrogate`).
_REGISTERED: dict[type[nn.Module], SurrogateKind] = {}


def register_surrogate(module_type: type[nn.Module], kind: SurrogateKind) -> None:
    """Give every ``module_type`` layer a surrogate under :class:`BPDA`: ``identity`` (straight-through; the
    layer's output must have its input's shape) or ``sigmoid`` (for a layer that zeroes part of its input:
    τ per channel is inferred as the smallest value it kept)."""
    Surrogate(kind)  # validates the kind
    if issubclass(module_type, SurrogateLayer):
        raise ValueError(f"{module_type.__name__} declares its own surrogate")
    _REGISTERED[module_type] = kind


#: hahtorch 0.0.5's threshold layers (module, class name): both compute x·[x > τ] with τ per image and channel.
HAHTORCH_THRESHOLDS: tuple[tuple[str, str], ...] = (
    ("hahtorch", "FractionalThreshold"), ("hahtorch", "AdaptiveThreshold"),
)

SurrogateTypes = Mapping[type[nn.Module], SurrogateKind]


def known_surrogates() -> dict[type[nn.Module], SurrogateKind]:
    """Foreign threshold types recognised without being named: hahtorch's, when hahtorch has been imported
    (a model built from hahtorch has imported it; hahrobust never imports it on its own)."""
    found: dict[type[nn.Module], SurrogateKind] = {}
    for module_name, class_name in HAHTORCH_THRESHOLDS:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            found[cls] = "sigmoid"
    return found


def surrogate_types(model: nn.Module, names: Mapping[str, SurrogateKind]) -> dict[type[nn.Module], SurrogateKind]:
    """The module types of ``model`` named in ``names`` (class name, or module.qualname), with their kind.

    Names no module of ``model`` has are left out (the caller decides whether that is an error); a type
    that declares its own surrogate (:class:`SurrogateLayer`) raises ValueError.
    """
    found: dict[type[nn.Module], SurrogateKind] = {}
    for module in model.modules():
        cls = type(module)
        for name, kind in names.items():
            if name in (cls.__name__, f"{cls.__module__}.{cls.__qualname__}"):
                if issubclass(cls, SurrogateLayer):
                    raise ValueError(f"{cls.__name__} declares its own surrogate; it needs no mapping")
                Surrogate(kind)  # validates the kind
                found[cls] = kind
    return found


def _type_kinds(types: SurrogateTypes | None) -> dict[type[nn.Module], SurrogateKind]:
    """Every mapped type in force for one model: known ones, then registered ones, then ``types`` (the most
    specific wins)."""
    return {**known_surrogates(), **_REGISTERED, **(types or {})}


def surrogate_layers(model: nn.Module, types: SurrogateTypes | None = None) -> list[tuple[str, nn.Module]]:
    """The layers of ``model`` that BPDA changes: built-in surrogate layers, and modules of a mapped type
    (``types``, registered or known ones)."""
    mapped = tuple(_type_kinds(types))
    return [
        (name, m) for name, m in model.named_modules()
        if isinstance(m, SurrogateLayer) or isinstance(m, mapped)
    ]


@contextlib.contextmanager
def surrogate_gradients(model: nn.Module, surrogate: Surrogate, types: SurrogateTypes | None = None) -> Iterator[int]:
    """Within the block, every surrogate layer of ``model`` back-propagates through ``surrogate`` (a mapped
    type's layers through its own kind at the same temperature); yields how many layers that is. The
    forward pass is unchanged (bit-identical outputs)."""
    kinds = _type_kinds(types)
    layers = surrogate_layers(model, types)
    hooks = []
    try:
        for _, layer in layers:
            if isinstance(layer, SurrogateLayer):
                layer.surrogate = surrogate
            else:
                kind = _kind_of(layer, kinds)
                hooks.append(layer.register_forward_hook(
                    _hook(Surrogate(kind, surrogate.temperature, surrogate.smooth_forward))))
        yield len(layers)
    finally:
        for _, layer in layers:
            if isinstance(layer, SurrogateLayer):
                layer.surrogate = None
        for hook in hooks:
            hook.remove()


def _kind_of(layer: nn.Module, kinds: Mapping[type[nn.Module], SurrogateKind]) -> SurrogateKind:
    """The kind mapped to ``layer``'s closest class (its own before a base class)."""
    return next(kinds[cls] for cls in type(layer).__mro__ if cls in kinds)


def smooth_twin(model: nn.Module, temperature: float = DEFAULT_TEMPERATURE,
                types: SurrogateTypes | None = None) -> nn.Module:
    """``model`` with every threshold replaced by its sigmoid mask in the forward pass as well: a smooth model close to
    ``model`` whose gradients are exact for itself. Attacks on it are transfer attacks, verified on ``model``."""
    return BPDA(model, Surrogate("sigmoid", temperature, smooth_forward=True), types)


def _hook(surrogate: Surrogate):  # type: ignore[no-untyped-def]
    def replace(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        (z,) = inputs[:1]
        if surrogate.kind == "identity" and output.shape != z.shape:
            raise ValueError(
                f"{type(module).__name__}: a straight-through surrogate needs output shape = input shape "
                f"({tuple(output.shape)} vs {tuple(z.shape)})"
            )
        return surrogate.gradient_of(z, output, None)

    return replace


class BPDA(nn.Module):
    """``model`` with every surrogate layer back-propagating through ``surrogate``: logits identical to
    ``model``'s, gradients those of the smooth surrogate. A callable model, so every attack can use it.

    ``types`` maps further module types of this model to a surrogate kind, for this wrapper only (nothing
    is registered globally, so one model's mapping never reaches another)."""

    def __init__(self, model: nn.Module, surrogate: Surrogate = Surrogate(), types: SurrogateTypes | None = None) -> None:
        super().__init__()
        self.types = dict(types or {})
        for cls in self.types:
            if issubclass(cls, SurrogateLayer):
                raise ValueError(f"{cls.__name__} declares its own surrogate; it needs no mapping")
        if not surrogate_layers(model, self.types):
            raise ValueError(
                "BPDA: the model has no layer with a surrogate gradient (no threshold to bypass); "
                "map its non-differentiable module types to a surrogate (types=, or register_surrogate)"
            )
        self.model, self.surrogate = model, surrogate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with surrogate_gradients(self.model, self.surrogate, self.types):
            return self.model(x)
