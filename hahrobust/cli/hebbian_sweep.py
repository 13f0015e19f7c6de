"""hahrobust hebbian-sweep: train the hebb-net configurations of Table 2 (Amato et al. 2019) and tabulate them.

Also holds what ``hahrobust train --model hebb-net`` needs beyond the VGG options: turning the flags into
a model config and a :class:`~hahrobust.training.hebbian.HebbianTrainConfig`, and the training call.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import typer

from hahrobust.distributed import require_single_process
from rich.table import Table

from hahrobust.cli._common import DATA_HELP, console, data_path, handle_errors, load_split, make_progress
from hahrobust.devices import resolve_device
from hahrobust.errors import HahrobustError
from hahrobust.results import check_out_dir, show, write
from hahrobust.training import run_paths
from hahrobust.training.hebbian import (
    HEBBIAN_PRESETS, ROW_SETS, HebbianTrainConfig, default_zca, hebbian_preset, sweep_hebbnet, sweep_rows,
    train_hebbnet,
)

NAME = "hebbian-sweep"
HELP = "Train the Hebbian/gradient/random layer configurations of Amato et al. 2019 (Table 2) and tabulate accuracy."

#: Model flags of ``train`` that a hebb-net understands (the rest are VGG/HaH settings).
HEBBNET_MODEL_FLAGS = ("width",)


def resolve_layers(layers: str | None, rule: str | None, hebbian_layers: str | None) -> str:
    """The layer string from ``--layers``, or from ``--rule sgd|hebbian`` and ``--hebbian-layers 1,2``."""
    if layers is not None:
        if rule is not None or hebbian_layers is not None:
            raise HahrobustError("give either --layers or --rule/--hebbian-layers, not both")
        return layers.strip().upper()
    if rule is None:
        if hebbian_layers is not None:
            raise HahrobustError("--hebbian-layers needs --rule hebbian")
        return "GGGGGG"
    if rule not in ("sgd", "hebbian"):
        raise HahrobustError(f"unknown --rule {rule!r}; choose sgd or hebbian (or give --layers)")
    if rule == "sgd":
        if hebbian_layers is not None:
            raise HahrobustError("--hebbian-layers applies to --rule hebbian, not sgd")
        return "GGGGGG"
    if hebbian_layers is None:
        return "HHHHHH"
    try:
        chosen = {int(v) for v in hebbian_layers.split(",") if v.strip()}
    except ValueError:
        raise HahrobustError(f"--hebbian-layers must be comma-separated numbers 1-6, got {hebbian_layers!r}") from None
    if not chosen or not chosen <= set(range(1, 7)):
        raise HahrobustError(f"--hebbian-layers must name layers 1-6 (conv1-4, fc5, classifier): {hebbian_layers!r}")
    return "".join("H" if i in chosen else "G" for i in range(1, 7))


def hebbnet_settings(
    preset_name: str, model_flags: dict[str, Any], train_flags: dict[str, Any]
) -> tuple[dict[str, Any], HebbianTrainConfig]:
    """(model overrides, training config) from a hebb-net preset and the flags given (None = not given)."""
    chosen = hebbian_preset(preset_name)
    given_model = {k: v for k, v in model_flags.items() if v is not None}
    foreign = sorted(set(given_model) - set(HEBBNET_MODEL_FLAGS))
    if foreign:
        raise HahrobustError(f"--{foreign[0].replace('_', '-')} does not apply to hebb-net")
    fields = {f.name for f in dataclasses.fields(HebbianTrainConfig)}
    given_train = {k: v for k, v in train_flags.items() if v is not None}
    unknown = sorted(set(given_train) - fields)
    if unknown:  # a programming error in a caller
        raise ValueError(f"unknown hebb-net training setting(s): {', '.join(unknown)}")
    return {**chosen.model, **given_model}, HebbianTrainConfig(**{**chosen.train, **given_train})


def train_command(
    out: Path,
    preset_name: str,
    model_flags: dict[str, Any],
    train_flags: dict[str, Any],
    *,
    layers: str | None,
    rule: str | None,
    hebbian_layers: str | None,
    zca: bool | None,
    base: Path | None,
    data: str | None,
    download: bool,
    device: str,
    resume: bool,
    overwrite: bool,
) -> None:
    """``hahrobust train --model hebb-net …``: parse, train, print a one-row summary."""
    require_single_process("hebb-net training")
    layer_string = resolve_layers(layers, rule, hebbian_layers)
    overrides, config = hebbnet_settings(preset_name, model_flags, train_flags)
    overrides = {**overrides, "layers": layer_string, "zca": default_zca(layer_string) if zca is None else zca}
    torch_device = resolve_device(device)
    if out.suffix != ".safetensors":
        raise HahrobustError(f"{out}: the checkpoint must end in .safetensors")
    path = data_path(data)
    with make_progress() as progress:
        train_images = load_split(path, "train", download=download, progress=progress)
        test_images = load_split(path, "test", download=download, progress=progress)
        result = train_hebbnet(
            train_images, test_images, out, model_overrides=overrides, config=config, base=base,
            dataset={"source": train_images.source, "train_n": len(train_images), "test_n": len(test_images)},
            device=torch_device, resume=resume, overwrite=overwrite, progress=progress,
        )
    metrics = result.metadata["metrics"]
    table = Table(title=f"hebb-net {layer_string} ({preset_name} preset) → {out}")
    for column in ("layers", "train acc", "val acc", "test acc", "test images", "log"):
        table.add_column(column)
    val = metrics.get("val_acc")
    table.add_row(
        layer_string, f"{100 * metrics['train_acc']:.2f}%", "—" if val is None else f"{100 * val:.2f}%",
        f"{100 * metrics['test_acc']:.2f}%", str(metrics["test_n"]), str(run_paths(out)[1]),
    )
    console.print(table)


@handle_errors
def command(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for checkpoints/ and hebbian-sweep.csv/.md/.json/.png."),
    rows: str = typer.Option(
        "table2", help=f"Layer strings (e.g. HHGGGG) and/or row sets, comma-separated: {', '.join(ROW_SETS)}."
    ),
    preset_name: str = typer.Option("small", "--preset", help=f"{' | '.join(HEBBIAN_PRESETS)} (scale and epochs)."),
    epochs: Optional[int] = typer.Option(None, help="SGD epochs (lr halved every epoch in the second half)."),
    hebbian_epochs: Optional[int] = typer.Option(None, help="Hebbian epochs per Hebbian layer (paper 2)."),
    batch_size: Optional[int] = typer.Option(None, help="SGD batch size (paper 64)."),
    lr: Optional[float] = typer.Option(None, help="SGD learning rate (paper 1e-3)."),
    weight_decay: Optional[float] = typer.Option(None, help="SGD L2 penalty (paper 0.06)."),
    hebbian_lr: Optional[float] = typer.Option(None, help="Hebbian learning rate η (paper 0.1)."),
    val_size: Optional[int] = typer.Option(None, help="Training images held out to pick the best epoch (paper 10,000)."),
    train_subset: Optional[int] = typer.Option(None, help="Train on a class-balanced subset of N of the other images."),
    test_subset: Optional[int] = typer.Option(None, help="Score on a class-balanced subset of N test images."),
    width: Optional[float] = typer.Option(None, help="Channel multiplier (1.0: the paper's 96/128/192/256/300)."),
    zca: Optional[bool] = typer.Option(None, "--zca/--no-zca", help="ZCA-whiten inputs (default: rows whose conv1 is Hebbian)."),
    seed: Optional[int] = typer.Option(None, help="Seed for initialisation, data split and order."),
    data: Optional[str] = typer.Option(None, help=DATA_HELP),
    download: bool = typer.Option(False, help="Let torchvision download CIFAR-10 into --data."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    resume: bool = typer.Option(False, help="Reuse finished rows and continue an interrupted one."),
    overwrite: bool = typer.Option(False, help="Retrain every row, replacing existing checkpoints."),
) -> None:
    require_single_process("hebbian-sweep")
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
