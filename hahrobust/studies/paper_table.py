"""The paper's robustness summary (Tables 1 and 2): clean, noisy (σ = 0.1), AutoAttack ℓ∞ 2/255 and ℓ2 0.25.

One function, :func:`paper_table`, computes the four accuracies of one model with the toolkit's own
metrics (``accuracy``, ``noise_accuracy``, ``run_attack``), so Table 1 (``hahrobust attack --table paper``)
and Table 2 (``hahrobust ablate``) are the same measurement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from torch import nn

from hahrobust import stats
from hahrobust.attacks.outcome import AttackOutcome
from hahrobust.data import ImageSet
from hahrobust.errors import HahrobustError
from hahrobust.metrics.accuracy import accuracy
from hahrobust.metrics.noise import noise_accuracy, noise_correct
from hahrobust.results import Figure, Layout


@dataclass(frozen=True)
class Condition:
    name: str  # short name (for options and file names)
    title: str  # the paper's column header, and the value in the ``condition`` column
    short: str  # the header in figures
    norm: str | None = None  # adversarial conditions: the norm and ε attacked
    eps: float | None = None
    sigma: float | None = None  # noisy condition: Gaussian noise standard deviation


#: The paper's Table 1 / Table 2 columns, in order.
PAPER_CONDITIONS: tuple[Condition, ...] = (
    Condition("clean", "Clean", "Clean"),
    Condition("noisy", "Noisy (σ = 0.1)", "Noisy", sigma=0.1),
    Condition("adv-linf", "Adv ℓ∞ (ε = 2/255)", "Adv ℓ∞", norm="linf", eps=2 / 255),
    Condition("adv-l2", "Adv ℓ2 (ε = 0.25)", "Adv ℓ2", norm="l2", eps=0.25),
)

#: The adaptive column beside each adversarial one (``--adaptive``): the audit's per-image worst case
#: (:mod:`hahrobust.studies.audit`) at the paper's ε. Not the paper's: its columns are plain-gradient AutoAttack,
#: an upper bound for models with hard thresholds.
ADAPTIVE_CONDITIONS: dict[str, Condition] = {
    c.name: Condition(f"worst-{c.norm}", c.title.replace("Adv", "Worst case"), c.short.replace("Adv", "Worst"),
                      norm=c.norm, eps=c.eps)
    for c in PAPER_CONDITIONS if c.norm is not None
}

#: ``run(norm, eps) -> run_attack_images' outcome`` for one adversarial column (e.g. with a journal, to resume):
#: its table's robust accuracy fills the column, its per-image ``robust[0]`` the paired tests.
AttackRunner = Callable[[str, float], AttackOutcome]
#: ``adaptive(norm, eps) -> (per-image worst case, convergence)`` for one adaptive column: bool [N], robust under
#: every member; the audit's convergence rounds' outcome ("converged after 2 rounds", "not converged: …") says
#: whether the figure is final.
AdaptiveRunner = Callable[[str, float], tuple[np.ndarray, str]]


@dataclass(frozen=True)
class PaperTable:
    """:func:`paper_table`'s rows and, with ``per_image``, each condition's per-image outcome (``short`` name →
    bool [N], in ``data``'s order: correct clean, correct under the first noise draw, robust): what a paired test
    of two models on the same images needs (:func:`hahrobust.studies.ablation.paired_against`)."""

    rows: pd.DataFrame
    outcomes: dict[str, np.ndarray]


def check_paper_attack(attack: str, aa_version: str = "standard") -> None:
    """Fail fast (before any training or evaluation) on an attack that cannot fill the adversarial columns."""
    from hahrobust.attacks.registry import check_attack, get

    for condition in PAPER_CONDITIONS:
        if condition.norm is not None:
            check_attack(attack, condition.norm)
    spec = get(attack)
    if spec.prepare is not None:
        spec.prepare(spec.configure(aa_version=aa_version))


def paper_table(
    model: nn.Module,
    data: ImageSet,
    *,
    attack: str = "autoattack",
    aa_version: str = "standard",
    noise_repeats: int = 1,
    seed: int = 0,
    batch_size: int = 100,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    run: AttackRunner | None = None,
    adaptive: AdaptiveRunner | None = None,
    per_image: bool = False,
) -> PaperTable:
    """One row per paper condition (:data:`PAPER_CONDITIONS`), on all of ``data``: ``condition`` (its
    title), ``short`` (its figure label), ``accuracy`` (a fraction), ``n`` (the images) and ``low``/``high``, its
    95 % Wilson interval over them (:func:`with_interval`).

    The noisy column is the noise-sweep metric, the mean over ``noise_repeats`` draws (the paper reports
    one); the adversarial columns are verified robust accuracies from :func:`hahrobust.attacks.run_attack`
    (``run`` replaces that call, e.g. to add a journal; it must attack with the same settings). With
    ``adaptive``, each adversarial column is followed by its worst case (:data:`ADAPTIVE_CONDITIONS`).
    ``per_image`` (one process only) also keeps each condition's per-image outcome: the clean and first noise
    draw's per image (the same draws as the noisy column's), the attacks' own.
    """
    # imported here: AutoAttack is only needed for these columns
    from hahrobust.attacks.run import AttackRequest, RunOptions, run_attack_images
    from hahrobust.attacks.registry import get

    def default_run(norm: str, eps: float) -> AttackOutcome:
        return run_attack_images(model, data, AttackRequest(attack, norm, [eps], get(attack).configure(
            aa_version=aa_version), seed=seed, batch_size=batch_size), RunOptions(device, progress))

    rows, outcomes = [], {}
    for condition in PAPER_CONDITIONS:
        if condition.sigma is not None:
            frame = noise_accuracy(model, data, [condition.sigma], repeats=noise_repeats, seed=seed,
                                   batch_size=batch_size, device=device, progress=progress)
            value = float(frame["accuracy"].iloc[0])
            if per_image:
                outcomes[condition.short] = noise_correct(model, data, [condition.sigma], repeats=1, seed=seed,
                                                          batch_size=batch_size, device=device, progress=progress)[0, 0]
        elif condition.norm is not None and condition.eps is not None:
            outcome = (run or default_run)(condition.norm, condition.eps)
            value = float(outcome.table["robust_acc"].iloc[0])
            outcomes[condition.short] = np.asarray(outcome.robust[0], dtype=bool)
        else:
            value = accuracy(model, data, batch_size=batch_size, device=device, progress=progress)
            if per_image:
                outcomes[condition.short] = noise_correct(model, data, [0.0], repeats=1, seed=seed,
                                                          batch_size=batch_size, device=device, progress=progress)[0, 0]
        rows.append({"condition": condition.title, "short": condition.short, **with_interval(value, len(data))})
        if adaptive is not None and condition.name in ADAPTIVE_CONDITIONS:
            worst = ADAPTIVE_CONDITIONS[condition.name]
            robust, convergence = adaptive(worst.norm, worst.eps)  # type: ignore[arg-type]
            outcomes[worst.short] = robust
            rows.append({"condition": worst.title, "short": worst.short,
                         **with_interval(float(np.mean(robust)), len(data)), "convergence": convergence})
    return PaperTable(pd.DataFrame(rows), outcomes if per_image else {})


def with_interval(accuracy: float, n: int) -> dict[str, float | int]:
    """An accuracy on ``n`` images with its 95 % Wilson interval. Clean and attacked accuracies are counts of n;
    the noisy one is a mean over noise draws, taken at its nearest count of n images (the images are the sampling
    unit; more draws per image only make each image's outcome less noisy, so this errs wide)."""
    low, high = stats.wilson_interval(round(accuracy * n), n)
    return {"accuracy": accuracy, "n": n, "low": low, "high": high}


def convergence_notes(rows: pd.DataFrame) -> list[str]:
    """One line per model of a table with adaptive columns: each worst case's convergence (rows without the
    ``convergence`` column, e.g. from an older cache, give none)."""
    if "convergence" not in rows.columns:
        return []
    notes = []
    for model, part in rows.groupby("model", sort=False):
        found = part.dropna(subset=["convergence"])
        if len(found):
            notes.append(f"{model}: " + "; ".join(f"{r.short} {r.convergence}" for r in found.itertuples()))
    return notes


def audited_columns(
    model: nn.Module,
    data: ImageSet,
    *,
    attack: str = "autoattack",
    transfer_source: nn.Module | None = None,
    seed: int = 0,
    batch_size: int = 100,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    journal_dir: Path | None = None,
    journal_stem: str = "table1",
    resume: bool = False,
) -> tuple[AttackRunner, AdaptiveRunner]:
    """``(run, adaptive)`` for :func:`paper_table` from one audit per norm (:func:`hahrobust.studies.audit.audit_model`,
    run on first use): the audit's member for ``attack`` (AutoAttack standard, or PGD) fills the adversarial
    column, its per-image worst case the adaptive column beside it. With ``attack="pgd"`` the ensemble leaves
    AutoAttack out (the cheap Table 2 setting); ``transfer_source`` adds the transfer member."""
    from hahrobust.studies.audit import ModelAudit, audit_model, convergence_text, default_ensemble

    member = {"autoattack": "AutoAttack", "pgd": "PGD"}.get(attack)
    if member is None:
        raise HahrobustError(f"the adaptive columns come with --attack autoattack or pgd, not {attack}")
    # AutoAttack's column is the ensemble's AutoAttack member (one standard run on every image serves both)
    ensemble = default_ensemble(include=("autoattack",) if attack == "autoattack" else ())
    audits: dict[tuple[str, float], ModelAudit] = {}

    def audited(norm: str, eps: float) -> ModelAudit:
        if (norm, eps) not in audits:
            audits[(norm, eps)] = audit_model(
                model, data, norm=norm, eps=[eps], transfer_source=transfer_source, ensemble=ensemble, seed=seed,
                batch_size=batch_size, device=device, progress=progress, journal_dir=journal_dir,
                journal_stem=journal_stem, resume=resume,
            )
        return audits[(norm, eps)]

    def column(norm: str, eps: float) -> AttackOutcome:
        audit = audited(norm, eps)  # the member attacked every image (a reference member): its own outcome
        robust = audit.correct & ~audit.broken_by[member][0]
        return AttackOutcome(audit.attacks.set_index("attack").loc[[member]].reset_index(), robust[None],
                             np.arange(len(robust)), audit.correct, None)

    def worst(norm: str, eps: float) -> tuple[np.ndarray, str]:
        audit = audited(norm, eps)
        return np.asarray(audit.worst[0], dtype=bool), convergence_text(audit)

    return column, worst


def paper_layout(title: str, notes: tuple[str, ...] = ()) -> Layout:
    """Models down, the paper's four columns across, as in Tables 1 and 2, each accuracy with its 95 % Wilson
    interval; a grouped bar chart."""
    return Layout(
        title=title,
        index=("model",),
        columns=("condition",),
        values=("accuracy",),
        formats={"accuracy": "{:.1%}"},
        intervals={"accuracy": ("low", "high")},
        header="{condition}",
        notes=(*notes, "Each accuracy: percent [95 % Wilson interval] over the images (their number in the n column "
               "of the CSV); models compared on the same images call for a paired test (hahrobust report)."),
        figure=Figure(kind="bar", x="short", y=("accuracy",), percent=("accuracy",), xlabel="",
                      ylabels={"accuracy": "accuracy"}, ylim=(0.0, 1.0)),
    )


def paired_layout() -> Layout:
    """Table 2's paired tests (:func:`hahrobust.studies.ablation.paired_against`): a row per variant and condition,
    the difference from the full model with its paired interval, the discordant images, p and Holm's p."""
    return Layout(
        title="Each variant against the full model, on the same images (Table 2, paired)",
        index=("model", "condition"),
        values=("difference", "variant_only", "reference_only", "p_value", "p_holm"),
        formats={"difference": "{:+.1%}", "variant_only": "{:d}", "reference_only": "{:d}", "p_value": "{:.2g}",
                 "p_holm": "{:.2g}"},
        intervals={"difference": ("low", "high")},
        labels={"difference": "variant − full [95 % CI]", "variant_only": "only variant right",
                "reference_only": "only full right", "p_value": "p", "p_holm": "p (Holm)"},
        notes=("Exact McNemar test of each variant against the full model (All included) on the same images, on the "
               "images where exactly one of the two is right (noisy: the first noise draw); Newcombe's paired "
               "interval; Holm over every variant and condition of the table (family-wise error ≤ 5 %). A "
               "difference whose Holm p is above 0.05 is not resolved by these images.",),
    )
