"""The audit's diagnostics: indicators of attack failure and gradient masking, each a figure, a threshold and a
plain-language line (:data:`INDICATORS`).

Pintor et al.'s indicators of attack failure (NeurIPS 2022) are measured on plain-gradient PGD from the clean image
(silent success, incomplete optimization, non-converging attack, unavailable gradients, unstable predictions);
Carlini et al.'s (2019) computable checklist items (unbounded ε reaches 100 %, more effort must not lower robust
accuracy, white-box ≤ black-box) and AutoAttack's own flags are read from the ensemble's per-image outcomes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

from hahrobust.attacks._common import eval_mode, per_image_uniform
from hahrobust.attacks.norms import SYMBOLS
from hahrobust.attacks.outcome import AttackOutcome
from hahrobust.attacks.pgd import PGDConfig, pgd
from hahrobust.attacks.run import AttackRequest, RunOptions, run_attack_images
from hahrobust.attacks.verify import verify
from hahrobust.data import ImageSet, batches

if TYPE_CHECKING:  # the audit imports this module; these are its types, for annotations only
    from hahrobust.studies.audit_members import AuditConfig, Member

#: Member kinds that query only the model's outputs (score-based): what "white-box ≤ black-box" compares with.
BLACK_BOX: tuple[str, ...] = ("black-box", "zeroth-order")


@dataclass(frozen=True)
class Indicator:
    key: str
    title: str
    threshold: str
    meaning: str  # what it means when it fires


INDICATORS: dict[str, Indicator] = {i.key: i for i in (
    Indicator("silent_success", "silent success", "> 0 images",
              "an iterate was adversarial but the returned example is not: the attack discards its own success"),
    Indicator("incomplete_optimization", "incomplete optimization", "> 10 % of unbroken images",
              "the loss was still rising over the last 10 % of the steps: more steps would find more"),
    Indicator("non_converging", "non-converging attack", "> 10 % of unbroken images",
              "the last iterate ends far below the best loss reached: the step size makes the loss oscillate"),
    Indicator("unavailable_gradients", "unavailable gradients", "> 1 % of images",
              "the input gradient is zero or not finite: gradient attacks have nothing to follow"),
    Indicator("unstable_predictions", "unstable predictions", "> 1 % of correct images",
              "labels flip under tiny random noise: the loss surface is shattered around the inputs"),
    Indicator("transfer_failure", "transfer failure", "informational",
              "examples that fool the transfer source but not the model (transfer is a weak bound there)"),
    Indicator("unbounded", "unbounded ε reaches 100 %", "< 100 % success",
              "with an ε that allows any image, plain PGD must fool every image; if not, its gradients mislead it"),
    Indicator("more_effort", "more steps/restarts lower robust acc.", "> 0 images",
              "the convergence rounds (longer runs, fresh starts) broke images the other members did not: they had "
              "not converged"),
    Indicator("white_vs_black", "white-box ≤ black-box", "> 0 images",
              "a gradient-free attack broke images every gradient-based member missed: gradients are masked"),
    Indicator("autoattack_flags", "AutoAttack's own checks", "> 0 flags",
              "AutoAttack's sanity checks fired (zero gradients, Square beating APGD)"),
)}


def diagnose(
    model: nn.Module, data: ImageSet, *, norm: str, eps: float, members: list[Member],
    outcomes: dict[str, AttackOutcome], correct: np.ndarray, transfer_source: nn.Module | None,
    config: AuditConfig, seed: int, batch_size: int, device: torch.device | str, progress: Progress | None,
    broken_by: dict[str, np.ndarray], rounds: list[tuple[int, int]] | None = None,
) -> pd.DataFrame:
    values: dict[str, tuple[float, bool, str]] = {}  # key → (value, fired, shown value)

    trace = _plain_trace(model, data, correct, norm, eps, config.pgd, seed, batch_size, device)
    unbroken = trace["never_fooled"] & correct
    nu = max(1, int(unbroken.sum()))
    silent = int(trace["silent"].sum())
    values["silent_success"] = (silent, silent > 0, f"{silent} images")
    share = float((trace["incomplete"] & unbroken).sum() / nu)
    values["incomplete_optimization"] = (share, share > 0.10, f"{share:.1%} of {nu}")
    share = float((trace["oscillating"] & unbroken).sum() / nu)
    values["non_converging"] = (share, share > 0.10, f"{share:.1%} of {nu}")

    zero, nonfinite = _gradient_health(model, data, batch_size, device)
    share = float((zero | nonfinite).mean()) if len(zero) else 0.0
    values["unavailable_gradients"] = (share, share > 0.01, f"{share:.1%} ({int(nonfinite.sum())} not finite)")
    flips = _unstable(model, data, config, seed, batch_size, device) & correct
    share = float(flips.sum() / max(1, correct.sum()))
    values["unstable_predictions"] = (share, share > 0.01, f"{share:.1%} of {int(correct.sum())}")

    transfer = next((m for m in members if m.transfer), None)
    if transfer is not None and transfer_source is not None and transfer.name in outcomes:
        outcome = outcomes[transfer.name]
        fooled_source = outcome.source_fooled[0] if outcome.source_fooled is not None else np.zeros(0, dtype=bool)
        kept = fooled_source & ~outcome.robust[0]
        share = float(1 - kept.sum() / fooled_source.sum()) if fooled_source.sum() else 0.0
        values["transfer_failure"] = (share, False, f"{share:.1%} of {int(fooled_source.sum())} source breaks")

    success = _unbounded_success(model, data, norm, config, seed, batch_size, device, progress)
    values["unbounded"] = (success, success < 1.0, f"{success:.1%} fooled")

    effort = next((m for m in members if m.effort), None)
    if effort is not None:
        rounds = rounds or []
        attacked, extra = (rounds[0][0] if rounds else 0), int(broken_by[effort.name][0].sum())
        last = rounds[-1][1] if rounds else 0
        shown = (f"{extra} of {attacked} survivors broken in {len(rounds)} round{'s' * (len(rounds) != 1)} "
                 f"({'converged' if not last else f'the last broke {last}'})" if rounds else "no survivors left")
        values["more_effort"] = (extra, extra > 0, shown)
    black = [m for m in members if m.kind in BLACK_BOX]
    if black:
        gradient_based = np.zeros(len(data), dtype=bool)
        for m in members:
            if m.kind not in BLACK_BOX:
                gradient_based |= broken_by[m.name][0]
        beyond = int(sum((broken_by[m.name][0] & ~gradient_based).sum() for m in black))
        values["white_vs_black"] = (beyond, beyond > 0,
                                    f"{beyond} images broken only by {', '.join(m.name for m in black)}")
    flags = sorted({f for o in outcomes.values() for f in o.flags})
    values["autoattack_flags"] = (len(flags), bool(flags), f"{len(flags)}" + (f": {'; '.join(flags)}" if flags else ""))
    return pd.DataFrame([
        {"norm": norm, "indicator": INDICATORS[k].title, "value": shown, "share": float(v), "threshold": INDICATORS[k].threshold,
         "fired": fired, "meaning": INDICATORS[k].meaning}
        for k, (v, fired, shown) in values.items()
    ])


def _plain_trace(
    model: nn.Module, data: ImageSet, correct: np.ndarray, norm: str, eps: float, pgd_config: PGDConfig, seed: int,
    batch_size: int, device: torch.device | str,
) -> dict[str, np.ndarray]:
    """Plain-gradient PGD from the clean image (one restart), watching every iterate's margin. Only the correctly
    classified images are attacked (a misclassified one is fooled at step 0 and nothing of it is silent); an image
    leaves at its first adversarial iterate (PGD's early stop), so its later margins are −∞: the indicators that
    read the whole optimisation (incomplete, non-converging) are judged on never-fooled images only, which run
    every step. Per image of ``data``, in its order.

    The trace ascends the margin it reads (``loss="margin"``): an indicator of the optimisation must watch the loss
    being optimised. Ascending cross-entropy while reading the margin made "non-converging" fire on 16.7 % of the
    PGD-trained model's unbroken images at ℓ∞ 2/255, a known negative (``docs/results/calibration.md``); the same
    trace ascending the margin: 0.0 %."""
    config = replace(pgd_config, restarts=1, loss="margin")
    out: dict[str, list[np.ndarray]] = {"never_fooled": [], "silent": [], "incomplete": [], "oscillating": []}
    attacked = np.flatnonzero(correct)
    positions = torch.from_numpy(attacked)
    subset = ImageSet(data.images[positions], data.labels[positions], data.source)
    with eval_mode(model):
        for x, y, idx in batches(subset, batch_size, device=device):
            idx = positions[idx]  # positions in ``data``: the per-image seeds of the other runs
            margins = torch.full((config.steps + 1, len(x)), -math.inf)  # [steps + 1, B]

            def keep(_restart: int, step: int, rows: torch.Tensor, m: torch.Tensor) -> None:
                margins[step, rows.cpu()] = m.cpu()

            x_adv = pgd(model, x, y, norm=norm, eps=eps, indices=idx, seed=seed, config=config, trace=keep)
            returned = verify(model, x, x_adv, y, norm=norm, eps=eps, attack="pgd (diagnostics)", indices=idx)
            ever = (margins > 0).any(dim=0)
            best = margins.amax(dim=0)
            total = (best - margins[0]).clamp_min(1e-12)
            late = max(1, len(margins) // 10)
            gain_late = margins[-late:].amax(dim=0) - margins[:-late].amax(dim=0)
            out["never_fooled"].append((~ever).numpy())
            out["silent"].append((ever & ~returned.adversarial.cpu()).numpy())
            out["incomplete"].append((gain_late > 0.01 * total).numpy())
            out["oscillating"].append((best - margins[-1] > 0.1 * total).numpy())
    traced = {k: np.concatenate(v) if v else np.zeros(0, dtype=bool) for k, v in out.items()}
    full = {k: np.zeros(len(data), dtype=bool) for k in traced}  # misclassified: fooled from the start, nothing silent
    for k, v in traced.items():
        full[k][attacked] = v
    return full


def _gradient_health(
    model: nn.Module, data: ImageSet, batch_size: int, device: torch.device | str
) -> tuple[np.ndarray, np.ndarray]:
    """Per image: is the plain cross-entropy gradient w.r.t. the input all zero, or not finite?"""
    zero, nonfinite = [], []
    with eval_mode(model):
        for x, y, _ in batches(data, batch_size, device=device):
            x = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
            flat = grad.flatten(1)
            nonfinite.append((~torch.isfinite(flat)).any(dim=1).cpu().numpy())
            zero.append((flat == 0).all(dim=1).cpu().numpy())
    return np.concatenate(zero), np.concatenate(nonfinite)


def _unstable(model: nn.Module, data: ImageSet, config: AuditConfig, seed: int, batch_size: int,
              device: torch.device | str) -> np.ndarray:
    """Per image: does the predicted label change under any of a few uniform draws in a tiny ℓ∞ ball?"""
    flips = []
    with eval_mode(model), torch.no_grad():
        for x, _, idx in batches(data, batch_size, device=device):
            clean = model(x).argmax(dim=1)
            flipped = torch.zeros_like(clean, dtype=torch.bool)
            for draw in range(config.unstable_draws):
                noise = per_image_uniform(idx, x.shape[1:], seed=seed, stream=f"audit-unstable-{draw}").to(x.device)
                noisy = (x + (2 * noise - 1) * config.unstable_radius).clamp(0, 1)
                flipped |= model(noisy).argmax(dim=1) != clean
            flips.append(flipped.cpu().numpy())
    return np.concatenate(flips)


def _unbounded_success(model: nn.Module, data: ImageSet, norm: str, config: AuditConfig, seed: int,
                       batch_size: int, device: torch.device | str, progress: Progress | None) -> float:
    """Plain PGD at an ε that allows any image (Carlini et al.): the share of correct images it fools."""
    outcome = run_attack_images(
        model, data,
        AttackRequest("pgd", norm, [config.unbounded_eps[norm]], replace(config.pgd, restarts=1), seed=seed,
                      batch_size=batch_size),
        RunOptions(device, progress, description=f"unbounded ε {SYMBOLS[norm]}"),
    )
    correct = outcome.correct
    return float((~outcome.robust[0] & correct).sum() / max(1, correct.sum()))


def clean_predictions(model: nn.Module, data: ImageSet, batch_size: int, device: torch.device | str) -> np.ndarray:
    """The model's own predicted class per image of ``data`` (one forward pass, eval mode)."""
    out = []
    with eval_mode(model), torch.no_grad():
        for x, _, _ in batches(data, batch_size, device=device):
            out.append(model(x).argmax(dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def is_stochastic(model: nn.Module, data: ImageSet, device: torch.device | str = "cpu", images: int = 8) -> bool:
    """Whether two eval-mode forward passes of the first ``images`` images give different logits: a randomised
    defence, for which EOT is a gradient-changing attack even without a non-differentiable layer."""
    if len(data) == 0:
        return False
    x, _, _ = next(iter(batches(data, min(images, len(data)), device=device)))
    with eval_mode(model), torch.no_grad():
        return not torch.equal(model(x), model(x))
