"""hahrobust audit: per-image worst case over standard, adaptive, transfer and black-box attacks, with the
indicators of attack failure and a masking verdict per model (library: hahrobust.studies.audit)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Optional

import pandas as pd
import typer

from hahrobust import distributed
from hahrobust.attacks.autoattack import load_autoattack
from hahrobust.attacks.journal import rank_journal
from hahrobust.attacks.norms import DEFAULT_EPS, SYMBOLS, format_eps, parse_eps
from hahrobust.cli._adaptive import BPDA_TEMPERATURE, SURROGATE, load_surrogate
from hahrobust.cli._common import console, handle_errors, make_progress, slug
from hahrobust.cli._eval import (
    BPDA_TYPES, CHECKPOINTS, DATA, DEVICE, LABEL, N, NORMALIZE, OUT, SEED, WEIGHTS, EvalOptions, bpda_types,
    common_settings, finish, load_test_set, open_session, parse_bpda,
)
from hahrobust.errors import HahrobustError
from hahrobust.results import Figure, Layout, Result
from hahrobust.studies.audit import (
    DEFAULT_ENSEMBLE, AuditConfig, audit_model, check_audit_norm, members_for, verdict,
)

NAME = "audit"
HELP = "Adaptive robustness audit: per-image worst case over AutoAttack, BPDA/EOT PGD, transfer and black-box attacks, with masking diagnostics."

NOTES = (
    "Worst case: an image counts as robust only if no attack in the ensemble broke it with a verified example "
    "(finite, in [0, 1], within ε, re-predicted by the model). It is never above any attack's robust accuracy.",
    "Adaptive attacks keep the model's forward pass exact and change only the gradient they follow: BPDA "
    "back-propagates through a smooth sigmoid mask around each threshold τ, EOT averages gradients over "
    "jittered copies. first = images this attack broke that no attack above it had; only = that no other did.",
    "seconds: the attack's own time (clean passes, attack, verification), summed over its batches; the worst "
    "case's is the members' total (the diagnostics' passes are not included).",
)
ATTACK_LAYOUT = Layout(
    title="Robust accuracy per attack and the per-image worst case (audit)",
    index=("model", "norm_label", "eps_label", "attack"),
    values=("robust_acc", "first_breaks", "only_breaks", "n", "seconds"),
    formats={"robust_acc": "{:.1%}", "first_breaks": "{:.0f}", "only_breaks": "{:.0f}", "n": "{:.0f}", "seconds": "{:.0f}"},
    labels={"norm_label": "norm", "eps_label": "ε", "robust_acc": "robust", "first_breaks": "first",
            "only_breaks": "only"},
    notes=NOTES,
    figure=Figure(kind="bar", x="attack", y=("robust_acc",), facet="setting", percent=("robust_acc",),
                  xlabel="", ylabels={"robust_acc": "robust accuracy"}, ylim=(0.0, None)),
)
DIAGNOSTICS_LAYOUT = Layout(
    title="Indicators of attack failure and gradient masking (audit)",
    index=("model", "norm_label", "indicator"),
    values=("value", "threshold", "fired", "meaning"),
    labels={"norm_label": "norm"},
    notes=(
        "Pintor et al. (NeurIPS 2022) indicators are measured on plain-gradient PGD from the clean image; "
        "Carlini et al. (2019): unbounded ε, more effort (on the images no attack broke), white-box ≤ black-box.",
    ),
)


@handle_errors
def command(
    checkpoints: list[Path] = CHECKPOINTS,
    label: Optional[list[str]] = LABEL,
    norm: str = typer.Option("linf,l2", "--norm", help="linf | l2, or both comma-separated."),
    eps: Optional[str] = typer.Option(
        None, "--eps", help="Comma-separated ε for a single --norm (default ℓ∞ 2/255, ℓ2 0.25: the paper's)."
    ),
    surrogate: Optional[Path] = SURROGATE,
    skip: Optional[str] = typer.Option(
        None, "--skip", help=f"Comma-separated ensemble members to leave out: {', '.join(m.name for m in DEFAULT_ENSEMBLE)}."
    ),
    steps: Optional[int] = typer.Option(None, "--steps", help="Steps of every PGD member (default 100; EOT: half)."),
    restarts: Optional[int] = typer.Option(None, "--restarts", help="Restarts of the PGD members (default 5; EOT and ·margin: 1)."),
    bpda_temperature: float = BPDA_TEMPERATURE,
    bpda: Optional[list[str]] = BPDA_TYPES,
    weights: Optional[list[Path]] = WEIGHTS,
    normalize: Optional[list[str]] = NORMALIZE,
    n: Optional[int] = N,
    data: Optional[str] = DATA,
    batch_size: int = typer.Option(100, "--batch-size", help="Images attacked together."),
    device: str = DEVICE,
    seed: int = SEED,
    out: Optional[Path] = OUT,
    resume: bool = typer.Option(False, "--resume", help="Continue a killed audit from its journals in --out."),
) -> None:
    norms = [check_audit_norm(p) for p in norm.split(",") if p.strip()]
    if not norms or len(set(norms)) != len(norms):
        raise HahrobustError(f"--norm {norm!r}: give distinct norms from linf, l2")
    if eps is not None and len(norms) > 1:
        raise HahrobustError("--eps needs a single --norm (ε values mean different things per norm)")
    eps_by_norm = {p: parse_eps(eps, p) if eps is not None else list(DEFAULT_EPS[p]) for p in norms}
    names = {m.name.lower(): m for m in DEFAULT_ENSEMBLE}
    skipped = {s.strip().lower() for s in (skip or "").split(",") if s.strip()}
    if unknown := skipped - set(names):
        raise HahrobustError(f"--skip: unknown member {sorted(unknown)[0]!r}; members: {', '.join(m.name for m in DEFAULT_ENSEMBLE)}")
    ensemble = tuple(m for m in DEFAULT_ENSEMBLE if m.name.lower() not in skipped)
    if not ensemble:
        raise HahrobustError("--skip leaves no attack in the ensemble")
    if resume and out is None:
        raise HahrobustError("--resume needs --out DIR (the journals live there)")
    if (steps is not None and steps < 1) or (restarts is not None and restarts < 1):
        raise HahrobustError("--steps and --restarts must be at least 1")
    default = AuditConfig()
    config = AuditConfig(
        temperature=bpda_temperature,
        pgd=dataclasses.replace(default.pgd, **({"steps": steps} if steps else {}), **({"restarts": restarts} if restarts else {})),
        eot=dataclasses.replace(default.eot, **({"steps": max(1, steps // 2)} if steps else {})),
    )
    surrogate_names = parse_bpda(bpda)
    if any(m.attack in ("autoattack", "square") for m in ensemble):
        load_autoattack()

    options = EvalOptions(checkpoints, label, n, data, batch_size, device, seed, out, weights=weights, normalize=normalize)
    session = open_session(options)
    types = bpda_types(session, surrogate_names) if surrogate_names else {}
    source = load_surrogate(surrogate, [m.model for m in session.models], session.device) if surrogate else None
    journal_dir = session.out_dir / "journal" if session.out_dir is not None else None
    stems = {m.label: slug(m.label) for m in session.models}
    if journal_dir is not None and not resume and journal_dir.is_dir():
        # This rank's own journals only: under torchrun another rank may already be writing its own.
        found = sorted(j for j in journal_dir.glob("audit-*.jsonl") if _own_journal(j))
        if found:
            raise HahrobustError(f"{found[0]}: a journal from an earlier run exists; pass --resume to continue it, or remove it")

    attack_frames, diagnostic_frames, verdicts = [], [], []
    with make_progress() as progress:
        test = load_test_set(options, progress)
        for m in session.models:
            pairs = {}
            diags = []
            for p in norms:
                rows, diag, pair = audit_model(
                    m.model, test, norm=p, eps=eps_by_norm[p], surrogate=source, bpda_types=types.get(m.label),
                    ensemble=ensemble, config=config,
                    seed=seed, batch_size=batch_size, device=session.device, progress=progress,
                    journal_dir=journal_dir, journal_stem=f"audit-{stems[m.label]}", resume=resume,
                )
                attack_frames.append(rows.assign(model=m.label))
                diags.append(diag.assign(model=m.label))
                pairs[p] = pair
            diagnostic_frames.extend(diags)
            verdicts.append(verdict(m.label, pairs, pd.concat(diags), config))
    attacks = _tidy(pd.concat(attack_frames, ignore_index=True))
    attacks.insert(4, "setting", [f"{n_} ε={e}" for n_, e in zip(attacks["norm_label"], attacks["eps_label"])])
    diagnostics = pd.concat(diagnostic_frames, ignore_index=True)
    diagnostics.insert(2, "norm_label", diagnostics["norm"].map(SYMBOLS))
    diagnostics = diagnostics[["model", *[c for c in diagnostics.columns if c != "model"]]]
    settings = {
        **common_settings(session, test), "norms": norms, "eps": eps_by_norm,
        "ensemble": [m.name for m in ensemble],
        "applied": {m.label: [x.name for x in members_for(m.model, ensemble, source, types.get(m.label))]
                    for m in session.models},
        **({"bpda": surrogate_names} if surrogate_names else {}),
        "config": dataclasses.asdict(config),
        **({"surrogate": str(surrogate)} if surrogate is not None else {}),
    }
    checkpoints_used = {**session.checkpoints, **({"transfer source": surrogate} if surrogate is not None else {})}
    for line in verdicts:
        console.print(f"verdict: {line}", markup=False, highlight=False)
    finish(Result(NAME, attacks, settings, checkpoints_used, ATTACK_LAYOUT, started=session.started,
                  notes=[f"Verdict — {v}" for v in verdicts]), session)
    finish(Result("audit-diagnostics", diagnostics, settings, checkpoints_used, DIAGNOSTICS_LAYOUT,
                  started=session.started, notes=[f"Verdict — {v}" for v in verdicts]), session)
    # The results are written: the journals (crash recovery only) have done their job.
    if journal_dir is not None and journal_dir.is_dir():
        rank = distributed.current()
        for journal in journal_dir.glob("audit-*.jsonl"):
            if _own_journal(journal):
                journal.unlink(missing_ok=True)
        distributed.barrier()
        if rank.is_main and not any(journal_dir.iterdir()):
            shutil.rmtree(journal_dir, ignore_errors=True)


def _tidy(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows[["model", *[c for c in rows.columns if c != "model"]]].copy()
    rows.insert(2, "norm_label", rows["norm"].map(SYMBOLS))
    rows.insert(4, "eps_label", [format_eps(e, p) for e, p in zip(rows["eps"], rows["norm"])])
    return rows




def _own_journal(path: Path) -> bool:
    """Whether ``path`` is one of this process's journals (``<name>.rank<r>.jsonl`` under torchrun)."""
    return rank_journal(path.with_name(path.name.split(".rank")[0].removesuffix(".jsonl") + ".jsonl")) == path


__all__ = ["HELP", "NAME", "command"]
