"""The robustness audit of several models: ``hahrobust audit`` as a function (library: :mod:`hahrobust.studies.audit`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from rich.progress import Progress

from hahrobust.attacks.norms import DEFAULT_EPS, SYMBOLS, format_eps
from hahrobust.data import ImageSet
from hahrobust.evaluate._common import Models, as_device, common_settings, loaded, origins
from hahrobust.evaluate.opening import bpda_types_for, load_transfer_source
from hahrobust.nn.surrogate import SurrogateKind
from hahrobust.evaluate.audit_figures import draw_audit, draw_diagnostics
from hahrobust.results import Layout, Result
from hahrobust.stats import interval_columns
from hahrobust.studies.audit import (
    AuditConfig, Member, ModelAudit, audit_model, check_audit_norm, default_ensemble,
    verdict,
)

NAME = "audit"

NOTES = (
    "Worst case: an image counts as robust only if no attack in the ensemble broke it with a verified example "
    "(finite, in [0, 1], within ε, re-predicted by the model). It is never above any attack's robust accuracy.",
    "Adaptive attacks keep the model's forward pass exact and change only the gradient they follow: BPDA "
    "back-propagates through a smooth sigmoid mask around each threshold τ, EOT averages gradients over "
    "jittered copies. first = images this attack broke that no attack above it had; only = that no other did.",
    "Members after PGD attack only the images no earlier member broke (n is how many): their breaks are what they "
    "add, and their own robust accuracy over all images is not measured (—). The worst case is monotone in ε.",
    "forward/backward: image-passes through the model (and the transfer source) each member spent, clean "
    "predictions and verification included; the worst case's are the ensemble's total (diagnostics not included).",
    "In brackets: the Wilson 95 % interval of the robust accuracy over all the images (robust_acc_n; the CSV and "
    "JSON give clean_acc's too).",
)
ATTACK_LAYOUT = Layout(
    title="Robust accuracy per attack and the per-image worst case (audit)",
    index=("model", "norm_label", "eps_label", "attack"),
    values=("robust_acc", "first_breaks", "only_breaks", "n", "forward_passes", "backward_passes"),
    formats={"robust_acc": "{:.1%}", "first_breaks": "{:.0f}", "only_breaks": "{:.0f}", "n": "{:.0f}",
             "forward_passes": "{:,.0f}", "backward_passes": "{:,.0f}"},
    intervals=interval_columns("robust_acc"),
    labels={"norm_label": "norm", "eps_label": "ε", "robust_acc": "robust", "first_breaks": "first",
            "only_breaks": "only", "forward_passes": "forward", "backward_passes": "backward"},
    notes=NOTES,
    drawer=draw_audit,
)
DIAGNOSTICS_LAYOUT = Layout(
    title="Indicators of attack failure and gradient masking (audit)",
    index=("model", "norm_label", "indicator"),
    values=("value", "threshold", "fired", "meaning"),
    labels={"norm_label": "norm"},
    drawer=draw_diagnostics,
    notes=(
        "Pintor et al. (NeurIPS 2022) indicators are measured on plain-gradient PGD from the clean image; "
        "Carlini et al. (2019): unbounded ε, more effort (on the images no attack broke), white-box ≤ black-box.",
    ),
)


@dataclass(frozen=True)
class AuditResult:
    """The audit's two results (per-member robust accuracy with the worst case; the indicators) and one verdict
    line per model (also in both results' notes)."""

    attacks: Result
    diagnostics: Result
    verdicts: list[str]
    audits: dict[str, list[ModelAudit]]  # per model label, one per norm: the per-image evidence


def audit(
    models: Models,
    data: ImageSet,
    *,
    norms: Sequence[str] = ("linf", "l2"),
    eps: Mapping[str, Sequence[float]] | None = None,
    transfer_from: str | Path | None = None,
    ensemble: Sequence[Member] | None = None,
    config: AuditConfig = AuditConfig(),
    bpda: Mapping[str, SurrogateKind] | None = None,
    seed: int = 0,
    batch_size: int = 100,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    journal_dir: Path | None = None,
    journal_stems: Mapping[str, str] | None = None,
    resume: bool = False,
    save_adv_dir: Path | None = None,
) -> AuditResult:
    """Audit every model at each norm (ε per norm: ``eps``, default the paper's) with ``ensemble`` (default
    :func:`hahrobust.studies.audit.default_ensemble`), each model with ``transfer_from`` (a checkpoint) as its
    transfer source. ``bpda`` maps further module types to a BPDA surrogate (``--bpda``). With ``journal_dir``
    each member journals per batch (``journal_stems``: a file-name stem per model label) and ``resume`` continues;
    ``save_adv_dir`` keeps every member's verified examples (checkable with ``hahrobust recheck``)."""
    norms = [check_audit_norm(p) for p in norms]
    eps_by_norm = {p: list(eps[p]) if eps is not None and p in eps else list(DEFAULT_EPS[p]) for p in norms}
    ensemble = tuple(default_ensemble() if ensemble is None else ensemble)
    device = as_device(device)
    opened = loaded(models, device)
    types = bpda_types_for(opened, bpda) if bpda else {}
    source = load_transfer_source(transfer_from, [m.model for m in opened], device) if transfer_from else None
    stems = journal_stems or {m.label: m.label for m in opened}
    attack_frames, diagnostic_frames, verdicts = [], [], []
    audits: dict[str, list[ModelAudit]] = {}
    for m in opened:
        audits[m.label] = []
        for p in norms:
            audited = audit_model(
                m.model, data, norm=p, eps=eps_by_norm[p], transfer_source=source, bpda_types=types.get(m.label),
                ensemble=ensemble, config=config, seed=seed, batch_size=batch_size, device=device,
                progress=progress, journal_dir=journal_dir, journal_stem=f"audit-{stems[m.label]}", resume=resume,
                save_adv_dir=save_adv_dir,
            )
            attack_frames.append(audited.attacks.assign(model=m.label))
            diagnostic_frames.append(audited.diagnostics.assign(model=m.label))
            audits[m.label].append(audited)
        verdicts.append(verdict(m.label, audits[m.label], config.alpha))
    attacks = _tidy(pd.concat(attack_frames, ignore_index=True))
    attacks.insert(4, "setting", [f"{n_} ε={e}" for n_, e in zip(attacks["norm_label"], attacks["eps_label"])])
    diagnostics = pd.concat(diagnostic_frames, ignore_index=True)
    diagnostics.insert(2, "norm_label", diagnostics["norm"].map(SYMBOLS))
    diagnostics = diagnostics[["model", *[c for c in diagnostics.columns if c != "model"]]]
    settings = {
        **common_settings(data, seed=seed, batch_size=batch_size, device=device), "norms": norms, "eps": eps_by_norm,
        "ensemble": [m.name for m in ensemble],
        "applied": {label: list(dict.fromkeys(x.name for a in per for x in a.members)) for label, per in audits.items()},
        **({"bpda": dict(bpda)} if bpda else {}),
        "config": dataclasses.asdict(config),
        **({"transfer_source": str(transfer_from)} if transfer_from is not None else {}),
    }
    used = {**origins(opened), **({"transfer source": Path(transfer_from)} if transfer_from is not None else {})}
    notes = [f"Verdict — {v}" for v in verdicts]
    notes += [f"{label} {a.norm}: {w}" for label, per in audits.items() for a in per for w in a.warnings]
    return AuditResult(
        Result(NAME, attacks, settings, used, ATTACK_LAYOUT, notes=notes),
        Result("audit-diagnostics", diagnostics, settings, used, DIAGNOSTICS_LAYOUT, notes=list(notes)),
        verdicts, audits,
    )


def _tidy(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows[["model", *[c for c in rows.columns if c != "model"]]].copy()
    rows.insert(2, "norm_label", rows["norm"].map(SYMBOLS))
    rows.insert(4, "eps_label", [format_eps(e, p) for e, p in zip(rows["eps"], rows["norm"])])
    return rows
