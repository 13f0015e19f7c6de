"""The robustness audit: robust accuracy that holds against an attacker who knows the model.

A robust-accuracy figure from attacks that follow plain autograd through a model with hard thresholds is an
upper bound (Athalye et al. 2018; Tramer et al. 2020 broke k-winners-take-all this way). The audit runs an
ensemble of attacks per model, norm and ε, and counts an image as robust only if **no** attack broke it:

=====================  ===========  ==================================================================
member                 kind         what it is
=====================  ===========  ==================================================================
AutoAttack             standard     Croce & Hein's standard ensemble, plain gradients
PGD                    white-box    PGD (100 steps × 5 restarts, targeted restarts), plain gradients
PGD·BPDA               adaptive     the same through every threshold's smooth surrogate (BPDA)
PGD·BPDA·margin        adaptive     BPDA with the C&W logit-margin loss (one restart, see below)
APGD·BPDA              adaptive     AutoAttack's APGD-CE + APGD-T through the surrogate
PGD·EOT                adaptive     gradients averaged over jittered copies (with BPDA where it applies)
transfer               transfer     PGD on the transfer source, verified on the model (``transfer_source``)
more effort            adaptive     survivors only: PGD·BPDA (plain PGD without a threshold), 4× steps, 2× restarts
Square                 black-box    survivors only: Square Attack (logits only, no gradient), one batched call
=====================  ===========  ==================================================================

BPDA members are left out for a model without a non-differentiable layer (they would repeat PGD). Every
member's examples are verified by :func:`hahrobust.attacks.run_attack_images` like any attack's, so the worst
case is a count of verified breaks, and it is never above any member's robust accuracy (by construction).
PGD·BPDA·margin runs restart 0 only: PGD's restarts 1–4 already ascend the margin (targeted, seeded per image),
so its restarts 1–4 would repeat PGD·BPDA's exactly on every image both leave unbroken — the worst case is the
same, at a fifth of the cost.

*Survivors-only* members attack just the images no earlier member broke (at any ε), in turn: a break they find
counts in the worst case like any other, at a fraction of the cost of attacking every image. Their own robust
accuracy over all images is not measured (shown as —); their ``first_breaks`` are what they add. The more-effort
member is Carlini et al.'s "more iterations must not lower robust accuracy" check and Square their "white-box ≤
black-box" check (:data:`INDICATORS`), each folded into the worst case instead of only reported.

Diagnostics (:data:`INDICATORS`), each a figure, a threshold and a plain-language line: Pintor et al.'s
indicators of attack failure (NeurIPS 2022) for the plain-gradient PGD, Carlini et al.'s (2019) computable
checklist items, and AutoAttack's own flags. The verdict: ``masked`` when the adaptive ensemble lowers robust
accuracy below the plain-gradient attacks' by at least :attr:`AuditConfig.masking_gap`; ``suspect`` when it
does not but an indicator fired; else ``no sign of masking``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

from hahrobust.attacks._common import eval_mode, per_image_uniform
from hahrobust.attacks.gradients import GradientPath
from hahrobust.attacks.norms import SYMBOLS, check_eps, check_norm
from hahrobust.attacks.pgd import PGDConfig, pgd
from hahrobust.attacks.square import SquareConfig
from hahrobust.attacks.autoattack import AutoAttackConfig
from hahrobust.attacks.outcome import AttackOutcome
from hahrobust.attacks.registry import ATTACK_NORMS, REGISTRY, get
from hahrobust.attacks.run import run_attack_images
from hahrobust.attacks.verify import verify
from hahrobust.data import ImageSet, balanced_indices, balanced_subset, batches
from hahrobust.errors import HahrobustError
from hahrobust.nn.surrogate import SurrogateTypes, surrogate_layers

Kind = Literal["standard", "white-box", "adaptive", "transfer", "black-box"]
#: Norms the whole ensemble supports (AutoAttack and the black-box attacks have no ℓ0 or ℓ1 here).
AUDIT_NORMS: tuple[str, ...] = ("linf", "l2")


@dataclass(frozen=True)
class Member:
    """One attack of the ensemble: a runner attack with a gradient path, a loss and where it runs."""

    name: str
    kind: Kind
    attack: str  # a hahrobust.attacks.run attack name
    gradient: str = "plain"  # plain | bpda | eot | bpda+eot ("bpda" parts are dropped when there is no threshold)
    loss: str | None = None
    aa_version: str = "standard"
    transfer: bool = False  # runs on the audit's transfer source
    subset: int | None = None  # attack only a class-balanced subset of this many images (slow attacks)
    survivors: bool = False  # attack only the images no earlier member broke (runs after the others)
    effort: bool = False  # PGD with AuditConfig.effort_steps × the steps and effort_restarts × the restarts
    restarts: int | None = None  # PGD restarts, instead of the audit's (before effort multiplies them)


@dataclass(frozen=True)
class AuditConfig:
    """Every setting of the audit, in one place (they go into the result's JSON)."""

    pgd: PGDConfig = PGDConfig()  # 100 steps, 5 restarts (4 targeted): the toolkit's PGD
    # EOT costs (samples + 1) forward/backward passes a step: 4 samples × 50 steps × 1 restart keeps it to about
    # the cost of one full PGD run; jitter σ = 2/255, the ℓ∞ budget under test.
    eot: PGDConfig = PGDConfig(steps=50, restarts=1)
    eot_samples: int = 4
    eot_sigma: float = 2 / 255
    temperature: float = 0.1  # BPDA sigmoid width (× the channel's std)
    # Carlini et al.: more effort must not lower robust accuracy. The "more effort" member: on the images no
    # member broke, the strongest adaptive PGD at 4× the steps and 2× the restarts.
    effort_steps: int = 4
    effort_restarts: int = 2
    unbounded_eps: dict[str, float] = field(default_factory=lambda: {"linf": 0.5, "l2": 50.0})
    unstable_radius: float = 1e-3  # ℓ∞ radius of the "tiny" noise (a quarter of a grey level)
    unstable_draws: int = 8
    masking_gap: float = 0.02  # verdict "masked": adaptive worst case ≥ 2 points below the plain attacks
    # Square on the survivors: AutoAttack's standard budget is 5000 queries on the images its APGD/FAB left;
    # 1000 per image here (Square finds most of what it finds early, see SquareConfig). One batched call of the
    # reference implementation on all the images it attacks (``per_image=False``, AutoAttack's own way): on the
    # reference models 4–6× faster than one call per image (baseline ℓ2: 220 s for 21 survivors per image), and
    # still independent of --batch-size and the process count, because audit_model gives it every image in one
    # batch whatever the batch size (the survivors are fixed by the seed and the members before it).
    square: SquareConfig = SquareConfig(per_image=False)


DEFAULT_ENSEMBLE: tuple[Member, ...] = (
    Member("AutoAttack", "standard", "autoattack"),
    Member("PGD", "white-box", "pgd"),
    Member("PGD·BPDA", "adaptive", "pgd", gradient="bpda"),
    # restart 0 only: PGD's later restarts are margin ascents already, identical to PGD·BPDA's (module docstring)
    Member("PGD·BPDA·margin", "adaptive", "pgd", gradient="bpda", loss="margin", restarts=1),
    Member("APGD·BPDA", "adaptive", "autoattack", gradient="bpda", aa_version="paper"),
    Member("PGD·EOT", "adaptive", "pgd", gradient="bpda+eot"),
    Member("transfer", "transfer", "pgd", transfer=True),
    # survivors-only members run last, in this order
    Member("more effort", "adaptive", "pgd", gradient="bpda", survivors=True, effort=True),
    Member("Square", "black-box", "square", survivors=True),
)
# HopSkipJump (hahrobust.attacks.decision, foolbox's decision-based attack) is validated as a library attack but
# not a member: ≈ 2,400 queries and 7–9 s per image on this CPU (benchmarks/blackbox_cost.py), and its distances
# were loose where Square already attacks the survivors from logits.
WORST = "worst case"


def default_ensemble() -> tuple[Member, ...]:
    """:data:`DEFAULT_ENSEMBLE` and, after it, every registered attack whose registry entry names an audit role
    (:class:`hahrobust.attacks.registry.AuditRole`): a new attack joins the audit from its registration line."""
    extra = tuple(
        Member(spec.audit.display, spec.audit.kind, spec.name, survivors=spec.audit.survivors)  # type: ignore[arg-type]
        for spec in REGISTRY.values() if spec.audit is not None
    )
    return DEFAULT_ENSEMBLE + extra


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
              "4× steps and 2× restarts broke images the other members did not: the attacks had not converged"),
    Indicator("white_vs_black", "white-box ≤ black-box", "> 0 images",
              "a gradient-free attack broke images every gradient-based member missed: gradients are masked"),
    Indicator("autoattack_flags", "AutoAttack's own checks", "> 0 flags",
              "AutoAttack's sanity checks fired (zero gradients, Square beating APGD)"),
)}


def check_audit_norm(norm: str) -> str:
    norm = check_norm(norm)
    if norm not in AUDIT_NORMS:
        raise HahrobustError(
            f"audit does not support {norm}: its ensemble (AutoAttack and its APGD) covers "
            f"{', '.join(AUDIT_NORMS)}; use `hahrobust attack --attack pgd --gradient bpda --norm {norm}` instead"
        )
    return norm


def members_for(
    model: nn.Module, ensemble: Sequence[Member], transfer_source: nn.Module | None,
    bpda_types: SurrogateTypes | None = None,
) -> list[Member]:
    """The ensemble as it applies to ``model``: BPDA parts dropped (or the member skipped) without a threshold,
    transfer skipped without a transfer source, attacks the registry does not know left out."""
    thresholded = bool(surrogate_layers(model, bpda_types))
    chosen = []
    for member in ensemble:
        if member.transfer and transfer_source is None:
            continue
        if member.attack not in ATTACK_NORMS:
            continue
        gradient = member.gradient
        if "bpda" in gradient and not thresholded:
            if gradient == "bpda" and not member.effort:
                continue  # identical to the plain member
            gradient = "plain" if gradient == "bpda" else "eot"
        chosen.append(replace(member, gradient=gradient))
    return chosen


def audit_model(
    model: nn.Module,
    data: ImageSet,
    *,
    norm: str,
    eps: Sequence[float],
    transfer_source: nn.Module | None = None,
    bpda_types: SurrogateTypes | None = None,
    ensemble: Sequence[Member] | None = None,
    config: AuditConfig = AuditConfig(),
    seed: int = 0,
    batch_size: int = 100,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    journal_dir: Path | None = None,
    journal_stem: str = "model",
    resume: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, tuple[float, float]]:
    """Audit one model at one norm: (per-member rows, diagnostics rows, (plain robust acc, worst case) at the
    first ε). Each member runs through the attack runner with its own journal (``journal_dir``), so a killed
    audit resumes per member and batch."""
    norm = check_audit_norm(norm)
    eps = check_eps(eps, norm)
    ensemble = default_ensemble() if ensemble is None else ensemble
    members = [m for m in members_for(model, ensemble, transfer_source, bpda_types) if norm in ATTACK_NORMS[m.attack]]
    outcomes: dict[str, AttackOutcome] = {}
    positions: dict[str, np.ndarray] = {}  # where each member's images sit in ``data``
    robust = np.ones((len(eps), len(data)), dtype=bool)
    broken_by: dict[str, np.ndarray] = {}
    members = sorted(members, key=lambda m: m.survivors)  # survivors-only members last, in their order
    for member in members:
        if member.survivors:
            positions[member.name] = np.flatnonzero(robust.any(axis=0))
            index = torch.from_numpy(positions[member.name])
            subset = ImageSet(data.images[index], data.labels[index], source=f"{data.source} [audit survivors]")
        elif member.subset:
            positions[member.name] = balanced_indices(data.labels, min(member.subset, len(data)), seed, data.source).numpy()
            subset = balanced_subset(data, min(member.subset, len(data)), seed)
        else:
            positions[member.name], subset = np.arange(len(data)), data
        path = GradientPath(member.gradient, temperature=config.temperature,  # type: ignore[arg-type]
                            eot_samples=config.eot_samples, eot_sigma=config.eot_sigma)
        journal = member_journal(journal_dir, journal_stem, norm, member.name) if journal_dir else None
        # A batched Square's examples depend on which images share its call: it gets them all in one (AuditConfig.square).
        one_call = member.attack == "square" and not config.square.per_image
        outcome = run_attack_images(
            model, subset, attack=member.attack, norm=norm, eps=eps, seed=seed, config=member_config(member, config),
            batch_size=max(1, len(subset)) if one_call else batch_size,
            device=device, progress=progress, journal_path=journal, resume=resume, gradient=path,
            bpda_types=None if member.transfer else bpda_types,
            transfer_source=transfer_source if member.transfer else None,
            description=f"{journal_stem} {member.name} {SYMBOLS[norm]}",
        )
        outcomes[member.name] = outcome
        mask = np.ones((len(eps), len(data)), dtype=bool)  # images a member did not attack are not its breaks
        # Robust = correct clean and not fooled (misclassified images are never robust). A survivors-only member
        # sees only images already known to be correct: its breaks are the ones it fooled, nothing else.
        mask[:, positions[member.name][outcome.index]] = outcome.robust | (~outcome.correct if member.survivors else False)
        broken_by[member.name] = ~mask
        robust &= mask
    correct = outcomes[members[0].name].correct
    rows = []
    first_seen = np.zeros((len(eps), len(data)), dtype=bool)
    for member in members:
        outcome, broken = outcomes[member.name], broken_by[member.name]
        others = np.zeros_like(broken)
        for other, b in broken_by.items():
            if other != member.name:
                others |= b
        for j, e in enumerate(eps):
            new = broken[j] & correct & ~first_seen[j]
            rows.append({
                "norm": norm, "eps": e, "attack": member.name, "kind": member.kind, "gradient": member.gradient,
                "n": len(outcome.correct), "clean_acc": float(correct.mean()),
                # a survivors-only member's robust accuracy over all images is not measured
                "robust_acc": float("nan") if member.survivors else float(outcome.robust[j].mean()),
                "first_breaks": int(new.sum()), "only_breaks": int((broken[j] & correct & ~others[j]).sum()),
                "seconds": float(outcome.table["seconds"].iloc[j]) if len(outcome.table) else 0.0,  # attack time
            })
            first_seen[j] |= broken[j] & correct
    for j, e in enumerate(eps):
        rows.append({
            "norm": norm, "eps": e, "attack": WORST, "kind": "worst case", "gradient": "all", "n": len(data),
            "clean_acc": float(correct.mean()), "robust_acc": float(robust[j].mean()), "first_breaks": 0, "only_breaks": 0,
            "seconds": float(sum(r["seconds"] for r in rows if r["eps"] == e)),
        })
    attacks = pd.DataFrame(rows)
    plain = min(float(outcomes[m.name].robust[0].mean()) for m in members
                if m.kind in ("standard", "white-box") and m.subset is None and not m.survivors)
    diagnostics = _diagnose(
        model, data, norm=norm, eps=eps[0], members=members, outcomes=outcomes, correct=correct,
        transfer_source=transfer_source, config=config, seed=seed, batch_size=batch_size, device=device, progress=progress,
        broken_by=broken_by,
    )
    return attacks, diagnostics, (plain, float(robust[0].mean()))


def member_config(member: Member, config: AuditConfig) -> object:
    """The attack config a member runs with: PGD's from the audit's (EOT's for EOT members, its restarts, more
    effort's multipliers, its loss), AutoAttack's version, Square's budget; a registered extra attack's defaults."""
    if member.attack == "pgd":
        pgd_config = config.eot if "eot" in member.gradient else config.pgd
        if member.restarts is not None:
            pgd_config = replace(pgd_config, restarts=member.restarts)
        if member.effort:
            pgd_config = replace(pgd_config, steps=pgd_config.steps * config.effort_steps,
                                 restarts=pgd_config.restarts * config.effort_restarts)
        if member.loss is not None:
            pgd_config = replace(pgd_config, loss=member.loss)  # type: ignore[arg-type]
        return pgd_config
    if member.attack == "autoattack":
        return AutoAttackConfig(member.aa_version)
    if member.attack == "square":
        return config.square
    return get(member.attack).default_config()


def verdict(label: str, results: dict[str, tuple[float, float]], diagnostics: pd.DataFrame,
            config: AuditConfig = AuditConfig()) -> str:
    """One line per model from its (plain, worst case) pairs per norm and its fired indicators."""
    gaps = {norm: plain - worst for norm, (plain, worst) in results.items()}
    masked = {norm: results[norm] for norm, gap in gaps.items() if gap >= config.masking_gap - 1e-12}
    fired = diagnostics[diagnostics["fired"].astype(bool)]["indicator"].unique().tolist()
    if masked:
        parts = ", ".join(f"{SYMBOLS[n]} from {p:.1%} to {w:.1%}" for n, (p, w) in masked.items())
        return f"{label}: masked — adaptive attacks lower robust accuracy {parts}"
    if fired:
        return f"{label}: suspect — the adaptive attacks did not lower robust accuracy, but indicators fired: {', '.join(fired)}"
    return f"{label}: no sign of masking — no adaptive attack beat the plain-gradient ones by {config.masking_gap:.0%} and no indicator fired"


# ------------------------------------------------------------------------------------------- diagnostics


def _diagnose(
    model: nn.Module, data: ImageSet, *, norm: str, eps: float, members: list[Member],
    outcomes: dict[str, AttackOutcome], correct: np.ndarray, transfer_source: nn.Module | None,
    config: AuditConfig, seed: int, batch_size: int, device: torch.device | str, progress: Progress | None,
    broken_by: dict[str, np.ndarray],
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
    if transfer is not None and transfer_source is not None:
        outcome = outcomes[transfer.name]
        fooled_source = outcome.source_fooled[0] if outcome.source_fooled is not None else np.zeros(0, dtype=bool)
        kept = fooled_source & ~outcome.robust[0]
        share = float(1 - kept.sum() / fooled_source.sum()) if fooled_source.sum() else 0.0
        values["transfer_failure"] = (share, False, f"{share:.1%} of {int(fooled_source.sum())} source breaks")

    success = _unbounded_success(model, data, norm, config, seed, batch_size, device, progress)
    values["unbounded"] = (success, success < 1.0, f"{success:.1%} fooled")

    effort = next((m for m in members if m.effort), None)
    if effort is not None:
        attacked, extra = len(outcomes[effort.name].index), int(broken_by[effort.name][0].sum())
        values["more_effort"] = (extra, extra > 0, f"{extra} of {attacked} survivors broken")
    black = [m for m in members if m.kind == "black-box"]
    if black:
        gradient_based = np.zeros(len(data), dtype=bool)
        for m in members:
            if m.kind != "black-box":
                gradient_based |= broken_by[m.name][0]
        beyond = int(sum((broken_by[m.name][0] & ~gradient_based).sum() for m in black))
        values["white_vs_black"] = (beyond, beyond > 0,
                                    f"{beyond} images broken only by {', '.join(m.name for m in black)}")
    flags = sorted({f for o in outcomes.values() for f in o.flags})
    values["autoattack_flags"] = (len(flags), bool(flags), f"{len(flags)}" + (f": {'; '.join(flags)}" if flags else ""))
    return pd.DataFrame([
        {"norm": norm, "indicator": INDICATORS[k].title, "value": shown, "threshold": INDICATORS[k].threshold,
         "fired": fired, "meaning": INDICATORS[k].meaning}
        for k, (_, fired, shown) in values.items()
    ])


def _plain_trace(
    model: nn.Module, data: ImageSet, correct: np.ndarray, norm: str, eps: float, pgd_config: PGDConfig, seed: int,
    batch_size: int, device: torch.device | str,
) -> dict[str, np.ndarray]:
    """Plain-gradient PGD from the clean image (one restart), watching every iterate's margin. Only the correctly
    classified images are attacked (a misclassified one is fooled at step 0 and nothing of it is silent); an image
    leaves at its first adversarial iterate (PGD's early stop), so its later margins are −∞: the indicators that
    read the whole optimisation (incomplete, non-converging) are judged on never-fooled images only, which run
    every step. Per image of ``data``, in its order."""
    config = replace(pgd_config, restarts=1)
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
        model, data, attack="pgd", norm=norm, eps=[config.unbounded_eps[norm]], seed=seed, batch_size=batch_size,
        device=device, config=replace(config.pgd, restarts=1), progress=progress,
        description=f"unbounded ε {SYMBOLS[norm]}",
    )
    correct = outcome.correct
    return float((~outcome.robust[0] & correct).sum() / max(1, correct.sum()))


def member_journal(journal_dir: Path, stem: str, norm: str, member: str) -> Path:
    """Where a member's journal lives: ``<stem>-<norm>-<member as a file name>.jsonl`` in ``journal_dir``."""
    slug = "".join(c if c.isalnum() else "-" for c in member.lower()).strip("-")
    return journal_dir / f"{stem}-{norm}-{slug}.jsonl"
