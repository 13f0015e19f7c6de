"""hahrobust info: a checkpoint's metadata as a table, or as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from hahrobust.checkpoint import read_metadata
from hahrobust.cli._common import console, handle_errors
from hahrobust.provenance import sha256_file

NAME = "info"


@handle_errors
def command(
    checkpoint: Path = typer.Argument(..., help="A hahrobust .safetensors checkpoint."),
    as_json: bool = typer.Option(False, "--json", help="Print the metadata as JSON."),
) -> None:
    metadata = read_metadata(checkpoint)
    metadata["sha256"] = sha256_file(checkpoint)
    if as_json:
        typer.echo(json.dumps(metadata, indent=2, sort_keys=True))
        return
    table = Table(title=str(checkpoint), show_header=True)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key, value in _flatten(metadata):
        table.add_row(key, value)
    console.print(table)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as dotted keys; lists of records (the training history) summarised by length."""
    if isinstance(value, dict):
        return [row for k in sorted(value) for row in _flatten(value[k], f"{prefix}{k}.")]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [(prefix.rstrip("."), f"{len(value)} rows")]
    return [(prefix.rstrip("."), json.dumps(value) if not isinstance(value, str) else value)]
