"""hahrobust certify: certified ℓ2 accuracy of the Gaussian-smoothed models (Cohen et al., 2019)
(library: hahrobust.evaluate.certify)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer

from hahrobust import distributed
from hahrobust.cli._common import console, handle_errors, make_progress
from hahrobust.cli._eval import (
    CHECKPOINTS, DATA, DEVICE, LABEL, NORMALIZE, OUT, OVERWRITE, SEED, WEIGHTS, EvalOptions, N, finish,
    load_test_set, open_session,
)
from hahrobust.cli.train import parse_floats
from hahrobust.errors import HahrobustError
from hahrobust.evaluate.certification import NAME, certify, journal_paths
from hahrobust.metrics.smoothing import DEFAULT_ALPHA, DEFAULT_N, DEFAULT_N0, DEFAULT_RADII, DEFAULT_SIGMAS, check_settings
from hahrobust.provenance import write_atomically
from hahrobust.results import write

HELP = "Certified ℓ2 accuracy of the Gaussian-smoothed models (randomized smoothing, Cohen et al. 2019)."


@handle_errors
def command(
    checkpoints: list[Path] = CHECKPOINTS,
    label: Optional[list[str]] = LABEL,
    sigma: str = typer.Option(",".join(f"{s:g}" for s in DEFAULT_SIGMAS), "--sigma",
                              help="Comma-separated noise standard deviations σ of the smoothing (> 0)."),
    n0: int = typer.Option(DEFAULT_N0, "--n0", help="Noise samples per image and σ that pick the top class."),
    # Not "--n": that is the hidden old name of --images (and ambiguous to torchrun's parser, see cli/_eval.py).
    n_samples: int = typer.Option(DEFAULT_N, "--samples",
                                  help="Cohen et al.'s N: noise samples per image and σ that bound the top class's probability."),
    # Cohen et al.'s α; not "--alpha", which is train's HaH-loss weights (one meaning per option name).
    alpha: float = typer.Option(DEFAULT_ALPHA, "--failure-probability",
                                help="The probability that a certificate is wrong (Cohen et al.'s α), in (0, 1)."),
    radii: str = typer.Option(",".join(f"{r:g}" for r in DEFAULT_RADII), "--radii",
                              help="Comma-separated ℓ2 radii (≥ 0) at which the table reports certified accuracy."),
    n: Optional[int] = N,
    data: Optional[str] = DATA,
    batch_size: int = typer.Option(500, "--batch-size", help="Noisy copies of one image per forward pass."),
    device: str = DEVICE,
    seed: int = SEED,
    out: Optional[Path] = OUT,
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its journal in --out."),
    overwrite: bool = OVERWRITE,
    weights: Optional[list[Path]] = WEIGHTS,
    normalize: Optional[list[str]] = NORMALIZE,
) -> None:
    # Every option of this command is checked before any model or image is loaded.
    sigmas, levels = check_settings(parse_floats(sigma, "--sigma"), n0, n_samples, alpha, parse_floats(radii, "--radii"))
    if resume and out is None:
        raise HahrobustError("--resume needs --out DIR (the journal lives there)")
    options = EvalOptions(checkpoints, label, n, data, batch_size, device, seed, out, weights=weights, normalize=normalize,
                          overwrite=overwrite, resume=resume, results=(NAME, f"{NAME}-curve"))
    session = open_session(options)
    journal_dir = session.out_dir / "journal" if session.out_dir is not None else None
    journals = journal_paths(session.models, journal_dir) if journal_dir is not None else {}
    if not resume and any(j.exists() for j in journals.values()):
        found = next(j for j in journals.values() if j.exists())
        raise HahrobustError(f"{found}: a journal from an earlier run exists; pass --resume to continue it, or remove it")
    with make_progress() as progress:
        test = load_test_set(options, progress)
        result = certify(session.models, test, sigmas=sigmas, n0=n0, samples=n_samples, alpha=alpha, radii=levels,
                         seed=seed, batch_size=batch_size, device=session.device, progress=progress,
                         journal_dir=journal_dir, resume=resume)
    paths = finish(result.table, session)
    if paths and session.out_dir is not None:  # rank 0 with --out: the curve and the per-image certificates
        paths = write(result.curve, session.out_dir)
        image_csv = session.out_dir / f"{NAME}-images.csv"
        write_atomically(image_csv, lambda tmp: tmp.write_text(result.images.to_csv(index=False, lineterminator="\n"),
                                                                encoding="utf-8"), "per-image certificates")
        console.print(f"wrote {', '.join(str(p) for p in [*paths, image_csv])}", highlight=False, soft_wrap=True)
    for journal_path in journals.values():  # the results are written: the journals have done their job
        journal_path.unlink(missing_ok=True)
        shutil.rmtree(journal_path.with_name(journal_path.name.removesuffix(".jsonl") + ".adv"), ignore_errors=True)
    distributed.barrier()
    if journal_dir is not None and distributed.current().is_main and journal_dir.is_dir() and not any(journal_dir.iterdir()):
        journal_dir.rmdir()


__all__ = ["HELP", "NAME", "command"]
