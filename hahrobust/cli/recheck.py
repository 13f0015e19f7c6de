"""hahrobust recheck: verify saved adversarial examples again with a model (``attack --save-adv``, ``audit --save-adv``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from hahrobust.attacks.adversarial_files import recheck
from hahrobust.attacks.norms import format_eps
from hahrobust.checkpoint import load_checkpoint
from hahrobust.cli._common import DEVICE, console, handle_errors
from hahrobust.devices import resolve_device

NAME = "recheck"
HELP = ("Verify saved adversarial examples again with a checkpoint: each must be finite, in [0, 1], within its ε and "
        "still fool the model (a violation is exit status 3); prints the recomputed robust accuracy per file and ε.")


@handle_errors
def command(
    checkpoint: Path = typer.Argument(..., help="The hahrobust checkpoint the examples were made for."),
    files: list[Path] = typer.Argument(..., help="Adversarial-example files (.safetensors) written with --save-adv."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per forward pass.",
                                             show_default="the batch size the examples were made with"),
    device: str = DEVICE,
) -> None:
    model, _ = load_checkpoint(checkpoint, resolve_device(device))
    table = Table(title=f"Recheck with {checkpoint.name}: every example verified again")
    for column in ("file", "attack", "norm", "ε", "n", "robust"):
        table.add_column(column, justify="left" if column in ("file", "attack") else "right")
    for path in files:
        rows = recheck(model, path, device=resolve_device(device), batch_size=batch_size)
        for row in rows.to_dict("records"):
            table.add_row(path.name, str(row["attack"]), str(row["norm"]), format_eps(row["eps"], row["norm"]),
                          str(row["n"]), f"{row['robust_acc']:.1%}")
    console.print(table)


__all__ = ["HELP", "NAME", "command"]
