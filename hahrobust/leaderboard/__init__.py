"""``hahrobust leaderboard``: many models against one baseline, ranked by the audit's worst case, every figure with its
interval and paired test.

    from hahrobust.evaluate import open_models
    from hahrobust.leaderboard import run_leaderboard
    from hahrobust.report import resolve
    models = open_models(["hah.safetensors", "kwta.safetensors", "base.safetensors"])
    board = run_leaderboard(models, test, resolve("quick"), baseline="base", out=Path("lb"))  # lb/leaderboard.*

Steps per model (:mod:`.steps`, each model's journaled in ``OUT/models/<label>``), the statistics and ranking
(:mod:`.table`), the files (:mod:`.page`). A report (``hahrobust report``) is the deeper look at one pair.
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
from hahrobust.errors import HahrobustError
from hahrobust.evaluate.opening import LoadedModel
from hahrobust.leaderboard.page import write_leaderboard
from hahrobust.leaderboard.steps import Board, make_board, plan, run_step, step_label, store, tasks
from hahrobust.leaderboard.table import ranking, rows
from hahrobust.provenance import git_commit, versions
from hahrobust.report.budget import Budget
from hahrobust.report.steps import check_jobs, model_id, step_threads
from hahrobust.report.store import StepStore
from hahrobust.report.workers import run_in_workers, step_progress

__all__ = ["Leaderboard", "run_leaderboard"]


@dataclass(frozen=True)
class Leaderboard:
    labels: list[str]
    baseline: str
    settings: dict[str, Any]
    provenance: dict[str, Any]
    rows: pd.DataFrame  # one per model and measure (:func:`.table.rows`)
    ranking: pd.DataFrame  # one per model, ranked (:func:`.table.ranking`)
    audits: dict[str, dict[str, Any]]  # per model: the audit step's facts (verdict, convergence)
    seconds: dict[str, float] = field(default_factory=dict)  # steps run in this call only; not in the files
    paths: list[Path] = field(default_factory=list)


def run_leaderboard(models: list[LoadedModel], test: ImageSet, budget: Budget, *, baseline: str, out: Path,
                    seed: int = 0, batch_size: int = 100, device: torch.device | str = "cpu", resume: bool = False,
                    progress: Progress | None = None, jobs: int = 1,
                    after_step: Callable[[str], None] | None = None) -> Leaderboard:
    """Run (or resume) every model's steps on ``test`` and write the board's files in ``out``. ``baseline`` is one of
    the models' labels. Everything is checked before any step runs; a model whose steps were started under other
    settings is refused. ``jobs`` > 1 runs the steps in that many worker processes (the same board)."""
    device = torch.device(device)
    check_jobs(jobs, device)
    labels = [m.label for m in models]
    if baseline not in labels:
        raise HahrobustError(f"--baseline {baseline!r} is none of the models' labels: {', '.join(labels)}")
    board = make_board(models, labels.index(baseline), test, budget, seed=seed, batch_size=batch_size, device=device,
                       out=Path(out))
    threads = step_threads(jobs)
    stores = [store(board, i, threads, resume) for i in range(len(models))]  # every header checked first
    names = plan(board)
    found = {(i, name): stores[i].get(name) for i in range(len(models)) for name in names}
    todo = [key for key, record in found.items() if record is None]
    seconds = _run(board, stores, todo, jobs, threads, progress, after_step, len(found))
    steps: dict[str, dict[str, dict[str, Any]]] = {}
    for (i, name), record in found.items():
        record = record or stores[i].get(name)
        assert record is not None  # every step was just stored or read
        steps.setdefault(labels[i], {})[name] = {"arrays": record[0], "facts": record[1]}
    table = rows(steps, baseline, seed=seed, resamples=budget.resamples)
    settings = {"budget": budget.settings(), "seed": seed, "baseline": baseline, "models": labels,
                "images": {"stats": len(board.stats_set), "attack": len(board.attack_set)},
                "certify": steps[baseline]["certify"]["facts"],
                "batch_size": batch_size, "device": str(device)}
    result = Leaderboard(labels, baseline, settings, _provenance(board), table, ranking(table, labels),
                         {label: s["audit"]["facts"] for label, s in steps.items()}, seconds)
    return Leaderboard(**{**result.__dict__, "paths": write_leaderboard(result, Path(out))})


def _run(board: Board, stores: list[StepStore], todo: list[tuple[int, str]], jobs: int, threads: int,
         progress: Progress | None, after_step: Callable[[str], None] | None, total: int) -> dict[str, float]:
    running, finished = step_progress(progress, "leaderboard", total, total - len(todo), after_step)
    if jobs > 1 and todo:
        return run_in_workers(tasks(board, stores, todo), jobs, threads, running, finished, "leaderboard step")
    seconds = {}
    for i, name in todo:
        label = step_label(board, i, name)
        running([label])
        seconds[label] = run_step(board, stores[i], i, name, progress)
        finished(label)
    return seconds


def _provenance(board: Board) -> dict[str, Any]:
    return {"models": {m.label: {"path": str(m.path) if m.path else None, "sha256": model_id(m)["sha256"],
                                 "model": m.metadata.get("model"), "metrics": m.metadata.get("metrics")}
                       for m in board.models},
            "versions": versions(), "git_commit": git_commit(),
            "images": {"stats": board.stats_set.source, "attack": board.attack_set.source}}
