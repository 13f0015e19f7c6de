"""Turn a --device string into a torch.device, or explain in one line why not."""

from __future__ import annotations

import torch

from hahrobust import distributed
from hahrobust.errors import HahrobustError


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N`` are checked.

    Under torchrun, ``cuda`` and ``auto`` mean this process's GPU, ``cuda:LOCAL_RANK``.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda" and distributed.launched_by_torchrun():
        spec = f"cuda:{distributed.local_rank()}"
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise HahrobustError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise HahrobustError(f"unsupported device {spec!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise HahrobustError(f"device {spec!r} requested but CUDA is not available on this machine")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise HahrobustError(f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device
