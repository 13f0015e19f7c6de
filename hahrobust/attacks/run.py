"""The attack runner: verified robust accuracy of a model on an image set, per batch, journaled.

One entry point, :func:`run_attack`: a model, a labelled image set, an attack, a norm and a list of ε in; a
table with one row per ε out (clean accuracy, robust accuracy, success rate, distances, n, seed, seconds).

Protocol (the same for every attack):

1. Clean predictions are computed once per batch; images misclassified clean are *not* attacked: they
   count as non-robust with distance 0 (their own clean image is already an adversarial example).
2. The attack runs on the correctly classified images only.
3. Every returned example is verified (:mod:`hahrobust.attacks.verify`): finite, inside [0, 1], within ε
   in the norm up to a stated float tolerance (fixed-ε attacks), and re-predicted by the model in eval
   mode. A violation raises; whether an example is adversarial is what the recomputed prediction says.
4. Robust at ε = correct clean and not fooled by a verified example within ε, so robust accuracy ≤ clean
   accuracy by construction. For minimum-norm attacks (FMN, DDN), robust at ε = correct clean and the
   verified minimum distance found is > ε (or no adversarial example was found).

Norms and ε: :mod:`hahrobust.attacks.norms` (ℓ0 counts changed values; default ε per norm there).
Attacks come from the registry (:mod:`hahrobust.attacks.registry`): the runner calls an entry's run function and
has no per-attack branches. Square queries logits only: the gradient path does not change it.
Gradients: ``gradient`` (:mod:`hahrobust.attacks.gradients`) swaps the model the attack differentiates for
one with the same logits and an adaptive backward (BPDA, EOT); ``transfer_source`` makes it a transfer attack (the
attack runs on another model, its examples are verified on this one). Verification always uses the model itself.
Per-image outcomes and summary rows: :mod:`hahrobust.attacks.outcome`; adversarial-example files (``save_adv``,
:func:`load_adversarial`, :func:`recheck`): :mod:`hahrobust.attacks.adversarial_files`.

Randomness: PGD's starts and Square's calls are seeded per image; FMN and DDN are deterministic; AutoAttack is seeded per batch
with the caller's global RNG state restored. Same inputs and seed → same numbers on CPU; with a journal a
killed run resumes per batch and ends with the same numbers (only wall time differs).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from torch import nn

from hahrobust import distributed
from hahrobust.attacks._common import attack_flags, eval_mode
from hahrobust.attacks.adversarial_files import ADV_FORMAT, load_adversarial, recheck, write_adversarial
from hahrobust.attacks.gradients import GradientPath, adapt
from hahrobust.attacks.journal import Journal, data_fingerprint, model_fingerprint, rank_journal
from hahrobust.attacks.norms import DEFAULT_EPS, SYMBOLS, check_eps, format_eps
from hahrobust.attacks.passes import count_passes
from hahrobust.attacks.outcome import (
    COLUMNS, AttackOutcome, distance_summary, per_image, robust_at, robust_flags, summarise, summary_rows,
)
from hahrobust.attacks.registry import ATTACK_NORMS, DEFAULT_ATTACK, AttackSpec, check_attack, get
from hahrobust.attacks.verify import verify
from hahrobust.data import ImageSet, balanced_subset, batches, num_batches
from hahrobust.distributed import Shard
from hahrobust.errors import HahrobustError
from hahrobust.nn.surrogate import SurrogateTypes
from hahrobust.provenance import versions

__all__ = [
    "ADV_FORMAT", "ATTACK_NORMS", "COLUMNS", "AttackOutcome", "check_attack", "distance_summary", "load_adversarial",
    "AttackRequest", "RunOptions", "recheck", "robust_at", "run_attack", "run_attack_images", "split_arguments",
    "summary_rows",
]


@dataclass(frozen=True)
class AttackRequest:
    """What a run measures: the attack and its budget. Every field changes the numbers (and the journal's key)."""

    attack: str = DEFAULT_ATTACK
    norm: str = "linf"
    eps: Sequence[float] | None = None  # default: DEFAULT_EPS of the norm
    config: Any = None  # the attack's config dataclass; default: its registry entry's defaults
    n: int | None = None  # attack a class-balanced subset of n images (chosen by the seed)
    seed: int = 0
    batch_size: int = 100  # AutoAttack's (and a batched Square's) examples depend on which images share a call
    gradient: GradientPath = GradientPath()
    bpda_types: SurrogateTypes | None = None
    transfer_source: nn.Module | None = None


@dataclass(frozen=True)
class RunOptions:
    """How a run goes: where, with which journal, progress and files. None of these changes a number."""

    device: torch.device | str = "cpu"
    progress: Progress | None = None
    journal_path: str | Path | None = None
    resume: bool = False
    save_adv: str | Path | None = None
    description: str | None = None
    on_batch: Callable[[int], None] | None = None
    shard: Shard | None = None


def split_arguments(**kwargs: Any) -> tuple[AttackRequest, RunOptions]:
    """Keyword arguments (as a notebook writes them) as the request and the options: each name is a field of one."""
    fields = {cls: {f.name for f in dataclasses.fields(cls)} for cls in (AttackRequest, RunOptions)}
    unknown = set(kwargs) - fields[AttackRequest] - fields[RunOptions]
    if unknown:
        raise TypeError(f"unexpected argument(s) {', '.join(sorted(unknown))}: not a field of AttackRequest or RunOptions")
    return (AttackRequest(**{k: v for k, v in kwargs.items() if k in fields[AttackRequest]}),
            RunOptions(**{k: v for k, v in kwargs.items() if k in fields[RunOptions]}))


def run_attack(model: nn.Module, data: ImageSet, **kwargs: Any) -> pd.DataFrame:
    """Attack ``model`` on ``data`` and return one verified row per ε: the keyword form of
    :func:`run_attack_images` (each keyword a field of :class:`AttackRequest` or :class:`RunOptions`; columns
    :data:`COLUMNS`; accuracies and rates as fractions)."""
    return run_attack_images(model, data, *split_arguments(**kwargs)).table


def run_attack_images(
    model: nn.Module, data: ImageSet, request: AttackRequest = AttackRequest(), options: RunOptions = RunOptions(),
) -> AttackOutcome:
    """Attack ``model`` on ``data`` (or its class-balanced subset of ``request.n`` images, chosen by the seed): one
    verified row per ε and the per-image outcome (:class:`AttackOutcome`). The names below are the fields of
    ``request`` (what is measured) and ``options`` (how the run goes).

    ``attack`` names a registered attack (:mod:`hahrobust.attacks.registry`) and ``config`` is its config
    dataclass (default: the entry's defaults). ``gradient`` is the gradient the attack follows (plain autograd,
    BPDA, EOT; ``bpda_types`` maps further module types of the model to a surrogate kind, see
    :class:`hahrobust.nn.surrogate.BPDA`); with ``transfer_source`` the attack runs on that model instead (transfer)
    and its examples are verified on ``model``.

    ``eps`` defaults to :data:`~hahrobust.attacks.norms.DEFAULT_EPS` of the norm. ``journal_path`` (a
    ``.jsonl`` file) records each finished batch; with ``resume=True`` an existing journal's batches are
    not redone. ``save_adv`` writes the verified adversarial examples to a safetensors file (see
    :func:`load_adversarial`). ``on_batch(b)`` is called after batch ``b`` is recorded. ``model`` is put in
    eval mode for the run and its previous mode restored afterwards.

    Under torchrun (``shard``, default: the process group) batch ``b`` is attacked whole by rank
    ``b mod world_size`` with the seeds one process would use, and the per-batch records are gathered:
    the same table as one process. Each rank keeps its own journal (``<name>.rank<r>.jsonl``); a resume
    with another number of processes redoes the batches whose owner changed, nothing else.
    """
    attack, eps, config, n, seed, batch_size = (request.attack, request.eps, request.config, request.n, request.seed,
                                                request.batch_size)
    gradient, bpda_types, transfer_source = request.gradient, request.bpda_types, request.transfer_source
    device, progress, journal_path, resume, save_adv, description, on_batch = (
        options.device, options.progress, options.journal_path, options.resume, options.save_adv, options.description,
        options.on_batch)
    shard = options.shard or distributed.current()
    attack, norm = check_attack(attack, request.norm)
    spec = get(attack)
    eps_list = check_eps(DEFAULT_EPS[norm] if eps is None else eps, norm)
    config = spec.default_config() if config is None else config
    if not isinstance(config, spec.config):
        raise HahrobustError(f"{attack} takes a {spec.config.__name__}, got {type(config).__name__}")
    if spec.prepare is not None:
        spec.prepare(config)
    if batch_size < 1:
        raise HahrobustError(f"batch size must be positive, got {batch_size}")
    if n is not None:
        data = balanced_subset(data, n, seed)
    device = torch.device(device)
    if transfer_source is not None and spec.transfer is not None:
        config = spec.transfer(config)
    settings = {
        "attack": attack, "norm": norm, "eps": eps_list, "n": len(data), "seed": seed, "batch_size": batch_size,
        "config": _asdict(config),
        "gradient": gradient.settings(),
        # the journal key predates the name "transfer source"; kept so existing journals still resume
        **({"surrogate": model_fingerprint(transfer_source)} if transfer_source is not None else {}),
    }
    attacked = adapt(transfer_source if transfer_source is not None else model, gradient, seed, bpda_types)
    journal = None
    if journal_path is not None:
        header = {
            **settings, "save_adv": save_adv is not None,
            "model": model_fingerprint(model), "data": data_fingerprint(data),
            # what else changes results: the BPDA type mapping, and the numerics a float flip can hang on
            "bpda_types": sorted(f"{c.__module__}.{c.__qualname__}={k}" for c, k in (bpda_types or {}).items()),
            "environment": environment(device),
        }
        journal = Journal(rank_journal(journal_path, shard), header, resume=resume)
    steps_per_batch = 1 if spec.minimum_norm else len(eps_list)
    total = shard.own_count(num_batches(len(data), batch_size, False))
    label = description or f"{attack} {SYMBOLS[norm]}"
    task = progress.add_task(label, total=total * steps_per_batch) if progress is not None else None
    records: list[dict[str, Any]] = []
    adv_parts: dict[int, dict[str, torch.Tensor]] = {}

    def advance(text: str | None = None) -> None:
        if progress is not None and task is not None:
            progress.update(task, advance=1, **({"description": text} if text else {}))

    with eval_mode(model), eval_mode(transfer_source if transfer_source is not None else model):
        for x, y, idx in batches(data, batch_size, device=device, shard=shard):
            b = int(idx[0]) // batch_size  # the global batch number (the data is not shuffled)
            record = journal.done(b) if journal is not None else None
            if record is None:
                # a transfer source wrapping the model itself (a smooth twin) runs through the model's own hooks
                wraps = transfer_source is not None and any(m is model for m in transfer_source.modules())
                with count_passes(model, None if wraps else transfer_source) as count:
                    record, tensors = _attack_batch(
                        model, attacked, x, y, idx, b, spec=spec, config=config, transfer=transfer_source is not None,
                        norm=norm, eps=eps_list, seed=seed, advance=advance,
                    )
                record["passes"] = [count.forward, count.backward]  # journaled: a resumed run's cost is the whole run's
                if journal is not None:
                    journal.record(record, tensors if save_adv is not None else None)
            else:
                tensors = journal.tensors(b) if save_adv is not None and journal is not None else {}
                for _ in range(steps_per_batch):
                    advance()
            for flag in record.get("flags", []):
                warnings.warn(spec.flag(flag), stacklevel=2)
            records.append(record)
            if save_adv is not None:
                adv_parts[b] = {k: v.cpu() for k, v in tensors.items()}
            if progress is not None and task is not None:
                progress.update(task, description=f"{label} · {_running(records, eps_list, norm, spec.minimum_norm)}")
            if on_batch is not None:
                on_batch(b)
    if progress is not None and task is not None:
        progress.remove_task(task)
    records = list(distributed.gather({r["batch"]: r for r in records}, shard).values())
    dim = int(np.prod(data.images.shape[1:]))
    rows = summarise(records, eps_list, attack, norm, seed, spec.minimum_norm, dim=dim)
    if save_adv is not None:
        parts = list(distributed.gather(adv_parts, shard).values())
        if shard.is_main:
            write_adversarial(Path(save_adv), parts, records, data, settings, model)
    correct, robust, dist = robust_flags(records, eps_list, norm, spec.minimum_norm, dim)
    flags = tuple(dict.fromkeys(f for r in records for f in r.get("flags", [])))
    source_fooled = None
    if transfer_source is not None and not spec.minimum_norm and not records:  # no image to attack (no survivors)
        source_fooled = np.zeros((len(eps_list), 0), dtype=bool)
    elif transfer_source is not None and not spec.minimum_norm:
        source_fooled = np.stack([
            np.concatenate([np.asarray(r["source_pred"][j]) for r in records]) != per_image(records, "label")
            for j in range(len(eps_list))
        ]) & correct
    passes = tuple(int(sum(r.get("passes", (0, 0))[k] for r in records)) for k in (0, 1))
    return AttackOutcome(rows, robust, per_image(records, "index").astype(np.int64), correct, dist, flags, source_fooled,
                         passes)  # type: ignore[arg-type]


def environment(device: torch.device) -> dict[str, Any]:
    """The software and numerics a run's results may depend on: package versions (torch, AutoAttack, …), the
    intra-op thread count (a thresholded model can flip an image between 1 and 2 threads) and the device."""
    return {"versions": versions(), "threads": torch.get_num_threads(), "device": str(device)}


def _asdict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _attack_batch(
    model: nn.Module,
    attacked: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    idx: torch.Tensor,
    batch: int,
    *,
    spec: AttackSpec,
    config: Any,
    transfer: bool,
    norm: str,
    eps: list[float],
    seed: int,
    advance: Callable[[], None],
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Attack one batch: a journal record (plain JSON types) and the verified adversarial tensors.

    ``attacked`` is what the attack differentiates (``model`` with another backward, or a transfer source);
    clean predictions and verification always use ``model``."""
    with torch.no_grad():
        clean_pred = model(x).argmax(dim=1)
    todo = (clean_pred == y).nonzero().flatten()  # misclassified images are not attacked (distance 0)
    record: dict[str, Any] = {
        "batch": batch, "index": idx.tolist(), "label": y.tolist(), "clean_pred": clean_pred.tolist(),
    }
    tensors: dict[str, torch.Tensor] = {}
    record["pred"], record["distance"], record["seconds"] = [], [], []
    # A minimum-norm attack runs once (ε = None) and its distances serve every ε.
    for j, e in enumerate([None] if spec.minimum_norm else eps):
        start = time.perf_counter()
        x_adv = x.clone()
        if e != 0 and len(todo):
            with attack_flags() as flags:  # kept in the record, so a resumed run reports them too
                x_adv[todo] = spec.run(attacked, x[todo], y[todo], norm=norm, eps=e, indices=idx[todo.cpu()],
                                       seed=seed, config=config)
            if flags:
                record["flags"] = list(dict.fromkeys([*record.get("flags", []), *flags]))  # each once over all ε
        checked = verify(model, x, x_adv, y, norm=norm, eps=e, attack=spec.name, indices=idx)
        record["pred"].append(checked.pred.tolist())
        if spec.minimum_norm:  # JSON has no infinity: an image never fooled has distance None (∞)
            found = checked.adversarial.tolist()
            record["distance"].append([d if f else None for d, f in zip(checked.distance.tolist(), found)])
        else:
            record["distance"].append(checked.distance.tolist())
        if transfer and not spec.minimum_norm:  # does the example fool its source? (the audit's transfer-failure indicator)
            with torch.no_grad():
                record.setdefault("source_pred", []).append(attacked(x_adv).argmax(dim=1).tolist())
        record["seconds"].append(time.perf_counter() - start)
        tensors[f"x_adv/{j}"] = x_adv
        tensors[f"pred/{j}"] = checked.pred
        advance()
    return record, tensors


def _running(records: list[dict[str, Any]], eps: list[float], norm: str, minimum_norm: bool) -> str:
    """The progress bar's running robust accuracy at each ε, over the batches done so far."""
    correct, robust, _ = robust_flags(records, eps, norm, minimum_norm, dim=1)  # dim only sets a tiny tolerance
    count = max(1, len(correct))
    parts = [f"ε={format_eps(e, norm)} {robust[j].sum() / count:.1%}" for j, e in enumerate(eps)]
    return f"clean {correct.sum() / count:.1%} · robust " + ", ".join(parts)


