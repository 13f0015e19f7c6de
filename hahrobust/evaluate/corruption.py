"""Accuracy under the common corruptions of CIFAR-10-C: ``hahrobust corruption-sweep`` as a function."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from rich.progress import Progress

from hahrobust.data.cifar10c import GENERATOR_VERSION, GeneratedCorruptions, OfficialCorruptions
from hahrobust.data.corruptions import BENCHMARK, SEVERITIES
from hahrobust.data import ImageSet
from hahrobust.evaluate._common import Models, as_device, common_settings, loaded, origins
from hahrobust.results import Result
from hahrobust.studies.corruption import accuracy_rows, check_reference, corruption_correct, layout, summarize

NAME = "corruption-sweep"


def corruption_sweep(
    models: Models,
    data: ImageSet,
    *,
    corruptions: Sequence[str] = BENCHMARK,
    severities: Sequence[int] = SEVERITIES,
    reference: str | None = None,
    source: GeneratedCorruptions | OfficialCorruptions | None = None,
    seed: int = 0,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> Result:
    """Each model's accuracy per corruption and severity on ``data`` (generated per image from ``seed``, or read
    from ``source``), the means, and with ``reference`` (a model label) the CE and relative CE; every accuracy with
    ``n`` and its 95 % interval (the means' clustered over their images: :func:`summarize`)."""
    device = as_device(device)
    opened = loaded(models, device)
    check_reference(reference, [m.label for m in opened])
    source = source or GeneratedCorruptions(data, seed)
    official = isinstance(source, OfficialCorruptions)
    outcomes = corruption_correct({m.label: m.model for m in opened}, data, source, corruptions, severities,
                                  batch_size=batch_size, device=device, progress=progress)
    rows, notes = summarize(accuracy_rows(outcomes), reference, outcomes)
    settings = {
        **common_settings(data, seed=seed, batch_size=batch_size, device=device),
        "corruptions": list(corruptions),
        "severities": list(severities),
        "reference": reference,
        "corruption_source": source.description,
        "generator_version": None if official else GENERATOR_VERSION,
    }
    if official:
        settings["corrupted_images"] = len(source.index)  # type: ignore[union-attr]
    shown = layout(corruptions, severities, reference, str(source.root) if official else None)  # type: ignore[union-attr]
    return Result(NAME, rows, settings, origins(opened), shown, notes=notes)
