"""Accuracy under additive input noise over a list of σ (the paper's Fig. 4): ``hahrobust noise-sweep`` as a function."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from rich.progress import Progress

from hahrobust.data import ImageSet
from hahrobust.evaluate._common import Models, as_device, common_settings, loaded, origins, per_model
from hahrobust.metrics.noise import DEFAULT_SIGMAS, check_noise, check_repeats, check_sigmas, noise_accuracy
from hahrobust.results import Figure, Layout, Result
from hahrobust.stats import accuracy_intervals, interval_columns

NAME = "noise-sweep"

LAYOUT = Layout(
    title="Accuracy under additive input noise (Fig. 4)",
    index=("sigma",),
    columns=("model",),
    values=("accuracy",),
    formats={"accuracy": "{:.2%}", "sigma": "{:g}"},
    errors={"accuracy": "accuracy_std"},
    intervals=interval_columns("accuracy"),
    labels={"sigma": "σ", "accuracy": "accuracy"},
    notes=(
        "Noise of standard deviation σ added to the [0, 1] image and clipped to [0, 1]; uniform noise is "
        "U(−√3σ, √3σ). Drawn per image and repeat from a generator seeded by (seed, repeat, image index); "
        "one draw per repeat serves every σ. ± is the standard deviation over repeats; σ = 0 is the clean accuracy.",
        "In brackets: the Wilson 95 % interval over the n images, at the mean's nearest count of them (the images "
        "are the sampling unit; more draws per image only steady each image's outcome, so it errs wide).",
    ),
    figure=Figure(
        kind="line", x="sigma", y=("accuracy",), err={"accuracy": "accuracy_std"}, percent=("accuracy",),
        xlabel="noise standard deviation σ", ylabels={"accuracy": "accuracy"}, ylim=(0.0, 1.0),
    ),
)


def noise_sweep(
    models: Models,
    data: ImageSet,
    *,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    noise: str = "gaussian",
    repeats: int = 3,
    seed: int = 0,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> Result:
    """Each model's accuracy on ``data`` under noise of each σ (rows: model × σ, mean and std over ``repeats``
    draws, seeded per image and repeat: the same numbers whatever the batch size), with ``n`` (the images) and the
    Wilson interval ``accuracy_low``/``accuracy_high`` (:func:`hahrobust.stats.accuracy_intervals`)."""
    levels = check_sigmas(list(sigmas))
    kind, repeats = check_noise(noise), check_repeats(repeats)
    device = as_device(device)
    opened = loaded(models, device)
    rows = per_model(opened, lambda m: noise_accuracy(
        m.model, data, levels, noise=kind, repeats=repeats, seed=seed, batch_size=batch_size, device=device,
        progress=progress, description=f"{kind} noise {m.label}",
    ))
    rows = accuracy_intervals(rows.assign(n=len(data)), ["accuracy"])
    settings = {**common_settings(data, seed=seed, batch_size=batch_size, device=device),
                "sigmas": list(levels), "noise": kind, "repeats": repeats}
    return Result(NAME, rows, settings, origins(opened), LAYOUT)
