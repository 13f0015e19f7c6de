"""Resumable training state, saved atomically every epoch as safetensors + JSON (no pickle).

Tensors: the model's state_dict under ``model.``, each optimizer state tensor under
``optim.<param index>.<key>``, and the torch RNG states under ``rng.``. JSON metadata: the epoch
count done, the optimizer's param_groups (minus parameter identities), non-tensor optimizer state,
the per-epoch history and the config the run was started with (a resume with other settings is
refused, since it would not reproduce the run).

:func:`save_progress` is what a training loop calls after each epoch: the state, then the per-epoch CSV log.
Both replace their file in one rename, so when a write fails (a full disk) the state file still holds the
last epoch saved, and the error says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from hahrobust.checkpoint import save_checkpoint
from hahrobust.errors import HahrobustError
from hahrobust.models import HahrobustModel
from hahrobust.provenance import write_atomically

STATE_FORMAT = "hahrobust.train-state/1"


@dataclass
class TrainState:
    epochs_done: int
    history: list[dict[str, Any]]
    settings: dict[str, Any]


def json_roundtrip(value: Any) -> Any:
    """``value`` as it reads back from a state or checkpoint's JSON (tuples become lists), so settings kept
    there compare equal to the same settings built in memory."""
    return json.loads(json.dumps(value))


def save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, values in opt["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda{i}"] = rng
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]]
    meta = {
        "epochs_done": state.epochs_done,
        "history": state.history,
        "settings": state.settings,
        "param_groups": groups,
        "optimizer_scalars": scalars,
    }
    header = {"format": STATE_FORMAT, "state": json.dumps(meta, sort_keys=True)}
    write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=header), "the training state")


def save_log(path: Path, history: list[dict[str, Any]]) -> None:
    """The per-epoch CSV log, one row per finished epoch."""
    write_atomically(path, lambda tmp: pd.DataFrame(history).to_csv(tmp, index=False), "the training log")


def save_progress(
    state_path: Path, log_path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState
) -> None:
    """The end of an epoch: :func:`save_state`, then :func:`save_log`. A failed write raises a one-line
    :class:`HahrobustError` that also says which finished epoch a resumed run would continue from."""
    try:
        save_state(state_path, model, optimizer, state)
        save_log(log_path, state.history)
    except HahrobustError as exc:
        raise HahrobustError(f"{exc}; {kept_state(state_path)}") from None


def save_final(out: Path, model: HahrobustModel, metadata: dict[str, Any], state_path: Path) -> None:
    """The end of a run: the checkpoint, then the training state goes (not before: a failed write keeps it)."""
    try:
        save_checkpoint(out, model, metadata)
    except HahrobustError as exc:
        raise HahrobustError(f"{exc}; {kept_state(state_path)}") from None
    state_path.unlink(missing_ok=True)


def kept_state(path: Path) -> str:
    """What a run that stops now leaves to resume from: the epochs done in the state file at ``path``."""
    try:
        with safe_open(str(path), framework="pt") as f:
            epochs = json.loads((f.metadata() or {})["state"])["epochs_done"]
    except (SafetensorError, OSError, KeyError, TypeError, ValueError):  # absent or unreadable
        return "no finished epoch is saved"
    return f"the state after {epochs} finished epoch(s) is kept in {path}: free space, then resume from it"


def load_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> TrainState:
    """Restore model, optimizer and RNG from ``path`` (written by :func:`save_state`)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise HahrobustError(f"{path}: unreadable training state ({str(exc).splitlines()[0] if str(exc) else exc})") from None
    if header.get("format") != STATE_FORMAT:
        raise HahrobustError(f"{path}: not a hahrobust training state")
    meta = json.loads(header["state"])
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError:
        raise HahrobustError(f"{path}: training state does not match this model") from None
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    for idx, values in meta["optimizer_scalars"].items():
        opt_state.setdefault(int(idx), {}).update(values)
    groups = [dict(g) for g in meta["param_groups"]]
    for group, current in zip(groups, optimizer.state_dict()["param_groups"]):
        group["params"] = current["params"]
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.cpu"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    return TrainState(meta["epochs_done"], meta["history"], meta["settings"])
