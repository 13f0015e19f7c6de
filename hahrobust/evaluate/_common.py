"""What every evaluation function shares: the models it takes, one frame per model, and the settings that change numbers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import pandas as pd
import torch
from torch import nn

from hahrobust.attacks.journal import data_fingerprint
from hahrobust.data import ImageSet
from hahrobust.devices import resolve_device
from hahrobust.evaluate.opening import LoadedModel, MemorySource, open_models
from hahrobust.models.foreign import ForeignSource

#: What an evaluation function takes: :func:`open_models`'s result, or {label: module} from a notebook.
Models = Union[Sequence[LoadedModel], Mapping[str, nn.Module]]


def loaded(models: Models, device: torch.device | str = "cpu") -> list[LoadedModel]:
    """``models`` as :class:`LoadedModel` s (a mapping of modules is opened and checked first)."""
    if isinstance(models, Mapping):
        return open_models(dict(models), device=device)
    return list(models)


def as_device(device: torch.device | str) -> torch.device:
    return device if isinstance(device, torch.device) else resolve_device(device)


def per_model(models: Sequence[LoadedModel], evaluate: Callable[[LoadedModel], pd.DataFrame]) -> pd.DataFrame:
    """Run ``evaluate`` on each model in order; one frame with a leading ``model`` column (its label)."""
    frames = [evaluate(m).assign(model=m.label) for m in models]
    rows = pd.concat(frames, ignore_index=True)
    return rows[["model", *[c for c in rows.columns if c != "model"]]]


def origins(models: Sequence[LoadedModel]) -> dict[str, Path | ForeignSource | MemorySource]:
    """What each label's numbers came from, for :class:`hahrobust.results.Result`."""
    return {m.label: m.origin for m in models}


def common_settings(data: ImageSet, *, seed: int, batch_size: int, device: torch.device | str) -> dict[str, Any]:
    """The shared settings that change numbers (for Result.settings); the device is recorded for provenance.
    ``data``: the path as the user gave it; ``data_sha256``: the images' and labels' content hash, so two machines'
    results say whether they measured the same images whatever the path. ``subset``: ``data`` is a class-balanced
    subset (:func:`hahrobust.data.balanced_subset` marks its source)."""
    return {
        "data": data.source,
        "data_sha256": data_fingerprint(data),
        "n": len(data),
        "subset": " [balanced n=" in data.source,
        "seed": seed,
        "batch_size": batch_size,
        "device": str(device),
    }
