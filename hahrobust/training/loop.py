"""Train a registered model with cross-entropy minus the HaH objective (Eq. 5), resumably."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.progress import Progress, TaskID
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hahrobust import distributed
from hahrobust.checkpoint import checkpoint_metadata
from hahrobust.data import ImageSet, balanced_subset, batches, num_batches
from hahrobust.distributed import Shard
from hahrobust.errors import HahrobustError
from hahrobust.metrics import accuracy
from hahrobust.seeding import derived_seed
from hahrobust.models import HahrobustModel, from_config, resolve_config
from hahrobust.training.adversarial import adversarial_batch
from hahrobust.training.config import Runtime, TrainConfig
from hahrobust.training.noise import noisy_batch
from hahrobust.training.state import TrainState, json_roundtrip, load_state, save_final, save_progress


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
    runtime: Runtime = Runtime(),
    shard: Shard | None = None,
) -> TrainResult:
    """Train ``model_name`` and write the checkpoint ``out`` (with a state file and CSV log beside it).

    Every epoch ends with an atomic save of the training state, so an interrupted run continues
    with ``resume=True``; the data order and augmentation of epoch e depend only on (seed, e), and
    the learning rate only on e, so on CPU a resumed run ends with the same weights as an
    uninterrupted one (tests/test_training.py checks it bit for bit).

    Under ``torchrun`` (``shard``: by default the initialised process group) the model is wrapped in
    DistributedDataParallel and each rank trains on its slice of every global batch of
    ``config.batch_size`` images (see :mod:`hahrobust.distributed`): the same steps as one process up
    to float summation order (tests/test_distributed.py). Only rank 0 writes files; a run can be resumed
    with another number of processes, since nothing saved depends on it.
    """
    shard = shard or distributed.current()
    out = Path(out)
    state_path, log_path = run_paths(out)
    # Rank 0 owns the files (other nodes may not see them): it judges them, and every rank stops alike.
    _raise_on_all(_output_problem(out, state_path, resume, overwrite) if shard.is_main else None, shard)

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
    settings = json_roundtrip(settings)

    if shard.distributed and 0 < len(train_data) % config.batch_size < shard.world_size:
        raise HahrobustError(
            f"the last batch of {len(train_data) % config.batch_size} images cannot be split over "
            f"{shard.world_size} processes; change --batch-size or --train-subset"
        )
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels once
        train_data, test_data = train_data.to(device), test_data.to(device)  # uint8 on the GPU: no copies per batch

    torch.manual_seed(config.seed)
    model = from_config(family, model_config).to(device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = TrainState(epochs_done=0, history=[], settings=settings)
    problem = None
    if resume and shard.is_main and state_path.exists():
        try:
            state = load_state(state_path, model, optimizer)
        except HahrobustError as exc:
            problem = str(exc)
        else:
            if state.settings != settings:
                problem = f"{state_path}: --resume with different settings than the interrupted run"
    _raise_on_all(problem, shard)
    unsupervised: dict[str, float] = {}
    if state.epochs_done == 0 and shard.is_main:  # layers learned without labels (a dictionary, Hebbian filters)
        start = time.perf_counter()
        unsupervised = {f"unsupervised_{k}": v for k, v in model.fit_unsupervised(train_data, seed=config.seed,
                                                                                   device=device).items()}
        if unsupervised:
            unsupervised["unsupervised_seconds"] = time.perf_counter() - start
    if shard.distributed:  # every rank continues from rank 0's state (and its unsupervised layers)
        model_state, optim_state, state = distributed.broadcast((model.state_dict(), optimizer.state_dict(), state), shard)
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
    step = training_step(model, model.hah_objective, optimizer, runtime, device, shard)

    # One bar, reset every epoch: a 100-epoch run should not print 100 finished bars.
    task = progress.add_task("training", total=None) if progress else None
    for epoch in range(state.epochs_done, config.epochs):
        row = _train_epoch(model, step, optimizer, train_data, config, epoch, device, progress, task, runtime, shard)
        if epoch == 0:
            row.update(unsupervised)
        row["test_acc"] = accuracy(
            model, test_data, device=device, progress=progress, description="test accuracy", shard=shard
        )
        state.history.append(row)
        state.epochs_done = epoch + 1
        distributed.on_rank0(lambda: save_progress(state_path, log_path, model, optimizer, state), shard)

    final = state.history[-1]
    metadata = checkpoint_metadata(
        model, model_name, family,
        train=settings["train"], dataset=settings["dataset"], seed=config.seed, epochs=config.epochs,
        metrics={"test_acc": final["test_acc"], "test_n": len(test_data), "train_acc": final["train_acc"]},
        history=state.history, runtime={**dataclasses.asdict(runtime), "processes": shard.world_size},
    )
    distributed.on_rank0(lambda: save_final(out, model, metadata, state_path), shard)
    return TrainResult(out, model.eval(), metadata)


def _output_problem(out: Path, state_path: Path, resume: bool, overwrite: bool) -> str | None:
    if not out.parent.is_dir():
        return f"{out.parent}: output directory does not exist"
    if out.exists() and not overwrite:
        return f"{out} already exists; pass --overwrite to replace it"
    if state_path.exists() and not resume:
        return f"{state_path} holds an unfinished run; pass --resume to continue it or delete it"
    return None


def _raise_on_all(problem: str | None, shard: Shard) -> None:
    """Raise rank 0's ``problem`` on every rank (a rank stopping alone would leave the others waiting)."""
    problem = distributed.broadcast(problem, shard)
    if problem is not None:
        raise HahrobustError(problem)


Step = Callable[[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]


def training_step(
    model: nn.Module,
    objective: Callable[[], torch.Tensor | None],
    optimizer: torch.optim.Optimizer,
    runtime: Runtime = Runtime(),
    device: torch.device = torch.device("cpu"),
    shard: Shard | None = None,
) -> Step:
    """One optimisation step ``step(x, y, loss_scale) -> (logits, cross-entropy, HaH objective)`` as the
    trainer takes it: cross-entropy minus ``objective()`` (the HaH objective of the last forward pass),
    backward, optimizer step; with the runtime's DDP wrapper, compilation and autocast applied.
    ``benchmarks/train_step.py`` times exactly this."""
    shard = shard or distributed.current()
    forward: nn.Module = model
    if shard.distributed:
        if runtime.sync_bn and device.type == "cuda":
            forward = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        forward = DistributedDataParallel(forward, device_ids=[device] if device.type == "cuda" else None)
    if runtime.compile:
        forward = torch.compile(forward)  # type: ignore[assignment]

    def step(x: torch.Tensor, y: torch.Tensor, loss_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(runtime, device):
            logits = forward(x)
            loss = F.cross_entropy(logits.float(), y)
        hah = objective()  # fp32: the cost upcasts its input
        total = loss - hah if hah is not None else loss
        optimizer.zero_grad(set_to_none=True)
        (total * loss_scale).backward()
        optimizer.step()
        return logits, loss, hah

    return step


def _autocast(runtime: Runtime, device: torch.device) -> contextlib.AbstractContextManager:
    if runtime.amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _train_epoch(
    model: HahrobustModel,
    step: Step,
    optimizer: torch.optim.Optimizer,
    data: ImageSet,
    config: TrainConfig,
    epoch: int,
    device: torch.device,
    progress: Progress | None,
    task: TaskID | None,
    runtime: Runtime,
    shard: Shard,
) -> dict[str, Any]:
    lr = config.lr_at(epoch)
    # Dropout (SoftHebb's readout) draws from the global generator: seeded per epoch, a resumed run draws as an
    # uninterrupted one. Models without random layers draw nothing from it.
    torch.manual_seed(derived_seed("train-epoch", config.seed, epoch))
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
        for number, (x, y, indices) in enumerate(batches(
            data, config.batch_size, shuffle=True, augment=config.augment, seed=config.seed, epoch=epoch,
            device=device, shard=shard, split_batches=True,
        )):
            # The global batch's size: the mean loss over it is what every rank's gradient is scaled to.
            global_size = min(config.batch_size, len(data) - number * config.batch_size)
            if config.adversarial_norm is not None:
                x = adversarial_batch(model, x, y, indices, config, epoch)
            elif config.noise_sigma > 0:
                x = noisy_batch(x, indices, config.noise_sigma, seed=config.seed, epoch=epoch)
            logits, loss, hah = step(x, y, shard.loss_scale(len(y), global_size))
            loss_sum += loss.item() * len(y)
            hah_sum += (hah.item() if hah is not None else 0.0) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)  # this rank's images; the bar shows rank 0's running figures
            if progress is not None and task is not None:
                rate = seen * shard.world_size / max(time.perf_counter() - start, 1e-9)  # all ranks, ≈
                progress.update(
                    task, advance=1,
                    description=f"epoch {epoch + 1}/{config.epochs} loss {loss_sum / seen:.3f} "
                    f"acc {100 * correct / seen:.1f}% {rate:.0f} img/s",
                )
    finally:
        model.record_hah_costs(False)
    seconds = time.perf_counter() - start
    loss_sum, hah_sum, correct = distributed.all_sum([loss_sum, hah_sum, correct], shard)
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "train_loss": loss_sum / len(data),
        "hah_objective": hah_sum / len(data),
        "train_acc": correct / len(data),
        "images_per_s": len(data) / seconds,
        "seconds": seconds,
        "processes": shard.world_size,
        "amp": runtime.amp,
    }
