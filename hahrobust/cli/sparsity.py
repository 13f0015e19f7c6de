"""hahrobust sparsity: Hoyer sparsity and non-zero fraction of the leading conv blocks (the paper's Fig. 2)."""

from __future__ import annotations

import dataclasses
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
    SEED,
    WEIGHTS,
    EvalOptions,
    N,
    common_settings,
    model_layers,
    finish,
    load_test_set,
    open_session,
    per_model,
)
from hahrobust.errors import HahrobustError
from hahrobust.metrics.sparsity import default_block_count, sparsity
from hahrobust.results import Figure, Layout, Result

NAME = "sparsity"
HELP = "Activation sparsity (normalized Hoyer measure, non-zero fraction) of the leading conv blocks (Fig. 2)."

LAYOUT = Layout(
    title="Activation sparsity per block (Fig. 2; Hoyer: lower = sparser)",
    index=("block",),
    columns=("model",),
    values=("hoyer", "nonzero", "zero_locations"),
    formats={"hoyer": "{:.3f}", "nonzero": "{:.1%}", "zero_locations": "{:.1%}"},
    labels={"hoyer": "Hoyer", "nonzero": "non-zero", "zero_locations": "all-zero locations"},
    notes=(
        "Hoyer = (‖a‖₁/‖a‖₂ − 1)/(√N − 1) of the activations a across the N channels at each spatial location "
        "(0: one channel active, 1: all equal), averaged over locations and images.",
        "Measured tensor: the block output that feeds the next block (HaH blocks: after normalization and "
        "threshold); blocks that end in BatchNorm are measured at the BatchNorm's input (the rectified "
        "activations), because eval-mode BatchNorm is a per-channel affine map that turns zeros into "
        "per-channel constants and carries no information of its own. The CSV's tensor column says which, "
        "per block.",
        "Locations where all channels are zero (Hoyer undefined) are left out of the Hoyer average; "
        "their share is the all-zero locations column. Non-zero is the fraction of non-zero activations.",
    ),
    figure=Figure(
        kind="bar", x="block", y=("hoyer", "nonzero"), percent=("nonzero",),
        ylabels={"hoyer": "Hoyer measure (lower = sparser)", "nonzero": "non-zero activations"},
    ),
)


LAYERS_NOTE = (
    "--layers {}: every model is measured at the output of each layer it picks, as it is (no BatchNorm-input "
    "substitution), in forward order; block_name in the CSV names each."
)


@handle_errors
def command(
    checkpoints: list[Path] = CHECKPOINTS,
    label: Optional[list[str]] = LABEL,
    blocks: Optional[int] = typer.Option(
        None, "--blocks",
        help="Number of leading conv blocks (or --layers layers) to measure (default: the most HaH blocks "
        "among the models; all selected layers with --layers).",
    ),
    layers: Optional[str] = LAYERS,
    n: Optional[int] = N,
    data: Optional[str] = DATA,
    batch_size: int = BATCH_SIZE,
    device: str = DEVICE,
    seed: int = SEED,
    out: Optional[Path] = OUT,
    weights: Optional[list[Path]] = WEIGHTS,
    normalize: Optional[list[str]] = NORMALIZE,
) -> None:
    options = EvalOptions(checkpoints, label, n, data, batch_size, device, seed, out, weights=weights, normalize=normalize)
    session = open_session(options)
    selected = {m.label: model_layers(m, layers) for m in session.models}  # None: hahrobust's blocks
    if blocks is None and layers is None:
        blocks = default_block_count([m.model for m in session.models])  # every model is a hahrobust model here
    for m in session.models:
        names = selected[m.label]
        available = len(m.model.block_names()) if names is None else len(names)
        if blocks is not None and not 1 <= blocks <= available:
            what = "conv blocks" if names is None else f"layers matching --layers {layers}"
            raise HahrobustError(f"--blocks {blocks}: {m.label} ({m.path}) has {available} {what}")
    with make_progress() as progress:
        test = load_test_set(options, progress)
        rows = per_model(
            session,
            lambda m: sparsity(
                m.model, test, blocks, layers=selected[m.label], batch_size=batch_size, device=session.device,
                progress=progress, description=f"sparsity {m.label}",
            ),
        )
    settings = {
        **common_settings(session, test),
        **({"blocks": blocks} if blocks is not None else {}), **({"layers": layers} if layers is not None else {}),
    }
    layout = LAYOUT if layers is None else dataclasses.replace(LAYOUT, notes=(*LAYOUT.notes, LAYERS_NOTE.format(layers)))
    finish(Result(NAME, rows, settings, session.checkpoints, layout, started=session.started), session)
