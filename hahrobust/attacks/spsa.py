"""SPSA (Uesato et al., ICML 2018): a zeroth-order attack that estimates the gradient of the margin from the
model's outputs only, ℓ∞ and ℓ2.

Why it is in the toolkit: a model whose thresholds (top-k, winner-take-all) zero or scramble autograd's gradient
still has a margin that *changes* when the input moves. SPSA differentiates that margin by finite differences
along random ±1 directions, so it needs neither autograd nor a surrogate: it attacks the exact model, and a break
it finds that plain gradients missed is evidence of gradient masking (the audit credits it as such).

Each step draws ``samples`` Rademacher directions v per image and estimates the gradient of the loss L (the
margin ``best other logit − true logit``, to be raised) as the mean of (L(x + δv) − L(x − δv)) / (2δ) · v
(unbiased for a smooth L up to O(δ²)); Adam takes the step, as in the authors' and advertorch's implementation,
and the perturbation is projected back into the ε-ball and [0, 1]. An image stops at its first misclassified
iterate, which is what it returns; an image never broken returns its last iterate (the runner verifies every
example anyway).

Evidence: on a linear model, whose exact minimal ℓ∞ and ℓ2 perturbations are known in closed form, it breaks
every image with a clear margin under ε and none above; on a model whose input gradient is exactly zero
(rounded input) it breaks what PGD cannot; and its gradient estimate agrees with torchattacks' independent SPSA
(from advertorch) and with the true gradient to the cosine that Rademacher sampling predicts
(``tests/test_spsa.py``).

Randomness: directions come from one generator per image seeded by (seed, image index), so the examples depend on
(seed, image) only, never on the batching or the number of processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from hahrobust.attacks._common import image_seed, margin
from hahrobust.attacks.norms import check_norm
from hahrobust.errors import HahrobustError

#: The norms this SPSA projects onto.
SPSA_NORMS: tuple[str, ...] = ("linf", "l2")


@dataclass(frozen=True)
class SPSAConfig:
    """SPSA hyperparameters, all in one place. Defaults: Uesato et al.'s CIFAR-scale setting (δ = 0.01, Adam,
    128 directions a step) with 100 steps; each step costs 2 × samples forward passes per image and no backward."""

    steps: int = 100
    samples: int = 128  # Rademacher directions per step and image (each: two forward passes)
    delta: float = 0.01  # finite-difference step along a direction (pixel scale: 2.5 grey levels)
    # Adam's learning rate as a fraction of ε (ℓ∞) or of ε/√d (ℓ2, d = pixels × channels): Adam moves each pixel by
    # about lr a step, so 0.25 crosses the ε-ball in about four steps, whatever ε is.
    lr_fraction: float = 0.25
    # images per model call: directions are evaluated in chunks of about this many perturbed copies (2 per
    # direction and image). Memory, not results: the estimate is a sum over directions, each drawn per image.
    chunk: int = 2048


def spsa(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    eps: float,
    indices: torch.Tensor,
    seed: int = 0,
    config: SPSAConfig = SPSAConfig(),
) -> torch.Tensor:
    """SPSA's examples within ε of ``x`` in ``norm`` (ℓ∞ or ℓ2), in [0, 1]: each image's first misclassified
    iterate, or its last one. ``indices`` (the images' positions in the evaluated set) seed the directions.
    ``model`` must be in eval mode; it is only ever called forward."""
    norm = check_norm(norm)
    if norm not in SPSA_NORMS:
        raise HahrobustError(f"SPSA has no {norm} version (it supports {', '.join(SPSA_NORMS)})")
    if config.steps < 1 or config.samples < 1 or config.chunk < 1 or config.delta <= 0:
        raise ValueError("SPSA needs steps, samples and chunk ≥ 1 and delta > 0")
    x, y = x.detach(), y.detach()
    if eps == 0 or len(x) == 0:
        return x.clone()
    generators = [torch.Generator().manual_seed(image_seed(seed, int(i), f"spsa-{norm}")) for i in indices.tolist()]
    scale = eps if norm == "linf" else eps / math.sqrt(x[0].numel())
    delta_x = torch.zeros_like(x, requires_grad=True)  # a leaf for Adam; its .grad is set to the estimate
    optimizer = torch.optim.Adam([delta_x], lr=config.lr_fraction * scale)
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    best = x.clone()
    with torch.no_grad():
        for _ in range(config.steps):
            active = (~done).nonzero().squeeze(1)
            if len(active) == 0:
                break
            grad = torch.zeros_like(x)
            grad[active] = -_estimate(model, x[active] + delta_x[active], y[active],
                                      [generators[i] for i in active.tolist()], config)  # Adam descends
            delta_x.grad = grad
            before = delta_x.detach().clone()
            optimizer.step()
            delta_x[done] = before[done]  # finished images stay where they broke (Adam's momentum would move them)
            delta_x.copy_(_project(x, delta_x, norm, eps))
            candidate = x + delta_x
            fooled = (margin(model(candidate), y) > 0) & ~done
            best[fooled] = candidate[fooled]
            done |= fooled
    best[~done] = (x + delta_x)[~done]
    return best.detach()


def _estimate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, generators: list[torch.Generator],
              config: SPSAConfig) -> torch.Tensor:
    """The SPSA estimate of ∇ₓ margin(model(x), y) per image, from ``config.samples`` directions each."""
    total = torch.zeros_like(x)
    left = config.samples
    while left > 0:
        k = min(max(1, config.chunk // (2 * len(x))), left)
        left -= k
        # [k, n, C, H, W]: image j's k directions from its own generator (independent of the batch it is in)
        v = torch.stack([torch.randint(0, 2, (k, *x.shape[1:]), generator=g) for g in generators], dim=1)
        v = (v.to(x.dtype) * 2 - 1).to(x.device)
        shifted = torch.cat([x[None] + config.delta * v, x[None] - config.delta * v]).flatten(0, 1)
        labels = y.repeat(2 * k)
        losses = margin(model(shifted.clamp(0, 1)), labels).view(2, k, len(x))
        difference = (losses[0] - losses[1]) / (2 * config.delta)  # [k, n]
        total += (difference[..., None, None, None] * v).sum(dim=0)  # v = 1/v for ±1 entries
    return total / config.samples


def _project(x: torch.Tensor, delta_x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """``delta_x`` moved into the ε-ball of ``norm`` and so that x + delta_x lies in [0, 1]."""
    if norm == "linf":
        delta_x = delta_x.clamp(-eps, eps)
    else:
        length = delta_x.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta_x = delta_x * (eps / length).clamp(max=1.0).view(-1, *[1] * (x.dim() - 1))
    return (x + delta_x).clamp(0, 1) - x  # the box after the ball keeps both (ℓ∞ and ℓ2 balls are convex)
