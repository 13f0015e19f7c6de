"""Opening the models an evaluation compares: checkpoints, model specs and in-memory modules, labelled and checked.

:func:`open_models` is what every evaluation command does before it computes anything, as a library call::

    models = hahrobust.open_models(["hah.safetensors", "base.safetensors"])
    models = hahrobust.open_models(["py:torchvision.models:resnet18"], weights=["r18.pt"], normalize=["cifar10"])
    models = hahrobust.open_models({"mine": my_module})          # a module built in a notebook

A checkpoint is loaded without unpickling (:func:`hahrobust.checkpoint.load_checkpoint`); a model spec runs the
user's factory and loads its weights strictly, then is checked on probe images
(:func:`hahrobust.models.foreign.load_foreign`); an in-memory module is checked the same way. Labels are the given
ones or each model's name, distinct either way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from hahrobust.checkpoint import load_checkpoint
from hahrobust.devices import resolve_device
from hahrobust.errors import HahrobustError
from hahrobust.models.foreign import (
    ForeignSource, ModelSpec, Normalization, check_classifier, load_foreign, parse_model_spec, parse_normalization,
)
from hahrobust.nn.hooks import select_layers
from hahrobust.nn.surrogate import SurrogateKind, surrogate_types

#: What :func:`open_models` takes: paths or specs (in order), or {label: module or path}.
ModelEntries = Union[Sequence[Union[str, Path, nn.Module]], Mapping[str, Union[str, Path, nn.Module]]]


@dataclass(frozen=True)
class MemorySource:
    """An in-memory module's provenance for results: the SHA-256 of its state dict (names, dtypes, shapes, bytes)."""

    sha256: str
    type_name: str

    @classmethod
    def of(cls, model: nn.Module) -> MemorySource:
        digest = hashlib.sha256()
        for name, tensor in model.state_dict().items():
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return cls(digest.hexdigest(), f"{type(model).__module__}.{type(model).__qualname__}")

    @property
    def display(self) -> str:
        return f"in-memory {self.type_name}"

    @property
    def factory_display(self) -> str:
        return "—"

    def provenance(self) -> dict[str, Any]:
        return {"in_memory": self.type_name, "sha256": self.sha256}


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to evaluate: a hahrobust checkpoint's (``source`` None; ``path`` is the checkpoint), a model
    spec's (``source`` its provenance; ``path`` is its weights file) or an in-memory module's (``path`` None)."""

    label: str
    path: Path | None
    model: nn.Module
    metadata: dict[str, Any]
    source: ForeignSource | MemorySource | None = None

    @property
    def is_foreign(self) -> bool:
        """Not a hahrobust model: its layers are picked with ``--layers``, not by its blocks."""
        return self.source is not None and not (isinstance(self.source, MemorySource) and hasattr(self.model, "block_names"))

    @property
    def origin(self) -> Path | ForeignSource | MemorySource:
        """What this label's numbers came from, for :class:`hahrobust.results.Result`."""
        return self.source if self.source is not None else self.path  # type: ignore[return-value]


def open_models(
    entries: ModelEntries,
    *,
    labels: Sequence[str] | None = None,
    weights: Sequence[str | Path] | None = None,
    normalize: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
) -> list[LoadedModel]:
    """Load and check every model, in eval mode on ``device``; nothing is computed.

    ``entries``: hahrobust checkpoints (``.safetensors``), model specs (``py:PACKAGE.MODULE:FACTORY`` or
    ``FILE.py:FACTORY``, each paired in order with one of ``weights``), or ``nn.Module`` objects; or a mapping
    label → any of these. ``normalize``: none, one for every spec, or one per spec (``MEAN,STD``, ``cifar10``,
    ``none``). Every argument is checked before any user code runs; errors are one-line
    :class:`~hahrobust.errors.HahrobustError`.
    """
    device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    if isinstance(entries, Mapping):
        if labels:
            raise HahrobustError("give labels as the mapping's keys or as labels=, not both")
        labels, items = list(entries.keys()), list(entries.values())
    else:
        items = list(entries)
    if not items:
        raise HahrobustError("no checkpoint given")
    if labels and len(labels) != len(items):
        raise HahrobustError(
            f"got {len(labels)} --label value(s) for {len(items)} checkpoint(s); give one per checkpoint"
        )
    specs = [None if isinstance(item, nn.Module) else parse_model_spec(str(item)) for item in items]
    given_weights = _weights_per_spec(specs, weights)
    normalizations = _normalization_per_spec(specs, normalize)
    loaded: list[tuple[Path | None, nn.Module, dict[str, Any], ForeignSource | MemorySource | None]] = []
    for item, spec in zip(items, specs):
        if isinstance(item, nn.Module):
            model = item
            model.to(device)
            model.eval()  # not chained: a model's own train() override need not return it
            name = str(getattr(model, "name", "") or type(model).__name__)
            check_classifier(model, name)
            loaded.append((None, model, {"model": {"name": name}}, MemorySource.of(model)))
        elif spec is None:
            loaded.append((Path(item), *load_checkpoint(item, device), None))
        else:
            model, source = load_foreign(spec, Path(given_weights.pop(0)), device, normalize=normalizations.pop(0))
            # A spec is named by its weights file (the factory is often a generic build()).
            loaded.append((source.weights, model, {"model": {"name": source.weights.stem}, "foreign": source.provenance()}, source))
    names = model_labels([path for path, *_ in loaded], [meta for _, _, meta, _ in loaded], labels)
    return [LoadedModel(label, *entry) for label, entry in zip(names, loaded)]


def _weights_per_spec(specs: list[ModelSpec | None], weights: Sequence[str | Path] | None) -> list[str | Path]:
    count, given = sum(spec is not None for spec in specs), list(weights or [])
    if len(given) != count:
        raise HahrobustError(
            f"got {len(given)} --weights for {count} model spec(s); give one weights file per spec, in order"
            + ("" if count else " (--weights goes with py:MODULE:FACTORY or FILE.py:FACTORY, not checkpoints)")
        )
    return given


def _normalization_per_spec(specs: list[ModelSpec | None], values: Sequence[str] | None) -> list[Normalization | None]:
    count, given = sum(spec is not None for spec in specs), list(values or [])
    if given and not count:
        raise HahrobustError("--normalize applies to model specs; hahrobust checkpoints normalize inside the model")
    if len(given) not in (0, 1, count):
        raise HahrobustError(f"got {len(given)} --normalize values for {count} model specs; give one, or one per spec")
    parsed = [parse_normalization(value) for value in given]
    return parsed * count if len(parsed) == 1 else (parsed or [None] * count)


def model_labels(
    paths: Sequence[Path | None], metadata: Sequence[dict[str, Any]], labels: Sequence[str] | None = None
) -> list[str]:
    """``labels`` if given (one per model, distinct), else each model's name from its metadata.

    Checkpoints that share a model name (two seeds of hah-vgg16, say) are labelled by file name instead.
    """
    if labels:
        if len(labels) != len(paths):
            raise HahrobustError(
                f"got {len(labels)} --label value(s) for {len(paths)} checkpoint(s); give one per checkpoint"
            )
        _check_distinct(list(labels), "--label values")
        return list(labels)
    names = [str(meta.get("model", {}).get("name", path.stem if path else "model")) for path, meta in zip(paths, metadata)]
    shown = [path.stem if path is not None and names.count(name) > 1 else name for path, name in zip(paths, names)]
    _check_distinct(shown, "model labels (pass --label to name each checkpoint)")
    return shown


def layers_for(
    models: Sequence[LoadedModel], selector: str | None, foreign_default: str | None = None
) -> dict[str, list[str] | None]:
    """Per model label, the layers to measure: None for a hahrobust model (its own block view), the layers
    ``selector`` picks in any other model (:func:`select_layers`; ``foreign_default`` when ``selector`` is None,
    else an error asking for it). A selector without any such model is an error."""
    if selector is not None and not any(m.is_foreign for m in models):
        raise HahrobustError("--layers picks layers of model specs; hahrobust checkpoints are measured per block")
    layers: dict[str, list[str] | None] = {}
    for m in models:
        chosen = selector or foreign_default
        if not m.is_foreign:
            layers[m.label] = None
            continue
        if chosen is None:
            raise HahrobustError(
                f"{m.label} is not a hahrobust model: name the layers to measure with --layers "
                "(module types such as ReLU or its threshold class, or name globs)"
            )
        try:
            layers[m.label] = select_layers(m.model, chosen)
        except HahrobustError as exc:
            raise HahrobustError(f"--layers {chosen!r} in {m.label}: {exc}") from None
    return layers


def bpda_types_for(
    models: Sequence[LoadedModel], names: Mapping[str, SurrogateKind]
) -> dict[str, dict[type[nn.Module], SurrogateKind]]:
    """Per model label, the module types of that model that ``names`` (type name → surrogate kind, as ``--bpda``
    gives them) picks: each model its own mapping, nothing registered globally. A name no model has is an error
    (a typo would attack plainly)."""
    per_model: dict[str, dict[type[nn.Module], SurrogateKind]] = {}
    for m in models:
        try:
            per_model[m.label] = surrogate_types(m.model, dict(names))
        except ValueError as exc:
            raise HahrobustError(f"--bpda for {m.label}: {exc}") from None
    found = {name for types in per_model.values() for cls in types for name in (cls.__name__, f"{cls.__module__}.{cls.__qualname__}")}
    missing = [name for name in names if name not in found]
    if missing:
        raise HahrobustError(f"--bpda {missing[0]}: no model has a module of that type")
    return per_model


def _check_distinct(labels: list[str], what: str) -> None:
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise HahrobustError(f"{what} must be distinct; repeated: {', '.join(repeated)}")


def load_transfer_source(path: str | Path, models: Sequence[nn.Module], device: torch.device) -> nn.Module:
    """The transfer source (a checkpoint), checked to take the same input and give the same number of classes as
    ``models``."""
    source, _ = load_checkpoint(path, device)
    probe = torch.zeros(1, 3, 32, 32, device=device)
    with torch.no_grad():
        try:
            classes = source(probe).shape[-1]
        except RuntimeError as exc:
            raise HahrobustError(f"--transfer-from {path}: does not take 3×32×32 images ({str(exc).splitlines()[0]})") from None
        for model in models:
            if (target := model(probe).shape[-1]) != classes:
                raise HahrobustError(f"--transfer-from {path}: {classes} classes, the attacked model has {target}")
    return source
