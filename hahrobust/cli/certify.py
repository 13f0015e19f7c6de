"""hahrobust certify: certified ℓ2 accuracy of the Gaussian-smoothed models (Cohen et al., 2019)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import pandas as pd
import typer

from hahrobust import distributed
from hahrobust.attacks.journal import Journal, data_fingerprint, model_fingerprint, rank_journal
from hahrobust.cli._common import console, handle_errors, make_progress, slug
from hahrobust.cli._eval import (
    CHECKPOINTS, DATA, DEVICE, LABEL, NORMALIZE, OUT, SEED, WEIGHTS, EvalOptions, LoadedModel, N,
    common_settings, finish, load_test_set, open_session, per_model,
)
from hahrobust.cli.train import parse_floats
from hahrobust.errors import HahrobustError
from hahrobust.metrics.smoothing import (
    DEFAULT_ALPHA, DEFAULT_N, DEFAULT_N0, DEFAULT_RADII, DEFAULT_SIGMAS, certified_accuracy, certified_curve,
    certify_set, check_settings, paired_comparison, settings as smoothing_settings,
)
from hahrobust.provenance import write_atomically
from hahrobust.results import Figure, Layout, Result, write

NAME = "certify"
HELP = "Certified ℓ2 accuracy of the Gaussian-smoothed models (randomized smoothing, Cohen et al. 2019)."

NOTES = (
    "Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): g(x) = argmax_c P(f(x + δ) = c), δ ~ N(0, σ²I), "
    "no clipping. CERTIFY: n0 samples pick ĉ_A, n fresh samples bound p_A below (one-sided Clopper–Pearson at "
    "level α); abstain when the bound is < ½, else ĉ_A is certified within ℓ2 radius σ·Φ⁻¹(p̲_A) "
    "(each image's certificate holds with probability ≥ 1 − α).",
    "Certified accuracy at r: the fraction of images certified with the correct class and radius ≥ r (a lower "
    "bound on the smoothed classifier's robust accuracy that no attack can lower); in brackets: the Wilson 95 % "
    "interval over the images. Radii in [0, 1]-pixel ℓ2 units (the audit's ε).",
    "Abstain: CERTIFY abstained. Mean radius: over the correctly certified images. PREDICT: Cohen et al.'s "
    "prediction (two-sided binomial test of the top two counts, abstain when p > α) on CERTIFY's n samples.",
    "Noise per image, σ and phase from a generator seeded by (seed, σ, image, n0|n): the same for every model "
    "(paired), batch size, device and process count. The step curves are in certify-curve.*; every image's "
    "certificate in certify-images.csv.",
)


def layout(radii: tuple[float, ...]) -> Layout:
    return Layout(
        title="Certified ℓ2 accuracy of the smoothed classifiers (randomized smoothing)",
        index=("model", "sigma"),
        columns=("radius",),
        values=("certified_acc_ci", "abstain_rate", "mean_radius_correct", "predict_acc"),
        formats={"sigma": "{:g}", "radius": "{:g}", "abstain_rate": "{:.1%}", "mean_radius_correct": "{:.3f}",
                 "predict_acc": "{:.1%}"},
        labels={"sigma": "σ"},
        header={"certified_acc_ci": "r = {radius}", "abstain_rate": "abstain", "mean_radius_correct": "mean radius",
                "predict_acc": "PREDICT acc."},
        drop_empty_columns=True,  # abstention, mean radius and PREDICT are per σ: shown once, under r = 0
        notes=NOTES,
        figure=Figure(kind="bar", x="radius", y=("certified_acc",), facet="sigma", percent=("certified_acc",),
                      xlabel="ℓ2 radius r", ylabels={"certified_acc": "certified accuracy"},
                      ylim=(0.0, 1.0)),
    )


CURVE_LAYOUT = Layout(
    title="Certified accuracy against ℓ2 radius (randomized smoothing)",
    index=("model", "sigma", "radius"),
    values=("certified_acc",),
    formats={"certified_acc": "{:.1%}", "sigma": "{:g}", "radius": "{:g}"},
    labels={"sigma": "σ", "certified_acc": "certified accuracy"},
    notes=("The fraction of images certified correct with radius ≥ r, on a grid of r: Cohen et al.'s step curve.",),
    figure=Figure(kind="line", x="radius", y=("certified_acc",), facet="sigma", percent=("certified_acc",),
                  xlabel="ℓ2 radius r", ylabels={"certified_acc": "certified accuracy"}, ylim=(0.0, 1.0)),
)


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
    alpha: float = typer.Option(DEFAULT_ALPHA, "--alpha", help="Failure probability of each certificate, in (0, 1)."),
    radii: str = typer.Option(",".join(f"{r:g}" for r in DEFAULT_RADII), "--radii",
                              help="Comma-separated ℓ2 radii (≥ 0) at which the table reports certified accuracy."),
    n: Optional[int] = N,
    data: Optional[str] = DATA,
    batch_size: int = typer.Option(500, "--batch-size", help="Noisy copies of one image per forward pass."),
    device: str = DEVICE,
    seed: int = SEED,
    out: Optional[Path] = OUT,
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its journal in --out."),
    weights: Optional[list[Path]] = WEIGHTS,
    normalize: Optional[list[str]] = NORMALIZE,
) -> None:
    # Every option of this command is checked before any model or image is loaded.
    sigmas, levels = check_settings(parse_floats(sigma, "--sigma"), n0, n_samples, alpha, parse_floats(radii, "--radii"))
    if resume and out is None:
        raise HahrobustError("--resume needs --out DIR (the journal lives there)")
    options = EvalOptions(checkpoints, label, n, data, batch_size, device, seed, out, weights=weights, normalize=normalize)
    session = open_session(options)
    journals = {m.label: rank_journal(session.out_dir / "journal" / f"certify-{slug(m.label)}.jsonl")
                for m in session.models} if session.out_dir is not None else {}
    if not resume and any(j.exists() for j in journals.values()):
        found = next(j for j in journals.values() if j.exists())
        raise HahrobustError(f"{found}: a journal from an earlier run exists; pass --resume to continue it, or remove it")
    run_settings = smoothing_settings(sigmas, n0, n_samples, alpha, seed)

    with make_progress() as progress:
        test = load_test_set(options, progress)

        def certify_model(m: LoadedModel) -> pd.DataFrame:
            journal = None
            if m.label in journals:
                header = {"command": NAME, **run_settings, "model": model_fingerprint(m.model), "data": data_fingerprint(test)}
                journal = Journal(journals[m.label], header, resume=resume)
            return certify_set(m.model, test, sigmas, n0=n0, n=n_samples, alpha=alpha, batch_size=batch_size, seed=seed,
                               device=session.device, journal=journal, progress=progress, description=f"certify {m.label}")

        images = per_model(session, certify_model)
    table = certified_accuracy(images, levels)
    table["certified_acc_ci"] = [f"{a:.1%} [{lo:.1%}, {hi:.1%}]" for a, lo, hi in
                                 zip(table["certified_acc"], table["certified_acc_low"], table["certified_acc_high"])]
    for column in ("abstain_rate", "mean_radius_correct", "predict_acc"):  # per σ: kept in the r = 0 row of the table
        table.loc[table["radius"] != levels[0], column] = float("nan")
    # "n" is the number of images among the common settings: Cohen et al.'s N is n_samples here.
    all_settings = {**common_settings(session, test), "scheme": run_settings["scheme"], "sigmas": list(sigmas), "n0": n0,
                    "n_samples": n_samples, "alpha": alpha, "radii": list(levels)}
    result = Result(NAME, table, all_settings, session.checkpoints, layout(levels), notes=_paired_notes(images, levels),
                    started=session.started)
    paths = finish(result, session)
    if paths and session.out_dir is not None:  # rank 0 with --out: the curve and the per-image certificates
        curve = Result(f"{NAME}-curve", certified_curve(images), all_settings, session.checkpoints, CURVE_LAYOUT,
                       started=session.started)
        paths = write(curve, session.out_dir)
        image_csv = session.out_dir / f"{NAME}-images.csv"
        write_atomically(image_csv, lambda tmp: tmp.write_text(images.to_csv(index=False, lineterminator="\n"),
                                                                encoding="utf-8"), "per-image certificates")
        console.print(f"wrote {', '.join(str(p) for p in [*paths, image_csv])}", highlight=False, soft_wrap=True)
    for journal_path in journals.values():  # the results are written: the journals have done their job
        journal_path.unlink(missing_ok=True)
        shutil.rmtree(journal_path.with_name(journal_path.name.removesuffix(".jsonl") + ".adv"), ignore_errors=True)
    distributed.barrier()
    folder = session.out_dir / "journal" if session.out_dir is not None else None
    if folder is not None and distributed.current().is_main and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _paired_notes(images: pd.DataFrame, radii: tuple[float, ...]) -> list[str]:
    """With exactly two models: at each σ and r, the images only one of them certifies, and the exact McNemar p."""
    labels = list(pd.unique(images["model"]))
    if len(labels) != 2:
        return []
    first, second = labels
    pairs = paired_comparison(images, first, second, radii)
    return [
        f"Paired, σ = {sigma:g}: " + "; ".join(
            f"r = {row['radius']:g}: {int(row[f'only_{first}'])} only {first}, "
            f"{int(row[f'only_{second}'])} only {second}, McNemar exact p = {row['mcnemar_p']:.3g}"
            for _, row in part.iterrows()
        )
        for sigma, part in pairs.groupby("sigma", sort=False)
    ]


__all__ = ["HELP", "NAME", "command"]
