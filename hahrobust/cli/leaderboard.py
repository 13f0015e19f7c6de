"""hahrobust leaderboard: many models against one baseline, ranked by the audit's worst case
(library: hahrobust.leaderboard.run_leaderboard)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer
from rich import box
from rich.table import Table

from hahrobust.cli._common import console, handle_errors, make_progress
from hahrobust.cli._eval import CHECKPOINTS, DATA, DEVICE, LABEL, SEED, EvalOptions, load_test_set, open_step_session
from hahrobust.distributed import require_single_process
from hahrobust.leaderboard import run_leaderboard
from hahrobust.leaderboard.page import board_frame
from hahrobust.report import BUDGETS, resolve

NAME = "leaderboard"


@handle_errors
def command(
    checkpoints: list[Path] = CHECKPOINTS,
    label: Optional[list[str]] = LABEL,
    baseline: str = typer.Option(..., "--baseline", "-b", help="The label of the model every other is tested against "
                                 "(one of MODELS; its label, or its model name when no --label is given)."),
    budget: str = typer.Option("standard", "--budget", help=f"{' | '.join(BUDGETS)}: images, steps and restarts "
                               "per step, as a report's (see hahrobust.report.budget); certificates: N = 500 / 2,000 / "
                               "10,000 noise samples.", show_default=True),
    images: Optional[int] = typer.Option(None, "--images", metavar="N", show_default="the budget's",
                                         help="A class-balanced subset of N test images for clean and noise."),
    attack_images: Optional[int] = typer.Option(None, "--attack-images", show_default="the budget's",
                                                help="Images for AutoAttack, the audit and certificates."),
    corruptions: Optional[str] = typer.Option(
        None, "--corruptions", show_default="the budget's: none, all for full",
        help="CIFAR-10-C corruptions to generate from the --images subset (names and groups as corruption-sweep "
        "takes them; the column is their mean)."),
    data: Optional[str] = DATA,
    out: Path = typer.Option(..., "--out", "-o", help="Folder of the leaderboard and every model's step journal."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed leaderboard in --out (same settings only; "
                                "a model added since runs its steps, the others' are read back)."),
    batch_size: int = typer.Option(100, "--batch-size", help="Images per batch (attacks keep a graph per batch)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Steps run side by side in this many worker processes, each "
                             "with its share of the threads (CPU only; the same leaderboard, per-step bars not shown)."),
    device: str = DEVICE,
    seed: int = SEED,
) -> None:
    require_single_process("leaderboard (its --jobs splits the steps between processes instead)")
    chosen = resolve(budget, images=images, attack_images=attack_images, corruptions=corruptions)
    options = EvalOptions(checkpoints, label, None, data, batch_size, device, seed, None)
    session = open_step_session(NAME, out, resume, options)
    with make_progress() as progress:
        test = load_test_set(options, progress)
        board = run_leaderboard(session.models, test, chosen, baseline=baseline, out=out, seed=seed,
                                batch_size=batch_size, device=session.device, resume=resume, progress=progress,
                                jobs=jobs)
    frame = board_frame(board)
    # Narrow enough for a CI log: rank, model, the two worst cases, the verdict and AutoAttack's rank; every other
    # column, the intervals' tests and the verdicts in full are in leaderboard.md / .html.
    shown = ["rank", "model", "worst case ℓ∞ 2/255", "worst case ℓ2 0.25", "audit verdict", "AutoAttack rank"]
    table = Table(title=f"Leaderboard against {board.baseline}, budget {chosen.name} (% [95 % CI]; ▲▼ resolved, ≈ not)",
                  box=box.SIMPLE)
    for column in shown:
        table.add_column(column)
    for row in frame[shown].itertuples(index=False):
        table.add_row(*row)
    console.print(table)
    if board.seconds:
        console.print(f"steps run now: {sum(board.seconds.values()):.0f} s ({torch.get_num_threads()} threads)")
    console.print(f"wrote {', '.join(str(p) for p in board.paths)}", highlight=False, soft_wrap=True)


__all__ = ["NAME", "command"]
