"""Adversarial-example files: every verified example of a run in one safetensors file, loaded and re-verified later.

A file (format :data:`ADV_FORMAT`) holds the clean images, labels, indices, clean predictions and, per ε, the
verified examples and their predictions, with the run's settings and the model's fingerprint as metadata. Loading
never unpickles (safetensors). :func:`recheck` verifies a file's examples again with a model, so a break reported
once can be checked by anyone who has the file and the checkpoint (``hahrobust attack --save-adv``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hahrobust.attacks._common import eval_mode
from hahrobust.attacks.journal import model_fingerprint
from hahrobust.attacks.outcome import per_image, summarise
from hahrobust.attacks.registry import get
from hahrobust.attacks.verify import verify
from hahrobust.data import ImageSet
from hahrobust.errors import HahrobustError
from hahrobust.provenance import write_atomically

ADV_FORMAT = "hahrobust.adversarial/1"


def write_adversarial(
    path: Path, parts: list[dict[str, torch.Tensor]], records: list[dict[str, Any]], data: ImageSet,
    settings: dict[str, Any], model: nn.Module,
) -> None:
    """One safetensors file: clean images, labels, indices, and per ε the verified examples and predictions."""
    index = torch.from_numpy(per_image(records, "index").astype(np.int64))
    tensors: dict[str, torch.Tensor] = {
        "x": data.images[index].float().div(255),
        "label": torch.from_numpy(per_image(records, "label").astype(np.int64)),
        "index": index,
        "clean_pred": torch.from_numpy(per_image(records, "clean_pred").astype(np.int64)),
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
    minimum_norm = get(attack).minimum_norm
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
    return summarise(records, eps, attack, norm, settings["seed"], minimum_norm, dim=int(np.prod(x_all.shape[1:])))

