"""The paper's ablation (Table 2): train each variant from one preset and seed, then measure Table 1's columns.

The variants are data (:data:`VARIANTS`, config overrides of one model), not code. The run is
resumable at two levels: a variant whose checkpoint exists is never retrained (an interrupted one
resumes from its last finished epoch), and a variant whose evaluation is recorded is not re-evaluated
unless the evaluation settings changed. With ``adaptive`` a variant's audit (≈ 10 CPU-minutes per norm at
`small`) journals every member's batches, so an interrupted evaluation resumes inside it too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress

from hahrobust import stats
from hahrobust.checkpoint import load_checkpoint
from hahrobust.data import ImageSet, balanced_subset
from hahrobust.errors import HahrobustError
from hahrobust.provenance import sha256_file, write_atomically
from hahrobust.studies.paper_table import audited_columns, check_paper_attack, paper_table
from hahrobust.training import TrainConfig, preset, run_paths, train


@dataclass(frozen=True)
class Variant:
    label: str  # the paper's row name
    model: str
    overrides: dict[str, Any] = field(default_factory=dict)


#: Table 2's rows, plus the baseline for reference. Order is the table's order.
VARIANTS: dict[str, Variant] = {
    "all": Variant("All included", "hah-vgg16"),
    "no-hah-loss": Variant("No HaH loss", "hah-vgg16", {"hah_loss": False}),
    "batchnorm": Variant("Batch norm instead of divisive norm", "hah-vgg16", {"norm": "batch"}),
    "no-threshold": Variant("No thresholding", "hah-vgg16", {"threshold": "none"}),
    "baseline": Variant("Baseline (VGG-16)", "vgg16"),
}


def check_variants(names: list[str] | None) -> list[str]:
    names = list(VARIANTS) if not names else names
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise HahrobustError(f"unknown variant(s) {', '.join(unknown)}; choose from: {', '.join(VARIANTS)}")
    if len(set(names)) != len(names):
        raise HahrobustError("each variant may be named once")
    return names


#: The row every variant is tested against: the full model, all of the paper's components included.
REFERENCE = "all"


@dataclass
class AblationRun:
    rows: pd.DataFrame  # model (variant label), variant, condition, accuracy
    checkpoints: dict[str, Path]  # variant label -> checkpoint
    paired: pd.DataFrame  # each variant against the full model per condition (:func:`paired_against`)


def run_ablation(
    out_dir: Path,
    train_data: ImageSet,
    test_data: ImageSet,
    *,
    preset_name: str = "small",
    variants: list[str] | None = None,
    seed: int | None = None,
    epochs: int | None = None,
    from_dir: Path | None = None,
    n_eval: int | None = None,
    attack: str = "autoattack",
    aa_version: str = "standard",
    adaptive: bool = False,
    batch_size: int = 100,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> AblationRun:
    """Train (or reuse) every variant into ``out_dir/checkpoints`` and evaluate it on Table 1's columns.

    ``from_dir``: a directory of ``<variant>.safetensors`` from an earlier run to reuse instead of training.
    ``n_eval``: evaluate on a class-balanced subset of the test set (chosen by the seed).
    ``adaptive``: each adversarial column is followed by the audit's per-image worst case
    (:func:`hahrobust.studies.paper_table.audited_columns`; the adversarial column is then the audit's member).
    """
    names = check_variants(variants)
    check_paper_attack(attack, aa_version)
    chosen = preset(preset_name)
    train_fields = {**chosen.train, **({"seed": seed} if seed is not None else {}),
                    **({"epochs": epochs} if epochs is not None else {})}
    config = TrainConfig(**train_fields)
    if n_eval is not None:
        test_data = balanced_subset(test_data, n_eval, config.seed)
    folder = out_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    evaluation = {"n": len(test_data), "seed": config.seed, "attack": attack, "aa_version": aa_version,
                  "data": test_data.source, **({"adaptive": True} if adaptive else {})}

    frames, checkpoints, outcomes = [], {}, {}
    for name in names:
        variant = VARIANTS[name]
        checkpoint = folder / f"{name}.safetensors"
        if not checkpoint.exists() and from_dir is not None and (from_dir / checkpoint.name).is_file():
            checkpoint = from_dir / checkpoint.name
        if not checkpoint.exists():
            if progress is not None:
                progress.console.print(f"training variant {name}: {variant.label}", highlight=False)
            train(variant.model, train_data, test_data, checkpoint, config=config,
                  model_overrides={**chosen.model, **variant.overrides},
                  dataset={"source": train_data.source, "train_n": len(train_data)}, device=device,
                  resume=run_paths(checkpoint)[0].exists(), progress=progress)
        table, outcomes[name] = _evaluate(name, checkpoint, test_data, evaluation, attack=attack,
                                          aa_version=aa_version, batch_size=batch_size, device=device,
                                          progress=progress, cache_dir=folder)
        frames.append(table.assign(model=variant.label, variant=name))
        checkpoints[variant.label] = checkpoint
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[["model", "variant", *[c for c in rows.columns if c not in ("model", "variant")]]]
    return AblationRun(rows, checkpoints, paired_against(outcomes, rows))


def paired_against(outcomes: dict[str, dict[str, np.ndarray]], rows: pd.DataFrame,
                   reference: str = REFERENCE) -> pd.DataFrame:
    """Each variant against ``reference`` on the same images, per condition: the accuracy difference (variant −
    reference) with Newcombe's paired interval, the discordant images (``variant_only``: right only with the
    variant; ``reference_only``), the exact McNemar p and its Holm adjustment over the whole table (every variant
    and condition: one family, as the report's claims). Empty without the reference or per-image outcomes."""
    if reference not in outcomes:
        return pd.DataFrame()
    titles = dict(zip(rows["short"], rows["condition"]))
    found = []
    for name, per_condition in outcomes.items():
        for short, outcome in per_condition.items() if name != reference else ():
            if short not in outcomes[reference]:
                continue
            test = stats.mcnemar(outcome, outcomes[reference][short])
            found.append({"model": VARIANTS[name].label, "variant": name, "condition": titles[short], "short": short,
                          "difference": test.difference, "low": test.low, "high": test.high, "n": test.n,
                          "variant_only": test.b, "reference_only": test.c, "p_value": test.p_value})
    table = pd.DataFrame(found)
    if not table.empty:
        table["p_holm"] = stats.holm(table["p_value"].to_numpy()).adjusted
    return table


# 3: per-image outcomes kept (the paired tests); 2: intervals.
_TABLE_FORMAT = 3


def _evaluate(
    name: str, checkpoint: Path, data: ImageSet, evaluation: dict[str, Any], *, cache_dir: Path, **kwargs: Any
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Table 1's columns and their per-image outcomes for one checkpoint, cached beside it keyed by the checkpoint
    hash and the settings (outcomes as strings of 0/1 per condition, in the evaluated images' order)."""
    # "table": the layout of paper_table's rows; a cache written with another layout is recomputed.
    key = {**evaluation, "checkpoint_sha256": sha256_file(checkpoint), "table": _TABLE_FORMAT}
    cache = cache_dir / f"{name}.eval.json"
    if cache.is_file():
        try:
            recorded = json.loads(cache.read_text(encoding="utf-8"))
            if recorded.get("key") == key:
                return pd.DataFrame(recorded["rows"]), {k: np.array([c == "1" for c in v], dtype=bool)
                                                       for k, v in recorded["outcomes"].items()}
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # a damaged cache is recomputed
    model, _ = load_checkpoint(checkpoint, kwargs["device"])
    journals = cache_dir / "journal"
    adaptive_run = bool(evaluation.get("adaptive"))
    if adaptive_run:
        run, adaptive = audited_columns(model, data, attack=kwargs["attack"], seed=evaluation["seed"],
                                        batch_size=kwargs["batch_size"], device=kwargs["device"], progress=kwargs["progress"],
                                        journal_dir=journals, journal_stem=audit_journal_stem(name, key), resume=True)
        kwargs = {**kwargs, "run": run, "adaptive": adaptive}
    measured = paper_table(model, data, seed=evaluation["seed"], per_image=True, **kwargs)
    table, outcomes = measured.rows, measured.outcomes
    document = json.dumps({"key": key, "rows": table.to_dict(orient="records"),
                           "outcomes": {k: "".join("1" if x else "0" for x in v) for k, v in outcomes.items()}},
                          indent=1)
    write_atomically(cache, lambda tmp: tmp.write_text(document, encoding="utf-8"), "the evaluation cache")
    if adaptive_run:  # the cache holds the result now: this variant's audit journals (any settings) have done their job
        for journal in journals.glob(f"{audit_journal_stem(name, None)}*.jsonl"):
            journal.unlink(missing_ok=True)
    return table, outcomes


def audit_journal_stem(name: str, key: dict[str, Any] | None) -> str:
    """``table2-<variant>-<hash of the evaluation key>``: the journals of a variant's audit. The key (settings and
    checkpoint hash) is in the name, so a run with other settings starts its own journals instead of tripping
    over these, and the resume is automatic, as the rest of the ablation's."""
    if key is None:  # the prefix every settings' stem of this variant shares
        return f"table2-{name}-"
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return f"table2-{name}-{digest}"
