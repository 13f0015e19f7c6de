"""Journaled steps side by side in worker processes (``--jobs``): the pool that ``report`` and ``leaderboard`` share.

A :class:`Task` is one stored step: optional *parts* that run first, side by side (an audit's norms, each into its own
journals, so no two workers write one file), then the step itself, which reads the parts' journals back and stores
the step. Every callable is a picklable module-level function (or a ``functools.partial`` of one) that computes
exactly what it would in one process and returns its seconds; the pool only decides when each runs.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import torch
from rich.progress import Progress

from hahrobust.errors import HahrobustError

Job = Callable[[], object]


@dataclass(frozen=True)
class Task:
    name: str  # the step's name, shown while it runs and passed to ``finished``
    step: Job  # computes and stores the step (after its parts)
    parts: tuple[tuple[str, Job], ...] = ()  # (label, job) run first, side by side


def step_progress(progress: Progress | None, what: str, total: int, done: int = 0,
                  after_step: Callable[[str], None] | None = None,
                  ) -> tuple[Callable[[list[str]], None], Callable[[str], None]]:
    """(running, finished) for a run of ``total`` steps, ``done`` of them found stored: ``running(names)`` shows what
    runs on one overall bar named ``what``; ``finished(name)`` advances it and calls ``after_step(name)`` (tests kill
    a run there)."""
    task = progress.add_task(what, total=total, completed=done) if progress is not None else None

    def running(names: list[str]) -> None:
        if progress is not None and task is not None:
            progress.update(task, description=f"{what}: {', '.join(names)}")

    def finished(name: str) -> None:
        if progress is not None and task is not None:
            progress.advance(task)
        if after_step is not None:
            after_step(name)

    return running, finished


def timed(job: Job, threads: int) -> float:
    """Run ``job`` with ``threads`` torch threads in this (worker) process; its seconds."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    job()
    return time.perf_counter() - start


def run_in_workers(tasks: Sequence[Task], jobs: int, threads: int, running: Callable[[list[str]], None],
                   finished: Callable[[str], None], what: str = "a step") -> dict[str, float]:
    """Run ``tasks`` in ``jobs`` spawned worker processes, in the order given (put the longest first); the parent only
    waits, shows what runs and calls ``finished(name)`` as each task's step is stored. At most ``jobs`` jobs are handed
    out at a time, and a step whose parts are all journaled goes before every waiting job, so each finished step is
    stored at once (a killed run loses no more than the jobs that were running). A worker that dies (killed, out of
    memory) is one line; finished steps, and finished batches of journaled work, stay stored. Returns the seconds each
    task took (its parts' and its step's)."""
    seconds: dict[str, float] = {}
    waiting: deque[tuple[Task, str | None, Job]] = deque()  # (task, the part's label or None for the step, job)
    for task in tasks:
        waiting.extend((task, label, job) for label, job in task.parts)
        if not task.parts:
            waiting.append((task, None, task.step))
    parts_left = {task.name: len(task.parts) for task in tasks}
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools in an unknown state
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context)
    pending: dict[Future[float], tuple[Task, str | None]] = {}
    clean = False
    try:
        while waiting or pending:
            while waiting and len(pending) < jobs:
                task, label, job = waiting.popleft()
                pending[pool.submit(timed, job, threads)] = (task, label)
            running([" ".join(filter(None, (task.name, label))) for future, (task, label) in pending.items()
                     if future.running()] or ["starting workers"])
            done, _ = wait(pending, timeout=5, return_when=FIRST_COMPLETED)
            for future in done:
                task, label = pending.pop(future)
                try:
                    seconds[task.name] = seconds.get(task.name, 0.0) + future.result()
                except BrokenProcessPool:
                    raise HahrobustError(f"a worker died while running {what} {task.name} (killed, or out of memory); "
                                         "finished steps are kept: rerun with --resume") from None
                if label is None:
                    finished(task.name)
                    continue
                parts_left[task.name] -= 1
                if parts_left[task.name] == 0:  # every part journaled: the step reads them back and is stored next
                    waiting.appendleft((task, None, task.step))
        clean = True
    finally:
        if not clean:  # Ctrl-C or a failed step: stop the other steps now (their finished batches are journaled)
            for process in set(multiprocessing.active_children()) - before:
                process.terminate()
        pool.shutdown(wait=clean, cancel_futures=True)
    return seconds
