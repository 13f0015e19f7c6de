"""Amato et al. 2019, Table 2: hebb-net with Hebbian, gradient-trained and random layers in every
configuration the paper reports, one trained network per row, tabulated against the paper's accuracies.

Each row is trained by :func:`hahrobust.training.hebbian.train_hebbnet`; rows that keep gradient layers below
the Hebbian ones take them from the sweep's own ``GGGGGG`` network, as the paper does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.progress import Progress

from hahrobust.checkpoint import read_metadata
from hahrobust.data import ImageSet
from hahrobust.errors import HahrobustError
from hahrobust.models import HebbNetConfig, resolve_config
from hahrobust.results import Figure, Layout, Result
from hahrobust.stats import accuracy_intervals, interval_columns
from hahrobust.training.hebbian import best_path, train_hebbnet
from hahrobust.training.hebbian_config import MODEL_NAME, HebbianTrainConfig, default_zca, plan
from hahrobust.training import run_paths
from hahrobust.training.state import json_roundtrip


@dataclass(frozen=True)
class SweepRow:
    """One configuration of Table 2: its group, description, layer string and the paper's accuracy (%)."""

    group: int | str
    description: str
    layers: str
    paper: float | None = None


#: Table 2 of the paper: learning rule of conv1..conv4, fc5, classifier and the test accuracy (%).
TABLE2: tuple[SweepRow, ...] = (
    SweepRow(1, "Full SGD", "GGGGGG", 84.95),
    SweepRow(1, "Full Hebbian", "HHHHHH", 28.59),
    *(SweepRow(2, f"{k}-bottom Hebbian", "H" * k + "G" * (6 - k), acc)
      for k, acc in zip(range(1, 6), (84.93, 78.61, 67.87, 57.56, 41.78))),
    *(SweepRow(3, f"{k}-bottom Random", "R" * k + "G" * (6 - k), acc)
      for k, acc in zip(range(1, 6), (80.19, 71.87, 54.96, 45.56, 9.52))),
    *(SweepRow(4, f"{k}-top Hebbian", "G" * (6 - k) + "H" * k, acc)
      for k, acc in zip(range(1, 6), (84.88, 83.16, 71.18, 50.43, 32.95))),
    *(SweepRow(5, f"Layer {k} Hebbian", "G" * (k - 1) + "H" + "G" * (6 - k), acc)
      for k, acc in zip(range(2, 6), (80.36, 80.68, 80.92, 83.75))),
    SweepRow(6, "Layer 2-3 Hebbian", "GHHGGG", 72.12),
    SweepRow(6, "Layer 3-4 Hebbian", "GGHHGG", 74.98),
    SweepRow(6, "Layer 4-5 Hebbian", "GGGHHG", 76.86),
    SweepRow(7, "Layer 2-3-4 Hebbian", "GHHHGG", 63.68),
    SweepRow(7, "Layer 3-4-5 Hebbian", "GGHHHG", 62.43),
    SweepRow(8, "Layer 2-3-4-5 Hebbian", "GHHHHG", 47.24),
)

#: The test images behind the paper's accuracies (CIFAR-10's test set): its rows' n, for their Wilson intervals.
PAPER_TEST_IMAGES = 10_000

#: Named row sets for ``--rows``; "core" is the qualitative pattern in 10 rows (groups 1-4).
ROW_SETS: dict[str, tuple[str, ...]] = {
    "table2": tuple(r.layers for r in TABLE2),
    "core": ("GGGGGG", "HHHHHH", "HGGGGG", "HHGGGG", "HHHGGG", "HHHHGG", "RGGGGG", "RRGGGG", "GGGGGH", "GGGGHH"),
    "bottom": ("GGGGGG", "HGGGGG", "HHGGGG", "HHHGGG", "HHHHGG", "HHHHHG", "HHHHHH"),
}


def sweep_rows(spec: str) -> list[SweepRow]:
    """Rows from a comma-separated list of layer strings and/or row-set names (table2, core, bottom)."""
    known = {r.layers: r for r in TABLE2}
    chosen: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        names = ROW_SETS.get(item.lower(), (item.upper(),))
        chosen += [n for n in names if n not in chosen]
    if not chosen:
        raise HahrobustError("--rows is empty; give layer strings like HHGGGG or one of: " + ", ".join(ROW_SETS))
    rows = []
    for layers in chosen:
        try:
            HebbNetConfig(layers=layers).validate()
        except ValueError as exc:
            raise HahrobustError(f"--rows: {exc}") from None
        rows.append(known.get(layers, SweepRow("custom", layers, layers)))
    return rows


def sweep_checkpoint(out_dir: Path, layers: str) -> Path:
    return out_dir / "checkpoints" / f"hebb-net-{layers}.safetensors"


def sweep_hebbnet(
    train_data: ImageSet,
    test_data: ImageSet,
    out_dir: str | Path,
    rows: list[SweepRow],
    *,
    config: HebbianTrainConfig = HebbianTrainConfig(),
    model_overrides: dict[str, Any] | None = None,
    zca: bool | None = None,
    dataset: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Result:
    """Train one hebb-net per row (checkpoints in ``out_dir/checkpoints``) and tabulate test accuracy vs Table 2.

    Rows that keep lower gradient layers reuse the ``GGGGGG`` row's network as their base (trained first,
    and added when missing), as the paper does. Resumable per row: with ``resume`` a finished row is read
    back from its checkpoint (refused if it was trained with other settings) and an interrupted one continues.
    ``zca``: None whitens exactly the rows whose conv1 is Hebbian (the paper's rule).
    """
    out_dir = Path(out_dir)
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    overrides = dict(model_overrides or {})
    configs: dict[str, HebbNetConfig] = {}
    for row in rows:
        whiten = default_zca(row.layers) if zca is None else zca
        configs[row.layers] = resolve_config(MODEL_NAME, **{**overrides, "layers": row.layers, "zca": whiten})[1]
    needs_base = [r.layers for r in rows if plan(configs[r.layers], config).base_stages]
    if needs_base and "GGGGGG" not in configs:
        base_row = next(r for r in TABLE2 if r.layers == "GGGGGG")
        rows = [base_row, *rows]
        configs["GGGGGG"] = resolve_config(MODEL_NAME, **{**overrides, "layers": "GGGGGG", "zca": bool(zca)})[1]
    rows = sorted(rows, key=lambda r: r.layers != "GGGGGG")  # the base first; otherwise the order given
    paths = {r.layers: sweep_checkpoint(out_dir, r.layers) for r in rows}
    if not resume and not overwrite:
        busy = [p for p in paths.values() for q in (p, run_paths(p)[0]) if q.exists()]
        if busy:
            raise HahrobustError(f"{out_dir} already holds sweep rows ({busy[0].name}); pass --resume or --overwrite")
    records: list[dict[str, Any]] = []
    task = progress.add_task("hebbian-sweep rows", total=len(rows)) if progress else None
    for row in rows:
        path = paths[row.layers]
        base = paths["GGGGGG"] if row.layers in needs_base else None
        metadata = _reuse(path, configs[row.layers], config, dataset) if resume and not overwrite else None
        if metadata is None:
            if overwrite:
                for stale in (run_paths(path)[0], best_path(path)):
                    stale.unlink(missing_ok=True)
            metadata = train_hebbnet(
                train_data, test_data, path, model_config=configs[row.layers], config=config, base=base,
                dataset=dataset, device=device, resume=resume, overwrite=overwrite, progress=progress,
            ).metadata
        metrics, images = metadata["metrics"], metadata["split"]
        seconds = sum(float(h.get("seconds") or 0.0) for h in metadata.get("history", []))
        common = {"group": str(row.group), "description": row.description, "layers": row.layers}
        records.append({
            **common, "source": "measured", "accuracy": metrics["test_acc"], "val_acc": metrics.get("val_acc"),
            "train_acc": metrics.get("train_acc"), "train_seconds": seconds, "zca": configs[row.layers].zca,
            "n": images["test_n"], "val_acc_n": images["val_n"], "train_acc_n": images["train_n"],
        })
        if row.paper is not None:
            records.append({**common, "source": "paper (Table 2)", "accuracy": row.paper / 100,
                            "n": PAPER_TEST_IMAGES, "val_acc_n": 0, "train_acc_n": 0})  # 0: not measured
        if progress is not None and task is not None:
            progress.advance(task)
    if progress is not None and task is not None:
        progress.remove_task(task)
    split = metadata["split"]
    any_config = next(iter(configs.values()))
    settings = {
        "rows": [r.layers for r in rows], **dataclasses.asdict(config), "width": any_config.width,
        "zca": "conv1 Hebbian" if zca is None else zca, "train_n": split["train_n"], "val_n": split["val_n"],
        "test_n": split["test_n"], "data": (dataset or {}).get("source", train_data.source),
    }
    notes = [
        f"Scale: {split['train_n']} training / {split['val_n']} validation / {split['test_n']} test images, "
        f"width {any_config.width:g}, {config.hebbian_epochs} Hebbian epoch(s) per layer, {config.epochs} SGD epochs "
        "(the paper: 40,000 / 10,000 / 10,000, width 1, 2 and 20).",
        "Hebbian layers trained bottom-up by WTA (teacher groups above conv1) and frozen; gradient layers above "
        "by SGD; gradient layers below come from the sweep's GGGGGG network; the best validation epoch is scored.",
        f"In brackets: the Wilson 95 % interval over the n test images (the paper's: its {PAPER_TEST_IMAGES:,}); "
        "the CSV and JSON also give the validation and training accuracies' (val_acc_n, train_acc_n images).",
    ]
    table = accuracy_intervals(pd.DataFrame.from_records(records),
                               {"accuracy": "n", "val_acc": "val_acc_n", "train_acc": "train_acc_n"})
    return Result(
        command="hebbian-sweep", rows=table, settings=settings,
        checkpoints={r.layers: paths[r.layers] for r in rows}, layout=SWEEP_LAYOUT, notes=notes,
    )


SWEEP_LAYOUT = Layout(
    title="Hebbian, gradient and random layers on CIFAR-10 (Amato et al. 2019, Table 2)",
    index=("group", "description", "layers"),
    columns=("source",),
    values=("accuracy",),
    formats={"accuracy": "{:.2%}"},
    intervals=interval_columns("accuracy"),
    labels={"layers": "L1-L5 + classifier"},
    notes=("Layers: conv1-conv4, fc5, classifier; G gradient descent, H Hebbian, R frozen random init.",),
    figure=Figure(kind="bar", x="layers", y=("accuracy",), hue="source", percent=("accuracy",), ylim=(0.0, 1.0),
                  xlabel="learning rule per layer"),
)


def _reuse(
    path: Path, model_config: HebbNetConfig, config: HebbianTrainConfig, dataset: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A finished row's metadata when its checkpoint matches these settings; None when there is none yet."""
    if not path.exists():
        return None
    metadata = read_metadata(path)
    expected = json_roundtrip({"config": dataclasses.asdict(model_config), "train": dataclasses.asdict(config)})
    same = (
        metadata.get("model", {}).get("config") == expected["config"] and metadata.get("train") == expected["train"]
        and (dataset is None or metadata.get("dataset") == json_roundtrip(dataset))
    )
    if not same:
        raise HahrobustError(f"{path} was trained with other settings; pass --overwrite to retrain the sweep")
    return metadata


__all__ = ["ROW_SETS", "SWEEP_LAYOUT", "TABLE2", "SweepRow", "sweep_checkpoint", "sweep_hebbnet", "sweep_rows"]
