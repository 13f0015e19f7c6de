"""hahrobust audit: per-image worst case over standard, adaptive, transfer and black-box attacks, with the
indicators of attack failure and a masking verdict per model (library: hahrobust.evaluate.audit)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Optional

import typer

from hahrobust import distributed
from hahrobust.attacks import registry
from hahrobust.attacks.journal import rank_journal
from hahrobust.attacks.norms import DEFAULT_EPS, parse_eps
from hahrobust.cli._adaptive import BPDA_TEMPERATURE, TRANSFER_FROM
from hahrobust.cli._common import console, handle_errors, make_progress
from hahrobust.provenance import slug
from hahrobust.cli._eval import (
    ATTACK_BATCH_SIZE, BPDA_TYPES, CHECKPOINTS, DATA, DEVICE, LABEL, N, NORMALIZE, OUT, OVERWRITE, SEED, WEIGHTS, EvalOptions, finish,
    load_test_set, open_session, parse_bpda,
)
from hahrobust.errors import HahrobustError
from hahrobust.evaluate.auditing import audit
from hahrobust.studies.audit import DEFAULT_ENSEMBLE, AuditConfig, Member, all_members, check_audit_norm, member_config

NAME = "audit"


@handle_errors
def command(
    checkpoints: list[Path] = CHECKPOINTS,
    label: Optional[list[str]] = LABEL,
    norm: str = typer.Option("linf,l2", "--norm", help="linf | l2, or both comma-separated."),
    eps: Optional[str] = typer.Option(
        None, "--eps", help="Comma-separated ε for a single --norm.", show_default="the paper's: ℓ∞ 2/255, ℓ2 0.25"
    ),
    transfer_from: Optional[Path] = TRANSFER_FROM,
    skip: Optional[str] = typer.Option(
        None, "--skip", help="Comma-separated ensemble members to leave out: "
        f"{', '.join(m.key for m in DEFAULT_ENSEMBLE if m.default)}.",
    ),
    include: Optional[str] = typer.Option(
        None, "--include", help="Comma-separated members that run only when named: "
        f"{', '.join(m.key for m in DEFAULT_ENSEMBLE if not m.default)} (AutoAttack's standard ensemble on every image; "
        "it broke nothing the other members missed on the reference models, at half the audit's cost).",
    ),
    save_adv: bool = typer.Option(
        False, "--save-adv", help="Keep every member's verified adversarial examples in --out/adv "
        "(re-verify them later with `hahrobust recheck`).",
    ),
    steps: Optional[int] = typer.Option(None, "--steps", help="Steps of every PGD member.", show_default="100; EOT: half"),
    restarts: Optional[int] = typer.Option(None, "--restarts", help="Restarts of the PGD members.", show_default="5; EOT and margin: 1"),
    bpda_temperature: float = BPDA_TEMPERATURE,
    bpda: Optional[list[str]] = BPDA_TYPES,
    weights: Optional[list[Path]] = WEIGHTS,
    normalize: Optional[list[str]] = NORMALIZE,
    n: Optional[int] = N,
    data: Optional[str] = DATA,
    batch_size: int = ATTACK_BATCH_SIZE,
    device: str = DEVICE,
    seed: int = SEED,
    out: Optional[Path] = OUT,
    overwrite: bool = OVERWRITE,
    resume: bool = typer.Option(False, "--resume", help="Continue a killed audit from its journals in --out."),
) -> None:
    norms = [check_audit_norm(p) for p in norm.split(",") if p.strip()]
    if not norms or len(set(norms)) != len(norms):
        raise HahrobustError(f"--norm {norm!r}: give distinct norms from linf, l2")
    if eps is not None and len(norms) > 1:
        raise HahrobustError("--eps needs a single --norm (ε values mean different things per norm)")
    eps_by_norm = {p: parse_eps(eps, p) if eps is not None else list(DEFAULT_EPS[p]) for p in norms}
    ensemble = choose_members(skip, include)
    if (resume or save_adv) and out is None:
        raise HahrobustError(f"{'--resume' if resume else '--save-adv'} needs --out DIR (the journals and examples live there)")
    if (steps is not None and steps < 1) or (restarts is not None and restarts < 1):
        raise HahrobustError("--steps and --restarts must be at least 1")
    default = AuditConfig()
    config = AuditConfig(
        temperature=bpda_temperature,
        pgd=dataclasses.replace(default.pgd, **({"steps": steps} if steps else {}), **({"restarts": restarts} if restarts else {})),
        eot=dataclasses.replace(default.eot, **({"steps": max(1, steps // 2)} if steps else {})),
    )
    bpda_names = parse_bpda(bpda)
    for member in ensemble:  # e.g. a missing AutoAttack is reported before any loading
        spec = registry.get(member.attack)
        if spec.prepare is not None:
            spec.prepare(member_config(member, config))

    options = EvalOptions(checkpoints, label, n, data, batch_size, device, seed, out, weights=weights, normalize=normalize,
                          overwrite=overwrite, resume=resume, results=(NAME, f"{NAME}-diagnostics"))
    session = open_session(options)
    journal_dir = session.out_dir / "journal" if session.out_dir is not None else None
    stems = {m.label: slug(m.label) for m in session.models}
    if journal_dir is not None and not resume and journal_dir.is_dir():
        # This rank's own journals only: under torchrun another rank may already be writing its own.
        found = sorted(j for j in journal_dir.glob("audit-*.jsonl") if _own_journal(j))
        if found:
            raise HahrobustError(f"{found[0]}: a journal from an earlier run exists; pass --resume to continue it, or remove it")

    with make_progress() as progress:
        test = load_test_set(options, progress)
        result = audit(
            session.models, test, norms=norms, eps=eps_by_norm, transfer_from=transfer_from, ensemble=ensemble,
            config=config, bpda=bpda_names, seed=seed, batch_size=batch_size, device=session.device,
            progress=progress, journal_dir=journal_dir, journal_stems=stems, resume=resume,
            save_adv_dir=session.out_dir / "adv" if save_adv and session.out_dir is not None else None,
        )
    for line in result.verdicts:
        console.print(f"verdict: {line}", markup=False, highlight=False)
    finish(result.attacks, session)
    finish(result.diagnostics, session)
    # The results are written: the journals (crash recovery only) have done their job.
    if journal_dir is not None and journal_dir.is_dir():
        rank = distributed.current()
        for journal in journal_dir.glob("audit-*.jsonl"):
            if _own_journal(journal):
                journal.unlink(missing_ok=True)
        distributed.barrier()
        if rank.is_main and not any(journal_dir.iterdir()):
            shutil.rmtree(journal_dir, ignore_errors=True)


def choose_members(skip: str | None, include: str | None) -> tuple[Member, ...]:
    """The ensemble ``--skip`` and ``--include`` leave (ASCII keys such as ``pgd-bpda``; the display names are
    accepted too), refused in one line before any attack when it cannot give a verdict: no member left, or no
    plain-gradient member (the verdict compares the adaptive members' breaks with those of plain PGD)."""
    members = all_members()
    names = {**{m.name.lower(): m for m in members}, **{m.key: m for m in members}}

    def parse(text: str | None, option: str) -> set[str]:
        given = {part.strip().lower() for part in (text or "").split(",") if part.strip()}
        if unknown := sorted(given - set(names)):
            raise HahrobustError(f"{option}: unknown member {unknown[0]!r}; members: {', '.join(m.key for m in members)}")
        return {names[g].name for g in given}

    skipped, included = parse(skip, "--skip"), parse(include, "--include")
    if both := sorted(skipped & included):
        raise HahrobustError(f"--skip and --include both name {both[0]}")
    ensemble = tuple(m for m in members if (m.default or m.name in included) and m.name not in skipped)
    if not ensemble:
        raise HahrobustError("--skip leaves no attack in the ensemble")
    if not any(m.plain for m in ensemble):
        raise HahrobustError("--skip leaves no plain-gradient member (pgd, or --include autoattack): the verdict "
                             "compares the adaptive attacks' breaks with theirs")
    return ensemble


def _own_journal(path: Path) -> bool:
    """Whether ``path`` is one of this process's journals (``<name>.rank<r>.jsonl`` under torchrun)."""
    return rank_journal(path.with_name(path.name.split(".rank")[0].removesuffix(".jsonl") + ".jsonl")) == path


__all__ = ["NAME", "command"]
