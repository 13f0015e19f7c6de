"""hahrobust ablate: the paper's Table 2 — train every ablation variant from one preset and seed, then evaluate."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from hahrobust.distributed import require_single_process

from hahrobust.studies.ablation import VARIANTS, run_ablation
from hahrobust.cli._common import (
    DEVICE, TRAIN_DATA, console, data_path, handle_errors, load_split, make_progress, refuse_to_replace,
)
from hahrobust.cli._eval import N
from hahrobust.devices import resolve_device
from hahrobust.results import Result, check_out_dir, show, write
from hahrobust.studies.paper_table import convergence_notes, paired_layout, paper_layout

NAME = "ablate"
PAIRED = "ablate-paired"  # each variant against the full model, on the same images


@handle_errors
def command(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for checkpoints/, the evaluation cache, ablate.csv/.md/.json/.png and ablate-paired.csv/.md/.json (each variant's paired test against the full model)."),
    preset_name: str = typer.Option("small", "--preset", help="paper | authors | small: the recipe every variant is trained with."),
    variants: Optional[str] = typer.Option(None, help=f"Comma-separated subset of: {', '.join(VARIANTS)}.", show_default="all"),
    seed: Optional[int] = typer.Option(None, help="Seed for training and evaluation.", show_default="the preset's"),
    epochs: Optional[int] = typer.Option(None, help="Override the preset's epochs."),
    from_dir: Optional[Path] = typer.Option(None, "--from", help="Reuse <variant>.safetensors checkpoints from this directory."),
    n: Optional[int] = N,
    attack: str = typer.Option("autoattack", help="Attack for the adversarial columns: autoattack | pgd."),
    aa_version: str = typer.Option("standard", help="AutoAttack version: standard | paper."),
    adaptive: bool = typer.Option(
        False, "--adaptive", help="Beside each adversarial column, the audit's per-image worst case (hahrobust audit's ensemble)."
    ),
    batch_size: int = typer.Option(100, help="Evaluation batch size."),
    data: Optional[str] = TRAIN_DATA,
    device: str = DEVICE,
    resume: bool = typer.Option(
        False, "--resume", help="Continue an earlier run in --out, reusing its finished variants and evaluations."
    ),
) -> None:
    require_single_process("ablate (run each variant's `hahrobust train` under torchrun instead)")
    started = datetime.now(timezone.utc)
    out_dir = check_out_dir(out)  # made by the first checkpoint or the results
    # finished variants are always reused (checkpoints/, the evaluation cache); only the table needs a say-so
    refuse_to_replace(out_dir, (NAME, PAIRED), overwrite=False, resume=resume, resumable=True,
                      overwritable=False)
    torch_device = resolve_device(device)
    names = [v.strip() for v in variants.split(",") if v.strip()] if variants else None
    path = data_path(data)
    with make_progress() as progress:
        train_images = load_split(path, "train", progress=progress)
        test_images = load_split(path, "test", progress=progress)
        run = run_ablation(
            out_dir, train_images, test_images, preset_name=preset_name, variants=names, seed=seed, epochs=epochs,
            from_dir=from_dir, n_eval=n, attack=attack, aa_version=aa_version, adaptive=adaptive, batch_size=batch_size,
            device=torch_device, progress=progress,
        )
    settings = {"preset": preset_name, "variants": names or list(VARIANTS), "seed": seed, "epochs": epochs,
                "n": n, "attack": attack, "aa_version": aa_version, "adaptive": adaptive, "data": test_images.source}
    layout = paper_layout(
        "Accuracies for the ablation study (Table 2)",
        notes=("Every variant trained from the same preset and seed; adversarial columns are verified robust "
               "accuracies of the chosen attack.",),
    )
    result = Result(NAME, run.rows, settings, run.checkpoints, layout, started=started,
                    notes=convergence_notes(run.rows))  # whether each worst case is final
    show(result, console)
    paths = write(result, out_dir)
    if not run.paired.empty:
        paired = Result(PAIRED, run.paired, settings, run.checkpoints, paired_layout(), started=started)
        show(paired, console)
        paths += write(paired, out_dir)
    console.print(f"wrote {', '.join(str(p) for p in paths)}", highlight=False, soft_wrap=True)
