"""hahrobust noise-sweep: accuracy under additive Gaussian (or uniform) input noise over a list of σ (Fig. 4)."""

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
    SEED,
    WEIGHTS,
    EvalOptions,
    N,
    common_settings,
    finish,
    load_test_set,
    open_session,
    per_model,
)
from hahrobust.cli.train import parse_floats
from hahrobust.metrics.noise import (
    DEFAULT_SIGMAS,
    NOISE_KINDS,
    check_noise,
    check_repeats,
    check_sigmas,
    noise_accuracy,
)
from hahrobust.results import Figure, Layout, Result

NAME = "noise-sweep"
HELP = "Accuracy under additive Gaussian (or uniform) input noise for a list of σ (Fig. 4)."

LAYOUT = Layout(
    title="Accuracy under additive input noise (Fig. 4)",
    index=("sigma",),
    columns=("model",),
    values=("accuracy",),
    formats={"accuracy": "{:.2%}", "sigma": "{:g}"},
    errors={"accuracy": "accuracy_std"},
    labels={"sigma": "σ", "accuracy": "accuracy"},
    notes=(
        "Noise of standard deviation σ added to the [0, 1] image and clipped to [0, 1]; uniform noise is "
        "U(−√3σ, √3σ). Drawn per image and repeat from a generator seeded by (seed, repeat, image index); "
        "one draw per repeat serves every σ. ± is the standard deviation over repeats; σ = 0 is the clean accuracy.",
    ),
    figure=Figure(
        kind="line", x="sigma", y=("accuracy",), err={"accuracy": "accuracy_std"}, percent=("accuracy",),
        xlabel="noise standard deviation σ", ylabels={"accuracy": "accuracy"}, ylim=(0.0, 1.0),
    ),
)


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
    weights: Optional[list[Path]] = WEIGHTS,
    normalize: Optional[list[str]] = NORMALIZE,
) -> None:
    levels = check_sigmas(parse_floats(sigmas, "--sigmas"))
    kind, repeats = check_noise(noise), check_repeats(repeats)
    options = EvalOptions(
        checkpoints, label, n, data, batch_size, device, seed, out, weights=weights, normalize=normalize
    )
    session = open_session(options)
    with make_progress() as progress:
        test = load_test_set(options, progress)
        rows = per_model(
            session,
            lambda m: noise_accuracy(
                m.model, test, levels, noise=kind, repeats=repeats, seed=seed, batch_size=batch_size,
                device=session.device, progress=progress, description=f"{kind} noise {m.label}",
            ),
        )
    settings = {**common_settings(session, test), "sigmas": list(levels), "noise": kind, "repeats": repeats}
    finish(Result(NAME, rows, settings, session.checkpoints, LAYOUT, started=session.started), session)
