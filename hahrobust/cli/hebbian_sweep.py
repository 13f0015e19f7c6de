"""hahrobust hebbian-sweep: train the hebb-net configurations of Table 2 (Amato et al. 2019) and tabulate them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hahrobust.cli._common import (
    DEVICE, TRAIN_DATA, OVERWRITE, console, data_path, handle_errors, load_split, make_progress, refuse_to_replace,
)
from hahrobust.devices import resolve_device
from hahrobust.distributed import require_single_process
from hahrobust.results import check_out_dir, show, write
from hahrobust.studies.hebbian_sweep import ROW_SETS, sweep_hebbnet, sweep_rows
from hahrobust.training.hebbian_config import HEBBIAN_PRESETS, hebbnet_settings

NAME = "hebbian-sweep"


@handle_errors
def command(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for checkpoints/ and hebbian-sweep.csv/.md/.json/.png."),
    rows: str = typer.Option(
        "table2", help=f"Layer strings (e.g. HHGGGG) and/or row sets, comma-separated: {', '.join(ROW_SETS)}."
    ),
    preset_name: str = typer.Option("small", "--preset", help=f"{' | '.join(HEBBIAN_PRESETS)} (scale and epochs)."),
    epochs: Optional[int] = typer.Option(None, help="SGD epochs (lr halved every epoch in the second half)."),
    hebbian_epochs: Optional[int] = typer.Option(None, help="Hebbian epochs per Hebbian layer (paper 2)."),
    batch_size: Optional[int] = typer.Option(None, help="SGD batch size (paper 64).", show_default="the preset's"),
    lr: Optional[float] = typer.Option(None, help="SGD learning rate (paper 1e-3)."),
    weight_decay: Optional[float] = typer.Option(None, help="SGD L2 penalty (paper 0.06)."),
    hebbian_lr: Optional[float] = typer.Option(None, help="Hebbian learning rate η (paper 0.1)."),
    val_size: Optional[int] = typer.Option(None, help="Training images held out to pick the best epoch (paper 10,000)."),
    train_subset: Optional[int] = typer.Option(None, help="Train on a class-balanced subset of N of the other images."),
    test_subset: Optional[int] = typer.Option(None, help="Score on a class-balanced subset of N test images."),
    width: Optional[float] = typer.Option(None, help="Channel multiplier (1.0: the paper's 96/128/192/256/300)."),
    zca: Optional[bool] = typer.Option(None, "--zca/--no-zca", help="ZCA-whiten inputs.", show_default="rows whose conv1 is Hebbian"),
    seed: Optional[int] = typer.Option(None, help="Seed for initialisation, data split and order."),
    data: Optional[str] = TRAIN_DATA,
    download: bool = typer.Option(False, help="Let torchvision download CIFAR-10 into --data."),
    device: str = DEVICE,
    resume: bool = typer.Option(False, help="Reuse finished rows and continue an interrupted one."),
    overwrite: bool = OVERWRITE,
) -> None:
    require_single_process("hebbian-sweep")
    refuse_to_replace(out, (NAME,), overwrite=overwrite, resume=resume, resumable=True)
    chosen_rows = sweep_rows(rows)
    overrides, config = hebbnet_settings(
        preset_name, {"width": width},
        dict(epochs=epochs, hebbian_epochs=hebbian_epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
             hebbian_lr=hebbian_lr, val_size=val_size, train_subset=train_subset, test_subset=test_subset, seed=seed),
    )
    torch_device = resolve_device(device)
    out_dir = check_out_dir(out)  # made by the first checkpoint or the results
    path = data_path(data)
    with make_progress() as progress:
        train_images = load_split(path, "train", download=download, progress=progress)
        test_images = load_split(path, "test", download=download, progress=progress)
        result = sweep_hebbnet(
            train_images, test_images, out_dir, chosen_rows, config=config, model_overrides=overrides, zca=zca,
            dataset={"source": train_images.source, "train_n": len(train_images), "test_n": len(test_images)},
            device=torch_device, resume=resume, overwrite=overwrite, progress=progress,
        )
    show(result, console)
    for written in write(result, out_dir):
        console.print(f"wrote {written}", highlight=False)
