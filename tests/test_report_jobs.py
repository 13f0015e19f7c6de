"""hahrobust report --jobs: steps in worker processes give the identical report, a killed parallel run resumes to
it, and the jobs benchmark runs both ways (a file of its own: pytest-xdist runs it beside tests/test_report.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hahrobust.errors import HahrobustError
from report_support import _report, pair, whole  # noqa: F401 — fixtures (pytest finds them here)

pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest.single_thread explains why


def test_steps_in_two_worker_processes_give_the_identical_report(pair, whole, tiny_data: Path, tmp_path: Path) -> None:
    """--jobs 2: every step in a spawned worker (audits first), one thread each as here: the same files, byte for
    byte; a resume in one process reads the workers' steps back (same header: the steps' threads)."""
    parallel = _report(pair, tiny_data, tmp_path / "jobs", jobs=2)
    assert set(parallel.seconds) == set(whole[0].seconds)  # every step ran in a worker
    for name in ("report.json", "report.md", "report.html"):
        assert (tmp_path / "jobs" / name).read_bytes() == (whole[1] / name).read_bytes(), name
    again = _report(pair, tiny_data, tmp_path / "jobs", resume=True)
    assert again.seconds == {}

    class Killed(Exception):
        pass

    def kill(step: str) -> None:
        raise Killed  # at the first step a worker finishes: the other worker is stopped mid-step

    with pytest.raises(Killed):
        _report(pair, tiny_data, tmp_path / "killed", jobs=2, after_step=kill)
    assert not (tmp_path / "killed" / "report.json").exists()
    resumed = _report(pair, tiny_data, tmp_path / "killed", resume=True, jobs=2)
    assert 0 < len(resumed.seconds) < len(whole[0].seconds)
    assert (tmp_path / "killed" / "report.json").read_bytes() == (whole[1] / "report.json").read_bytes()
    with pytest.raises(HahrobustError, match="--jobs must be at least 1"):
        _report(pair, tiny_data, tmp_path / "zero", jobs=0)
    with pytest.raises(HahrobustError, match="on cuda run one job"):
        _report(pair, tiny_data, tmp_path / "zero", jobs=2, device="cuda")
    assert not (tmp_path / "zero").exists()


def test_the_jobs_benchmark_runs_both_ways_and_finds_the_same_files(pair, tiny_data: Path, tmp_path: Path) -> None:
    """benchmarks/report_jobs.py through the command line (timings are never tested, only that it reports)."""
    extra = "--images 20 --attack-images 4 --steps 3 --restarts 1 --repeats 1"
    done = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "benchmarks" / "report_jobs.py"),
                           str(pair[0]), str(pair[1]), "--data", str(tiny_data), "--extra", extra, "--jobs", "2",
                           "--json", str(tmp_path / "jobs.json")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "jobs.json").read_text())
    assert all(result["same_files"].values()) and result["speedup"] > 0
