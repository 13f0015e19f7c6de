"""hahrobust report: the paper's evaluation of a model pair in one command, with rule-based verdicts on its claims
(library: hahrobust.report.run_report)."""

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
from hahrobust.errors import HahrobustError
from hahrobust.report import BUDGETS, resolve, run_report
from hahrobust.report.page import masking_word

NAME = "report"
HELP = ("The paper's whole evaluation of MODEL against BASELINE (clean, sparsity, SNR, noise, Table 1 with the audit's "
        "worst case, Fig. 5, optionally common corruptions), with a verdict per claim from paired tests; writes report.md, .html, .json and figures.")


@handle_errors
def command(
    checkpoints: list[Path] = CHECKPOINTS,
    label: Optional[list[str]] = LABEL,
    budget: str = typer.Option("standard", "--budget", help=f"{' | '.join(BUDGETS)}: images, steps and restarts "
                               "per step (see hahrobust.report.budget).", show_default=True),
    images: Optional[int] = typer.Option(None, "--images", metavar="N", show_default="the budget's",
                                         help="A class-balanced subset of N test images for clean, sparsity, SNR and noise."),
    attack_images: Optional[int] = typer.Option(None, "--attack-images", help="Images for Table 1 and Fig. 5.",
                                                show_default="the budget's"),
    steps: Optional[int] = typer.Option(None, "--steps", help="Steps of the audit's PGD and of FMN/DDN.",
                                        show_default="the budget's"),
    restarts: Optional[int] = typer.Option(None, "--restarts", help="Restarts of the audit's PGD.",
                                           show_default="the budget's"),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Noise draws per image.", show_default="the budget's"),
    corruptions: Optional[str] = typer.Option(
        None, "--corruptions", show_default="the budget's: none, all for full",
        help="CIFAR-10-C corruptions to generate from the --images subset and compare on (names and groups as "
        "corruption-sweep takes them, e.g. all, noise, blur; none to leave them out)."),
    data: Optional[str] = DATA,
    out: Path = typer.Option(..., "--out", "-o", help="Folder of the report, its figures and its step journal."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed report in --out (same settings only)."),
    batch_size: int = typer.Option(100, "--batch-size", help="Images per batch (attacks keep a graph per batch)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Steps run side by side in this many worker processes, each "
                             "with its share of the threads (CPU only; the same report, per-step bars not shown)."),
    device: str = DEVICE,
    seed: int = SEED,
) -> None:
    # each step's batches could be split across ranks, but the step store, journals and files are one process's
    require_single_process("report (its --jobs splits the steps between processes instead)")
    chosen = resolve(budget, images=images, attack_images=attack_images, steps=steps, restarts=restarts, repeats=repeats,
                     corruptions=corruptions)
    if len(checkpoints) != 2:
        raise HahrobustError(f"a report compares two models, MODEL and BASELINE; got {len(checkpoints)}")
    options = EvalOptions(checkpoints, label, None, data, batch_size, device, seed, None)
    session = open_step_session(NAME, out, resume, options)
    with make_progress() as progress:
        test = load_test_set(options, progress)
        report = run_report(session.models, test, chosen, out=out, seed=seed, batch_size=batch_size,
                            device=session.device, resume=resume, progress=progress, jobs=jobs)
    # Narrow enough for an 80-column terminal or a CI log: the claim's key, its verdict and p; the effects, both
    # intervals and the reasons are in report.md / report.html.
    table = Table(title=f"Claims: {report.labels['a']} (A) vs {report.labels['b']} (B), budget {chosen.name}",
                  box=box.SIMPLE)
    for column in ("claim", "verdict", "p (Holm)"):
        table.add_column(column)
    for j in report.judged:
        table.add_row(j.claim.key, j.final, f"{j.p_adjusted:.2g}")
    console.print(table)
    for side, label in report.labels.items():
        console.print(f"masking: {label}: {masking_word(report, side)}", markup=False, highlight=False)
    console.print(f"each claim's effect, intervals and reason: {out / 'report.md'}", highlight=False, soft_wrap=True)
    if report.seconds:
        console.print(f"steps run now: {sum(report.seconds.values()):.0f} s ({torch.get_num_threads()} threads)")
    console.print(f"wrote {', '.join(str(p) for p in report.paths)}", highlight=False, soft_wrap=True)


__all__ = ["HELP", "NAME", "command"]
