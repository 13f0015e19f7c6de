"""Verified robust accuracy under one attack (or several minimum-norm attacks and their per-image best), and the
paper's Table 1: ``hahrobust attack`` as functions (:func:`attack`, :func:`table1`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.progress import Progress
from torch import nn

from hahrobust import distributed
from hahrobust.attacks import registry
from hahrobust.attacks.autoattack import autoattack_flags
from hahrobust.attacks.gradients import GradientPath, effective_path
from hahrobust.attacks.norms import COORD_TOLERANCE, SYMBOLS, format_eps
from hahrobust.attacks.outcome import AttackOutcome
from hahrobust.attacks.run import AttackRequest, RunOptions, run_attack_images
from hahrobust.data import ImageSet
from hahrobust.evaluate._common import Models, as_device, common_settings, loaded, origins, per_model
from hahrobust.evaluate.opening import LoadedModel, bpda_types_for, load_transfer_source
from hahrobust.nn.surrogate import SurrogateKind
from hahrobust.provenance import slug
from hahrobust.results import Figure, Layout, Result
from hahrobust.studies.audit import AuditConfig, default_ensemble, member_journal
from hahrobust.studies.minimum_norm import best_rows
from hahrobust.stats import interval_columns
from hahrobust.studies.paper_table import (PAPER_CONDITIONS, audited_columns, convergence_notes, paper_layout,
                                            paper_table)

NAME = "attack"
TABLE_NAME = "attack-table1"
#: One planned run: (attack, norm, ε list).
Run = tuple[str, str, Sequence[float]]

#: Batch sizes when --batch-size is not given: attacks keep a graph per batch, so CPU batches stay small.
DEFAULT_BATCH = {"cpu": 100, "cuda": 500}
#: Table 1's adversarial columns (the clean and noisy ones come with them from hahrobust.studies.paper_table).
TABLE_ATTACKS = tuple((c.norm, c.eps) for c in PAPER_CONDITIONS if c.norm is not None and c.eps is not None)

NOTES = (
    "Every adversarial example is verified before it counts: finite, inside [0, 1], within ε of its clean "
    f"image in the stated norm up to float tolerance (per value {COORD_TOLERANCE:.2g}: ℓ∞ that, ℓ2 ×√d, ℓ1 ×d, "
    "ℓ0 exact), and re-predicted by the model in eval mode; a violation stops the run.",
    "Robust = classified correctly clean and on the verified example. Images misclassified clean are not "
    "attacked and count as non-robust at distance 0; success rate = fooled / correctly classified.",
    "ℓ0 counts changed values (a pixel changed in 3 channels counts 3), as FMN's reference implementation does.",
)
MIN_NORM_NOTES = (
    "Minimum-norm attacks: robust at ε = the smallest verified adversarial distance found is > ε. Median over "
    "all n images (0 for misclassified, ∞ where none was found: 'unfound'); mean (Fig. 5) over the correctly "
    "classified images for which one was found.",
    "Minimum-norm distances are upper bounds: check the implied robust accuracy against PGD at the same ε "
    "(--attack pgd) before reading them as robustness (on the small HaH VGG-16, FMN leaves 18 % robust at "
    "ℓ∞ 2/255 where PGD finds 8.5 %).",
)
BEST_NOTES = (
    "Best-of rows: an image's distance is the smallest verified one any of the minimum-norm attacks found for "
    "it (AttackBench's per-sample judgement); 'smallest distance from' counts the attacked images each attack "
    "supplied it for (ties go to the attack listed first).",
)



def _values(attacks: list[str]) -> tuple[str, ...]:
    values = ("clean_acc", "robust_acc", "success_rate")
    if registry.get(attacks[0]).minimum_norm:
        values += ("median_distance", "mean_distance", "unfound")
    return values + (("best_from",) if len(attacks) > 1 else ())


def attack_layout(attacks: list[str], norms: list[str]) -> Layout:
    """The table of one attack, or of several minimum-norm attacks and their per-image best (a row each)."""
    minimum_norm = registry.get(attacks[0]).minimum_norm
    several = len(attacks) > 1
    return Layout(
        title=f"Robust accuracy under {', '.join(registry.get(a).display for a in attacks)}{' and their per-image best' if several else ''} "
        f"({', '.join(SYMBOLS[n] for n in norms)})",
        index=("model", *(("attack",) if several else ()), "norm_label", "eps_label"),
        values=_values(attacks),
        formats={
            "clean_acc": "{:.1%}", "robust_acc": "{:.1%}", "success_rate": "{:.1%}",
            "median_distance": "{:.4g}", "mean_distance": "{:.4g}", "unfound": "{:.0f}",
        },
        intervals=interval_columns("clean_acc", "robust_acc"),  # the rows carry them (attacks.outcome)
        labels={
            "norm_label": "norm", "eps_label": "ε", "clean_acc": "clean", "robust_acc": "robust",
            "success_rate": "success", "median_distance": "median dist.", "mean_distance": "mean dist.",
            "best_from": "smallest distance from",
        },
        notes=NOTES + (MIN_NORM_NOTES if minimum_norm else ()) + (BEST_NOTES if several else ()),
        figure=Figure(  # several attacks: one bar series per model and attack (the "series" column)
            kind="bar", x="eps_label", y=("robust_acc",), hue="series" if several else "model",
            facet="norm_label" if len(norms) > 1 else None,
            percent=("robust_acc",), xlabel="ε", ylabels={"robust_acc": "robust accuracy"}, ylim=(0.0, 1.0),
        ),
    )


ADAPTIVE_NOTE = (
    "Worst case (--adaptive): per image, robust only if no attack of `hahrobust audit`'s ensemble broke it "
    "(AutoAttack, PGD with plain, BPDA and EOT gradients and the margin loss, APGD through BPDA, transfer with "
    "--transfer-from, then more effort and Square on the survivors); AutoAttack's column is that ensemble's member."
)
TABLE_LAYOUT = paper_layout(
    "Accuracy on clean, noisy and adversarial inputs (Table 1)",
    notes=NOTES[:2] + (
        "Noisy: Gaussian noise σ = 0.1 added to the [0, 1] image and clipped (the noise-sweep metric). "
        "Adversarial columns: AutoAttack at the paper's ε.",
    ),
)


def journal_stems(
    models: Sequence[LoadedModel], plan: Sequence[Run], gradient: GradientPath,
    types: Mapping[str, Mapping[type[nn.Module], str]],
) -> dict[tuple[str, str, str], str]:
    """The journal (and adversarial-file) stem of each (model label, attack, norm): ``<model>-<attack>-<norm>`` and a
    tag of the gradient when it is not plain."""
    return {
        (m.label, name, p): f"{slug(m.label)}-{name}-{p}{_gradient_tag(gradient, types.get(m.label, {}))}"
        for m in models for name, p, _ in plan
    }


def table1_journals(models: Sequence[LoadedModel], journal_dir: Path) -> list[Path]:
    """The journals of :func:`table1`'s adaptive audits: one per model, norm and ensemble member."""
    return [member_journal(journal_dir, f"table1-{slug(m.label)}", p, x.name)
            for m in models for p, _ in TABLE_ATTACKS for x in default_ensemble(include=("autoattack",))]


@dataclasses.dataclass
class _Runs:
    """What every run of one :func:`attack` or :func:`table1` call shares (built once, before any attack)."""

    data: ImageSet
    plan: Sequence[Run]
    configs: dict[str, Any]
    paths: dict[str, GradientPath]  # per model label: BPDA on a model without thresholds is exact
    types: dict[str, dict[type[nn.Module], SurrogateKind]]
    source: nn.Module | None
    stems: dict[tuple[str, str, str], str]
    size: int
    seed: int
    device: torch.device
    progress: Progress | None
    journal_dir: Path | None
    save_adv_dir: Path | None
    resume: bool
    gradient_notes: list[str]
    flagged: list[str] = dataclasses.field(default_factory=list)  # AutoAttack's own failed sanity checks

    def run(self, m: LoadedModel, plan: Sequence[Run]) -> pd.DataFrame:
        """``m`` attacked by each run of ``plan``: the runs' rows, and a per-image best row per norm where several
        minimum-norm attacks ran."""
        frames = []
        minimum_norm: dict[str, dict[str, AttackOutcome]] = {}  # norm → attack → per-image distances
        for name, p, eps_list in plan:
            outcome = self.attack(m, name, p, eps_list)
            frames.append(outcome.table)
            if registry.get(name).minimum_norm:
                minimum_norm.setdefault(p, {})[name] = outcome
        for p, outcomes in minimum_norm.items():
            if len(outcomes) > 1:
                eps_list = next(e for a, q, e in plan if q == p)
                frames.append(best_rows(outcomes, norm=p, eps=eps_list, dim=self.data.images[0].numel(), seed=self.seed))
        return pd.concat(frames, ignore_index=True)

    def attack(self, m: LoadedModel, name: str, p: str, eps_list: Sequence[float]) -> AttackOutcome:
        """``m`` attacked by one run of the plan (journaled, its adversarial examples saved when asked)."""
        stem = self.stems[(m.label, name, p)]
        with autoattack_flags() as flags:
            outcome = run_attack_images(m.model, self.data, AttackRequest(
                name, p, eps_list, self.configs[name], seed=self.seed, batch_size=self.size,
                gradient=self.paths[m.label], bpda_types=self.types.get(m.label), transfer_source=self.source,
            ), RunOptions(
                self.device, self.progress,
                journal_path=self.journal_dir / f"{stem}.jsonl" if self.journal_dir is not None else None,
                resume=self.resume,
                save_adv=self.save_adv_dir / f"adv-{stem}.safetensors" if self.save_adv_dir is not None else None,
                description=f"{m.label} {name} {SYMBOLS[p]}",
            ))
        self.flagged.extend(
            f"AutoAttack's check flagged {m.label} {SYMBOLS[p]} (its % are of the images it attacked in one "
            f"batch, the correctly classified ones): {flag}" for flag in flags
        )
        return outcome

    def settings(self, gradient: GradientPath, bpda: Mapping[str, SurrogateKind] | None,
                 transfer_from: str | Path | None) -> dict[str, Any]:
        return {
            **common_settings(self.data, seed=self.seed, batch_size=self.size, device=self.device),
            "attacks": [{"attack": a, "norm": p, "eps": list(e)} for a, p, e in self.plan],
            # Only a non-plain gradient is a setting: results of plain attacks compare with older ones (hahrobust check).
            **({"gradient": gradient.settings()} if gradient.name != "plain" else {}),
            **({"bpda": dict(bpda)} if bpda else {}),
            **({"transfer_source": str(transfer_from)} if transfer_from is not None else {}),
            **{k: v for a in registry.names() if a in self.configs
               for k, v in registry.get(a).config_settings(self.configs[a]).items()},
        }


def _prepare(
    opened: list[LoadedModel], data: ImageSet, plan: Sequence[Run], configs: Mapping[str, Any] | None,
    gradient: GradientPath, bpda: Mapping[str, SurrogateKind] | None, transfer_from: str | Path | None, seed: int,
    batch_size: int | None, device: torch.device, progress: Progress | None, journal_dir: Path | None,
    save_adv_dir: Path | None, resume: bool,
) -> _Runs:
    types = bpda_types_for(opened, bpda) if bpda else {}
    paths: dict[str, GradientPath] = {}
    notes: list[str] = []
    for m in opened:
        paths[m.label], note = effective_path(m.model, gradient, types.get(m.label))
        notes += [f"{m.label} has {note}"] if note else []
    return _Runs(
        data=data, plan=plan,
        configs={a: (configs or {}).get(a) or registry.get(a).default_config() for a, _, _ in plan},
        paths=paths, types=types,
        source=load_transfer_source(transfer_from, [m.model for m in opened], device) if transfer_from else None,
        stems=journal_stems(opened, plan, gradient, types),
        size=batch_size or DEFAULT_BATCH.get(device.type, DEFAULT_BATCH["cpu"]), seed=seed, device=device,
        progress=progress, journal_dir=journal_dir, save_adv_dir=save_adv_dir, resume=resume, gradient_notes=notes,
    )


def attack(
    models: Models,
    data: ImageSet,
    *,
    plan: Sequence[Run] = (("autoattack", "linf", (2 / 255,)),),
    configs: Mapping[str, Any] | None = None,
    gradient: GradientPath = GradientPath(),
    bpda: Mapping[str, SurrogateKind] | None = None,
    transfer_from: str | Path | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    journal_dir: Path | None = None,
    save_adv_dir: Path | None = None,
    resume: bool = False,
) -> Result:
    """Each model attacked by each planned (attack, norm, ε list), every example verified: one row per model,
    attack, norm and ε; minimum-norm attacks run together on a norm also get their per-image best row.

    ``configs``: attack name → its config (default: the registry's defaults). ``gradient`` is the path every attack
    follows (BPDA on a model without thresholds keeps the exact gradient, with a note); ``bpda`` maps further module
    types to a surrogate; ``transfer_from`` (a checkpoint) makes every attack a transfer attack. ``journal_dir``
    journals each run per batch (``resume`` continues); ``save_adv_dir`` keeps the verified examples
    (``adv-<stem>.safetensors``). AutoAttack's own failed sanity checks come back as the result's notes.
    """
    device = as_device(device)
    opened = loaded(models, device)
    runs = _prepare(opened, data, plan, configs, gradient, bpda, transfer_from, seed, batch_size, device, progress,
                    journal_dir, save_adv_dir, resume)
    rows = per_model(opened, lambda m: runs.run(m, plan))
    rows.insert(2, "norm_label", rows["norm"].map(SYMBOLS))
    rows.insert(4, "eps_label", [format_eps(e, p) for e, p in zip(rows["eps"], rows["norm"])])
    if len({a for a, _, _ in plan}) > 1:
        rows["series"] = rows["model"] + " · " + rows["attack"]
    layout = attack_layout(list(dict.fromkeys(a for a, _, _ in plan)), list(dict.fromkeys(p for _, p, _ in plan)))
    how = [f"{gradient.name.upper()} gradient"] if gradient.name != "plain" else []
    how += [f"transferred from {Path(transfer_from).name}"] if transfer_from is not None else []
    if how:
        layout = dataclasses.replace(layout, title=f"{layout.title}, {', '.join(how)}")
    layout = dataclasses.replace(layout, notes=(*layout.notes, *runs.gradient_notes))
    used = {**origins(opened), **({"transfer source": Path(transfer_from)} if transfer_from is not None else {})}
    return Result(NAME, rows, runs.settings(gradient, bpda, transfer_from), used, layout, notes=_gathered(runs.flagged))


def table1(
    models: Models,
    data: ImageSet,
    *,
    adaptive: bool = False,
    aa_version: str = "standard",
    gradient: GradientPath = GradientPath(),
    bpda: Mapping[str, SurrogateKind] | None = None,
    transfer_from: str | Path | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    journal_dir: Path | None = None,
    resume: bool = False,
) -> Result:
    """The paper's Table 1 per model: clean, noisy (σ = 0.1), AutoAttack ℓ∞ 2/255 and ℓ2 0.25; with ``adaptive``,
    beside each AutoAttack column the audit's per-image worst case (``transfer_from`` adds its transfer member;
    ``gradient`` and ``bpda`` then must stay plain: the audit runs its own gradient paths)."""
    device = as_device(device)
    opened = loaded(models, device)
    plan = [("autoattack", p, [e]) for p, e in TABLE_ATTACKS]
    configs = {"autoattack": registry.get("autoattack").configure(aa_version=aa_version)}
    runs = _prepare(opened, data, plan, configs, gradient, bpda, transfer_from, seed, batch_size, device, progress,
                    journal_dir, None, resume)
    if not adaptive:
        rows = per_model(opened, lambda m: paper_table(
            m.model, data, aa_version=aa_version, seed=seed, batch_size=runs.size, device=device, progress=progress,
            run=lambda p, e: runs.attack(m, "autoattack", p, [e]),
        ).rows.assign(n=len(data), seed=seed))
    else:
        rows = per_model(opened, lambda m: _adaptive_table(m, data, device, runs.source, runs.size, seed, progress,
                                                           journal_dir, resume))
    settings = runs.settings(gradient, bpda, transfer_from)
    layout = TABLE_LAYOUT
    if adaptive:
        layout = dataclasses.replace(layout, notes=(*layout.notes, ADAPTIVE_NOTE))
        settings["adaptive"] = {"ensemble": [m.name for m in default_ensemble(include=("autoattack",))], "config": dataclasses.asdict(AuditConfig())}
    layout = dataclasses.replace(layout, notes=(*layout.notes, *runs.gradient_notes))
    used = {**origins(opened), **({"transfer source": Path(transfer_from)} if transfer_from is not None else {})}
    return Result(TABLE_NAME, rows, settings, used, layout, notes=[*_gathered(runs.flagged), *convergence_notes(rows)])


def _gathered(flagged: list[str]) -> list[str]:
    """Every process's flags, each once (under torchrun each rank attacked its own batches)."""
    return list(dict.fromkeys(f for part in distributed.gather({distributed.current().rank: flagged}).values() for f in part))


def _adaptive_table(
    m: LoadedModel, test: ImageSet, device: torch.device, source: nn.Module | None, size: int, seed: int,
    progress: Progress | None, journal_dir: Path | None, resume: bool,
) -> pd.DataFrame:
    """Table 1 with the adaptive columns: one audit per norm at the paper's ε; its AutoAttack member fills the
    AutoAttack column (the same standard run), its worst case the column beside it."""
    run, adaptive = audited_columns(
        m.model, test, transfer_source=source, seed=seed, batch_size=size, device=device, progress=progress,
        journal_dir=journal_dir,
        journal_stem=f"table1-{slug(m.label)}", resume=resume,
    )
    return paper_table(m.model, test, seed=seed, batch_size=size, device=device, progress=progress,
                       run=run, adaptive=adaptive).rows.assign(n=len(test), seed=seed)


def _gradient_tag(path: GradientPath, types: dict[type[nn.Module], str]) -> str:
    """A journal-name suffix that differs whenever the gradient does (name, surrogate settings, mapped types),
    so a --resume never continues batches attacked through another gradient; empty for the plain gradient."""
    if path.name == "plain":
        return ""
    mapped = sorted(f"{cls.__module__}.{cls.__qualname__}={kind}" for cls, kind in types.items())
    digest = hashlib.sha256(json.dumps([path.settings(), mapped], sort_keys=True).encode()).hexdigest()[:8]
    return f"-{path.name.replace('+', '-')}-{digest}"
