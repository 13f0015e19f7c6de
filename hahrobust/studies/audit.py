"""The robustness audit: robust accuracy that holds against an attacker who knows the model.

A robust-accuracy figure from attacks that follow plain autograd through a model with hard thresholds is an
upper bound (Athalye et al. 2018; Tramer et al. 2020 broke k-winners-take-all this way). The audit runs an
ensemble of attacks per model, norm and ε, and counts an image as robust only if **no** attack broke it with a
verified example. Plain PGD attacks every image (the plain-gradient reference the verdict compares with); every
later member attacks only the images no earlier member broke (its *survivors*), which gives the same per-image
worst case as attacking everything (a union of verified breaks) at a fraction of the passes:

=====================  ============  ==============================================================
member (``--skip``)    kind          what it is
=====================  ============  ==============================================================
PGD (pgd)              white-box     100 steps × 5 restarts (4 targeted), plain gradients, every image
PGD·BPDA (pgd-bpda)    adaptive      the same through every threshold's smooth surrogate (BPDA)
PGD·BPDA·margin        adaptive      BPDA with the C&W logit-margin loss, one restart
APGD·BPDA (apgd-bpda)  adaptive      AutoAttack's APGD-CE + APGD-T through the surrogate
PGD·EOT (pgd-eot)      adaptive      gradients averaged over jittered copies (with BPDA where it applies)
BPDA sweep             adaptive      PGD·BPDA at temperatures 0.03, 0.3, 1 and straight-through (per-image best)
smooth twin            adaptive      PGD on the model with sigmoid masks in the forward too, verified on the model
transfer               transfer      PGD on the transfer source, verified on the model
Square (square)        black-box     Square Attack, logits only, 5,000 queries, one batched call
SPSA (spsa)            zeroth-order  finite-difference gradient of the exact model's margin, 100 steps × 128
                                     directions: opt-in (``--include spsa``)
more effort            adaptive      rounds of the strongest PGD (first 4× steps, 2× restarts, then doubling both),
                                     all 9 targets, fresh seeds, until a round breaks nothing (Carlini et al.)
AutoAttack             standard      Croce & Hein's standard ensemble on every image: opt-in (``--include autoattack``)
=====================  ============  ==============================================================

BPDA members are left out for a model without a non-differentiable layer (they would repeat PGD). The worst case
is monotone in ε: a break verified at ε is within every larger ε, so it counts there too.

**The verdict** reads per-image evidence, per norm and ε (:func:`judge`): the images that only gradient-changing
members (BPDA, EOT, the smooth twin, zeroth-order) broke among those every plain-gradient member left robust are the evidence of masking, and
"masked" needs them to be more than chance: the one-sided exact test of :func:`hahrobust.stats.masking_test`
(p = ½^m for m such images, so m ≥ 5 at α = 0.05); fewer is "suspect: m images, not significant at this n".
Breaks that only transfer or black-box members found are reported as their own line (the plain attacks are weak
there), not as masking. Indicators of attack failure (:mod:`hahrobust.studies.audit_diagnostics`) make an
otherwise clean verdict "suspect". A thresholded layer hahrobust cannot map (zero input gradients on most images,
no BPDA ran) is named in a warning asking for ``--bpda``.
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

from hahrobust.attacks.autoattack import AutoAttackConfig
from hahrobust.attacks.gradients import GradientPath
from hahrobust.attacks.norms import SYMBOLS, check_eps, check_norm
from hahrobust.attacks.outcome import AttackOutcome
from hahrobust.attacks.pgd import PGDConfig
from hahrobust.attacks.registry import ATTACK_NORMS, REGISTRY, get
from hahrobust.attacks.run import run_attack_images
from hahrobust.attacks.square import SquareConfig
from hahrobust.data import ImageSet
from hahrobust.errors import HahrobustError
from hahrobust.nn.surrogate import SurrogateTypes, smooth_twin, surrogate_layers
from hahrobust.studies.audit_diagnostics import clean_predictions, diagnose
from hahrobust.studies.audit_verdict import Judgement, convergence_text, judge, verdict
from hahrobust.attacks.passes import PassCount

Kind = Literal["standard", "white-box", "adaptive", "zeroth-order", "transfer", "black-box"]
#: Norms the whole ensemble supports (AutoAttack and the black-box attacks have no ℓ0 or ℓ1 here).
AUDIT_NORMS: tuple[str, ...] = ("linf", "l2")


@dataclass(frozen=True)
class Member:
    """One attack of the ensemble: a registered attack with a gradient path, a loss and where it runs."""

    name: str  # shown in tables
    kind: Kind
    attack: str  # a registered attack (hahrobust.attacks.registry)
    gradient: str = "plain"  # plain | bpda | eot | bpda+eot ("bpda" parts are dropped when there is no threshold)
    loss: str | None = None
    aa_version: str = "standard"
    transfer: bool = False  # runs on the audit's transfer source
    survivors: bool = True  # attack only the images no earlier member broke
    effort: bool = False  # the convergence rounds (AuditConfig.effort_*)
    restarts: int | None = None  # PGD restarts, instead of the audit's
    backwards: tuple[tuple[str, float], ...] = ()  # BPDA sweep: (surrogate kind, temperature) runs, per-image union
    twin: bool = False  # PGD on the model's smooth twin (sigmoid masks in the forward too), verified on the model
    default: bool = True  # in the default ensemble (False: only with --include)

    @property
    def key(self) -> str:
        """The ASCII name ``--skip`` and ``--include`` take (``PGD·BPDA·margin`` → ``pgd-bpda-margin``)."""
        return "".join(c if c.isalnum() else "-" for c in self.name.lower()).strip("-").replace("--", "-")

    @property
    def changes_gradient(self) -> bool:
        """Follows another gradient than autograd's on the exact model: its extra breaks are evidence of masking."""
        return "bpda" in self.gradient or "eot" in self.gradient or self.twin or self.kind == "zeroth-order"

    @property
    def plain(self) -> bool:
        """A plain-gradient member on the exact model (the reference the verdict compares with)."""
        return not self.changes_gradient and not self.transfer and self.kind in ("standard", "white-box", "adaptive")


@dataclass(frozen=True)
class AuditConfig:
    """Every setting of the audit, in one place (they go into the result's JSON and the journals' headers)."""

    pgd: PGDConfig = PGDConfig()  # 100 steps, 5 restarts (4 targeted): the toolkit's PGD
    # EOT costs (samples + 1) forward/backward passes a step: 4 samples × 50 steps × 1 restart keeps it to about
    # the cost of one full PGD run; jitter σ = 2/255, the ℓ∞ budget under test.
    eot: PGDConfig = PGDConfig(steps=50, restarts=1)
    eot_samples: int = 4
    eot_sigma: float = 2 / 255
    temperature: float = 0.1  # BPDA sigmoid width (× the channel's std)
    # Convergence (Carlini et al.: more effort must not lower robust accuracy): rounds of the strongest PGD on the
    # survivors, targeted at all 9 wrong classes, seeds fresh per round. Round 1 runs effort_steps × the steps and
    # effort_restarts × the restarts (4× and 2×: the first edition's more-effort budget, which broke 3 of 9 HaH
    # survivors at ℓ∞ where 2× and 2× broke none); each later round doubles both. The rounds stop when one breaks
    # nothing ("converged") or after effort_rounds ("not converged": round 3 costs 128× PGD per survivor).
    effort_steps: int = 4
    effort_restarts: int = 2
    effort_rounds: int = 3
    effort_targets: int = 9  # PGD's targeted restarts in the rounds: every wrong class of CIFAR-10
    unbounded_eps: dict[str, float] = field(default_factory=lambda: {"linf": 0.5, "l2": 50.0})
    unstable_radius: float = 1e-3  # ℓ∞ radius of the "tiny" noise (a quarter of a grey level)
    unstable_draws: int = 8
    alpha: float = 0.05  # masking: one-sided exact test on the images only gradient-changing members broke
    # Square on the survivors at AutoAttack's standard budget, one batched call of the reference implementation
    # (``per_image=False``: AutoAttack's own way), independent of --batch-size because it gets every image at once.
    square: SquareConfig = SquareConfig(queries=5000, per_image=False)


DEFAULT_ENSEMBLE: tuple[Member, ...] = (
    Member("AutoAttack", "standard", "autoattack", survivors=False, default=False),
    Member("PGD", "white-box", "pgd", survivors=False),
    Member("PGD·BPDA", "adaptive", "pgd", gradient="bpda"),
    Member("PGD·BPDA·margin", "adaptive", "pgd", gradient="bpda", loss="margin", restarts=1),
    Member("APGD·BPDA", "adaptive", "autoattack", gradient="bpda", aa_version="paper"),
    Member("PGD·EOT", "adaptive", "pgd", gradient="bpda+eot"),
    Member("BPDA sweep", "adaptive", "pgd", gradient="bpda", restarts=1,
           backwards=(("sigmoid", 0.03), ("sigmoid", 0.3), ("sigmoid", 1.0), ("identity", 0.1))),
    Member("smooth twin", "adaptive", "pgd", twin=True),
    Member("transfer", "transfer", "pgd", transfer=True),
    Member("Square", "black-box", "square"),
    Member("more effort", "adaptive", "pgd", gradient="bpda", effort=True),
)
# HopSkipJump (hahrobust.attacks.decision, foolbox's decision-based attack) is validated as a library attack but
# not a member: ≈ 2,400 queries and 7–9 s per image on this CPU (benchmarks/blackbox_cost.py), where Square
# already attacks the survivors from logits.
WORST = "worst case"


def default_ensemble(include: Sequence[str] = ()) -> tuple[Member, ...]:
    """The members that run by default, those named in ``include`` (keys, e.g. ``autoattack``) and, before more
    effort, every registered attack whose registry entry names an audit role: a new attack joins the audit from its
    registration line."""
    extra = tuple(m for m in _registered_members() if m.default or m.key in include)
    chosen = [m for m in DEFAULT_ENSEMBLE if m.default or m.key in include]
    last = [m for m in chosen if m.effort]
    return (*[m for m in chosen if not m.effort], *extra, *last)


def all_members() -> tuple[Member, ...]:
    """Every member ``--skip`` and ``--include`` may name: the default ensemble, the opt-in ones, registered ones."""
    return default_ensemble(include=[m.key for m in (*DEFAULT_ENSEMBLE, *_registered_members())])


def _registered_members() -> tuple[Member, ...]:
    """A member for every registered attack whose registry entry names an audit role."""
    return tuple(
        Member(spec.audit.display, spec.audit.kind, spec.name, survivors=spec.audit.survivors,  # type: ignore[arg-type]
               default=spec.audit.default)
        for spec in REGISTRY.values() if spec.audit is not None
    )


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
        if (member.transfer and transfer_source is None) or member.attack not in ATTACK_NORMS:
            continue
        if member.twin and not thresholded:
            continue  # a model without thresholds is its own smooth twin: plain PGD
        gradient = member.gradient
        if "bpda" in gradient and not thresholded:
            if gradient == "bpda" and not member.effort:
                continue  # identical to the plain member
            gradient = "plain" if gradient == "bpda" else "eot"
        chosen.append(replace(member, gradient=gradient, backwards=member.backwards if thresholded else ()))
    return chosen


@dataclass(frozen=True)
class ModelAudit:
    """One model audited at one norm: the per-member table, the diagnostics, and the per-image evidence.

    ``correct`` [N]: classified correctly clean (one forward pass of the model itself); ``broken_by[member]``
    [len(eps), N]: the images that member broke with a verified example (monotone in ε); ``worst`` [len(eps), N]:
    robust under every member; ``plain`` [len(eps), N]: robust under the plain-gradient members only."""

    norm: str
    eps: list[float]
    members: tuple[Member, ...]
    attacks: pd.DataFrame
    diagnostics: pd.DataFrame
    correct: np.ndarray
    broken_by: dict[str, np.ndarray]
    worst: np.ndarray
    plain: np.ndarray
    passes: dict[str, PassCount]
    rounds: list[tuple[int, int]]  # more effort: (images attacked, images broken) per round
    warnings: tuple[str, ...] = ()

    def broken(self, which: Sequence[Member]) -> np.ndarray:
        """[len(eps), N]: broken by any of ``which``."""
        out = np.zeros_like(self.worst)
        for member in which:
            out |= self.broken_by[member.name]
        return out


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
    save_adv_dir: Path | None = None,
) -> ModelAudit:
    """Audit one model at one norm (see the module docstring). Each member runs through the attack runner with its
    own journal (``journal_dir``), so a killed audit resumes per member and batch; with ``save_adv_dir`` every
    member's verified examples are kept (``<stem>-<norm>-<member>.safetensors``, checkable with
    ``hahrobust recheck``)."""
    norm = check_audit_norm(norm)
    eps = check_eps(eps, norm)
    ensemble = default_ensemble() if ensemble is None else ensemble
    members = [m for m in members_for(model, ensemble, transfer_source, bpda_types) if norm in ATTACK_NORMS[m.attack]]
    order = np.argsort(eps, kind="stable")  # for carrying a break at a small ε to every larger one
    correct = clean_predictions(model, data, batch_size, device) == data.labels.numpy()
    robust = np.repeat(correct[None], len(eps), axis=0)  # misclassified images are never robust
    broken_by: dict[str, np.ndarray] = {}
    outcomes: dict[str, AttackOutcome] = {}
    passes: dict[str, PassCount] = {}
    seconds: dict[str, float] = {}  # the members' own attack time (shown in the CSV; passes are the cost measure)
    rounds: list[tuple[int, int]] = []
    rows: list[dict[str, object]] = []

    def attack(member: Member, name: str, where: np.ndarray, pgd_config: object, path: GradientPath,
               run_seed: int) -> np.ndarray:
        """Run one attack on the images at ``where``; its verified breaks as [len(eps), N]."""
        if not len(where):  # nothing left to attack: no break, no pass
            passes.setdefault(name, PassCount())
            return np.zeros((len(eps), len(data)), dtype=bool)
        index = torch.from_numpy(where)
        subset = ImageSet(data.images[index], data.labels[index], source=f"{data.source} [audit {member.key}]")
        # A batched Square's examples depend on which images share its call: it gets them all in one.
        one_call = member.attack == "square" and not config.square.per_image
        journal = member_journal(journal_dir, journal_stem, norm, name) if journal_dir else None
        source = smooth_twin(model, config.temperature, bpda_types) if member.twin else transfer_source
        outcome = run_attack_images(
            model, subset, attack=member.attack, norm=norm, eps=eps, seed=run_seed, config=pgd_config,
            batch_size=max(1, len(subset)) if one_call else batch_size, device=device, progress=progress,
            journal_path=journal, resume=resume, gradient=path,
            bpda_types=None if member.transfer or member.twin else bpda_types,
            transfer_source=source if member.transfer or member.twin else None,
            save_adv=member_journal(save_adv_dir, journal_stem, norm, name).with_suffix(".safetensors")
            if save_adv_dir is not None else None,
            description=f"{journal_stem} {name} {SYMBOLS[norm]}",
        )
        count = PassCount(*outcome.passes)  # counted by the runner per batch, resumed batches included
        passes[name] = passes[name] + count if name in passes else count
        seconds[name] = seconds.get(name, 0.0) + float(outcome.table["seconds"].sum())
        outcomes[name] = outcome
        broken = np.zeros((len(eps), len(data)), dtype=bool)
        broken[:, where[outcome.index]] = ~outcome.robust & outcome.correct[None]
        return _monotone(broken, order) & correct[None]

    for member in members:
        where = np.flatnonzero(robust.any(axis=0)) if member.survivors else np.arange(len(data))
        start = robust.copy()
        if member.effort:
            broken = _effort_rounds(member, config, robust, attack, rounds, seed)
        else:
            broken = np.zeros_like(robust)
            for kind, temperature in member.backwards or ((None, None),):
                path = GradientPath(member.gradient, surrogate=kind or "sigmoid",  # type: ignore[arg-type]
                                    temperature=temperature or config.temperature,
                                    eot_samples=config.eot_samples, eot_sigma=config.eot_sigma)
                name = member.name if kind is None else f"{member.name} {kind} {temperature:g}"
                broken |= attack(member, name, where, member_config(member, config), path, seed)
        broken_by[member.name] = broken
        robust &= ~broken
        own = [k for k in passes if k == member.name or k.startswith(member.name + " ")]
        cost = sum((passes[k] for k in own), PassCount())
        for j, e in enumerate(eps):
            rows.append({
                "norm": norm, "eps": e, "attack": member.name, "kind": member.kind, "gradient": member.gradient,
                "n": len(data) if not member.survivors else int(start[j].sum()),
                "clean_acc": float(correct.mean()),
                "robust_acc": float((correct & ~broken[j]).mean()) if not member.survivors else float("nan"),
                "first_breaks": int((broken[j] & start[j]).sum()),
                "forward_passes": cost.forward, "backward_passes": cost.backward,
                "seconds": sum(seconds.get(k, 0.0) for k in own) / len(eps),
            })
    plain_members = [m for m in members if m.plain and not m.effort] + [m for m in members if m.effort and m.plain]
    plain = correct[None] & ~_union(broken_by, plain_members, robust.shape)
    total = sum(passes.values(), PassCount())
    for j, e in enumerate(eps):
        rows.append({
            "norm": norm, "eps": e, "attack": WORST, "kind": "worst case", "gradient": "all", "n": len(data),
            "clean_acc": float(correct.mean()), "robust_acc": float(robust[j].mean()),
            "first_breaks": int((correct & ~robust[j]).sum()),  # every image not robust: misclassified or broken
            "forward_passes": total.forward, "backward_passes": total.backward,
            "seconds": sum(seconds.values()) / len(eps),
        })
    attacks = pd.DataFrame(rows)
    attacks["only_breaks"] = [_only(broken_by, str(r["attack"]), eps.index(r["eps"])) if r["attack"] != WORST else 0
                              for r in rows]
    diagnostics = diagnose(
        model, data, norm=norm, eps=eps[0], members=members, outcomes=outcomes, correct=correct,
        transfer_source=transfer_source, config=config, seed=seed, batch_size=batch_size, device=device,
        progress=progress, broken_by=broken_by, rounds=rounds,
    )
    warnings = _bpda_warnings(model, members, bpda_types, diagnostics)
    return ModelAudit(norm, list(eps), tuple(members), attacks, diagnostics, correct, broken_by, robust, plain,
                      passes, rounds, warnings)


def _effort_rounds(member: Member, config: AuditConfig, robust: np.ndarray, attack, rounds: list[tuple[int, int]],
                   seed: int) -> np.ndarray:
    """Convergence: rounds of the strongest PGD on the survivors (round r: effort_steps·2^(r−1) × the steps and
    effort_restarts·2^(r−1) × the restarts), all nine targets, a fresh seed per round; stop at the first round that
    breaks nothing or after ``config.effort_rounds``."""
    broken = np.zeros_like(robust)
    for r in range(1, config.effort_rounds + 1):
        where = np.flatnonzero((robust & ~broken).any(axis=0))
        if not len(where):
            break
        factor_steps, factor_restarts = config.effort_steps * 2 ** (r - 1), config.effort_restarts * 2 ** (r - 1)
        pgd_config = replace(config.pgd, steps=config.pgd.steps * factor_steps,
                             restarts=config.pgd.restarts * factor_restarts, targeted=config.effort_targets)
        path = GradientPath(member.gradient, temperature=config.temperature,  # type: ignore[arg-type]
                            eot_samples=config.eot_samples, eot_sigma=config.eot_sigma)
        found = attack(member, f"{member.name} round {r}", where, pgd_config, path, seed + 1_000_003 * r)
        new = found & ~broken & robust
        broken |= found
        rounds.append((len(where), int(new.any(axis=0).sum())))
        if not new.any():
            break
    return broken


def _monotone(broken: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Carry each break to every larger ε (rows of ``broken`` in the order of ``eps``; ``order`` sorts them)."""
    carried = np.logical_or.accumulate(broken[order], axis=0)
    out = np.empty_like(broken)
    out[order] = carried
    return out


def _union(broken_by: dict[str, np.ndarray], members: Sequence[Member], shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for m in members:
        out |= broken_by[m.name]
    return out


def _only(broken_by: dict[str, np.ndarray], name: str, j: int) -> int:
    others = np.zeros_like(broken_by[name][j])
    for other, b in broken_by.items():
        if other != name:
            others |= b[j]
    return int((broken_by[name][j] & ~others).sum())


def _bpda_warnings(model: nn.Module, members: Sequence[Member], bpda_types: SurrogateTypes | None,
                   diagnostics: pd.DataFrame) -> tuple[str, ...]:
    """A model whose input gradients vanish on most images while no BPDA member ran has a non-differentiable layer
    hahrobust does not know: the adaptive attacks never saw through it."""
    if any(m.changes_gradient and "bpda" in m.gradient for m in members):
        return ()
    row = diagnostics.set_index("indicator")
    share = float(row.loc["unavailable gradients", "share"]) if "unavailable gradients" in row.index else 0.0
    if share <= 0.5:
        return ()
    return (f"{share:.0%} of the images have zero input gradients and no BPDA member ran: the model has a "
            "non-differentiable layer hahrobust does not know; map it with --bpda TYPE=sigmoid (or =identity) "
            "so the adaptive attacks can see through it",)


def member_config(member: Member, config: AuditConfig) -> object:
    """The attack config a member runs with: PGD's from the audit's (EOT's for EOT members, its restarts, its
    loss), AutoAttack's version, Square's budget; a registered extra attack's defaults."""
    if member.attack == "pgd":
        pgd_config = config.eot if "eot" in member.gradient else config.pgd
        if member.restarts is not None:
            pgd_config = replace(pgd_config, restarts=member.restarts)
        if member.loss is not None:
            pgd_config = replace(pgd_config, loss=member.loss)  # type: ignore[arg-type]
        return pgd_config
    if member.attack == "autoattack":
        return AutoAttackConfig(member.aa_version)
    if member.attack == "square":
        return config.square
    return get(member.attack).default_config()


def member_journal(journal_dir: Path, stem: str, norm: str, member: str) -> Path:
    """Where a member's journal lives: ``<stem>-<norm>-<member as a file name>.jsonl`` in ``journal_dir``."""
    slug = "".join(c if c.isalnum() else "-" for c in member.lower()).strip("-")
    return journal_dir / f"{stem}-{norm}-{slug}.jsonl"


__all__ = [
    "AUDIT_NORMS", "DEFAULT_ENSEMBLE", "WORST", "AuditConfig", "Judgement", "Member", "ModelAudit", "all_members",
    "audit_model", "check_audit_norm", "convergence_text", "default_ensemble", "judge", "member_config",
    "member_journal", "members_for", "verdict",
]
