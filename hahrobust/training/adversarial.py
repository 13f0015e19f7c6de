"""PGD adversarial training (Madry et al., ICLR 2018): each batch is replaced by its PGD examples before the step.

The recipe, and why: a random start in the ε-ball (Madry's), ``steps`` steps of fixed size 2.5·ε/steps (Madry's
rule: enough to cross the ball from one face to the other), cross-entropy ascent, projection onto ball ∩ box after
every step. The attack runs with the model in training mode, as the model will be trained on it (Rice et al. 2020's
code does the same; BatchNorm's running statistics then also see the adversarial batches, which is what the
evaluated model is meant to be robust on). Random starts are drawn per image from (seed, epoch, image index), so an
image's start never depends on the batch it is in (:func:`hahrobust.attacks._common.per_image_uniform`).

This is the calibration's **known negative** (issue 30): real robustness without gradient masking, on which
AutoAttack is reliable (RobustBench); ``hahrobust audit`` must find no sign of masking on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hahrobust.attacks._common import per_image_uniform
from hahrobust.attacks.norms import project, random_start
from hahrobust.training.config import TrainConfig


def adversarial_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor, config: TrainConfig,
                      epoch: int) -> torch.Tensor:
    """PGD examples of ``x`` at the config's norm and ε (``config.adversarial_norm`` must be set), detached."""
    norm, eps, steps = config.adversarial_norm, config.adversarial_eps, config.adversarial_steps
    assert norm is not None
    alpha = 2.5 * eps / steps
    noise = per_image_uniform(indices, x.shape[1:], seed=config.seed, stream=f"adversarial-training-{epoch}")
    delta = random_start(noise.to(x.device), x, eps, norm)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
        g = grad.flatten(1)
        step = g.sign() if norm == "linf" else g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        delta = project(delta.detach() + alpha * step.reshape(x.shape), x, eps, norm)
    return (x + delta).detach()
