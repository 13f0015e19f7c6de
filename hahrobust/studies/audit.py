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
… (plain twin)         control       per gradient-changing member: its budget, plain gradients, random starts,
                                     on the images every plain reference member left robust (the masking test);
                                     only the lead member's when that pair decides (``lead_decides``)
SPSA (spsa)            zeroth-order  finite-difference gradient of the exact model's margin, 100 steps × 128
                                     directions: opt-in (``--include spsa``)
more effort            adaptive      convergence rounds of PGD·BPDA from random starts (one
                                     untargeted, 3 at the likeliest wrong classes), fresh seeds,
                                     until one breaks nothing: short rounds (4× PGD's steps,
                                     margin, at most 5), then on a thresholded model long ones
                                     (8×, cross-entropy, at most 3); what one more round could
                                     find: ``convergence_bound``
Square (square)        black-box     Square Attack, logits only, 5,000 queries, one batched call, on what every
                                     gradient attack left (after the rounds)
AutoAttack             standard      Croce & Hein's standard ensemble on every image: opt-in (``--include autoattack``)
=====================  ============  ==============================================================

BPDA members are left out for a model without a non-differentiable layer (they would repeat PGD). The worst case
is monotone in ε: a break verified at ε is within every larger ε, so it counts there too.

**The verdict** reads per-image evidence, per norm and ε (:mod:`hahrobust.studies.audit_verdict`): every
gradient-changing member (BPDA, EOT on a thresholded or randomised model, the smooth twin, zeroth-order) has a
**plain twin** (the same attack and per-image budget, plain gradients, fresh random starts) that attacks the same
images, those every plain reference member left robust; an exact McNemar test of "only the gradient-changing side
broke it" (b) against "only the plain twins broke it" (c) tells masking from extra effort, and "masked" needs it
significant after Holm over the norms and ε. EOT on a deterministic model without a non-differentiable layer is
plain. Breaks that only transfer or black-box members found are reported as their own line (the plain attacks are
weak there), not as masking. Indicators of attack failure (:mod:`hahrobust.studies.audit_diagnostics`) make an
otherwise clean verdict "suspect". A thresholded layer hahrobust cannot map (zero input gradients on most images,
no BPDA ran) is named in a warning asking for ``--bpda``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from torch import nn

from hahrobust.attacks.gradients import GradientPath
from hahrobust.attacks.norms import SYMBOLS, check_eps, check_norm
from hahrobust.attacks.outcome import AttackOutcome
from hahrobust.attacks.passes import PassCount
from hahrobust.attacks.run import AttackRequest, RunOptions, run_attack_images
from hahrobust.data import ImageSet
from hahrobust.errors import HahrobustError
from hahrobust.nn.surrogate import SurrogateTypes, smooth_twin
from hahrobust.stats import accuracy_intervals
from hahrobust.studies.audit_diagnostics import clean_predictions, diagnose, is_stochastic
from hahrobust.studies.audit_members import (
    AUDIT_NORMS, DEFAULT_ENSEMBLE, TWIN_SEED_OFFSET, AuditConfig, Kind, Member, all_members, default_ensemble,
    effort_config, member_config, members_for, plain_twin,
)
from hahrobust.studies.audit_result import ModelAudit
from hahrobust.studies.audit_verdict import (
    Judgement, convergence_bound, convergence_text, judge, judge_all, lead_decides, verdict,
)

WORST = "worst case"


def check_audit_norm(norm: str) -> str:
    norm = check_norm(norm)
    if norm not in AUDIT_NORMS:
        raise HahrobustError(
            f"audit does not support {norm}: its ensemble (AutoAttack and its APGD) covers "
            f"{', '.join(AUDIT_NORMS)}; use `hahrobust attack --attack pgd --gradient bpda --norm {norm}` instead"
        )
    return norm


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
    twins: bool = True,
) -> ModelAudit:
    """Audit one model at one norm (see the module docstring). Each member runs through the attack runner with its
    own journal (``journal_dir``), so a killed audit resumes per member and batch; with ``save_adv_dir`` every
    member's verified examples are kept (``<stem>-<norm>-<member>.safetensors``, checkable with
    ``hahrobust recheck``)."""
    norm = check_audit_norm(norm)
    eps = check_eps(eps, norm)
    ensemble = default_ensemble() if ensemble is None else ensemble
    stochastic = is_stochastic(model, data, device)
    members = members_for(model, ensemble, transfer_source, bpda_types, stochastic, twins=twins, norm=norm)
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
        request = AttackRequest(
            member.attack, norm, eps, pgd_config, seed=run_seed,
            batch_size=max(1, len(subset)) if one_call else batch_size, gradient=path,
            bpda_types=None if member.transfer or member.twin else bpda_types,
            transfer_source=source if member.transfer or member.twin else None)
        options = RunOptions(
            device, progress, journal, resume,
            save_adv=member_journal(save_adv_dir, journal_stem, norm, name).with_suffix(".safetensors")
            if save_adv_dir is not None else None,
            description=f"{journal_stem} {name} {SYMBOLS[norm]}")
        outcome = run_attack_images(model, subset, request, options)
        count = PassCount(*outcome.passes)  # counted by the runner per batch, resumed batches included
        passes[name] = passes[name] + count if name in passes else count
        seconds[name] = seconds.get(name, 0.0) + float(outcome.table["seconds"].sum())
        outcomes[name] = outcome
        broken = np.zeros((len(eps), len(data)), dtype=bool)
        broken[:, where[outcome.index]] = ~outcome.robust & outcome.correct[None]
        return _monotone(broken, order) & correct[None]

    gradient_changing = [m for m in members if m.changes_gradient and not m.effort]
    lead_decided = False  # the lead pair alone made "masked" certain: the other twins cannot change it
    for member in members:
        where = np.flatnonzero(robust.any(axis=0)) if member.survivors else np.arange(len(data))
        if member.twin_of is not None:  # the control chain: what every plain reference member left, less its own
            if lead_decided:
                continue
            reference = _union(broken_by, [m for m in members if m.plain and not m.effort], robust.shape)
            controls = _union(broken_by, [m for m in members if m.twin_of is not None and m.name in broken_by],
                              robust.shape)
            where = np.flatnonzero((correct[None] & ~reference & ~controls).any(axis=0))
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
                run_seed = seed + TWIN_SEED_OFFSET if member.twin_of is not None else seed
                broken |= attack(member, name, where, member_config(member, config), path, run_seed)
        broken_by[member.name] = broken
        robust &= ~broken
        if member.twin_of is not None and member.twin_of == gradient_changing[0]:  # the lead pair has run
            lead_decided = lead_decides(correct, reference, broken_by[member.twin_of.name], broken,
                                        len(gradient_changing), family=len(eps) * len(AUDIT_NORMS), alpha=config.alpha)
        own = [k for k in passes if k == member.name or k.startswith(member.name + " ")]
        cost = sum((passes[k] for k in own), PassCount())
        for j, e in enumerate(eps):
            rows.append({
                "norm": norm, "eps": e, "attack": member.name, "kind": member.kind, "gradient": member.gradient,
                # a twin attacks its own chain (what the plain reference left), not the ensemble's survivors
                "n": len(data) if not member.survivors else len(where) if member.twin_of else int(start[j].sum()),
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
    # Both accuracies are over every image (n counts the images a member attacked): Wilson intervals of their counts
    attacks = accuracy_intervals(attacks.assign(clean_acc_n=len(data), robust_acc_n=len(data)),
                                 {"clean_acc": "clean_acc_n", "robust_acc": "robust_acc_n"})
    ran = tuple(m for m in members if m.name in broken_by)  # less the twins the lead pair made unnecessary
    diagnostics = diagnose(
        model, data, norm=norm, eps=eps[0], members=ran, outcomes=outcomes, correct=correct,
        transfer_source=transfer_source, config=config, seed=seed, batch_size=batch_size, device=device,
        progress=progress, broken_by=broken_by, rounds=rounds,
    )
    warnings = _bpda_warnings(model, ran, bpda_types, diagnostics)
    return ModelAudit(norm, list(eps), ran, attacks, diagnostics, correct, broken_by, robust, plain,
                      passes, rounds, warnings)


def _effort_rounds(member: Member, config: AuditConfig, robust: np.ndarray, attack, rounds: list[tuple[int, int]],
                   seed: int) -> np.ndarray:
    """Convergence: short rounds of PGD·BPDA on the survivors (:func:`effort_config`: random starts, margin loss, the
    top wrong classes), a fresh seed per round, until one breaks nothing or after ``config.effort_rounds``; then,
    on a thresholded model (BPDA rounds), long rounds the same way (``config.long_rounds``). The last round decides
    the label: it broke nothing, or the rounds did not converge."""
    broken = np.zeros_like(robust)
    path = GradientPath(member.gradient, temperature=config.temperature,  # type: ignore[arg-type]
                        eot_samples=config.eot_samples, eot_sigma=config.eot_sigma)
    sizes = [("round", False, config.effort_rounds)]
    if "bpda" in member.gradient:
        sizes.append(("long round", True, config.long_rounds))
    for label, long, limit in sizes:
        for r in range(1, limit + 1):
            where = np.flatnonzero((robust & ~broken).any(axis=0))
            if not len(where):
                return broken
            found = attack(member, f"{member.name} {label} {r}", where, effort_config(config, long), path,
                           seed + 1_000_003 * r + 7_000_001 * long)
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


def member_journal(journal_dir: Path, stem: str, norm: str, member: str) -> Path:
    """Where a member's journal lives: ``<stem>-<norm>-<member as a file name>.jsonl`` in ``journal_dir``."""
    slug = "".join(c if c.isalnum() else "-" for c in member.lower()).strip("-")
    return journal_dir / f"{stem}-{norm}-{slug}.jsonl"


__all__ = [
    "AUDIT_NORMS", "DEFAULT_ENSEMBLE", "WORST", "AuditConfig", "Judgement", "Kind", "Member", "ModelAudit", "all_members",
    "audit_model", "check_audit_norm", "convergence_bound", "convergence_text", "default_ensemble", "effort_config",
    "judge", "member_config", "member_journal", "members_for", "plain_twin", "judge_all", "verdict",
]
