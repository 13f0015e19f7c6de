"""hahrobust snr: signal-to-noise ratio at the input of every conv block under input noise (Eq. 6, Fig. 3)."""

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
    session_layers,
)
from hahrobust.metrics.noise import NOISE_KINDS, check_noise, check_repeats, check_sigmas
from hahrobust.evaluate.activations import FOREIGN_LAYERS, SNR_NAME as NAME, snr


@handle_errors
def command(
    checkpoints: list[Path] = CHECKPOINTS,
    label: Optional[list[str]] = LABEL,
    sigma: float = typer.Option(0.1, "--sigma", help="Noise standard deviation, in [0, 1] pixel units."),
    repeats: int = typer.Option(3, "--repeats", help="Noise draws per image (fixed seeds)."),
    noise: str = typer.Option("gaussian", "--noise", help=f"Noise distribution: {' | '.join(NOISE_KINDS)} (same σ)."),
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
    (sigma,) = check_sigmas([sigma])
    kind, repeats = check_noise(noise), check_repeats(repeats)
    options = EvalOptions(
        checkpoints, label, n, data, batch_size, device, seed, out, weights=weights, normalize=normalize,
        overwrite=overwrite, results=(NAME,),
    )
    session = open_session(options)
    session_layers(session, layers, FOREIGN_LAYERS)  # layers a model does not have fail before any data is read
    with make_progress() as progress:
        test = load_test_set(options, progress)
        result = snr(session.models, test, sigma=sigma, noise=kind, repeats=repeats, layers=layers, seed=seed,
                     batch_size=batch_size, device=session.device, progress=progress)
    finish(result, session)


__all__ = ["NAME", "command"]
