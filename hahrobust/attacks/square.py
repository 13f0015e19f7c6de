"""Square Attack (Andriushchenko et al., ECCV 2020) through AutoAttack's reference implementation, ℓ∞ and ℓ2.

A score-based attack: it queries only the model's logits (never a gradient), proposing random square-shaped
updates at the vertices of the ε-ball and keeping those that lower the margin. Hard thresholds (top-k) that
mask gradients do not stop it, so it checks gradient-based robust accuracy from outside: white-box robust
accuracy must not exceed black-box (Carlini et al. 2019). The class is the authors' own ``SquareAttack``
from the installed AutoAttack (the original ``autoattack`` or ``pyautoattack``, see
:func:`hahrobust.attacks.autoattack.load_autoattack`), called with AutoAttack's settings except the query
budget (:class:`SquareConfig`).

Randomness and batches: the reference implementation seeds torch's global generator once per call and then
draws **one** square position (and, for ℓ∞, one sign pattern) per iteration for the whole batch, so its
examples depend on which images share a call. By default (``per_image=True``) each image gets its own call,
seeded by (seed, image index): the examples then depend on (seed, image) only, never on the batching. That
costs batching's speed-up (one image per model call): on the HaH reference model (one thread, the first 20
correctly classified images of a class-balanced CIFAR-10 test subset, 1000 queries, default ε, machine load
4–6 on 2 cores; ``benchmarks/blackbox_cost.py``) the 20 images took 150 s (ℓ∞) and 155 s (ℓ2) with one call
per image vs 30 s and 25 s in one batched call — 5–6× — with the same 9/20 fooled: an image Square does
not fool costs all its queries (≈ 13 s here), one at a time. On a GPU the gap is far larger.
``per_image=False`` runs the batch in one call seeded by ``seed``, as
:func:`hahrobust.attacks.autoattack.autoattack` does (batch-dependent, not otherwise random). Every global
RNG state is restored afterwards.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from hahrobust.attacks._common import image_seed, isolated_global_rng
from hahrobust.attacks.autoattack import AA_NORMS, load_autoattack
from hahrobust.attacks.norms import check_norm
from hahrobust.errors import HahrobustError

#: The norms the reference Square Attack supports and AutoAttack runs it for.
SQUARE_NORMS: tuple[str, ...] = ("linf", "l2")


@dataclass(frozen=True)
class SquareConfig:
    """Square Attack hyperparameters (all of them, in one place); AutoAttack's ``standard`` values except queries."""

    # Model queries per image and restart. AutoAttack's standard run uses 5000; 1000 costs a fifth, and Square
    # finds most of what it will find early (its square size p shrinks on a schedule rescaled to the budget, so
    # a smaller budget still runs the whole coarse-to-fine schedule). Raise it for a final evaluation.
    queries: int = 1000
    p_init: float = 0.8  # initial fraction of the image a square covers (AutoAttack's value)
    restarts: int = 1  # later restarts attack only the images not fooled yet
    loss: Literal["margin", "ce"] = "margin"  # untargeted margin loss, as in AutoAttack
    per_image: bool = True  # one call per image, seeded per image: batch-independent (see the module docstring)


def square(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    eps: float,
    indices: torch.Tensor,
    seed: int = 0,
    config: SquareConfig = SquareConfig(),
) -> torch.Tensor:
    """Square Attack's adversarial examples within ε of ``x`` in ``norm`` (ℓ∞ or ℓ2), in [0, 1].

    Images it does not fool, and images misclassified to begin with, come back unchanged (the reference
    implementation keeps only fooled points). ``indices`` are the images' positions in the evaluated set and
    seed each image's call (``per_image``). ``model`` must be in eval mode. The caller verifies every example.
    """
    norm = check_norm(norm)
    if norm not in SQUARE_NORMS:
        raise HahrobustError(f"Square Attack has no {norm} version (it supports {', '.join(SQUARE_NORMS)})")
    if config.queries < 1 or config.restarts < 1:
        raise ValueError("Square Attack needs queries ≥ 1 and restarts ≥ 1")
    x, y = x.detach(), y.detach()
    if eps == 0 or len(x) == 0:
        return x.clone()
    square_attack = _square_class()

    def run(images: torch.Tensor, labels: torch.Tensor, call_seed: int) -> torch.Tensor:
        attack = square_attack(
            model, norm=AA_NORMS[norm], n_queries=config.queries, eps=eps, p_init=config.p_init,
            n_restarts=config.restarts, seed=call_seed, verbose=False, loss=config.loss, device=x.device,
        )
        return attack.perturb(images, labels)

    with isolated_global_rng(x.device), torch.no_grad():  # gradient-free: no autograd graph for its queries
        if config.per_image:
            out = torch.cat([
                run(x[i : i + 1], y[i : i + 1], image_seed(seed, index, f"square-{norm}"))
                for i, index in enumerate(indices.tolist())
            ])
        else:
            out = run(x, y, seed)
    return out.detach().to(x.dtype)


def _square_class() -> type:
    """``SquareAttack`` from the AutoAttack distribution :func:`load_autoattack` picks (same module layout)."""
    _, module = load_autoattack()
    return importlib.import_module(f"{module.__name__}.square").SquareAttack
