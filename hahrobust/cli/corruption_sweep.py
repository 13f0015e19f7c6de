"""hahrobust corruption-sweep: accuracy under the common corruptions of CIFAR-10-C, per corruption and severity,
with means and the corruption error (CE, relative CE) against a reference model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hahrobust.cli._common import handle_errors, make_progress
from hahrobust.cli._eval import (
    BATCH_SIZE, CHECKPOINTS, DATA, DEVICE, LABEL, NORMALIZE, OUT, OVERWRITE, SEED, WEIGHTS, EvalOptions, N, finish, load_test_set,
    open_session,
)
from hahrobust.data.cifar10c import OfficialCorruptions
from hahrobust.data.corruptions import FAMILIES, parse_corruptions, parse_severities, require_generator_libraries
from hahrobust.evaluate.corruption import NAME, corruption_sweep
from hahrobust.studies.corruption import check_reference


_GROUPS_HELP = "; ".join(f"{group}: {', '.join(members)}" for group, members in FAMILIES.items())


@handle_errors
def command(
    checkpoints: list[Path] = CHECKPOINTS,
    label: Optional[list[str]] = LABEL,
    corruptions: str = typer.Option(
        "all", "--corruptions",
        help=f"Comma-separated corruption names and groups: all (the benchmark's 15), {', '.join(FAMILIES)}. "
        f"Groups: {_GROUPS_HELP}. All 19 of Hendrycks' CIFAR generator are implemented.",
    ),
    severities: str = typer.Option("1-5", "--severities", help="Severities 1–5: a range (2-4), a list (1,3,5) or both."),
    reference: Optional[str] = typer.Option(
        None, "--reference",
        help="Label of the model the CE and relative CE are normalised by (Hendrycks used AlexNet; here, "
        "e.g. the baseline). Without it, no CE.",
    ),
    corruptions_dir: Optional[Path] = typer.Option(
        None, "--corruptions-dir",
        help="Read the official CIFAR-10-C files (<corruption>.npy, labels.npy) from this folder instead of "
        "generating (generated sets draw their own random numbers, so they are not pixel-identical to these); "
        "the clean row still comes from --data.",
    ),
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
    names, levels = parse_corruptions(corruptions), parse_severities(severities)
    if corruptions_dir is None:
        require_generator_libraries()
    options = EvalOptions(checkpoints, label, n, data, batch_size, device, seed, out, weights=weights, normalize=normalize,
                          overwrite=overwrite, results=(NAME,))
    session = open_session(options)
    check_reference(reference, [m.label for m in session.models])
    official = OfficialCorruptions(corruptions_dir, names, n, seed) if corruptions_dir is not None else None
    with make_progress() as progress:
        test = load_test_set(options, progress)
        result = corruption_sweep(session.models, test, corruptions=names, severities=levels, reference=reference,
                                  source=official, seed=seed, batch_size=batch_size, device=session.device,
                                  progress=progress)
    finish(result, session)


__all__ = ["NAME", "command"]
