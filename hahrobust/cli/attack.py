"""hahrobust attack: verified robust accuracy under AutoAttack, PGD, FMN, DDN, Square or any registered attack, and
the paper's Table 1 (library: hahrobust.evaluate.attack and hahrobust.evaluate.table1)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer

from hahrobust import distributed
from hahrobust.attacks import registry
from hahrobust.attacks.autoattack import check_aa_version
from hahrobust.attacks.journal import rank_journal
from hahrobust.attacks.norms import DEFAULT_EPS, NORMS, check_norm, format_eps, parse_eps
from hahrobust.cli._adaptive import (
    BPDA_BACKWARD, BPDA_TEMPERATURE, EOT_SAMPLES, EOT_SIGMA, GRADIENT, LOSS, TRANSFER_FROM, check_loss, gradient_path,
)
from hahrobust.cli._common import console, handle_errors, make_progress
from hahrobust.cli._eval import (
    BPDA_TYPES, CHECKPOINTS, DATA, DEVICE, LABEL, NORMALIZE, OUT, OVERWRITE, SEED, WEIGHTS, EvalOptions, N, bpda_types,
    finish, load_test_set, open_session, parse_bpda,
)
from hahrobust.errors import HahrobustError
from hahrobust import evaluate
from hahrobust.evaluate.robustness import NAME, TABLE_ATTACKS, TABLE_NAME, journal_stems, table1_journals


@handle_errors
def command(
    checkpoints: list[Path] = CHECKPOINTS,
    label: Optional[list[str]] = LABEL,
    attack: Optional[str] = typer.Option(
        None, "--attack", "-a",
        help=f"{' | '.join(registry.names())}; several minimum-norm attacks, e.g. fmn,ddn, add their per-image best.",
        show_default="autoattack",
    ),
    norm: Optional[str] = typer.Option(
        None, "--norm", help="linf | l2 | l1 | l0, or a comma-separated list of them.", show_default="linf"
    ),
    eps: Optional[str] = typer.Option(
        None, "--eps",
        help="Comma-separated ε, fractions allowed (2/255,8/255); ℓ0 counts changed values.",
        show_default="per norm: " + ", ".join(f"{n} {format_eps(DEFAULT_EPS[n][0], n)}" for n in NORMS),
    ),
    aa_version: Optional[str] = typer.Option(
        None, "--aa-version",
        help="AutoAttack: standard (APGD-CE, APGD-T, FAB-T, Square) or paper (APGD-CE + APGD-T, one restart).",
        show_default="standard",
    ),
    steps: Optional[int] = typer.Option(None, "--steps", help="PGD/FMN/DDN iterations.", show_default="100"),
    restarts: Optional[int] = typer.Option(None, "--restarts", help="PGD restarts.", show_default="5"),
    queries: Optional[int] = typer.Option(None, "--queries", help="Square: model queries per image.", show_default="1000"),
    gradient: Optional[str] = GRADIENT,
    bpda_backward: str = BPDA_BACKWARD,
    bpda_temperature: float = BPDA_TEMPERATURE,
    eot_samples: int = EOT_SAMPLES,
    eot_sigma: float = EOT_SIGMA,
    loss: Optional[str] = LOSS,
    transfer_from: Optional[Path] = TRANSFER_FROM,
    table: Optional[str] = typer.Option(
        None, "--table", help="paper: Table 1 (clean, noisy σ = 0.1, AutoAttack ℓ∞ 2/255 and ℓ2 0.25)."
    ),
    adaptive: bool = typer.Option(
        False, "--adaptive",
        help="--table paper: beside each AutoAttack column, the audit's per-image worst case (hahrobust audit's "
        "ensemble, AutoAttack included; --transfer-from adds its transfer member).",
    ),
    n: Optional[int] = N,
    data: Optional[str] = DATA,
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="Images attacked together (bounds memory).", show_default="100 on CPU, 500 on CUDA"
    ),
    device: str = DEVICE,
    seed: int = SEED,
    out: Optional[Path] = OUT,
    overwrite: bool = OVERWRITE,
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
    if aa_version is not None:
        check_aa_version(aa_version)
    bpda_names = parse_bpda(bpda)
    path = gradient_path(gradient or ("bpda" if bpda_names else "plain"), bpda_backward, bpda_temperature,
                         eot_samples, eot_sigma)
    if bpda_names and not path.uses_bpda:
        raise HahrobustError(f"--bpda maps layers for --gradient bpda or bpda+eot, not {path.name}")
    check_loss(loss)
    if adaptive and table != "paper":
        raise HahrobustError("--adaptive adds columns to --table paper; for one attack use --gradient, for all of them `hahrobust audit`")
    if adaptive and (gradient is not None or bpda_names):
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
            supporting = [a for a in names if p in registry.ATTACK_NORMS[a]] or [registry.check_attack(names[0], p)[0]]
            plan += [(a, p, parse_eps(eps, p) if eps is not None else list(DEFAULT_EPS[p])) for a in supporting]
    attacks = {a for a, _, _ in plan}
    for option, value in {"steps": steps, "restarts": restarts, "queries": queries}.items():
        if value is not None and value < 1:
            raise HahrobustError(f"--{option} must be ≥ 1, got {value}")
    # Each option sets a field of the attacks that take it (the registry says which); one no attack takes is refused.
    given = {"restarts": restarts, "loss": loss, "steps": steps, "queries": queries, "aa_version": aa_version}
    registry.check_options(attacks, **given)
    if (resume or save_adv) and out is None:
        raise HahrobustError(f"{'--resume' if resume else '--save-adv'} needs --out DIR (journals and examples live there)")
    if batch_size is not None and batch_size < 1:
        raise HahrobustError(f"--batch-size must be at least 1, got {batch_size}")
    configs = {a: registry.get(a).configure(**given) for a in registry.names() if a in attacks}
    for a, config in configs.items():  # e.g. a missing AutoAttack is reported before any loading
        if (prepare := registry.get(a).prepare) is not None:
            prepare(config)

    options = EvalOptions(
        checkpoints, label, n, data, batch_size or 1, device, seed, out, weights=weights, normalize=normalize,
        overwrite=overwrite, resume=resume, results=(TABLE_NAME if table is not None else NAME,),
    )
    session = open_session(options)
    types = bpda_types(session, bpda_names) if bpda_names else {}  # a --bpda type no model has fails here
    journal_dir = session.out_dir / "journal" if session.out_dir is not None else None
    journals: list[Path] = []
    if journal_dir is not None:
        journals = [journal_dir / f"{s}.jsonl" for s in journal_stems(session.models, plan, path, types).values()]
        journals += table1_journals(session.models, journal_dir) if adaptive else []
        journals = [rank_journal(j) for j in journals]
    if not resume and any(j.exists() for j in journals):
        found = next(j for j in journals if j.exists())
        raise HahrobustError(f"{found}: a journal from an earlier run exists; pass --resume to continue it, or remove it")

    with make_progress() as progress:
        test = load_test_set(options, progress)
        common = dict(gradient=path, bpda=bpda_names or None, transfer_from=transfer_from, seed=seed,
                      batch_size=batch_size, device=session.device, progress=progress, journal_dir=journal_dir,
                      resume=resume)
        if table is None:
            result = evaluate.attack(session.models, test, plan=plan, configs=configs,
                                     save_adv_dir=session.out_dir if save_adv else None, **common)
        else:
            result = evaluate.table1(session.models, test, adaptive=adaptive, aa_version=aa_version or "standard",
                                     **common)
    # AutoAttack's doubts travel with the numbers: printed, and a note in every output file.
    for flag in result.notes:
        console.print(f"warning: {flag}", markup=False, highlight=False)
    finish(result, session)
    # The results are written: the journals (crash recovery only) have done their job.
    for journal in journals:  # under torchrun each rank removes its own
        journal.unlink(missing_ok=True)
        shutil.rmtree(journal.with_name(journal.name.removesuffix(".jsonl") + ".adv"), ignore_errors=True)
    distributed.barrier()
    if journal_dir is not None and distributed.current().is_main and journal_dir.is_dir() and not any(journal_dir.iterdir()):
        journal_dir.rmdir()


def _attack_names(spec: str) -> list[str]:
    """``--attack``: one attack, or several distinct minimum-norm attacks (their per-image best is added)."""
    names = [a.strip() for a in spec.split(",") if a.strip()]
    for a in names:
        registry.get(a)  # an unknown name is an error listing the known ones
    if not names or len(set(names)) != len(names):
        raise HahrobustError(f"--attack {spec!r}: give distinct attacks from {', '.join(registry.names())}")
    if len(names) > 1 and not all(registry.get(a).minimum_norm for a in names):
        raise HahrobustError(
            f"--attack {spec!r}: only minimum-norm attacks ({', '.join(registry.minimum_norm_names())}) run together (their per-image "
            "best is reported); run fixed-ε attacks one at a time, or all of them with `hahrobust audit`"
        )
    return names


__all__ = ["NAME", "command"]
