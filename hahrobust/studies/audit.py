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
black-box" check (:data:`~hahrobust.studies.audit_diagnostics.INDICATORS`), each folded into the worst case instead of only reported.

Diagnostics (:data:`~hahrobust.studies.audit_diagnostics.INDICATORS`), each a figure, a threshold and a plain-language line: Pintor et al.'s
indicators of attack failure (NeurIPS 2022) for the plain-gradient PGD, Carlini et al.'s (2019) computable
checklist items, and AutoAttack's own flags. The verdict: ``masked`` when the adaptive ensemble lowers robust
accuracy below the plain-gradient attacks' by at least :attr:`AuditConfig.masking_gap`; ``suspect`` when it
does not but an indicator fired; else ``no sign of masking``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from torch import nn

from hahrobust.attacks.gradients import GradientPath
from hahrobust.attacks.norms import SYMBOLS, check_eps, check_norm
from hahrobust.attacks.pgd import PGDConfig
from hahrobust.attacks.square import SquareConfig
from hahrobust.attacks.autoattack import AutoAttackConfig
from hahrobust.attacks.outcome import AttackOutcome
from hahrobust.attacks.registry import ATTACK_NORMS, REGISTRY, get
from hahrobust.attacks.run import run_attack_images
from hahrobust.data import ImageSet, balanced_indices, balanced_subset
from hahrobust.errors import HahrobustError
from hahrobust.nn.surrogate import SurrogateTypes, surrogate_layers
from hahrobust.studies.audit_diagnostics import diagnose

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
    diagnostics = diagnose(
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


def member_journal(journal_dir: Path, stem: str, norm: str, member: str) -> Path:
    """Where a member's journal lives: ``<stem>-<norm>-<member as a file name>.jsonl`` in ``journal_dir``."""
    slug = "".join(c if c.isalnum() else "-" for c in member.lower()).strip("-")
    return journal_dir / f"{stem}-{norm}-{slug}.jsonl"
