"""What a hebb-net run (Amato et al. 2019) does: its settings, presets, layer string and plan of steps.

:func:`plan` turns a model config and a :class:`HebbianTrainConfig` into the fixed list of steps that
:func:`hahrobust.training.hebbian.train_hebbnet` runs (the module docstring there describes each step).
Layer strings must have their Hebbian/random layers in one contiguous run (``G…G [HR]…[HR] G…G``), which
covers every row of Table 2; a gradient layer between two Hebbian ones has no defined training order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from hahrobust.errors import HahrobustError
from hahrobust.models import HebbNetConfig
from hahrobust.nn.hebbian import Similarity
from hahrobust.training.config import Preset

MODEL_NAME = "hebb-net"
FAMILY = "hebbnet"
STAGE_NAMES = ("conv1", "conv2", "conv3", "conv4", "fc5", "classifier")


@dataclass(frozen=True)
class HebbianTrainConfig:
    """Hyperparameters of a hebb-net run (defaults: the paper's Sec. 5 and the authors' configs)."""

    # Hebbian layers (Sec. 5.2): WTA with angular similarity, lr 0.1, 2 epochs per layer, batch 64.
    hebbian_epochs: int = 2
    hebbian_lr: float = 0.1
    hebbian_batch_size: int = 64
    similarity: Similarity = "angular"
    reseed_every: int = 20  # batches (at most an epoch) in which a WTA kernel must win once or be reseeded; 0: never
    # Gradient layers (Sec. 5): SGD, Nesterov, momentum 0.9, lr 1e-3 then halved each epoch in the second half.
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.06  # the paper's L2 penalty for the baseline
    lr_decay: float = 0.5
    decay_from: float = 0.5  # fraction of the epochs after which lr is multiplied by lr_decay every epoch
    augment: bool = False  # random crop + flip in SGD epochs (the paper: none)
    # Data: validation held out of the training set; optional class-balanced subsets for small runs.
    val_size: int = 10_000
    train_subset: int | None = None  # of the training images left after the validation split
    test_subset: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hebbian_epochs", "epochs"):
            if getattr(self, name) < 0:
                raise HahrobustError(f"{name.replace('_', ' ')} must be >= 0, got {getattr(self, name)}")
        for name in ("hebbian_batch_size", "batch_size"):
            if getattr(self, name) <= 0:
                raise HahrobustError(f"{name.replace('_', ' ')} must be a positive integer, got {getattr(self, name)}")
        if not 0 < self.hebbian_lr <= 1:
            raise HahrobustError(f"Hebbian learning rate must be in (0, 1], got {self.hebbian_lr}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise HahrobustError(
                f"need lr > 0, weight decay >= 0, momentum in [0, 1); "
                f"got {self.lr}, {self.weight_decay}, {self.momentum}"
            )
        if not 0 < self.lr_decay <= 1 or not 0 <= self.decay_from <= 1:
            raise HahrobustError(
                f"lr decay must be in (0, 1] and decay_from in [0, 1], got {self.lr_decay}, {self.decay_from}"
            )
        if self.val_size < 0:
            raise HahrobustError(f"validation size must be >= 0, got {self.val_size}")
        if self.similarity not in ("angular", "euclidean"):
            raise HahrobustError(f"unknown similarity {self.similarity!r}; choose angular or euclidean")

    def lr_at(self, epoch: int) -> float:
        """SGD learning rate of 0-based ``epoch``: 1e-3 for epochs 0-9 of 20, then 5e-4, 2.5e-4, … (pure)."""
        start = round(self.decay_from * self.epochs)
        return self.lr * self.lr_decay ** max(0, epoch - start + 1)


#: ``paper``/``authors``: Sec. 5 as published (the authors' code uses the same values).
#: ``small``: a width-½ network on 4,000 training / 1,000 validation / 2,000 test images, 1 Hebbian and
#: 5 SGD epochs: a whole Table-2 row in about a minute on 2 CPU cores.
HEBBIAN_PRESETS: dict[str, Preset] = {
    "paper": Preset("Sec. 5: 40,000 train / 10,000 validation, 2 Hebbian + 20 SGD epochs, batch 64"),
    "authors": Preset("the authors' configs (same values as the paper's text)"),
    "small": Preset(
        "width-½ network, 4,000 train / 1,000 validation / 2,000 test images, 1 Hebbian + 5 SGD epochs",
        model={"width": 0.5},
        train={"train_subset": 4000, "val_size": 1000, "test_subset": 2000, "epochs": 5, "hebbian_epochs": 1},
    ),
}


def hebbian_preset(name: str) -> Preset:
    if name not in HEBBIAN_PRESETS:
        raise HahrobustError(f"unknown hebb-net preset {name!r}; choose one of: {', '.join(HEBBIAN_PRESETS)}")
    return HEBBIAN_PRESETS[name]


#: Model settings of ``train`` that a hebb-net understands (the rest are VGG/HaH settings).
HEBBNET_MODEL_FLAGS = ("width",)


def hebbnet_settings(
    preset_name: str, model_flags: dict[str, Any], train_flags: dict[str, Any]
) -> tuple[dict[str, Any], HebbianTrainConfig]:
    """(model overrides, training config) from a hebb-net preset and the flags given (None = not given)."""
    chosen = hebbian_preset(preset_name)
    given_model = {k: v for k, v in model_flags.items() if v is not None}
    foreign = sorted(set(given_model) - set(HEBBNET_MODEL_FLAGS))
    if foreign:
        raise HahrobustError(f"--{foreign[0].replace('_', '-')} does not apply to hebb-net")
    fields = {f.name for f in dataclasses.fields(HebbianTrainConfig)}
    given_train = {k: v for k, v in train_flags.items() if v is not None}
    unknown = sorted(set(given_train) - fields)
    if unknown:  # a programming error in a caller
        raise ValueError(f"unknown hebb-net training setting(s): {', '.join(unknown)}")
    return {**chosen.model, **given_model}, HebbianTrainConfig(**{**chosen.train, **given_train})


def resolve_layers(layers: str | None, rule: str | None, hebbian_layers: str | None) -> str:
    """The layer string from ``--rules``, or from ``--rule sgd|hebbian`` and ``--hebbian-layers 1,2``."""
    if layers is not None:
        if rule is not None or hebbian_layers is not None:
            raise HahrobustError("give either --rules or --rule/--hebbian-layers, not both")
        return layers.strip().upper()
    if rule is None:
        if hebbian_layers is not None:
            raise HahrobustError("--hebbian-layers needs --rule hebbian")
        return "GGGGGG"
    if rule not in ("sgd", "hebbian"):
        raise HahrobustError(f"unknown --rule {rule!r}; choose sgd or hebbian (or give --rules)")
    if rule == "sgd":
        if hebbian_layers is not None:
            raise HahrobustError("--hebbian-layers applies to --rule hebbian, not sgd")
        return "GGGGGG"
    if hebbian_layers is None:
        return "HHHHHH"
    try:
        chosen = {int(v) for v in hebbian_layers.split(",") if v.strip()}
    except ValueError:
        raise HahrobustError(f"--hebbian-layers must be comma-separated numbers 1-6, got {hebbian_layers!r}") from None
    if not chosen or not chosen <= set(range(1, 7)):
        raise HahrobustError(f"--hebbian-layers must name layers 1-6 (conv1-4, fc5, classifier): {hebbian_layers!r}")
    return "".join("H" if i in chosen else "G" for i in range(1, 7))


def default_zca(layers: str) -> bool:
    """The paper whitens inputs whenever the lower layers are Hebbian: here, when conv1 is."""
    return layers[:1] == "H"


# ----------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Step:
    phase: Literal["zca", "base", "hebbian", "calibrate", "sgd"]
    stage: int | None = None  # 0..5: conv1..conv4, fc5, classifier
    epoch: int | None = None  # 0-based epoch within the phase

    def describe(self) -> str:
        parts = [self.phase] + ([STAGE_NAMES[self.stage]] if self.stage is not None else [])
        return " ".join(parts) + (f" epoch {self.epoch + 1}" if self.epoch is not None else "")


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    frozen: tuple[int, ...]  # stages not trained by SGD
    trained: tuple[int, ...]  # stages trained by SGD
    base_stages: tuple[int, ...]  # stages copied from the base network
    select_phase: Literal["sgd", "hebbian", "none"]  # phase whose epochs are validated for the best one


def plan(model_config: HebbNetConfig, config: HebbianTrainConfig) -> Plan:
    """The steps of a run, in order (see the module docstring)."""
    layers = model_config.layers
    special = [i for i, c in enumerate(layers) if c != "G"]
    if special and "G" in layers[special[0] : special[-1] + 1]:
        raise HahrobustError(
            f"layers {layers}: a gradient layer between Hebbian/random layers is not supported; "
            "Hebbian and random layers must form one contiguous run (e.g. GHHGGG)"
        )
    lo, hi = (special[0], special[-1]) if special else (0, -1)
    base_stages = tuple(range(lo)) if special else ()
    trained = tuple(range(hi + 1, 6))
    steps: list[Step] = []
    if model_config.zca and not base_stages:
        steps.append(Step("zca"))
    if base_stages:
        steps.append(Step("base"))
    for i in range(lo, hi + 1):
        if layers[i] == "H":
            steps += [Step("hebbian", i, e) for e in range(config.hebbian_epochs)]
        if i < 5:
            steps.append(Step("calibrate", i))
    if trained:
        if config.epochs == 0:
            raise HahrobustError(f"layers {layers} has gradient layers on top: epochs must be >= 1")
        steps += [Step("sgd", None, e) for e in range(config.epochs)]
    select: Literal["sgd", "hebbian", "none"] = (
        "sgd" if trained else ("hebbian" if layers[5] == "H" and config.hebbian_epochs > 0 else "none")
    )
    frozen = tuple(i for i in range(6) if i not in trained)
    return Plan(tuple(steps), frozen, trained, base_stages, select)



__all__ = [
    "FAMILY", "HEBBIAN_PRESETS", "HEBBNET_MODEL_FLAGS", "MODEL_NAME", "STAGE_NAMES", "HebbianTrainConfig", "Plan",
    "Step", "default_zca", "hebbian_preset", "hebbnet_settings", "plan", "resolve_layers",
]
