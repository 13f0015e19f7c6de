"""hahrobust sparsity: Hoyer sparsity and non-zero fraction of the leading conv blocks (the paper's Fig. 2)
(library: hahrobust.evaluate.sparsity)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hahrobust.cli._common import handle_errors, make_progress
from hahrobust.cli._eval import (
    BATCH_SIZE,
    CHECKPOINTS,
    DATA,
    DEVICE,
    LABEL,
    LAYERS,
    NORMALIZE,
    OUT,
    OVERWRITE,
    SEED,
    WEIGHTS,
    EvalOptions,
    N,
    finish,
    load_test_set,
    open_session,
)
from hahrobust.evaluate.activations import SPARSITY_NAME as NAME, block_counts, sparsity


@handle_errors
def command(
    checkpoints: list[Path] = CHECKPOINTS,
    label: Optional[list[str]] = LABEL,
    blocks: Optional[int] = typer.Option(
        None, "--blocks",
        help="Number of leading conv blocks (and of --layers layers) to measure.",
        show_default="the most HaH blocks among the hahrobust models; every layer --layers picks",
    ),
    layers: Optional[str] = LAYERS,
    n: Optional[int] = N,
    data: Optional[str] = DATA,
    batch_size: int = BATCH_SIZE,
    device: str = DEVICE,
    seed: int = SEED,
    out: Optional[Path] = OUT,
    overwrite: bool = OVERWRITE,
    weights: Optional[list[Path]] = WEIGHTS,
    normalize: Optional[list[str]] = NORMALIZE,
) -> None:
    options = EvalOptions(
        checkpoints, label, n, data, batch_size, device, seed, out, weights=weights, normalize=normalize,
        overwrite=overwrite, results=(NAME,),
    )
    session = open_session(options)
    block_counts(session.models, blocks, layers)  # a count or --layers a model does not have fails before any data
    with make_progress() as progress:
        test = load_test_set(options, progress)
        result = sparsity(session.models, test, blocks=blocks, layers=layers, seed=seed, batch_size=batch_size,
                          device=session.device, progress=progress)
    finish(result, session)


__all__ = ["NAME", "command"]
