"""hahrobust attack: verified robust accuracy under AutoAttack, PGD, FMN, DDN or Square, and the paper's Table 1."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import typer
from torch import nn

from hahrobust.attacks import (
    ATTACK_NORMS, ATTACKS, DEFAULT_EPS, MINIMUM_NORM, NORMS, SYMBOLS, AttackOutcome, DDNConfig, FMNConfig, PGDConfig,
    check_attack, check_norm, format_eps, parse_eps, run_attack_images,
)
from hahrobust import distributed
from hahrobust.attacks.autoattack import autoattack_flags, check_aa_version, load_autoattack
from hahrobust.attacks.gradients import GradientPath, effective_path
from hahrobust.attacks.journal import rank_journal
from hahrobust.attacks.norms import COORD_TOLERANCE
from hahrobust.attacks.square import SquareConfig
from hahrobust.cli._adaptive import (
    BPDA_BACKWARD, BPDA_TEMPERATURE, EOT_SAMPLES, EOT_SIGMA, GRADIENT, LOSS, SURROGATE, check_loss, gradient_path,
    load_surrogate,
)
from hahrobust.cli._common import console, handle_errors, make_progress, slug
from hahrobust.cli._eval import (
    BPDA_TYPES, CHECKPOINTS, DATA, DEVICE, LABEL, NORMALIZE, OUT, SEED, WEIGHTS, EvalOptions, LoadedModel, N,
    bpda_types, common_settings, finish, load_test_set, open_session, parse_bpda, per_model,
)
from hahrobust.data import ImageSet
from hahrobust.errors import HahrobustError
from hahrobust.results import Figure, Layout, Result
from hahrobust.studies.audit import DEFAULT_ENSEMBLE, AuditConfig, member_journal
from hahrobust.studies.minimum_norm import best_rows
from hahrobust.studies.paper_table import PAPER_CONDITIONS, audited_columns, paper_layout, paper_table

NAME = "attack"
HELP = "Robust accuracy under AutoAttack, PGD, FMN, DDN or Square (ℓ∞/ℓ2/ℓ1/ℓ0), every example verified; --table paper: Table 1."

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


TITLES = {"autoattack": "AutoAttack", "pgd": "PGD", "fmn": "FMN", "ddn": "DDN", "square": "Square"}


def _values(attacks: list[str]) -> tuple[str, ...]:
    values = ("clean_acc", "robust_acc", "success_rate")
    if attacks[0] in MINIMUM_NORM:
        values += ("median_distance", "mean_distance", "unfound")
    return values + (("best_from",) if len(attacks) > 1 else ())


def attack_layout(attacks: list[str], norms: list[str]) -> Layout:
    """The table of one attack, or of several minimum-norm attacks and their per-image best (a row each)."""
    minimum_norm = attacks[0] in MINIMUM_NORM
    several = len(attacks) > 1
    return Layout(
        title=f"Robust accuracy under {', '.join(TITLES[a] for a in attacks)}{' and their per-image best' if several else ''} "
        f"({', '.join(SYMBOLS[n] for n in norms)})",
        index=("model", *(("attack",) if several else ()), "norm_label", "eps_label"),
        values=_values(attacks),
        formats={
            "clean_acc": "{:.1%}", "robust_acc": "{:.1%}", "success_rate": "{:.1%}",
            "median_distance": "{:.4g}", "mean_distance": "{:.4g}", "unfound": "{:.0f}",
        },
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
    "--surrogate, then more effort and Square on the survivors); AutoAttack's column is that ensemble's member."
)
TABLE_LAYOUT = paper_layout(
    "Accuracy on clean, noisy and adversarial inputs (Table 1)",
    notes=NOTES[:2] + (
        "Noisy: Gaussian noise σ = 0.1 added to the [0, 1] image and clipped (the noise-sweep metric). "
        "Adversarial columns: AutoAttack at the paper's ε.",
    ),
)


@handle_errors
def command(
    checkpoints: list[Path] = CHECKPOINTS,
    label: Optional[list[str]] = LABEL,
    attack: Optional[str] = typer.Option(
        None, "--attack", "-a",
        help=f"{' | '.join(ATTACKS)} (default autoattack); several minimum-norm attacks, e.g. fmn,ddn, add their per-image best.",
    ),
    norm: Optional[str] = typer.Option(
        None, "--norm", help="linf | l2 | l1 | l0, or a comma-separated list of them (default linf)."
    ),
    eps: Optional[str] = typer.Option(
        None, "--eps",
        help="Comma-separated ε, fractions allowed (2/255,8/255). Default per norm: "
        + ", ".join(f"{n} {format_eps(DEFAULT_EPS[n][0], n)}" for n in NORMS) + " (ℓ0 counts changed values).",
    ),
    aa_version: str = typer.Option(
        "standard", "--aa-version",
        help="AutoAttack: standard (APGD-CE, APGD-T, FAB-T, Square) or paper (APGD-CE + APGD-T, one restart).",
    ),
    steps: Optional[int] = typer.Option(None, "--steps", help="PGD/FMN/DDN iterations (default 100)."),
    restarts: Optional[int] = typer.Option(None, "--restarts", help="PGD restarts (default 5)."),
    queries: Optional[int] = typer.Option(None, "--queries", help="Square: model queries per image (default 1000)."),
    gradient: Optional[str] = GRADIENT,
    bpda_backward: str = BPDA_BACKWARD,
    bpda_temperature: float = BPDA_TEMPERATURE,
    eot_samples: int = EOT_SAMPLES,
    eot_sigma: float = EOT_SIGMA,
    loss: Optional[str] = LOSS,
    surrogate: Optional[Path] = SURROGATE,
    table: Optional[str] = typer.Option(
        None, "--table", help="paper: Table 1 (clean, noisy σ = 0.1, AutoAttack ℓ∞ 2/255 and ℓ2 0.25)."
    ),
    adaptive: bool = typer.Option(
        False, "--adaptive",
        help="--table paper: beside each AutoAttack column, the audit's per-image worst case (hahrobust audit's "
        "ensemble, AutoAttack included; --surrogate adds its transfer member).",
    ),
    n: Optional[int] = N,
    data: Optional[str] = DATA,
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="Images attacked together (default 100 on CPU, 500 on CUDA)."
    ),
    device: str = DEVICE,
    seed: int = SEED,
    out: Optional[Path] = OUT,
    resume: bool = typer.Option(
        False, "--resume", help="Continue a killed run from the journal in --out, without redoing finished batches."
    ),
    save_adv: bool = typer.Option(
        False, "--save-adv",
        help="Write the verified adversarial examples to --out as adv-<model>-<attack>-<norm>[-<gradient>-<hash>].safetensors."
    ),
    bpda: Optional[list[str]] = BPDA_TYPES,
    weights: Optional[list[Path]] = WEIGHTS,
    normalize: Optional[list[str]] = NORMALIZE,
) -> None:
    # Every option is checked before any checkpoint or image is loaded.
    check_aa_version(aa_version)
    surrogate_names = parse_bpda(bpda)
    path = gradient_path(gradient or ("bpda" if surrogate_names else "plain"), bpda_backward, bpda_temperature,
                         eot_samples, eot_sigma)
    if surrogate_names and not path.uses_bpda:
        raise HahrobustError(f"--bpda maps layers for --gradient bpda or bpda+eot, not {path.name}")
    check_loss(loss)
    if adaptive and table != "paper":
        raise HahrobustError("--adaptive adds columns to --table paper; for one attack use --gradient, for all of them `hahrobust audit`")
    if adaptive and (gradient is not None or surrogate_names):
        raise HahrobustError("--adaptive runs the audit's own gradient paths: drop --gradient/--bpda")
    if table is not None:
        if table != "paper":
            raise HahrobustError(f"unknown --table {table!r}; the only table is 'paper'")
        if attack is not None or norm is not None or eps is not None:
            raise HahrobustError("--table paper fixes the attacks (AutoAttack ℓ∞ 2/255 and ℓ2 0.25): drop --attack/--norm/--eps")
        plan = [("autoattack", n_, [e]) for n_, e in TABLE_ATTACKS]
    else:
        names = _attack_names(attack or "autoattack")
        norms = [check_norm(p) for p in (norm or "linf").split(",") if p.strip()]
        if not norms or len(set(norms)) != len(norms):
            raise HahrobustError(f"--norm {norm!r}: give distinct norms from {', '.join(NORMS)}")
        if eps is not None and len(norms) > 1:
            raise HahrobustError("--eps needs a single --norm (ε values mean different things per norm)")
        plan = []
        for p in norms:
            supporting = [a for a in names if p in ATTACK_NORMS[a]] or [check_attack(names[0], p)[0]]
            plan += [(a, p, parse_eps(eps, p) if eps is not None else list(DEFAULT_EPS[p])) for a in supporting]
    attacks = {a for a, _, _ in plan}
    if restarts is not None and attacks != {"pgd"}:
        raise HahrobustError("--restarts applies to --attack pgd only")
    if loss is not None and attacks != {"pgd"}:
        raise HahrobustError("--loss applies to --attack pgd only")
    if steps is not None and (steps < 1 or attacks <= {"autoattack", "square"}):
        raise HahrobustError("--steps must be ≥ 1" if steps < 1 else "--steps applies to pgd, fmn and ddn (Square: --queries)")
    if queries is not None and (queries < 1 or attacks != {"square"}):
        raise HahrobustError("--queries must be ≥ 1" if queries < 1 else "--queries applies to --attack square only")
    if restarts is not None and restarts < 1:
        raise HahrobustError(f"--restarts must be ≥ 1, got {restarts}")
    if (resume or save_adv) and out is None:
        raise HahrobustError(f"{'--resume' if resume else '--save-adv'} needs --out DIR (journals and examples live there)")
    if batch_size is not None and batch_size < 1:
        raise HahrobustError(f"--batch-size must be at least 1, got {batch_size}")
    if "autoattack" in attacks:
        load_autoattack()  # a missing implementation is reported before any loading
    pgd_config = PGDConfig(**{k: v for k, v in {"steps": steps, "restarts": restarts, "loss": loss}.items() if v is not None})
    fmn_config = FMNConfig(**({"steps": steps} if steps is not None else {}))
    ddn_config = DDNConfig(**({"steps": steps} if steps is not None else {}))
    square_config = SquareConfig(**({"queries": queries} if queries is not None else {}))

    options = EvalOptions(
        checkpoints, label, n, data, batch_size or 1, device, seed, out, weights=weights, normalize=normalize
    )
    session = open_session(options)
    size = batch_size or DEFAULT_BATCH.get(session.device.type, DEFAULT_BATCH["cpu"])
    source = load_surrogate(surrogate, [m.model for m in session.models], session.device) if surrogate else None
    types = bpda_types(session, surrogate_names) if surrogate_names else {}
    paths: dict[str, GradientPath] = {}  # each model's gradient: BPDA on a model without thresholds is exact
    gradient_notes: list[str] = []
    for m in session.models:
        paths[m.label], note = effective_path(m.model, path, types.get(m.label))
        gradient_notes += [f"{m.label} has {note}"] if note else []
    stems = {
        (m.label, name, p): f"{slug(m.label)}-{name}-{p}{_gradient_tag(path, types.get(m.label, {}))}"
        for m in session.models for name, p, _ in plan
    }
    journals = [rank_journal(session.out_dir / "journal" / f"{s}.jsonl") for s in stems.values()] if session.out_dir else []
    if adaptive and session.out_dir is not None:  # the audits' journals, one per model, norm and member
        journals += [rank_journal(member_journal(session.out_dir / "journal", f"table1-{slug(m.label)}", p, x.name))
                     for m in session.models for p, _ in TABLE_ATTACKS for x in DEFAULT_ENSEMBLE]
    if not resume and any(j.exists() for j in journals):
        found = next(j for j in journals if j.exists())
        raise HahrobustError(f"{found}: a journal from an earlier run exists; pass --resume to continue it, or remove it")

    flagged: list[str] = []  # AutoAttack's own sanity checks that failed, reported with the results

    def attack_model(m: LoadedModel, test: ImageSet, progress: Any, runs: list[tuple[str, str, list[float]]]) -> pd.DataFrame:
        frames = []
        minimum_norm: dict[str, dict[str, AttackOutcome]] = {}  # norm → attack → per-image distances
        for name, p, eps_list in runs:
            stem = stems[(m.label, name, p)]
            journal = session.out_dir / "journal" / f"{stem}.jsonl" if session.out_dir is not None else None
            with autoattack_flags() as flags:
                outcome = run_attack_images(
                    m.model, test, attack=name, norm=p, eps=eps_list, batch_size=size, seed=seed,
                    device=session.device, progress=progress, journal_path=journal, resume=resume,
                    save_adv=session.out_dir / f"adv-{stem}.safetensors" if save_adv and session.out_dir else None,
                    aa_version=aa_version, pgd_config=pgd_config, fmn_config=fmn_config, ddn_config=ddn_config,
                    square_config=square_config,
                    gradient=paths[m.label], bpda_types=types.get(m.label), surrogate=source,
                    description=f"{m.label} {name} {SYMBOLS[p]}",
                )
            frames.append(outcome.table)
            if name in MINIMUM_NORM:
                minimum_norm.setdefault(p, {})[name] = outcome
            flagged.extend(
                f"AutoAttack's check flagged {m.label} {SYMBOLS[p]} (its % are of the images it attacked in one "
                f"batch, the correctly classified ones): {flag}" for flag in flags
            )
        for p, outcomes in minimum_norm.items():
            if len(outcomes) > 1:
                eps_list = next(e for a, q, e in runs if q == p)
                frames.append(best_rows(outcomes, norm=p, eps=eps_list, dim=test.images[0].numel(), seed=seed))
        return pd.concat(frames, ignore_index=True)

    with make_progress() as progress:
        test = load_test_set(options, progress)
        if table is None:
            rows = per_model(session, lambda m: attack_model(m, test, progress, plan))
        elif not adaptive:
            rows = per_model(session, lambda m: paper_table(
                m.model, test, aa_version=aa_version, seed=seed, batch_size=size, device=session.device,
                progress=progress, run=lambda p, e: attack_model(m, test, progress, [("autoattack", p, [e])]),
            ).assign(n=len(test), seed=seed))
        else:
            rows = per_model(session, lambda m: _adaptive_table(m, test, session, source, size, seed, progress, resume))
    settings = {
        **common_settings(session, test), "batch_size": size,
        "attacks": [{"attack": a, "norm": p, "eps": e} for a, p, e in plan],
        # Only a non-plain gradient is a setting: results of plain attacks compare with older ones (hahrobust check).
        **({"gradient": path.settings()} if path.name != "plain" else {}),
        **({"bpda": surrogate_names} if surrogate_names else {}),
        **({"surrogate": str(surrogate)} if surrogate is not None else {}),
        **({"aa_version": aa_version} if "autoattack" in attacks else {}),
        **({"pgd": pgd_config.__dict__} if "pgd" in attacks else {}),
        **({"fmn": fmn_config.__dict__} if "fmn" in attacks else {}),
        **({"ddn": ddn_config.__dict__} if "ddn" in attacks else {}),
        **({"square": square_config.__dict__} if "square" in attacks else {}),
    }
    # AutoAttack's doubts travel with the numbers: printed, and a note in every output file.
    flagged = list(dict.fromkeys(f for part in distributed.gather({distributed.current().rank: flagged}).values() for f in part))
    for flag in flagged:
        console.print(f"warning: {flag}", markup=False, highlight=False)
    if table is None:
        rows.insert(2, "norm_label", rows["norm"].map(SYMBOLS))
        rows.insert(4, "eps_label", [format_eps(e, p) for e, p in zip(rows["eps"], rows["norm"])])
        if len({a for a, _, _ in plan}) > 1:
            rows["series"] = rows["model"] + " · " + rows["attack"]
        command_name, layout = NAME, attack_layout(list(dict.fromkeys(a for a, _, _ in plan)), list(dict.fromkeys(p for _, p, _ in plan)))
        how = [f"{path.name.upper()} gradient"] if path.name != "plain" else []
        how += [f"transferred from {surrogate.name}"] if surrogate is not None else []
        if how:
            layout = dataclasses.replace(layout, title=f"{layout.title}, {', '.join(how)}")
    else:
        command_name, layout = "attack-table1", TABLE_LAYOUT
        if adaptive:
            layout = dataclasses.replace(layout, notes=(*layout.notes, ADAPTIVE_NOTE))
            settings["adaptive"] = {"ensemble": [m.name for m in DEFAULT_ENSEMBLE], "config": dataclasses.asdict(AuditConfig())}
    layout = dataclasses.replace(layout, notes=(*layout.notes, *gradient_notes, *flagged))
    checkpoints = {**session.checkpoints, **({"transfer source": surrogate} if surrogate is not None else {})}
    finish(Result(command_name, rows, settings, checkpoints, layout, started=session.started), session)
    # The results are written: the journals (crash recovery only) have done their job.
    for journal in journals:  # under torchrun each rank removes its own
        journal.unlink(missing_ok=True)
        shutil.rmtree(journal.with_name(journal.name.removesuffix(".jsonl") + ".adv"), ignore_errors=True)
    distributed.barrier()
    folder = session.out_dir / "journal" if session.out_dir is not None else None
    if folder is not None and distributed.current().is_main and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _adaptive_table(
    m: LoadedModel, test: ImageSet, session: Any, source: nn.Module | None, size: int, seed: int, progress: Any,
    resume: bool,
) -> pd.DataFrame:
    """Table 1 with the adaptive columns: one audit per norm at the paper's ε; its AutoAttack member fills the
    AutoAttack column (the same standard run), its worst case the column beside it."""
    run, adaptive = audited_columns(
        m.model, test, surrogate=source, seed=seed, batch_size=size, device=session.device, progress=progress,
        journal_dir=session.out_dir / "journal" if session.out_dir is not None else None,
        journal_stem=f"table1-{slug(m.label)}", resume=resume,
    )
    return paper_table(m.model, test, seed=seed, batch_size=size, device=session.device, progress=progress,
                       run=run, adaptive=adaptive).assign(n=len(test), seed=seed)


def _attack_names(spec: str) -> list[str]:
    """``--attack``: one attack, or several distinct minimum-norm attacks (their per-image best is added)."""
    names = [a.strip() for a in spec.split(",") if a.strip()]
    for a in names:
        if a not in ATTACKS:
            raise HahrobustError(f"unknown attack {a!r}; choose one of: {', '.join(ATTACKS)}")
    if not names or len(set(names)) != len(names):
        raise HahrobustError(f"--attack {spec!r}: give distinct attacks from {', '.join(ATTACKS)}")
    if len(names) > 1 and any(a not in MINIMUM_NORM for a in names):
        raise HahrobustError(
            f"--attack {spec!r}: only minimum-norm attacks ({', '.join(MINIMUM_NORM)}) run together (their per-image "
            "best is reported); run fixed-ε attacks one at a time, or all of them with `hahrobust audit`"
        )
    return names


def _gradient_tag(path: GradientPath, types: dict[type[nn.Module], str]) -> str:
    """A journal-name suffix that differs whenever the gradient does (name, surrogate settings, mapped types),
    so a --resume never continues batches attacked through another gradient; empty for the plain gradient."""
    if path.name == "plain":
        return ""
    mapped = sorted(f"{cls.__module__}.{cls.__qualname__}={kind}" for cls, kind in types.items())
    digest = hashlib.sha256(json.dumps([path.settings(), mapped], sort_keys=True).encode()).hexdigest()[:8]
    return f"-{path.name.replace('+', '-')}-{digest}"


__all__ = ["HELP", "NAME", "command"]
