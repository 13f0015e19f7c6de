"""Certified ℓ2 accuracy of Gaussian-smoothed models (Cohen et al., 2019): ``hahrobust certify`` as a function
(library: :mod:`hahrobust.metrics.smoothing`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from rich.progress import Progress

from hahrobust.attacks.journal import Journal, data_fingerprint, model_fingerprint, rank_journal
from hahrobust.data import ImageSet
from hahrobust.evaluate._common import Models, as_device, common_settings, loaded, origins, per_model
from hahrobust.evaluate.opening import LoadedModel
from hahrobust.metrics.smoothing import (
    DEFAULT_ALPHA, DEFAULT_N, DEFAULT_N0, DEFAULT_RADII, DEFAULT_SIGMAS, certified_accuracy, certified_curve,
    certify_set, check_settings, paired_comparison, settings as smoothing_settings,
)
from hahrobust.provenance import slug
from hahrobust.results import Figure, Layout, Result
from hahrobust.stats import interval_columns

NAME = "certify"

NOTES = (
    "Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): g(x) = argmax_c P(f(x + δ) = c), δ ~ N(0, σ²I), "
    "no clipping. CERTIFY: n0 samples pick ĉ_A, n fresh samples bound p_A below (one-sided Clopper–Pearson at "
    "level α); abstain when the bound is < ½, else ĉ_A is certified within ℓ2 radius σ·Φ⁻¹(p̲_A) "
    "(each image's certificate holds with probability ≥ 1 − α).",
    "Certified accuracy at r: the fraction of images certified with the correct class and radius ≥ r (a lower "
    "bound on the smoothed classifier's robust accuracy that no attack can lower); in brackets: the Wilson 95 % "
    "interval over the images. Radii in [0, 1]-pixel ℓ2 units (the audit's ε).",
    "Abstain: CERTIFY abstained. Mean radius: over the correctly certified images. PREDICT: Cohen et al.'s "
    "prediction (two-sided binomial test of the top two counts, abstain when p > α) on CERTIFY's n samples; its "
    "accuracy with the Wilson 95 % interval over the images.",
    "Noise per image, σ and phase from a generator seeded by (seed, σ, image, n0|n): the same for every model "
    "(paired), batch size, device and process count. The step curves are in certify-curve.*; every image's "
    "certificate in certify-images.csv.",
)


def layout(radii: tuple[float, ...]) -> Layout:
    return Layout(
        title="Certified ℓ2 accuracy of the smoothed classifiers (randomized smoothing)",
        index=("model", "sigma"),
        columns=("radius",),
        values=("certified_acc", "abstain_rate", "mean_radius_correct", "predict_acc"),
        formats={"sigma": "{:g}", "radius": "{:g}", "certified_acc": "{:.1%}", "abstain_rate": "{:.1%}",
                 "mean_radius_correct": "{:.3f}", "predict_acc": "{:.1%}"},
        intervals=interval_columns("certified_acc", "predict_acc"),
        labels={"sigma": "σ"},
        header={"certified_acc": "r = {radius}", "abstain_rate": "abstain", "mean_radius_correct": "mean radius",
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
    intervals=interval_columns("certified_acc"),
    labels={"sigma": "σ", "certified_acc": "certified accuracy"},
    notes=("The fraction of images certified correct with radius ≥ r, on a grid of r: Cohen et al.'s step curve; "
           "in brackets the Wilson 95 % interval over the n images.",),
    figure=Figure(kind="line", x="radius", y=("certified_acc",), facet="sigma", percent=("certified_acc",),
                  xlabel="ℓ2 radius r", ylabels={"certified_acc": "certified accuracy"}, ylim=(0.0, 1.0)),
)


@dataclass(frozen=True)
class CertifyResult:
    """Certified accuracy per model, σ and radius (``table``), Cohen et al.'s step curves (``curve``), and every
    image's certificate (``images``: model, sigma, index, label, prediction, p̲_A, radius, …)."""

    table: Result
    curve: Result
    images: pd.DataFrame


def journal_paths(models: Sequence[LoadedModel], journal_dir: Path) -> dict[str, Path]:
    """Each model's per-image journal (this process's, under torchrun)."""
    return {m.label: rank_journal(journal_dir / f"certify-{slug(m.label)}.jsonl") for m in models}


def certify(
    models: Models,
    data: ImageSet,
    *,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    n0: int = DEFAULT_N0,
    samples: int = DEFAULT_N,
    alpha: float = DEFAULT_ALPHA,
    radii: Sequence[float] = DEFAULT_RADII,
    seed: int = 0,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    journal_dir: Path | None = None,
    resume: bool = False,
) -> CertifyResult:
    """CERTIFY and PREDICT for every model, σ and image (noise seeded per image, σ and phase: paired across models,
    independent of batch size and process count); the certified accuracy at each radius with Wilson intervals,
    and with two models the exact McNemar test per σ and radius in the notes. ``journal_dir`` journals every
    image (``resume`` continues)."""
    sigmas, levels = check_settings(list(sigmas), n0, samples, alpha, list(radii))
    device = as_device(device)
    opened = loaded(models, device)
    run_settings = smoothing_settings(sigmas, n0, samples, alpha, seed)
    journals: Mapping[str, Path] = journal_paths(opened, journal_dir) if journal_dir is not None else {}

    def certify_model(m: LoadedModel) -> pd.DataFrame:
        journal = None
        if m.label in journals:
            header = {"command": NAME, **run_settings, "model": model_fingerprint(m.model), "data": data_fingerprint(data)}
            journal = Journal(journals[m.label], header, resume=resume)
        return certify_set(m.model, data, sigmas, n0=n0, n=samples, alpha=alpha, batch_size=batch_size, seed=seed,
                           device=device, journal=journal, progress=progress, description=f"certify {m.label}")

    images = per_model(opened, certify_model)
    table = certified_accuracy(images, levels)
    table["certified_acc_ci"] = [f"{a:.1%} [{lo:.1%}, {hi:.1%}]" for a, lo, hi in
                                 zip(table["certified_acc"], table["certified_acc_low"], table["certified_acc_high"])]
    added = ["predict_acc_low", "predict_acc_high"]  # after the columns the table had before them
    table = table.reindex(columns=[*(c for c in table.columns if c not in added), *added])
    for column in ("abstain_rate", "mean_radius_correct", "predict_acc", *added):  # per σ: in the table's r = 0 row
        table.loc[table["radius"] != levels[0], column] = float("nan")
    # "n" is the number of images among the common settings: Cohen et al.'s N is n_samples here.
    all_settings = {**common_settings(data, seed=seed, batch_size=batch_size, device=device),
                    "scheme": run_settings["scheme"], "sigmas": list(sigmas), "n0": n0, "n_samples": samples,
                    "alpha": alpha, "radii": list(levels)}
    used = origins(opened)
    return CertifyResult(
        Result(NAME, table, all_settings, used, layout(levels), notes=_paired_notes(images, levels)),
        Result(f"{NAME}-curve", certified_curve(images), all_settings, used, CURVE_LAYOUT),
        images,
    )


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
