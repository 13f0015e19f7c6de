"""``hahrobust calibrate``: the audit's verdict on defences whose truth is known (:mod:`hahrobust.studies.calibration`).

Per case: the audit at each norm with AutoAttack included (journaled per member and batch, so a killed run resumes),
the effort-controlled masking test Holm-adjusted over the case's norms, and the attack self-test with the audit's
gradient-based members. One table, one row per case and norm; each case's audit files beside it. A case is the unit of work the command
caches: :meth:`CaseResult.to_record` keeps what the table needs, so cases can run in separate processes and a final
``--resume`` assembles the table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.progress import Progress

from hahrobust.attacks.norms import DEFAULT_EPS, SYMBOLS
from hahrobust.data import ImageSet
from hahrobust.evaluate._common import as_device, common_settings, origins
from hahrobust.evaluate.auditing import AuditResult, audit
from hahrobust.evaluate.opening import LoadedModel
from hahrobust.results import Layout, Result
from hahrobust.studies.audit import AuditConfig, default_ensemble, judge_all
from hahrobust.studies.calibration import Case, calibration_rows, ensemble_attack, self_test_members
from hahrobust.studies.self_test import SelfTestResult, self_test

NAME = "calibrate"
PERCENT = "{:.1%}"
LAYOUT = Layout(
    title="The audit's verdict on defences whose truth is known (calibration)",
    index=("model", "truth", "norm_label", "eps_label"),
    values=("clean", "pgd", "autoattack", "worst", "convergence", "verdict", "b", "c", "p_holm", "masked_share",
            "self_test", "agrees"),
    formats={"clean": PERCENT, "pgd": PERCENT, "autoattack": PERCENT, "worst": PERCENT, "b": "{:.0f}",
             "c": "{:.0f}", "p_holm": "{:.2g}", "masked_share": "{:+.1%}", "self_test": "{:.0%}"},
    intervals={k: (f"{k}_low", f"{k}_high") for k in ("clean", "pgd", "autoattack", "worst", "masked_share",
                                                       "self_test")},
    labels={"norm_label": "norm", "eps_label": "ε", "pgd": "PGD", "autoattack": "AutoAttack", "worst": "worst case",
            "p_holm": "Holm p", "masked_share": "masked share", "self_test": "self-test"},
    notes=(
        "Accuracies over the audited images with 95 % Wilson intervals. PGD: the audit's plain PGD (100 steps × 5 "
        "restarts); AutoAttack: Croce & Hein's standard ensemble; worst case: no attack of the audit broke the image.",
        "Masking test (effort-controlled): on the images every plain reference attack left robust, b = broken only by "
        "gradient-changing attacks (BPDA, EOT, smooth twin), c = only by their plain twins (same budget, plain "
        "gradients, fresh random starts); one-sided exact McNemar, Holm over the case's norms. Masked share = "
        "(b − c)/n with Newcombe's paired interval.",
        "Self-test: the binarization test (Zimmermann et al. 2022): a binary readout on the model's own features "
        "plants an adversarial example inside the ε-ball; the share of images on which the audit's gradient-based "
        "members found one (Wilson interval). Below 95 %, the worst case is not trustworthy for that model.",
    ),
    drawer=lambda result: draw_calibration(result),
)


def draw_calibration(result: Result) -> Any:
    """One panel per norm: per case, plain PGD, AutoAttack and the worst case with their intervals, the verdict
    above each group (red when it disagrees with the truth)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result.rows
    panels = list(rows.groupby(["norm_label", "eps_label"], sort=False))
    figure = Figure(figsize=(max(6.0, 1.9 * rows["model"].nunique()) * len(panels) / 1.4, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    bars = (("pgd", "PGD (plain)", "#7f7f7f"), ("autoattack", "AutoAttack", "#1f77b4"), ("worst", "worst case", "#d62728"))
    for number, ((norm, eps), part) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), number + 1)
        for k, (column, label, colour) in enumerate(bars):
            x = [i + (k - 1) * 0.27 for i in range(len(part))]
            values = part[column].to_numpy() * 100
            err = [values - part[f"{column}_low"].to_numpy() * 100, part[f"{column}_high"].to_numpy() * 100 - values]
            ax.bar(x, values, 0.27, yerr=err, color=colour, label=label, capsize=2, error_kw={"lw": 0.8})
        top = float((part[["pgd_high", "autoattack_high", "worst_high"]].max(axis=1) * 100).max())
        for i, (_, row) in enumerate(part.iterrows()):
            ax.text(i, top + 3, str(row["verdict"]).replace("no sign of masking", "no sign"), ha="center",
                    fontsize=8, color="#222222" if row["agrees"] else "#d62728")
        ax.set_xticks(range(len(part)), list(part["model"]), fontsize=8)
        ax.set_ylim(0, top + 10)
        ax.set_ylabel("robust accuracy (%)")
        ax.set_title(f"{norm} ε = {eps}", fontsize=10, loc="right")
        if number == 0:
            ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.08), ncol=3, frameon=False)
    return figure


@dataclass(frozen=True)
class CaseResult:
    """One case's calibration: its table rows and notes (the verdict line, the self-test lines), its audit results
    and its self-tests per norm. ``rows`` and ``notes`` are all the table needs (``to_record`` keeps them)."""

    case: Case
    rows: pd.DataFrame
    notes: list[str]
    audit: AuditResult | None = None
    self_tests: dict[str, SelfTestResult] = field(default_factory=dict)

    def to_record(self, settings: dict[str, Any]) -> dict[str, Any]:
        """What a finished case leaves for a later ``--resume``: its rows and notes, under the settings it ran with."""
        # Python floats, not to_json's (10 significant digits): a reused case's rows equal the ones it computed.
        rows = [{k: v.item() if hasattr(v, "item") else v for k, v in r.items()} for r in self.rows.to_dict("records")]
        return {"settings": settings, "rows": rows, "notes": self.notes}

    @classmethod
    def from_record(cls, c: Case, record: dict[str, Any]) -> CaseResult:
        return cls(c, pd.DataFrame.from_records(record["rows"]), list(record["notes"]))


def calibration_settings(data: ImageSet, *, norms: Sequence[str], rounds: int | None, self_test_images: int,
                         seed: int, batch_size: int, device: torch.device | str) -> dict[str, Any]:
    """The settings that change a case's numbers (a case finished under others is not reused)."""
    return {
        **common_settings(data, seed=seed, batch_size=batch_size, device=device), "norms": list(norms),
        "eps": {p: list(DEFAULT_EPS[p]) for p in norms}, "effort_rounds": _config(rounds).effort_rounds,
        # every audit setting (the rounds' schedule among them): a case run under another audit config is redone
        "audit": asdict(_config(rounds)),
        "self_test_images": self_test_images, "self_test_members": [m.name for m in self_test_members()],
    }


def _config(rounds: int | None) -> AuditConfig:
    return AuditConfig() if rounds is None else replace(AuditConfig(), effort_rounds=rounds)


def calibrate_case(
    c: Case,
    model: LoadedModel,
    transfer_from: Path,
    data: ImageSet,
    *,
    norms: Sequence[str] = ("linf", "l2"),
    rounds: int | None = None,
    self_test_images: int = 50,
    seed: int = 0,
    batch_size: int = 100,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    journal_dir: Path | None = None,
    resume: bool = False,
) -> CaseResult:
    """Audit ``model`` at ``norms`` (the paper's ε) with AutoAttack included and ``transfer_from`` as its transfer
    source, at most ``rounds`` convergence rounds (default the audit's); then the self-test on ``self_test_images``
    images per norm with the audit's gradient-based members. Journals (``journal_dir``, stem = the case's name) make
    a killed case resumable (``resume``)."""
    device = as_device(device)
    config = _config(rounds)
    result = audit([model], data, norms=norms, transfer_from=transfer_from, ensemble=default_ensemble(("autoattack",)),
                   config=config, seed=seed, batch_size=batch_size, device=device, progress=progress,
                   journal_dir=journal_dir, journal_stems={model.label: c.name}, resume=resume)
    per_norm = result.audits[model.label]
    tests = {
        a.norm: self_test(model.model, data, norm=a.norm, eps=a.eps[0], images=self_test_images, seed=seed,
                          attack=ensemble_attack(norm=a.norm, eps=a.eps[0], config=config, seed=seed,
                                                 batch_size=batch_size, device=device),
                          batch_size=batch_size, device=device)
        for a in per_norm
    }
    rows = calibration_rows(c, per_norm, judge_all(per_norm, config.alpha), tests)
    notes = [*result.verdicts, *(f"{t.line()} ({c.name})" for t in tests.values())]
    return CaseResult(c, rows, notes, result, tests)


def calibration_table(results: Sequence[CaseResult], models: Sequence[LoadedModel], settings: dict[str, Any]) -> Result:
    """The calibration table over finished cases (one row per case and norm), with the cases' definitions."""
    rows = pd.concat([r.rows for r in results], ignore_index=True)
    rows.insert(3, "norm_label", rows["norm"].map(SYMBOLS))
    cases = {r.case.name: dataclasses.asdict(r.case) for r in results}
    notes = [n for r in results for n in r.notes]
    notes += [f"{r.case.name}: truth {r.case.truth} ({r.case.source}); retrain: {r.case.train}" for r in results]
    return Result(NAME, rows, {**settings, "cases": cases}, origins(models), LAYOUT, notes=notes)


__all__ = ["CaseResult", "LAYOUT", "NAME", "calibrate_case", "calibration_settings", "calibration_table",
           "draw_calibration"]
