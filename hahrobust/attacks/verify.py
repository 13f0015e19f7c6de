"""Verification: no adversarial example counts until it is checked independently of the attack that made it.

For every example: finite, same shape as its clean image, inside [0, 1] exactly, within ε of the clean image
in the stated norm up to the float tolerance of :func:`hahrobust.attacks.norms.tolerance` (for fixed-ε
attacks), and its prediction recomputed by the model in eval mode. A violation raises
:class:`AttackVerificationError`; it never becomes a number. Whether an example is adversarial is decided
here, by the recomputed prediction, not by what the attack believed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hahrobust.attacks._common import eval_mode
from hahrobust.attacks.norms import SYMBOLS, check_norm, distances, format_eps, tolerance, within
from hahrobust.errors import EXIT_VERIFICATION, HahrobustError


class AttackVerificationError(HahrobustError):
    """An attack produced an example that breaks its threat model: a bug in the attack, reported, never counted.

    A :class:`HahrobustError` so library callers catch it with the rest, but its own exit status (3): CI must
    not mistake a toolkit defect for bad input."""

    exit_code = EXIT_VERIFICATION


@dataclass(frozen=True)
class Verified:
    """Per image: the recomputed prediction, whether it differs from the label, and the distance to the clean
    image in the attack's norm (float64)."""

    pred: torch.Tensor
    adversarial: torch.Tensor
    distance: torch.Tensor


@torch.no_grad()
def verify(
    model: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    eps: float | None,
    attack: str = "attack",
    indices: torch.Tensor | None = None,
) -> Verified:
    """Check ``x_adv`` against ``x`` (see the module docstring); ``eps=None`` skips the ε bound (minimum-norm
    attacks, whose distances are what gets reported). ``indices`` name images in error messages."""
    norm = check_norm(norm)

    def where(i: int) -> str:
        return f"image {int(indices[i]) if indices is not None else i}"

    if x_adv.shape != x.shape:
        raise AttackVerificationError(f"{attack}: adversarial batch has shape {list(x_adv.shape)}, clean {list(x.shape)}")
    if not x_adv.is_floating_point():
        raise AttackVerificationError(f"{attack}: adversarial examples have dtype {x_adv.dtype}, expected float")
    flat = x_adv.detach().flatten(1)
    finite = torch.isfinite(flat).all(dim=1)
    if not bool(finite.all()):
        raise AttackVerificationError(f"{attack}: {where(int((~finite).nonzero()[0]))} has non-finite values")
    outside = (flat < 0).any(dim=1) | (flat > 1).any(dim=1)
    if bool(outside.any()):
        i = int(outside.nonzero()[0])
        raise AttackVerificationError(
            f"{attack}: {where(i)} leaves the [0, 1] box (values {float(flat[i].min()):.6g} … {float(flat[i].max()):.6g})"
        )
    # Subtract in float64 so the distance is that of the stored values, with no rounding of its own.
    distance = distances(x_adv.detach().double() - x.detach().double(), norm)
    if eps is not None:
        dim = flat.shape[1]
        ok = within(distance, eps, norm, dim)
        if not bool(ok.all()):
            i = int((~ok).nonzero()[0])
            raise AttackVerificationError(
                f"{attack}: {where(i)} is at {SYMBOLS[norm]} distance {float(distance[i]):.8g} from its clean image, "
                f"beyond ε = {format_eps(eps, norm)} (= {eps:.8g}) + tolerance {tolerance(norm, dim):.2g}"
            )
    with eval_mode(model):
        pred = model(x_adv.detach()).argmax(dim=1)
    return Verified(pred=pred, adversarial=pred != y, distance=distance)
