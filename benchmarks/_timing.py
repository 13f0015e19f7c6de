"""Interleaved timing shared by the benchmark scripts (imported as a sibling module when a script runs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import TypeVar

import torch

K = TypeVar("K", bound=Hashable)


def time_interleaved(runs: dict[K, Callable[[], object]], rounds: int, device: torch.device) -> dict[K, list[float]]:
    """Seconds of every run in each of ``rounds`` rounds. Each round runs all of them, in an order rotated
    every round, so a slow drift of a shared machine's load hits every run alike; CUDA work is
    synchronised before and after each run, so its time is the GPU's, not the launch's."""
    seconds: dict[K, list[float]] = {key: [] for key in runs}
    keys = list(runs)
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[: r % len(keys)]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            runs[key]()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[key].append(time.perf_counter() - start)
    return seconds
