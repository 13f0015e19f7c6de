"""hahrobust noise-sweep: accuracy under additive Gaussian (or uniform) input noise over a list of σ (Fig. 4)
(library: hahrobust.evaluate.noise_sweep)."""

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
from hahrobust.cli.train import parse_floats
from hahrobust.metrics.noise import (
    DEFAULT_SIGMAS,
    NOISE_KINDS,
    check_noise,
    check_repeats,
    check_sigmas,
)
from hahrobust.evaluate.noise import NAME, noise_sweep


@handle_errors
def command(
    checkpoints: list[Path] = CHECKPOINTS,
    label: Optional[list[str]] = LABEL,
    sigmas: str = typer.Option(
        ",".join(f"{s:g}" for s in DEFAULT_SIGMAS), "--sigmas", help="Comma-separated noise standard deviations."
    ),
    repeats: int = typer.Option(3, "--repeats", help="Noise draws per image and σ (fixed seeds)."),
    noise: str = typer.Option("gaussian", "--noise", help=f"Noise distribution: {' | '.join(NOISE_KINDS)} (same σ)."),
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
    levels = check_sigmas(parse_floats(sigmas, "--sigmas"))
    kind, repeats = check_noise(noise), check_repeats(repeats)
    options = EvalOptions(
        checkpoints, label, n, data, batch_size, device, seed, out, weights=weights, normalize=normalize,
        overwrite=overwrite, results=(NAME,),
    )
    session = open_session(options)
    with make_progress() as progress:
        test = load_test_set(options, progress)
        result = noise_sweep(session.models, test, sigmas=levels, noise=kind, repeats=repeats, seed=seed,
                             batch_size=batch_size, device=session.device, progress=progress)
    finish(result, session)


__all__ = ["NAME", "command"]
