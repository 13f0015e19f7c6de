"""Checkpoints: one safetensors file, weights plus JSON metadata. Loading never unpickles anything.

Layout: every tensor of the model's ``state_dict`` under its own name; the safetensors header's
metadata holds ``format`` (``hahrobust.checkpoint/1``) and ``hahrobust`` (a JSON document with the
model family, name and full config, the training config, dataset, seed, epochs, final metrics,
package versions and git commit). safetensors parses only a JSON header and raw arrays, so a
malicious file can fail to load but cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hahrobust.errors import HahrobustError
from hahrobust.models import HahrobustModel, from_config, make_config
from hahrobust.provenance import git_commit, versions, write_atomically

FORMAT = "hahrobust.checkpoint/1"


def checkpoint_metadata(model: HahrobustModel, model_name: str, family: str, **extra: Any) -> dict[str, Any]:
    """The metadata document for ``model``; ``extra`` adds training config, metrics, and so on."""
    import dataclasses

    return {
        "model": {"name": model_name, "family": family, "config": dataclasses.asdict(model.config)},  # type: ignore[call-overload]
        "versions": versions(),
        "git_commit": git_commit(),
        **extra,
    }


def save_checkpoint(path: str | Path, model: HahrobustModel, metadata: dict[str, Any]) -> None:
    """Write weights and metadata atomically (a crash never leaves a truncated file; a full disk raises a
    one-line :class:`HahrobustError` and leaves ``path`` as it was)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"format": FORMAT, "hahrobust": json.dumps(metadata, sort_keys=True)}
    write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=header), "the checkpoint")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata document alone, without building the model."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise HahrobustError(f"{path}: not a hahrobust checkpoint (unreadable safetensors file: {_first_line(exc)})") from None
    if header.get("format") != FORMAT or "hahrobust" not in header:
        raise HahrobustError(f"{path}: not a hahrobust checkpoint (no {FORMAT} metadata)")
    try:
        return json.loads(header["hahrobust"])
    except json.JSONDecodeError:
        raise HahrobustError(f"{path}: corrupt checkpoint metadata") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[HahrobustModel, dict[str, Any]]:
    """The one way every command loads a checkpoint: (model in eval mode on ``device``, metadata)."""
    metadata = read_metadata(path)
    try:
        spec = metadata["model"]
        config = make_config(spec["family"], dict(spec["config"]))
    except (KeyError, TypeError):
        raise HahrobustError(f"{path}: checkpoint metadata lacks the model description") from None
    model = from_config(spec["family"], config)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise HahrobustError(f"{path}: corrupt checkpoint ({_first_line(exc)})") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise HahrobustError(f"{path}: weights do not match the model description ({_first_line(exc)})") from None
    return model.to(device).eval(), metadata


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise HahrobustError(f"{path}: checkpoint not found")
    return path


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
