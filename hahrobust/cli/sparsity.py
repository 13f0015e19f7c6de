"""hahrobust sparsity: Hoyer sparsity and non-zero fraction of the leading conv blocks (the paper's Fig. 2)."""

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
    SEED,
    WEIGHTS,
    EvalOptions,
    N,
    common_settings,
    finish,
    load_test_set,
    open_session,
    per_model,
    session_layers,
    with_layers_note,
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


@handle_errors
def command(
    checkpoints: list[Path] = CHECKPOINTS,
    label: Optional[list[str]] = LABEL,
    blocks: Optional[int] = typer.Option(
        None, "--blocks",
        help="Number of leading conv blocks (and of --layers layers) to measure (default: the most HaH blocks "
        "among the hahrobust models; every layer --layers picks).",
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
    options = EvalOptions(
        checkpoints, label, n, data, batch_size, device, seed, out, weights=weights, normalize=normalize
    )
    session = open_session(options)
    selected = session_layers(session, layers)  # None: a hahrobust checkpoint's blocks
    native = [m.model for m in session.models if not m.is_foreign]
    block_count = blocks if blocks is not None or not native else default_block_count(native)
    counts: dict[str, int] = {}
    for m in session.models:
        names = selected[m.label]
        available = len(m.model.block_names()) if names is None else len(names)
        count = block_count if names is None else (blocks if blocks is not None else available)
        if count is None or not 1 <= count <= available:
            what = "conv blocks" if names is None else f"layers matching --layers {layers}"
            raise HahrobustError(f"--blocks {count}: {m.label} ({m.path}) has {available} {what}")
        counts[m.label] = count
    with make_progress() as progress:
        test = load_test_set(options, progress)
        rows = per_model(
            session,
            lambda m: sparsity(
                m.model, test, counts[m.label], layers=selected[m.label], batch_size=batch_size,
                device=session.device, progress=progress, description=f"sparsity {m.label}",
            ),
        )
    settings = {**common_settings(session, test), **({"blocks": block_count} if block_count is not None else {})}
    if any(selected.values()):
        settings["layers"] = layers
    layout = with_layers_note(LAYOUT, selected, layers, "the output (as it is, no BatchNorm-input substitution)")
    finish(Result(NAME, rows, settings, session.checkpoints, layout, started=session.started), session)
