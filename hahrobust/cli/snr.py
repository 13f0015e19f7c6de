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
from hahrobust.metrics.noise import NOISE_KINDS, check_noise, check_repeats, check_sigmas
from hahrobust.metrics.snr import snr
from hahrobust.results import Figure, Layout, Result

NAME = "snr"
#: A model spec's layers measured without --layers: the input of every convolution, as a conv block's input is.
FOREIGN_LAYERS = "Conv2d"
HELP = "SNR (dB) of every conv block's input under Gaussian input noise (Eq. 6, Fig. 3)."

LAYOUT = Layout(
    title="SNR at the input of each conv block (Eq. 6, Fig. 3b)",
    index=("block",),
    columns=("model",),
    values=("snr_db",),
    formats={"snr_db": "{:.2f} dB"},
    errors={"snr_db": "snr_db_std"},
    labels={"snr_db": "SNR"},
    notes=(
        "SNR_n = 10·log10(E_x,w[‖f_n(x)‖² / ‖f_n(x+w) − f_n(x)‖²]) dB, f_n = the input of conv block n "
        "(block 1: the image after the model's input normalization); the mean of the linear ratio over images "
        "and noise draws is taken before converting to dB.",
        "w: noise of standard deviation σ added to the [0, 1] image, clipped to [0, 1]; drawn per image and "
        "repeat from a generator seeded by (seed, repeat, image index). ± is the standard deviation over repeats.",
        "∞: the noise never changed that block's input (e.g. σ = 0).",
    ),
    figure=Figure(kind="bar", x="block", y=("snr_db",), ylabels={"snr_db": "SNR (dB)"}),
)


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
    weights: Optional[list[Path]] = WEIGHTS,
    normalize: Optional[list[str]] = NORMALIZE,
) -> None:
    (sigma,) = check_sigmas([sigma])
    kind, repeats = check_noise(noise), check_repeats(repeats)
    options = EvalOptions(
        checkpoints, label, n, data, batch_size, device, seed, out, weights=weights, normalize=normalize
    )
    session = open_session(options)
    # Foreign models have no blocks: their convolutions' inputs are what Eq. 6 measures at a conv block's input.
    names = session_layers(session, layers, FOREIGN_LAYERS)
    with make_progress() as progress:
        test = load_test_set(options, progress)
        rows = per_model(
            session,
            lambda m: snr(
                m.model, test, sigma, layers=names[m.label], noise=kind, repeats=repeats, seed=seed,
                batch_size=batch_size, device=session.device, progress=progress, description=f"SNR {m.label}",
            ),
        )
    selector = layers or FOREIGN_LAYERS
    settings = {
        **common_settings(session, test), "sigma": sigma, "noise": kind, "repeats": repeats,
        **({"layers": selector} if any(names.values()) else {}),
    }
    layout = with_layers_note(LAYOUT, names, selector, "SNR at the input")
    finish(Result(NAME, rows, settings, session.checkpoints, layout, started=session.started), session)
