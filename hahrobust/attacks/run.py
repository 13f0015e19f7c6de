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
Square (:mod:`hahrobust.attacks.square`) queries logits only: the gradient path does not change it.
Gradients: ``gradient`` (:mod:`hahrobust.attacks.gradients`) swaps the model the attack differentiates for
one with the same logits and an adaptive backward (BPDA, EOT); ``surrogate`` makes it a transfer attack (the
attack runs on another model, its examples are verified on this one). Verification always uses the model itself.

Randomness: PGD's starts and Square's calls are seeded per image; FMN and DDN are deterministic; AutoAttack is seeded per batch
with the caller's global RNG state restored. Same inputs and seed → same numbers on CPU; with a journal a
killed run resumes per batch and ends with the same numbers (only wall time differs).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hahrobust.attacks._common import eval_mode
from hahrobust.attacks.autoattack import (
    AA_NORMS, AutoAttackFlag, autoattack, autoattack_flags, check_aa_version, load_autoattack,
)
from hahrobust.attacks.ddn import DDNConfig, ddn
from hahrobust.attacks.fmn import FMNConfig, fmn
from hahrobust.attacks.gradients import GradientPath, adapt
from hahrobust.attacks.journal import Journal, data_fingerprint, model_fingerprint, rank_journal
from hahrobust.attacks.norms import (
    DEFAULT_EPS, NORMS, SYMBOLS, Norm, check_eps, check_norm, format_eps, within,
)
from hahrobust.attacks.pgd import PGDConfig, pgd
from hahrobust.attacks.square import SQUARE_NORMS, SquareConfig, square
from hahrobust.attacks.verify import verify
from hahrobust.nn.surrogate import SurrogateTypes
from hahrobust import distributed
from hahrobust.data import ImageSet, balanced_subset, batches, num_batches
from hahrobust.distributed import Shard
from hahrobust.errors import HahrobustError
from hahrobust.provenance import write_atomically

AttackName = Literal["autoattack", "pgd", "fmn", "ddn", "square"]
ATTACKS: tuple[str, ...] = ("autoattack", "pgd", "fmn", "ddn", "square")
#: The norms each attack supports.
ATTACK_NORMS: dict[str, tuple[str, ...]] = {
    "autoattack": tuple(AA_NORMS), "pgd": NORMS, "fmn": NORMS, "ddn": ("l2",), "square": SQUARE_NORMS,
}
#: Attacks that return the smallest perturbation they find instead of working at a fixed ε.
MINIMUM_NORM: tuple[str, ...] = ("fmn", "ddn")

#: Columns of the table :func:`run_attack` returns.
COLUMNS = (
    "attack", "norm", "eps", "n", "clean_acc", "robust_acc", "success_rate",
    "median_distance", "mean_distance", "unfound", "seed", "seconds",
)

ADV_FORMAT = "hahrobust.adversarial/1"


def check_attack(attack: str, norm: str) -> tuple[AttackName, Norm]:
    """The (attack, norm) pair checked: both known and the attack supports the norm."""
    if attack not in ATTACKS:
        raise HahrobustError(f"unknown attack {attack!r}; choose one of: {', '.join(ATTACKS)}")
    norm = check_norm(norm)
    if norm not in ATTACK_NORMS[attack]:
        supporting = [a for a in ATTACKS if norm in ATTACK_NORMS[a]]
        raise HahrobustError(
            f"{attack} does not support {norm} (it supports {', '.join(ATTACK_NORMS[attack])}); "
            f"attacks that support {norm}: {', '.join(supporting)}"
        )
    return attack, norm  # type: ignore[return-value]


@dataclass(frozen=True)
class AttackOutcome:
    """What :func:`run_attack_images` returns: the summary table and, per image of the evaluated set (in its
    order), whether it is robust at each ε (``robust[j, i]``), its index in the set, and for minimum-norm
    attacks the smallest verified adversarial distance (0 when misclassified clean, ∞ when none was found)."""

    table: pd.DataFrame
    robust: np.ndarray  # bool [len(eps), N]
    index: np.ndarray  # int [N]
    correct: np.ndarray  # bool [N]: classified correctly clean
    distance: np.ndarray | None  # float [N], minimum-norm attacks only
    flags: tuple[str, ...] = ()  # AutoAttack's own sanity checks that fired
    source_fooled: np.ndarray | None = None  # transfer only: bool [len(eps), N], the example fools the source


def run_attack(model: nn.Module, data: ImageSet, **kwargs: Any) -> pd.DataFrame:
    """Attack ``model`` on ``data`` and return one verified row per ε (see :func:`run_attack_images` for the
    arguments; columns :data:`COLUMNS`; accuracies and rates as fractions)."""
    return run_attack_images(model, data, **kwargs).table


def run_attack_images(
    model: nn.Module,
    data: ImageSet,
    *,
    attack: str = "autoattack",
    norm: str = "linf",
    eps: Sequence[float] | None = None,
    n: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    journal_path: str | Path | None = None,
    resume: bool = False,
    save_adv: str | Path | None = None,
    aa_version: str = "standard",
    pgd_config: PGDConfig = PGDConfig(),
    fmn_config: FMNConfig = FMNConfig(),
    ddn_config: DDNConfig = DDNConfig(),
    square_config: SquareConfig = SquareConfig(),
    gradient: GradientPath = GradientPath(),
    bpda_types: SurrogateTypes | None = None,
    surrogate: nn.Module | None = None,
    description: str | None = None,
    on_batch: Callable[[int], None] | None = None,
    shard: Shard | None = None,
) -> AttackOutcome:
    """Attack ``model`` on ``data`` (or its class-balanced subset of ``n`` images, chosen by ``seed``): one
    verified row per ε and the per-image outcome (:class:`AttackOutcome`).

    ``gradient`` is the gradient the attack follows (plain autograd, BPDA, EOT; ``bpda_types`` maps further
    module types of the model to a surrogate kind, see :class:`hahrobust.nn.surrogate.BPDA`); with ``surrogate`` the attack
    runs on that model instead (transfer) and its examples are verified on ``model``.

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
    shard = shard or distributed.current()
    attack, norm = check_attack(attack, norm)
    eps_list = check_eps(DEFAULT_EPS[norm] if eps is None else eps, norm)
    if attack == "autoattack":
        check_aa_version(aa_version)
        load_autoattack()  # a missing implementation fails before any work
    if batch_size < 1:
        raise HahrobustError(f"batch size must be positive, got {batch_size}")
    if n is not None:
        data = balanced_subset(data, n, seed)
    device = torch.device(device)
    if surrogate is not None:
        # A transfer attack cannot see when its example fools the model: it keeps climbing the source's margin,
        # and more confident examples transfer better (small HaH from the baseline, ℓ∞ 2/255, 200 images: stopping
        # at the source's first break left 37.5 % robust, climbing all 100 steps 34.0 %).
        pgd_config = replace(pgd_config, early_stop=False)
    settings = {
        "attack": attack, "norm": norm, "eps": eps_list, "n": len(data), "seed": seed, "batch_size": batch_size,
        "config": _attack_config(attack, aa_version, pgd_config, fmn_config, ddn_config, square_config),
        "gradient": gradient.settings(),
        **({"surrogate": model_fingerprint(surrogate)} if surrogate is not None else {}),
    }
    attacked = adapt(surrogate if surrogate is not None else model, gradient, seed, bpda_types)
    journal = None
    if journal_path is not None:
        header = {
            **settings, "save_adv": save_adv is not None,
            "model": model_fingerprint(model), "data": data_fingerprint(data),
        }
        journal = Journal(rank_journal(journal_path, shard), header, resume=resume)
    minimum_norm = attack in MINIMUM_NORM
    steps_per_batch = 1 if minimum_norm else len(eps_list)
    total = shard.own_count(num_batches(len(data), batch_size, False))
    label = description or f"{attack} {SYMBOLS[norm]}"
    task = progress.add_task(label, total=total * steps_per_batch) if progress is not None else None
    records: list[dict[str, Any]] = []
    adv_parts: dict[int, dict[str, torch.Tensor]] = {}

    def advance(text: str | None = None) -> None:
        if progress is not None and task is not None:
            progress.update(task, advance=1, **({"description": text} if text else {}))

    with eval_mode(model), eval_mode(surrogate if surrogate is not None else model):
        for x, y, idx in batches(data, batch_size, device=device, shard=shard):
            b = int(idx[0]) // batch_size  # the global batch number (the data is not shuffled)
            record = journal.done(b) if journal is not None else None
            if record is None:
                record, tensors = _attack_batch(
                    model, attacked, x, y, idx, b, transfer=surrogate is not None, attack=attack, norm=norm, eps=eps_list, seed=seed, aa_version=aa_version,
                    pgd_config=pgd_config, fmn_config=fmn_config, ddn_config=ddn_config, square_config=square_config,
                    advance=advance,
                )
                if journal is not None:
                    journal.record(record, tensors if save_adv is not None else None)
            else:
                tensors = journal.tensors(b) if save_adv is not None and journal is not None else {}
                for _ in range(steps_per_batch):
                    advance()
            for flag in record.get("flags", []):
                warnings.warn(AutoAttackFlag(flag), stacklevel=2)
            records.append(record)
            if save_adv is not None:
                adv_parts[b] = {k: v.cpu() for k, v in tensors.items()}
            if progress is not None and task is not None:
                progress.update(task, description=f"{label} · {_running(records, eps_list, norm, minimum_norm)}")
            if on_batch is not None:
                on_batch(b)
    if progress is not None and task is not None:
        progress.remove_task(task)
    records = list(distributed.gather({r["batch"]: r for r in records}, shard).values())
    dim = int(np.prod(data.images.shape[1:]))
    rows = _summarise(records, eps_list, attack, norm, seed, minimum_norm, dim=dim)
    if save_adv is not None:
        parts = list(distributed.gather(adv_parts, shard).values())
        if shard.is_main:
            _write_adversarial(Path(save_adv), parts, records, data, settings, model)
    correct, robust, dist = _robust_flags(records, eps_list, norm, minimum_norm, dim)
    flags = tuple(dict.fromkeys(f for r in records for f in r.get("flags", [])))
    source_fooled = None
    if surrogate is not None and not minimum_norm:
        source_fooled = np.stack([
            np.concatenate([np.asarray(r["source_pred"][j]) for r in records]) != _per_image(records, "label")
            for j in range(len(eps_list))
        ]) & correct
    return AttackOutcome(rows, robust, _per_image(records, "index").astype(np.int64), correct, dist, flags, source_fooled)


def _attack_config(
    attack: str, aa_version: str, pgd_config: PGDConfig, fmn_config: FMNConfig, ddn_config: DDNConfig,
    square_config: SquareConfig,
) -> dict[str, Any]:
    """The hyperparameters of the chosen attack only (they go into journals and results)."""
    if attack == "autoattack":
        return {"version": aa_version}
    return asdict({"pgd": pgd_config, "fmn": fmn_config, "ddn": ddn_config, "square": square_config}[attack])


def _attack_batch(
    model: nn.Module,
    attacked: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    idx: torch.Tensor,
    batch: int,
    *,
    transfer: bool,
    attack: str,
    norm: Norm,
    eps: list[float],
    seed: int,
    aa_version: str,
    pgd_config: PGDConfig,
    fmn_config: FMNConfig,
    ddn_config: DDNConfig,
    square_config: SquareConfig,
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

    def adversarial(run: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        x_adv = x.clone()
        if len(todo):
            x_adv[todo] = run(x[todo], y[todo], idx[todo.cpu()])
        return x_adv

    if attack in MINIMUM_NORM:
        start = time.perf_counter()
        if attack == "fmn":
            x_adv = adversarial(lambda xs, ys, _: fmn(attacked, xs, ys, norm=norm, config=fmn_config))
        else:
            x_adv = adversarial(lambda xs, ys, _: ddn(attacked, xs, ys, config=ddn_config))
        checked = verify(model, x, x_adv, y, norm=norm, eps=None, attack=attack, indices=idx)
        found = checked.adversarial.tolist()
        record["pred"] = [checked.pred.tolist()]
        # JSON has no infinity: an image never fooled has distance None (∞).
        record["distance"] = [[d if f else None for d, f in zip(checked.distance.tolist(), found)]]
        record["seconds"] = [time.perf_counter() - start]
        tensors = {"x_adv/0": x_adv, "pred/0": checked.pred}
        advance()
        return record, tensors
    record["pred"], record["distance"], record["seconds"] = [], [], []
    for j, e in enumerate(eps):
        start = time.perf_counter()
        if e == 0:
            x_adv = x.clone()
        elif attack == "pgd":
            x_adv = adversarial(
                lambda xs, ys, ids, e=e: pgd(attacked, xs, ys, norm=norm, eps=e, indices=ids, seed=seed, config=pgd_config)
            )
        elif attack == "square":
            x_adv = adversarial(
                lambda xs, ys, ids, e=e: square(attacked, xs, ys, norm=norm, eps=e, indices=ids, seed=seed, config=square_config)
            )
        else:
            with autoattack_flags() as flags:  # kept in the record, so a resumed run reports them too
                x_adv = adversarial(
                    lambda xs, ys, _, e=e: autoattack(attacked, xs, ys, norm=norm, eps=e, seed=seed, version=aa_version)
                )
            record["flags"] = list(dict.fromkeys([*record.get("flags", []), *flags]))  # each once over all ε
        checked = verify(model, x, x_adv, y, norm=norm, eps=e, attack=attack, indices=idx)
        record["pred"].append(checked.pred.tolist())
        record["distance"].append(checked.distance.tolist())
        if transfer:  # does the example fool the model it was made on? (the audit's transfer-failure indicator)
            with torch.no_grad():
                record.setdefault("source_pred", []).append(attacked(x_adv).argmax(dim=1).tolist())
        record["seconds"].append(time.perf_counter() - start)
        tensors[f"x_adv/{j}"] = x_adv
        tensors[f"pred/{j}"] = checked.pred
        advance()
    return record, tensors


def _per_image(records: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.concatenate([np.asarray(r[key]) for r in records]) if records else np.zeros(0)


def _robust_flags(
    records: list[dict[str, Any]], eps: list[float], norm: str, minimum_norm: bool, dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(clean correct [N], robust [len(eps), N], minimum distances [N] or None) from journal records."""
    label = _per_image(records, "label")
    correct = _per_image(records, "clean_pred") == label
    if not minimum_norm:
        robust = np.stack([
            correct & (np.concatenate([np.asarray(r["pred"][j]) for r in records]) == label) for j in range(len(eps))
        ]) if records else np.zeros((len(eps), 0), dtype=bool)
        return correct, robust, None
    dist = np.concatenate([np.array([math.inf if d is None else d for d in r["distance"][0]], dtype=float) for r in records])
    dist = np.where(correct, dist, 0.0)  # misclassified clean: distance 0 (never attacked)
    return correct, robust_at(dist, correct, eps, norm, dim), dist


def _running(records: list[dict[str, Any]], eps: list[float], norm: str, minimum_norm: bool) -> str:
    """The progress bar's running robust accuracy at each ε, over the batches done so far."""
    correct, robust, _ = _robust_flags(records, eps, norm, minimum_norm, dim=1)  # dim only sets a tiny tolerance
    count = max(1, len(correct))
    parts = [f"ε={format_eps(e, norm)} {robust[j].sum() / count:.1%}" for j, e in enumerate(eps)]
    return f"clean {correct.sum() / count:.1%} · robust " + ", ".join(parts)


def distance_summary(dist: np.ndarray, correct: np.ndarray) -> dict[str, float | int]:
    """Median, mean and unfound count of per-image minimum distances (0 for misclassified images, ∞ where
    no adversarial example was found).

    The median is over all n images (misclassified ones at 0, ∞ for images never fooled, so it is ∞ only when
    more than half were never fooled): the ε where robust accuracy crosses 50 %. The mean is the paper's Fig. 5
    statistic: over the attacked (correctly classified) images for which an adversarial example was found; the
    misclassified images' zeros would otherwise pull a less accurate model's mean down.
    """
    found = dist[correct & np.isfinite(dist)]
    return {
        "median_distance": float(np.median(dist)) if len(dist) else math.nan,
        "mean_distance": float(found.mean()) if len(found) else math.nan,
        "unfound": int((~np.isfinite(dist)).sum()),
    }


def robust_at(dist: np.ndarray, correct: np.ndarray, eps: Sequence[float], norm: str, dim: int) -> np.ndarray:
    """Robust [len(eps), N] from minimum distances: correct clean and no verified example within ε."""
    dist_t = torch.from_numpy(dist)
    return np.stack([correct & ~within(dist_t, e, norm, dim).numpy() for e in eps])


def _summarise(
    records: list[dict[str, Any]], eps: list[float], attack: str, norm: str, seed: int, minimum_norm: bool, dim: int
) -> pd.DataFrame:
    correct, robust, dist = _robust_flags(records, eps, norm, minimum_norm, dim)
    seconds = [float(sum(r["seconds"][0 if minimum_norm else j] for r in records)) for j in range(len(eps))]
    return summary_rows(attack, norm, eps, correct, robust, dist, seed, seconds)


def summary_rows(
    attack: str, norm: str, eps: Sequence[float], correct: np.ndarray, robust: np.ndarray, dist: np.ndarray | None,
    seed: int, seconds: Sequence[float],
) -> pd.DataFrame:
    """One row per ε (columns :data:`COLUMNS`) from per-image outcomes: ``correct`` [N], ``robust`` [len(eps), N]
    and, for minimum-norm attacks, ``dist`` [N]."""
    count = len(correct)
    clean_acc = correct.sum() / count if count else math.nan  # an audit's survivors-only member may get no image
    rows = []
    for j, e in enumerate(eps):
        robust_acc = robust[j].sum() / count if count else math.nan
        row: dict[str, Any] = {
            "attack": attack, "norm": norm, "eps": e, "n": count, "clean_acc": float(clean_acc),
            "robust_acc": float(robust_acc),
            # Fraction of the correctly classified images the attack fooled.
            "success_rate": float((clean_acc - robust_acc) / clean_acc) if clean_acc > 0 else math.nan,
            "median_distance": math.nan, "mean_distance": math.nan, "unfound": math.nan, "seed": seed,
            "seconds": seconds[j],
        }
        if dist is not None:
            row.update(distance_summary(dist, correct))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


# ------------------------------------------------------------------------------------ adversarial files


def _write_adversarial(
    path: Path, parts: list[dict[str, torch.Tensor]], records: list[dict[str, Any]], data: ImageSet,
    settings: dict[str, Any], model: nn.Module,
) -> None:
    """One safetensors file: clean images, labels, indices, and per ε the verified examples and predictions."""
    index = torch.from_numpy(_per_image(records, "index").astype(np.int64))
    tensors: dict[str, torch.Tensor] = {
        "x": data.images[index].float().div(255),
        "label": torch.from_numpy(_per_image(records, "label").astype(np.int64)),
        "index": index,
        "clean_pred": torch.from_numpy(_per_image(records, "clean_pred").astype(np.int64)),
    }
    for key in parts[0] if parts else ():
        tensors[key] = torch.cat([p[key] for p in parts])
    metadata = {
        "format": ADV_FORMAT,
        "settings": json.dumps(settings, sort_keys=True),
        "model": model_fingerprint(model),
        "data": data.source,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HahrobustError(f"{path}: cannot write adversarial examples ({exc.strerror or exc})") from None
    flat = {k: v.contiguous() for k, v in tensors.items()}
    write_atomically(path, lambda tmp: save_file(flat, str(tmp), metadata=metadata), "adversarial examples")


def load_adversarial(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A file written with ``save_adv``: (tensors, settings). Tensors: ``x`` (clean, [N, 3, H, W] in [0, 1]),
    ``label``, ``index`` (positions in the evaluated set), ``clean_pred``, and for each ε number j (the order of
    ``settings["eps"]``; one entry ``0`` for minimum-norm attacks) ``x_adv/j`` and ``pred/j``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise HahrobustError(f"{path}: not a readable adversarial-examples file ({exc})") from None
    if metadata.get("format") != ADV_FORMAT:
        raise HahrobustError(f"{path}: not a hahrobust adversarial-examples file")
    return tensors, json.loads(metadata["settings"])


def recheck(
    model: nn.Module, path: str | Path, *, device: torch.device | str = "cpu", batch_size: int | None = None
) -> pd.DataFrame:
    """Verify a saved file's examples again with ``model``: one row per ε with the recomputed robust accuracy
    (and, for minimum-norm files, the distances). Raises :class:`AttackVerificationError` on any violation.

    By default it batches as the original run did: a minimum-norm example sits just across the decision
    boundary, and a different batch size can change the last float digits of a prediction on some backends.
    """
    tensors, settings = load_adversarial(path)
    batch_size = batch_size or int(settings["batch_size"])
    norm, eps, attack = settings["norm"], settings["eps"], settings["attack"]
    minimum_norm = attack in MINIMUM_NORM
    x_all, y_all = tensors["x"], tensors["label"]
    keys = [0] if minimum_norm else list(range(len(eps)))
    preds: dict[int, list[torch.Tensor]] = {k: [] for k in keys}
    dists: dict[int, list[torch.Tensor]] = {k: [] for k in keys}
    clean: list[torch.Tensor] = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(y_all), batch_size):
            x = x_all[start : start + batch_size].to(device)
            y = y_all[start : start + batch_size].to(device)
            clean.append((model(x).argmax(dim=1) == y).cpu())
            for k in keys:
                checked = verify(
                    model, x, tensors[f"x_adv/{k}"][start : start + batch_size].to(device), y, norm=norm,
                    eps=None if minimum_norm else eps[k], attack=f"recheck of {path}",
                    indices=tensors["index"][start : start + batch_size],
                )
                preds[k].append(checked.pred.cpu())
                dists[k].append(torch.where(checked.adversarial.cpu(), checked.distance.cpu(), math.inf))
    records = [{
        "label": y_all.tolist(), "clean_pred": torch.where(torch.cat(clean), y_all, -1).tolist(),
        "pred": [torch.cat(preds[k]).tolist() for k in keys],
        "distance": [[None if math.isinf(d) else d for d in torch.cat(dists[k]).tolist()] for k in keys],
        "seconds": [0.0 for _ in keys],
    }]
    return _summarise(records, eps, attack, norm, settings["seed"], minimum_norm, dim=int(np.prod(x_all.shape[1:])))

