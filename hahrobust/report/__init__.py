"""``hahrobust report``: the paper's whole evaluation of a model pair, with a verdict on each of its claims.

    from hahrobust.evaluate import open_models
    from hahrobust.report import run_report, resolve
    models = open_models(["hah.safetensors", "base.safetensors"])
    report = run_report(models, test, resolve("quick"), out=Path("r"))   # r/report.{md,html,json}, r/*.png

Steps (:mod:`.steps`, journaled in ``OUT/steps`` by :mod:`.store`), the budgets (:mod:`.budget`), the claims and
their verdicts (:mod:`.claims`), the figures' tables (:mod:`.tables`) and the files (:mod:`.render`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.progress import Progress

from hahrobust.data import ImageSet
from hahrobust.evaluate.opening import LoadedModel
from hahrobust.report.budget import BUDGETS, Budget, resolve
from hahrobust.report.claims import ALPHA, Judged, claims, judge_all
from hahrobust.report.render import write_report
from hahrobust.report.steps import check_jobs, header, make_pair, provenance, run_steps, step_threads
from hahrobust.report.store import StepStore
from hahrobust.report.tables import all_tables

__all__ = ["BUDGETS", "Budget", "Report", "resolve", "run_report"]


@dataclass(frozen=True)
class Report:
    labels: dict[str, str]
    settings: dict[str, Any]
    provenance: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    judged: list[Judged]
    masking: dict[str, str]
    masking_evidence: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)  # steps run in this call only; not in the files
    paths: list[Path] = field(default_factory=list)


def run_report(models: list[LoadedModel], test: ImageSet, budget: Budget, *, out: Path, seed: int = 0,
               batch_size: int = 100, device: torch.device | str = "cpu", resume: bool = False,
               progress: Progress | None = None, after_step: Callable[[str], None] | None = None,
               jobs: int = 1) -> Report:
    """Run (or resume) every step for ``models`` = [MODEL, BASELINE] on ``test``, judge the claims and write the
    report's files in ``out``. Everything is checked before any step runs; a resume under other settings is refused.
    ``jobs`` > 1 runs the steps in that many worker processes (the same report; see :func:`.steps.run_steps`)."""
    device = torch.device(device)
    check_jobs(jobs, device)
    pair = make_pair(models, test, budget, seed=seed, batch_size=batch_size, device=device, out=Path(out))
    store = StepStore(Path(out), header(pair, step_threads(jobs)), resume=resume)
    steps, seconds = run_steps(pair, store, progress, after_step, jobs)
    labels = {s: m.label for s, m in pair.models.items()}
    judged = judge_all(claims(steps, seed=seed, resamples=budget.resamples))
    settings = {"budget": budget.settings(), "seed": seed, "alpha": ALPHA, "labels": labels,
                "images": {"stats": len(pair.stats_set), "attack": len(pair.attack_set)},
                "batch_size": batch_size, "device": str(device)}
    report = Report(labels, settings, provenance(pair), all_tables(steps, labels), judged,
                    {s: steps[f"audit-{s}"]["facts"]["verdict"] for s in labels},
                    {s: steps[f"audit-{s}"]["facts"]["masking"] for s in labels}, seconds)
    return Report(**{**report.__dict__, "paths": write_report(report, Path(out))})
