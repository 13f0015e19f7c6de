"""The worker pool that ``report --jobs`` and ``leaderboard --jobs`` share: a step whose parts are journaled is stored
before any waiting job, so a killed run loses only what was running."""

from __future__ import annotations

import os
from functools import partial

import pytest

from hahrobust.errors import HahrobustError
from hahrobust.report.workers import Task, run_in_workers

NOTHING = partial(int)  # a picklable job that does nothing


def _order(tasks: list[Task], jobs: int) -> list[str]:
    finished: list[str] = []
    seconds = run_in_workers(tasks, jobs, 1, lambda names: None, finished.append)
    assert set(seconds) == {task.name for task in tasks}
    return finished


def test_a_step_goes_right_after_its_parts() -> None:
    tasks = [Task("audit", NOTHING, (("linf", NOTHING), ("l2", NOTHING))), Task("clean", NOTHING),
             Task("noise", NOTHING)]
    assert _order(tasks, jobs=1) == ["audit", "clean", "noise"]  # not behind the steps submitted before it
    assert sorted(_order(tasks, jobs=2)) == ["audit", "clean", "noise"]


def _die() -> None:
    os._exit(9)  # as a worker killed by the OOM killer


def test_a_dead_worker_is_one_line() -> None:
    with pytest.raises(HahrobustError, match="a worker died while running a step broken"):
        run_in_workers([Task("broken", _die)], 1, 1, lambda names: None, lambda name: None)
