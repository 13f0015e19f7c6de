"""hahrobust report --jobs: the steps in worker processes give the report one process gives, byte for byte
(benchmarks/report_jobs.py runs both, through the command line), and a parallel run killed mid-step resumes to it.
A file of its own so that pytest-xdist runs it beside tests/test_report.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hahrobust.errors import HahrobustError
from report_support import TINY, _report, pair  # noqa: F401 — fixtures (pytest finds them here)

pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest.single_thread explains why


def test_jobs_give_the_one_process_report_and_a_killed_parallel_run_resumes_to_it(
    pair, tiny_data: Path, tmp_path: Path
) -> None:
    # The benchmark: one process, then --jobs 2, the same files (timings are never tested, only that it reports).
    extra = (f"--images {TINY['images']} --attack-images {TINY['attack_images']} --steps {TINY['steps']} "
             f"--restarts {TINY['restarts']} --repeats {TINY['repeats']} --corruptions {TINY['corruptions']} "
             "--batch-size 8 --seed 0")
    done = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "benchmarks" / "report_jobs.py"),
                           str(pair[0]), str(pair[1]), "--data", str(tiny_data), "--extra", extra, "--jobs", "2",
                           "--json", str(tmp_path / "jobs.json"), "--keep", str(tmp_path / "bench")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "jobs.json").read_text())
    assert all(result["same_files"].values()) and result["speedup"] > 0
    reference = (tmp_path / "bench" / "one" / "report.json").read_bytes()

    class Killed(Exception):
        pass

    def kill(step: str) -> None:
        raise Killed  # at the first step a worker finishes: the other worker is stopped mid-step

    with pytest.raises(Killed):
        _report(pair, tiny_data, tmp_path / "killed", jobs=2, after_step=kill)
    assert not (tmp_path / "killed" / "report.json").exists()
    resumed = _report(pair, tiny_data, tmp_path / "killed", resume=True, jobs=2)
    steps = len(list((tmp_path / "bench" / "one" / "steps").glob("*.json")))  # one record per step
    assert 0 < len(resumed.seconds) < steps  # only the unfinished steps ran
    assert (tmp_path / "killed" / "report.json").read_bytes() == reference
    again = _report(pair, tiny_data, tmp_path / "killed", resume=True)  # one process reads the workers' steps back
    assert again.seconds == {}
    with pytest.raises(HahrobustError, match="--jobs must be at least 1"):
        _report(pair, tiny_data, tmp_path / "zero", jobs=0)
    with pytest.raises(HahrobustError, match="on cuda run one job"):
        _report(pair, tiny_data, tmp_path / "zero", jobs=2, device="cuda")
    assert not (tmp_path / "zero").exists()
