"""Train a hebb-net (Amato et al. 2019): Hebbian layers first, bottom-up, then gradient layers with SGD.

A run is a fixed list of steps, each saved atomically when done, so an interrupted run resumes at the
next step (``resume=True``) and, on CPU, ends with the same weights as an uninterrupted one:

1. ``zca``: fit the ZCA whitening on the training images (when ``zca`` is on);
2. ``base``: copy the gradient-trained layers below the first Hebbian/random layer from a trained
   ``GGGGGG`` hebb-net (the paper reuses its SGD baseline for every "G below H" configuration, Secs. 5.4-5.5),
   frozen;
3. for each Hebbian or random layer, bottom-up: ``hebbian`` epochs (H only; the layers below frozen in
   eval mode), then ``calibrate``: one pass that sets the following BatchNorm's statistics for the
   now-frozen layer (a Hebbian layer has nothing else to learn; a random one stays as initialised);
4. ``sgd`` epochs for the gradient layers above: SGD with Nesterov momentum 0.9, lr 1e-3 kept for the first
   half of the epochs, then halved every epoch (the paper: 20 epochs, halved from epoch 10 to 19), batch 64,
   L2 penalty ``weight_decay``; the frozen layers stay in eval mode.

The authors validate on the last 10,000 training images and keep the best epoch. Here the validation set is
a class-balanced random ``val_size`` images of the training set (this loader orders images by class, so
"the last 10,000" would be two classes); the best epoch of the last training phase (SGD, or the Hebbian
classifier when no layer is trained by SGD) is kept and scored on the test set.

The settings, presets and plan of steps are in :mod:`hahrobust.training.hebbian_config`; Table 2's sweep over
layer strings is :mod:`hahrobust.studies.hebbian_sweep`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.progress import Progress
from safetensors.torch import load_file

from hahrobust.checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint
from hahrobust.data import CIFAR10_CLASSES, ImageSet, balanced_subset, batches, num_batches
from hahrobust.errors import HahrobustError
from hahrobust.metrics import accuracy
from hahrobust.models import HebbNet, HebbNetConfig, from_config, resolve_config
from hahrobust.nn.hebbian import HebbianLearner, HebbianRule
from hahrobust.provenance import sha256_file
from hahrobust.training.hebbian_config import FAMILY, MODEL_NAME, STAGE_NAMES, HebbianTrainConfig, Plan, Step, plan
from hahrobust.training.loop import TrainResult, run_paths
from hahrobust.training.state import TrainState, json_roundtrip, load_state, save_final, save_progress

# ------------------------------------------------------------------------------------------------ data


def split_validation(data: ImageSet, n: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """(training rest, validation): ``n`` class-balanced images held out at random (by ``seed``), rest in order."""
    if n == 0:
        return data, ImageSet(data.images[:0], data.labels[:0], source=f"{data.source} [no validation]")
    if not 0 < n < len(data):
        raise HahrobustError(f"validation size {n} must be between 0 and the training set size {len(data)} - 1")
    generator = torch.Generator().manual_seed(_derive(seed, "validation split"))
    held = torch.zeros(len(data), dtype=torch.bool)
    classes = len(CIFAR10_CLASSES)
    for label in range(classes):
        want = n // classes + (label < n % classes)
        members = (data.labels == label).nonzero().flatten()
        if len(members) <= want:
            raise HahrobustError(
                f"validation size {n} needs {want} images of class {CIFAR10_CLASSES[label]} and some left to train on, "
                f"but {data.source} has {len(members)}"
            )
        held[members[torch.randperm(len(members), generator=generator)[:want]]] = True
    tag = f"validation n={n} seed={seed}"
    return (
        ImageSet(data.images[~held], data.labels[~held], source=f"{data.source} [minus {tag}]"),
        ImageSet(data.images[held], data.labels[held], source=f"{data.source} [{tag}]"),
    )


def _derive(seed: int, *what: object) -> int:
    """A seed for one named random stream of a run (hashing keeps distinct streams distinct)."""
    digest = hashlib.sha256(":".join(map(str, ("hahrobust.hebbian", seed, *what))).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# --------------------------------------------------------------------------------------------- training


class _NoOptimizer:
    """Stands in for the optimizer in saved states of runs with no gradient-trained layer (nothing to save)."""

    def state_dict(self) -> dict[str, Any]:
        return {"state": {}, "param_groups": []}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["state"] or state["param_groups"]:
            raise HahrobustError("training state holds optimizer state, but this run has no gradient-trained layer")


@contextmanager
def _own_rng(device: torch.device) -> Iterator[None]:
    """Seeding inside a run (init, dropout) must not change the caller's global RNG."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def best_path(out: Path) -> Path:
    """The best-epoch snapshot kept next to the checkpoint while a run is in progress."""
    return out.with_name(f"{out.name.removesuffix('.safetensors')}.best.safetensors")


def train_hebbnet(
    train_data: ImageSet,
    test_data: ImageSet,
    out: str | Path,
    *,
    model_config: HebbNetConfig | None = None,
    model_overrides: dict[str, Any] | None = None,
    config: HebbianTrainConfig = HebbianTrainConfig(),
    base: str | Path | None = None,
    dataset: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a hebb-net (config from ``model_config`` or registry overrides) and write the checkpoint ``out``.

    ``base``: a trained ``GGGGGG`` hebb-net checkpoint, needed when gradient layers sit below the
    Hebbian/random ones (their weights are copied and frozen). A state file, a CSV log and (while
    validating) a best-epoch snapshot sit beside ``out`` until the run ends.
    """
    out = Path(out)
    device = torch.device(device)
    state_path, log_path = run_paths(out)
    if out.suffix != ".safetensors":
        raise HahrobustError(f"{out}: the checkpoint must end in .safetensors")
    if not out.parent.is_dir():
        raise HahrobustError(f"{out.parent}: output directory does not exist")
    if out.exists() and not overwrite:
        raise HahrobustError(f"{out} already exists; pass --overwrite to replace it")
    if state_path.exists() and not resume:
        raise HahrobustError(f"{state_path} holds an unfinished run; pass --resume to continue it or delete it")
    if model_config is None:
        _, model_config = resolve_config(MODEL_NAME, **(model_overrides or {}))
    try:
        model_config.validate()
    except ValueError as exc:
        raise HahrobustError(f"invalid hebb-net configuration: {exc}") from None
    steps = plan(model_config, config)
    base_path = Path(base) if base is not None else None
    if steps.base_stages and base_path is None:
        raise HahrobustError(
            f"layers {model_config.layers} keep {', '.join(STAGE_NAMES[i] for i in steps.base_stages)} from a "
            "gradient-trained network: pass --base with a trained hebb-net GGGGGG checkpoint (the paper's baseline)"
        )
    if base_path is not None and not steps.base_stages:
        raise HahrobustError(f"layers {model_config.layers} take no layer from a base network; drop --base")

    train_split, val_data = split_validation(train_data, config.val_size, config.seed)
    if config.train_subset:
        train_split = balanced_subset(train_split, config.train_subset, seed=config.seed)
    if config.test_subset:
        test_data = balanced_subset(test_data, config.test_subset, seed=config.seed)
    settings = json_roundtrip({
        "model": {"name": MODEL_NAME, "family": FAMILY, "config": dataclasses.asdict(model_config)},
        "train": dataclasses.asdict(config),
        "dataset": dataset or {"source": train_data.source},
        "split": {"train_n": len(train_split), "val_n": len(val_data), "test_n": len(test_data)},
        "base": {"path": str(base_path.resolve()), "sha256": sha256_file(base_path)} if base_path is not None else None,
    })

    with _own_rng(device):
        torch.manual_seed(config.seed)
        model = from_config(FAMILY, model_config).to(device)
        assert isinstance(model, HebbNet)
        trained_params = [p for i in steps.trained for p in model.stages()[i].parameters() if p.requires_grad]
        optimizer: Any = (
            torch.optim.SGD(trained_params, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
                            weight_decay=config.weight_decay)
            if trained_params else _NoOptimizer()
        )
        state = TrainState(epochs_done=0, history=[], settings=settings)
        if resume and state_path.exists():
            state = load_state(state_path, model, optimizer)
            if state.settings != settings:
                raise HahrobustError(f"{state_path}: --resume with different settings than the interrupted run")
            if state.epochs_done > len(steps.steps):
                raise HahrobustError(f"{state_path}: training state is ahead of this run's plan")

        runner = _Runner(
            model, optimizer, steps, config, train_split, val_data, base_path, device, progress,
            history=state.history, snapshot=best_path(out),
        )
        for index in range(state.epochs_done, len(steps.steps)):
            row = runner.run(index)
            state.history.append(row)
            state.epochs_done = index + 1
            save_progress(state_path, log_path, model, optimizer, state)

        best = _best_row(state.history, steps.select_phase)
        snapshot = best_path(out)
        if best is not None and snapshot.exists():
            model.load_state_dict(load_file(str(snapshot), device=str(device)))
        test_acc = accuracy(model, test_data, device=device, progress=progress, description="test accuracy")
        train_acc = best["train_acc"] if best is not None and best.get("train_acc") is not None else accuracy(
            model, train_split, device=device, progress=progress, description="train accuracy"
        )
    metrics = {
        "test_acc": test_acc, "test_n": len(test_data), "train_acc": train_acc,
        "val_acc": best.get("val_acc") if best is not None else None, "val_n": len(val_data),
        "best_step": best["step"] if best is not None else None,
    }
    metadata = checkpoint_metadata(
        model, MODEL_NAME, FAMILY,
        train=settings["train"], dataset=settings["dataset"], split=settings["split"], base=settings["base"],
        seed=config.seed, epochs=config.epochs, metrics=metrics, history=state.history,
    )
    save_final(out, model, metadata, state_path)
    snapshot.unlink(missing_ok=True)
    return TrainResult(out, model.eval(), metadata)


def _best_row(history: list[dict[str, Any]], phase: str) -> dict[str, Any] | None:
    """The validated epoch with the highest validation accuracy (the earliest on ties), or None."""
    rows = [r for r in history if r.get("phase") == phase and r.get("val_acc") is not None]
    return max(rows, key=lambda r: (r["val_acc"], -r["step"])) if rows else None


@dataclass
class _Runner:
    model: HebbNet
    optimizer: Any
    plan: Plan
    config: HebbianTrainConfig
    train: ImageSet
    val: ImageSet
    base: Path | None
    device: torch.device
    progress: Progress | None
    history: list[dict[str, Any]]  # rows of the finished steps (the run's state), to find the best epoch so far
    snapshot: Path  # where the best epoch's weights are kept

    def run(self, index: int) -> dict[str, Any]:
        step = self.plan.steps[index]
        start = time.perf_counter()
        row: dict[str, Any] = {"step": index + 1, "phase": step.phase, "layer": None, "epoch": None}
        if step.stage is not None:
            row["layer"] = STAGE_NAMES[step.stage]
        if step.epoch is not None:
            row["epoch"] = step.epoch + 1
        if step.phase == "zca":
            row["images"] = self._fit_zca()
        elif step.phase == "base":
            self._copy_base()
        elif step.phase == "hebbian":
            row.update(self._hebbian_epoch(index, step))
        elif step.phase == "calibrate":
            self._calibrate(step.stage)  # type: ignore[arg-type]
        else:
            row.update(self._sgd_epoch(index, step))
        if step.phase == self.plan.select_phase and (step.phase == "sgd" or step.stage == 5):
            row["val_acc"] = self._validate(row)
        row["seconds"] = time.perf_counter() - start
        return row

    # -- steps ------------------------------------------------------------------------------------

    def _batches(self, batch_size: int, index: int, *, shuffle: bool, augment: bool = False):
        # The step index is the "epoch" of the data order: every step of a run sees its own shuffle.
        return batches(self.train, batch_size, shuffle=shuffle, augment=augment, seed=self.config.seed,
                       epoch=index, device=self.device)

    def _task(self, description: str, total: int) -> Any:
        return self.progress.add_task(description, total=total) if self.progress else None

    def _advance(self, task: Any, **fields: Any) -> None:
        if self.progress is not None and task is not None:
            self.progress.update(task, advance=1, **fields)

    def _done(self, task: Any) -> None:
        if self.progress is not None and task is not None:
            self.progress.remove_task(task)

    @torch.no_grad()
    def _fit_zca(self) -> int:
        task = self._task("ZCA whitening: covariance", num_batches(len(self.train), 500, False))

        def normalised() -> Iterator[torch.Tensor]:
            for x, _, _ in batches(self.train, 500, device=self.device):
                yield self.model.normalize(x)
                self._advance(task)

        count = self.model.zca.fit(normalised())
        self._done(task)
        return count

    def _copy_base(self) -> None:
        assert self.base is not None
        base, meta = load_checkpoint(self.base, self.device)
        spec = meta.get("model", {})
        config = self.model.config
        if spec.get("family") != FAMILY or not isinstance(base, HebbNet):
            raise HahrobustError(f"{self.base}: --base must be a hebb-net checkpoint, got {spec.get('name')!r}")
        theirs = base.config
        wrong = [STAGE_NAMES[i] for i in self.plan.base_stages if theirs.layers[i] != "G"]
        if wrong:
            raise HahrobustError(
                f"{self.base}: base layers {theirs.layers} are not gradient-trained at {', '.join(wrong)}"
            )
        for name in ("width", "num_classes", "zca", "zca_eps"):
            if getattr(theirs, name) != getattr(config, name):
                raise HahrobustError(
                    f"{self.base}: base network has {name}={getattr(theirs, name)!r}, "
                    f"this run {getattr(config, name)!r}"
                )
        source = base.state_dict()
        prefixes = tuple(f"features.block{i + 1}." for i in self.plan.base_stages) + (("zca.",) if config.zca else ())
        own = self.model.state_dict()
        for key in own:
            if key.startswith(prefixes):
                own[key].copy_(source[key])

    @torch.no_grad()
    def _calibrate(self, index: int) -> None:
        """BatchNorm statistics after a frozen stage: reset, then an exact average over the training images."""
        stage = self.model.stages()[index]
        norm = stage.norm  # type: ignore[union-attr]
        self.model.eval()
        norm.reset_running_stats()
        momentum, norm.momentum = norm.momentum, None  # None: cumulative average instead of an EMA
        norm.train()
        task = self._task(f"BatchNorm statistics after {STAGE_NAMES[index]}", num_batches(len(self.train), 500, False))
        try:
            for x, _, _ in batches(self.train, 500, device=self.device):
                stage(self.model.forward_to(x, index))
                self._advance(task)
        finally:
            norm.momentum = momentum
            self.model.eval()
            self._done(task)

    @torch.no_grad()
    def _hebbian_epoch(self, index: int, step: Step) -> dict[str, Any]:
        stage_index = step.stage
        assert stage_index is not None
        model, config = self.model, self.config
        stage = model.stages()[stage_index]
        if stage_index == 5:  # the classifier's teacher is the one-hot label, no competition
            rule = HebbianRule(lr=config.hebbian_lr, mode="teacher", per_class=1, num_classes=model.config.num_classes)
        else:
            rule = HebbianRule(
                lr=config.hebbian_lr, mode="wta", similarity=config.similarity,
                per_class=model.config.group_sizes()[stage_index], num_classes=model.config.num_classes,
            )
        n = num_batches(len(self.train), config.hebbian_batch_size, False)
        learner = HebbianLearner(
            # The window never exceeds an epoch, so short (reduced-scale) epochs still catch dead units.
            stage.layer, rule, reseed_every=min(config.reseed_every, n),
            generator=torch.Generator().manual_seed(_derive(config.seed, "reseed", index)),
        )
        model.eval()
        task = self._task(step.describe(), n)
        correct = seen = reseeded = 0
        try:
            for x, y, _ in self._batches(config.hebbian_batch_size, index, shuffle=True):
                h = model.stage_input(x, stage_index)
                if stage_index == 5:  # score the classifier before it learns from the batch
                    correct += int((stage.layer(h).argmax(1) == y).sum())
                stats = learner.step(h, y)
                seen += len(y)
                reseeded += stats.reseeded
                self._advance(task, description=f"{step.describe()} ({stats.active} kernels updated)")
        finally:
            self._done(task)
        return {"train_acc": correct / seen if stage_index == 5 else None, "reseeded": reseeded,
                "lr": config.hebbian_lr}

    def _sgd_epoch(self, index: int, step: Step) -> dict[str, Any]:
        assert step.epoch is not None
        model, config = self.model, self.config
        lr = config.lr_at(step.epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        model.train()
        for i in self.plan.frozen:  # frozen layers keep their BatchNorm statistics (eval mode)
            model.stages()[i].eval()
        torch.manual_seed(_derive(config.seed, "dropout", index))  # dropout's draws; the caller's RNG is restored
        n = num_batches(len(self.train), config.batch_size, False)
        task = self._task(step.describe(), n)
        loss_sum = 0.0
        correct = seen = 0
        start = time.perf_counter()
        try:
            for x, y, _ in self._batches(config.batch_size, index, shuffle=True, augment=config.augment):
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                loss_sum += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                rate = seen / max(time.perf_counter() - start, 1e-9)
                self._advance(task, description=f"{step.describe()} loss {loss_sum / seen:.3f} "
                              f"acc {100 * correct / seen:.1f}% {rate:.0f} img/s")
        finally:
            self._done(task)
            model.eval()
        return {"lr": lr, "train_loss": loss_sum / seen, "train_acc": correct / seen}

    def _validate(self, row: dict[str, Any]) -> float | None:
        """Validation accuracy; the weights are snapshotted when it is the best so far (ties: earliest)."""
        if len(self.val) == 0:
            return None
        acc = accuracy(self.model, self.val, device=self.device, progress=self.progress, description="validation")
        previous = _best_row(self.history, self.plan.select_phase)
        if previous is None or acc > previous["val_acc"]:
            save_checkpoint(self.snapshot, self.model, {"best_step": row["step"], "val_acc": acc})
        return acc


__all__ = ["best_path", "split_validation", "train_hebbnet"]
