"""Interleaved timing shared by the benchmark scripts (imported as a sibling module when a script runs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import TypeVar

import torch
from rich.console import Console
from rich.progress import Progress

K = TypeVar("K", bound=Hashable)


def time_interleaved(runs: dict[K, Callable[[], object]], rounds: int, device: torch.device) -> dict[K, list[float]]:
    """Seconds of every run in each of ``rounds`` rounds. Each round runs all of them, in an order rotated
    every round, so a slow drift of a shared machine's load hits every run alike; CUDA work is
    synchronised before and after each run, so its time is the GPU's, not the launch's. A transient
    progress bar shows which run is going (on stderr, so the printed results stay clean)."""
    seconds: dict[K, list[float]] = {key: [] for key in runs}
    keys = list(runs)
    with Progress(transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task("timing", total=rounds * len(keys))
        for r in range(rounds):
            for key in keys[r % len(keys):] + keys[: r % len(keys)]:
                progress.update(task, description=f"round {r + 1}/{rounds}: {key}")
                seconds[key].append(_time(runs[key], device))
                progress.advance(task)
    return seconds


def _time(run: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
