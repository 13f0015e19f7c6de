"""DDN, Decoupled Direction and Norm (Rony et al., CVPR 2019): an independent minimum-norm ℓ2 attack.

It exists to check FMN's ℓ2 distances with a different method: DDN ascends the cross-entropy (FMN the logit
difference), takes unit ℓ2 steps in the gradient direction and then puts δ *on* the sphere of radius ε (FMN
projects *into* the ball), and moves ε geometrically by ±γ on every step from an initial radius of 1.
Step size α is cosine-annealed from 1 to 0.01 as in the authors' code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hahrobust.attacks.norms import distances


@dataclass(frozen=True)
class DDNConfig:
    steps: int = 100
    init_norm: float = 1.0
    gamma: float = 0.05
    alpha_init: float = 1.0
    alpha_final: float = 0.01


def ddn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, config: DDNConfig = DDNConfig()) -> torch.Tensor:
    """Per image, the smallest-ℓ2 adversarial example found (unchanged when none); ``model`` in eval mode."""
    x, y = x.detach(), y.detach()
    n = len(x)
    delta = torch.zeros_like(x)
    eps = torch.full((n,), config.init_norm, dtype=x.dtype, device=x.device)
    worst = distances(torch.maximum(x, 1 - x), "l2").to(x.dtype)
    best_norm = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    best = x.clone()
    for step in range(config.steps + 1):
        xa = (x + delta).requires_grad_(step < config.steps)
        with torch.set_grad_enabled(step < config.steps):
            logits = model(xa)
            loss = F.cross_entropy(logits, y, reduction="sum")
        adversarial = logits.detach().argmax(dim=1) != y
        norm = delta.flatten(1).norm(dim=1)
        better = adversarial & (norm < best_norm)
        best_norm = torch.where(better, norm, best_norm)
        best = torch.where(better[:, None, None, None], xa.detach(), best)
        if step == config.steps:
            break
        (grad,) = torch.autograd.grad(loss, xa)
        cosine = (1 + math.cos(math.pi * step / config.steps)) / 2
        alpha = config.alpha_final + (config.alpha_init - config.alpha_final) * cosine
        g = grad.flatten(1)
        g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        d = delta.flatten(1) + alpha * g
        eps = torch.where(adversarial, eps * (1 - config.gamma), eps * (1 + config.gamma)).minimum(worst)
        d = d * (eps / d.norm(dim=1).clamp_min(1e-12))[:, None]  # onto the sphere of radius ε
        delta = ((x + d.reshape(x.shape)).clamp(0, 1) - x)
    return best
