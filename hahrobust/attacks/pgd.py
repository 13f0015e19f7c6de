"""PGD with restarts at a fixed ε, for ℓ∞, ℓ2, ℓ1 and ℓ0 (Madry et al. 2018), keeping the best iterate.

Method part (the norm part is :mod:`hahrobust.attacks.norms`): ascend the loss with the steepest-ascent step
of the norm, project onto the ε-ball ∩ [0, 1] box after every step, with a cosine-annealed step size.

- ℓ∞: α·sign(∇). ℓ2: α·∇/‖∇‖₂.
- ℓ1: the sparse SLIDE step of Tramèr & Boneh (2019): move only the top ``l1_sparsity`` fraction of
  coordinates by |∇|, each by α/k·sign(∇) (so the step has ℓ1 norm α). Coordinates that sit on the box face
  the gradient pushes against are excluded first (as APGD-ℓ1 does), because a step there is clipped away
  — this is what makes ℓ1 PGD work: the naive α·∇/‖∇‖₁ step is known to be weak.
- ℓ0: α·∇/mean|∇| (per-value steps of order α, as in Croce & Hein's PGD-ℓ0), then the exact top-ε
  projection onto {≤ ε changed values} ∩ box.

Every iterate is scored by its margin (best other logit − true logit); each image keeps the iterate with
the largest margin over all steps and restarts — the *best* adversarial point, not the last one — unless
``early_stop`` (the default), where an image leaves the attack at its first adversarial iterate: whether an image
is broken, the only thing a fixed-ε robust accuracy counts, is the same either way (images in a batch never
interact: eval mode, per-image seeds and targets), and most images break in the first tens of steps. Restart 0
starts at the clean image and ascends the cross-entropy; later restarts start at random points of the ball
(per-image seeded), run only on images not yet fooled, and by default each ascends the margin towards one
of the most likely wrong classes (2nd, 3rd, … by clean logits), as APGD-T does. Measured on a small trained
VGG-11 at ε = FMN's median ℓ2 distance: untargeted CE restarts left 49 % robust, 4 targeted restarts 41 %,
9 targeted restarts 39 %, AutoAttack (APGD-CE + APGD-T) 37 %: untargeted ascent misses closer boundaries
towards classes other than the currently most likely one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hahrobust.attacks._common import margin, per_image_uniform
from hahrobust.attacks.norms import Norm, check_norm, project, random_start

Loss = Literal["ce", "margin"]
LOSSES: tuple[str, ...] = ("ce", "margin")


@dataclass(frozen=True)
class PGDConfig:
    """PGD hyperparameters (all of them, in one place).

    ``step_*`` is the initial step size α₀ per norm: a multiple of ε for ℓ∞/ℓ2/ℓ1 (α₀ = step·ε) and an absolute
    per-value step for ℓ0 (ε there counts values, not a size). α anneals to 0 over each restart (cosine), so
    early steps explore the whole ball and late ones refine. Measured on a small trained VGG-11 (50 images,
    ε = FMN's median distance, where FMN implies 50 % robust), robust accuracy left by 100 steps × 5 restarts:
    ℓ∞ 50 % with α₀ = ε/4 vs 36 % with α₀ = ε; ℓ2 44 % vs 36 %; ℓ1 54 % vs 52 % (46 % with the margin loss);
    ℓ0 28 % with α₀ = 0.5 (1.0 the same, 0.25 worse). Cross-entropy beat the margin loss by 0–2 points
    except for ℓ1, hence the per-norm default loss.
    """

    steps: int = 100
    restarts: int = 5
    step_linf: float = 1.0
    step_l2: float = 1.0
    step_l1: float = 1.0
    step_l0: float = 0.5
    l1_sparsity: float = 0.01  # SLIDE's top-q: the 1 % largest-gradient coordinates (99th percentile)
    loss: Loss | None = None  # None: margin for ℓ1, cross-entropy otherwise (untargeted restarts)
    targeted: int = 4  # restarts 1..targeted ascend the margin towards the 1st, 2nd, … most likely wrong class
    # An image leaves the attack at its first adversarial iterate (margin > 0) instead of running every step for a
    # more confident one: the verified robust accuracy is the same, the work is what the unbroken images need.
    # Not for transfer: there the margin is the source's, and confident examples transfer better (run.py).
    early_stop: bool = True
    # Restart 0 starts at the clean image (the strongest single start). False: every restart starts at a random
    # point of the ball, so a second run with another seed is a genuinely different attack: the audit's plain twins.
    clean_start: bool = True

    def initial_step(self, norm: Norm, eps: float) -> float:
        if norm == "l0":
            return self.step_l0
        return {"linf": self.step_linf, "l2": self.step_l2, "l1": self.step_l1}[norm] * eps

    def loss_for(self, norm: Norm) -> Loss:
        if self.loss is not None:
            return self.loss
        return "margin" if norm == "l1" else "ce"


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    eps: float,
    indices: torch.Tensor,
    seed: int = 0,
    config: PGDConfig = PGDConfig(),
    trace: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Adversarial examples within ε of ``x`` in ``norm``: per image, the highest-margin iterate found.

    ``indices`` are the images' positions in the evaluated set: random starts are seeded by (seed, index,
    restart), so results do not depend on how images are batched. ``model`` must be in eval mode. Images
    that no iterate fools come back as the iterate closest to fooling (still within ε), never unchecked:
    the caller verifies every example. ``trace(restart, step, rows, margin)``, if given, sees every iterate's
    margin (rows: the positions in ``x`` of the images that restart attacks): the attack-failure diagnostics
    of :mod:`hahrobust.studies.audit` read the optimisation from it.
    """
    norm = check_norm(norm)
    if config.steps < 1 or config.restarts < 1:
        raise ValueError("PGD needs steps ≥ 1 and restarts ≥ 1")
    x, y = x.detach(), y.detach()
    with torch.no_grad():
        clean_logits = model(x)
        best_margin = margin(clean_logits, y)
        ranked = clean_logits.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
    best = x.clone()
    if eps == 0:
        return best
    for restart in range(config.restarts):
        todo = (best_margin <= 0).nonzero().flatten() if restart else torch.arange(len(x), device=x.device)
        if len(todo) == 0:
            break
        xs, ys = x[todo], y[todo]
        if restart == 0 and config.clean_start:
            delta = torch.zeros_like(xs)
        else:
            noise = per_image_uniform(indices[todo.cpu()], xs.shape[1:], seed=seed, stream=f"pgd-{norm}-{restart}")
            delta = random_start(noise.to(xs.device), xs, eps, norm)
        sub_margin, sub_best = best_margin[todo], best[todo]
        alpha0 = config.initial_step(norm, eps)
        for step in range(config.steps + 1):
            xa = (xs + delta).requires_grad_(step < config.steps)
            with torch.set_grad_enabled(step < config.steps):
                logits = model(xa)
                m = margin(logits, ys)
            if trace is not None:
                trace(restart, step, todo, m.detach())
            improved = m.detach() > sub_margin
            sub_margin = torch.where(improved, m.detach(), sub_margin)
            sub_best = torch.where(improved[:, None, None, None], xa.detach(), sub_best)
            if step == config.steps:
                break  # the last projected iterate is scored above but not stepped from
            live = None
            if config.early_stop and bool((sub_margin > 0).any()):
                done = sub_margin > 0  # these images are broken: keep their adversarial iterate, attack the rest
                best_margin[todo[done]], best[todo[done]] = sub_margin[done], sub_best[done]
                live = ~done
                if not bool(live.any()):
                    break
                todo, xs, ys, delta = todo[live], xs[live], ys[live], delta[live]
                sub_margin, sub_best, logits, m = sub_margin[live], sub_best[live], logits[live], m[live]
            if 0 < restart <= config.targeted:
                target = ranked[todo, min(restart - 1, ranked.shape[1] - 2)]
                loss = (logits.gather(1, target[:, None]) - logits.gather(1, ys[:, None])).sum()
            else:
                loss = F.cross_entropy(logits, ys, reduction="sum") if config.loss_for(norm) == "ce" else m.sum()
            (grad,) = torch.autograd.grad(loss, xa)
            if live is not None:
                grad = grad[live]  # the rows that left have no gradient (their loss terms were dropped)
            alpha = alpha0 * (1 + math.cos(math.pi * step / config.steps)) / 2
            delta = project(delta + _ascent_step(grad, delta, xs, norm, alpha, config), xs, eps, norm)
        best_margin[todo], best[todo] = sub_margin, sub_best
    return best


def _ascent_step(
    grad: torch.Tensor, delta: torch.Tensor, x: torch.Tensor, norm: Norm, alpha: float, config: PGDConfig
) -> torch.Tensor:
    """The steepest-ascent step of size α for ``norm`` (see the module docstring)."""
    g = grad.flatten(1)
    if norm == "linf":
        step = g.sign()
    elif norm == "l2":
        step = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    elif norm == "l0":
        step = g / g.abs().mean(dim=1, keepdim=True).clamp_min(1e-12)
    else:  # l1: SLIDE's sparse sign step over the coordinates that can still move
        d, xf = delta.flatten(1), x.flatten(1)
        room = torch.where(g > 0, 1 - xf - d, xf + d)  # distance to the box face the gradient points at
        score = torch.where(room > 0, g.abs(), torch.zeros_like(g))
        k = max(1, math.ceil(config.l1_sparsity * g.shape[1]))
        top = score.topk(k, dim=1).indices
        chosen = torch.zeros_like(g, dtype=torch.bool).scatter_(1, top, True) & (score > 0)
        count = chosen.sum(dim=1, keepdim=True).clamp_min(1)
        step = torch.where(chosen, g.sign(), torch.zeros_like(g)) / count
    return (alpha * step).reshape(grad.shape)
