"""Train a registered model with cross-entropy minus the HaH objective (Eq. 5), resumably."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from rich.progress import Progress, TaskID

from hahrobust.checkpoint import checkpoint_metadata, save_checkpoint
from hahrobust.data import ImageSet, balanced_subset, batches, num_batches
from hahrobust.errors import HahrobustError
from hahrobust.metrics import accuracy
from hahrobust.models import HahrobustModel, from_config, resolve_config
from hahrobust.provenance import atomic_path
from hahrobust.training.config import TrainConfig
from hahrobust.training.state import TrainState, load_state, save_state


@dataclass
class TrainResult:
    checkpoint: Path
    model: HahrobustModel
    metadata: dict[str, Any]


def run_paths(out: Path) -> tuple[Path, Path]:
    """(training-state file, per-epoch CSV log) kept next to the checkpoint ``out``."""
    stem = out.name.removesuffix(".safetensors")
    return out.with_name(f"{stem}.state.safetensors"), out.with_name(f"{stem}.log.csv")


def train(
    model_name: str,
    train_data: ImageSet,
    test_data: ImageSet,
    out: str | Path,
    *,
    config: TrainConfig = TrainConfig(),
    model_overrides: dict[str, Any] | None = None,
    dataset: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> TrainResult:
    """Train ``model_name`` and write the checkpoint ``out`` (with a state file and CSV log beside it).

    Every epoch ends with an atomic save of the training state, so an interrupted run continues
    with ``resume=True``; the data order and augmentation of epoch e depend only on (seed, e), and
    the learning rate only on e, so on CPU a resumed run ends with the same weights as an
    uninterrupted one (tests/test_training.py checks it bit for bit).
    """
    out = Path(out)
    state_path, log_path = run_paths(out)
    if not out.parent.is_dir():
        raise HahrobustError(f"{out.parent}: output directory does not exist")
    if out.exists() and not overwrite:
        raise HahrobustError(f"{out} already exists; pass --overwrite to replace it")
    if state_path.exists() and not resume:
        raise HahrobustError(f"{state_path} holds an unfinished run; pass --resume to continue it or delete it")

    family, model_config = resolve_config(model_name, **(model_overrides or {}))
    if config.train_subset:
        train_data = balanced_subset(train_data, config.train_subset, seed=config.seed)
    if config.test_subset:
        test_data = balanced_subset(test_data, config.test_subset, seed=config.seed)
    settings = {
        "model": {"name": model_name, "family": family, "config": dataclasses.asdict(model_config)},
        "train": dataclasses.asdict(config),
        "dataset": dataset or {"source": train_data.source},
    }
    settings = _json_roundtrip(settings)

    torch.manual_seed(config.seed)
    model = from_config(family, model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = TrainState(epochs_done=0, history=[], settings=settings)
    if resume and state_path.exists():
        state = load_state(state_path, model, optimizer)
        if state.settings != settings:
            raise HahrobustError(f"{state_path}: --resume with different settings than the interrupted run")

    # One bar, reset every epoch: a 100-epoch run should not print 100 finished bars.
    task = progress.add_task("training", total=None) if progress else None
    for epoch in range(state.epochs_done, config.epochs):
        row = _train_epoch(model, optimizer, train_data, config, epoch, device, progress, task)
        row["test_acc"] = accuracy(model, test_data, device=device, progress=progress, description="test accuracy")
        state.history.append(row)
        state.epochs_done = epoch + 1
        save_state(state_path, model, optimizer, state)
        with atomic_path(log_path) as tmp:
            pd.DataFrame(state.history).to_csv(tmp, index=False)

    final = state.history[-1]
    metadata = checkpoint_metadata(
        model, model_name, family,
        train=settings["train"], dataset=settings["dataset"], seed=config.seed, epochs=config.epochs,
        metrics={"test_acc": final["test_acc"], "test_n": len(test_data), "train_acc": final["train_acc"]},
        history=state.history,
    )
    save_checkpoint(out, model, metadata)
    state_path.unlink(missing_ok=True)
    return TrainResult(out, model.eval(), metadata)


def _train_epoch(
    model: HahrobustModel,
    optimizer: torch.optim.Optimizer,
    data: ImageSet,
    config: TrainConfig,
    epoch: int,
    device: torch.device | str,
    progress: Progress | None,
    task: TaskID | None,
) -> dict[str, Any]:
    lr = config.lr_at(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    model.record_hah_costs(True)
    n_batches = num_batches(len(data), config.batch_size, drop_last=False)
    if progress is not None and task is not None:
        progress.reset(task, total=n_batches, description=f"epoch {epoch + 1}/{config.epochs}")
    loss_sum = hah_sum = 0.0
    correct = seen = 0
    start = time.perf_counter()
    try:
        for x, y, _ in batches(
            data, config.batch_size, shuffle=True, augment=config.augment, seed=config.seed, epoch=epoch, device=device
        ):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            hah = model.hah_objective()
            total = loss - hah if hah is not None else loss
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            hah_sum += (hah.item() if hah is not None else 0.0) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if progress is not None and task is not None:
                rate = seen / max(time.perf_counter() - start, 1e-9)
                progress.update(
                    task, advance=1,
                    description=f"epoch {epoch + 1}/{config.epochs} loss {loss_sum / seen:.3f} "
                    f"acc {100 * correct / seen:.1f}% {rate:.0f} img/s",
                )
    finally:
        model.record_hah_costs(False)
    seconds = time.perf_counter() - start
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "train_loss": loss_sum / seen,
        "hah_objective": hah_sum / seen,
        "train_acc": correct / seen,
        "images_per_s": seen / seconds,
        "seconds": seconds,
    }


def _json_roundtrip(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value))
