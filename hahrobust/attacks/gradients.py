"""Which gradient an attack follows: model transforms that keep the forward pass exact.

An attack only calls the model, so an adaptive attacker changes the model it is handed, not the attack:

- ``plain``: autograd through the model as it is.
- ``bpda``: every non-differentiable layer back-propagates through its surrogate
  (:class:`hahrobust.nn.surrogate.BPDA`: a sigmoid mask around each threshold, or straight-through).
- ``eot``: the gradient averaged over ``eot_samples`` copies of the input jittered by Gaussian noise of
  standard deviation ``eot_sigma`` (expectation over transformation, Athalye et al. 2018), which smooths a
  shattered gradient; the logits are still the exact model's on the unjittered input.
- ``bpda+eot``: both.

Every wrapper returns logits bit-identical to the model's (tested), so an attack's bookkeeping (which
iterate is adversarial) and the runner's verification see the real model. Jitter noise is drawn per image
from a generator seeded by (seed, sample, the image's bytes): deterministic, and independent of the batch an
image is in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import nn

from hahrobust.errors import HahrobustError
from hahrobust.nn.surrogate import BPDA, SURROGATE_KINDS, Surrogate, SurrogateKind, SurrogateTypes, surrogate_layers

GradientName = Literal["plain", "bpda", "eot", "bpda+eot"]
GRADIENTS: tuple[str, ...] = ("plain", "bpda", "eot", "bpda+eot")


@dataclass(frozen=True)
class GradientPath:
    """An attack's gradient (all its settings in one place; they go into journals and results).

    ``eot_sigma`` is in [0, 1] pixel units: 2/255 by default, the size of the ℓ∞ budget under test, so the
    copies sample the neighbourhood an attacker may move in. ``eot_samples=8``: issue 11's probe used 8.
    """

    name: GradientName = "plain"
    surrogate: SurrogateKind = "sigmoid"
    temperature: float = 0.1
    eot_samples: int = 8
    eot_sigma: float = 2 / 255

    def __post_init__(self) -> None:
        if self.name not in GRADIENTS:
            raise HahrobustError(f"unknown gradient {self.name!r}; choose one of: {', '.join(GRADIENTS)}")
        if self.surrogate not in SURROGATE_KINDS:
            raise HahrobustError(f"unknown surrogate {self.surrogate!r}; choose one of: {', '.join(SURROGATE_KINDS)}")
        if not self.temperature > 0:
            raise HahrobustError(f"surrogate temperature must be > 0, got {self.temperature}")
        if self.eot_samples < 1 or not self.eot_sigma > 0:
            raise HahrobustError(f"EOT needs ≥ 1 sample and σ > 0, got {self.eot_samples} and {self.eot_sigma}")

    @property
    def uses_bpda(self) -> bool:
        return self.name in ("bpda", "bpda+eot")

    @property
    def uses_eot(self) -> bool:
        return self.name in ("eot", "bpda+eot")

    def settings(self) -> dict[str, Any]:
        """The settings that change the gradient (only those of the parts in use)."""
        out: dict[str, Any] = {"name": self.name}
        if self.uses_bpda:
            out.update(surrogate=self.surrogate, temperature=self.temperature)
        if self.uses_eot:
            out.update(eot_samples=self.eot_samples, eot_sigma=self.eot_sigma)
        return out


def adapt(model: nn.Module, path: GradientPath, seed: int = 0, types: SurrogateTypes | None = None) -> nn.Module:
    """``model`` with the gradient of ``path``: the model itself for ``plain``, else a wrapper. ``types`` maps
    further module types of this model to a surrogate kind, for this wrapper only (see :class:`BPDA`)."""
    if path.uses_bpda:
        try:
            model = BPDA(model, Surrogate(path.surrogate, path.temperature), types)
        except ValueError as exc:
            raise HahrobustError(str(exc)) from None
    if path.uses_eot:
        model = EOT(model, samples=path.eot_samples, sigma=path.eot_sigma, seed=seed)
    return model


def effective_path(model: nn.Module, path: GradientPath, types: SurrogateTypes | None = None) -> tuple[GradientPath, str | None]:
    """The gradient ``path`` means for ``model``, and a note when that differs: BPDA on a model without a
    non-differentiable layer (a baseline) is its exact gradient, so the BPDA part is dropped instead of
    refusing the model."""
    if path.uses_bpda and not surrogate_layers(model, types):
        kept = replace(path, name="eot" if path.uses_eot else "plain")
        return kept, "no layer with a surrogate gradient: BPDA leaves its gradient exact"
    return path, None


class EOT(nn.Module):
    """Logits of ``model`` at x; gradient of the mean logits over ``samples`` Gaussian-jittered copies of x."""

    def __init__(self, model: nn.Module, *, samples: int = 8, sigma: float = 2 / 255, seed: int = 0) -> None:
        super().__init__()
        self.model, self.samples, self.sigma, self.seed = model, samples, sigma, seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            exact = self.model(x)
        if not torch.is_grad_enabled() or not x.requires_grad:
            return exact
        noise = jitter(x.detach(), self.samples, self.seed).to(x.device, x.dtype)  # [samples, B, ...]
        mean = torch.stack([self.model((x + self.sigma * n).clamp(0, 1)) for n in noise]).mean(dim=0)
        return exact + (mean - mean.detach())  # exactly `exact` forward; the mean's gradient backward


def jitter(x: torch.Tensor, samples: int, seed: int) -> torch.Tensor:
    """Standard normal noise [samples, *x.shape] on the CPU, each image's seeded by (seed, its bytes):
    the same image gets the same draws in any batch."""
    out = torch.empty((samples, *x.shape), dtype=torch.float32)
    generator = torch.Generator()
    cpu = x.float().cpu().contiguous()
    for i, row in enumerate(cpu):
        digest = hashlib.sha256(row.numpy().tobytes() + f":{seed}".encode()).digest()
        generator.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        out[:, i] = torch.randn((samples, *row.shape), generator=generator)
    return out
