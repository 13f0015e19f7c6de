"""Wall time of ``hahrobust report`` in one process against ``--jobs N`` on the same machine, in one run, and
whether the two write the same files (they must: each step is computed as in one process).

The two run one after the other on the same machine (a shared one: read the ratio). Each gives every step one
thread (``OMP_NUM_THREADS=1`` for one process; ``--jobs N`` started with N threads gives its N workers one each),
so the step journal's header, and every number, is the same. Reported:
each run's wall seconds, their ratio, and for each of report.json/.md/.html whether the bytes agree.

    python benchmarks/report_jobs.py checkpoints/hah-vgg16-small.safetensors checkpoints/vgg16-small.safetensors \\
        --data $D --budget quick --jobs 2 --json report-jobs.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("report.json", "report.md", "report.html")


def report(model: str, baseline: str, out: Path, extra: list[str], threads: int) -> float:
    """Wall seconds of one report into ``out`` with ``threads`` threads (from this source tree); it must succeed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hahrobust", "report", model, baseline, "--out", str(out), *extra],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("baseline")
    parser.add_argument("--data", required=True)
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--extra", default="", help="more report options, e.g. '--images 20 --attack-images 4'")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep both reports here (KEEP/one, KEEP/jobs) instead of in a temporary folder")
    args = parser.parse_args()
    extra = ["--data", args.data, "--budget", args.budget, *args.extra.split()]
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep if args.keep is not None else Path(tmp)
        one, many = folder / "one", folder / "jobs"
        seconds_one = report(args.model, args.baseline, one, extra, threads=1)
        seconds_jobs = report(args.model, args.baseline, many, [*extra, "--jobs", str(args.jobs)], threads=args.jobs)
        same = {name: (one / name).read_bytes() == (many / name).read_bytes() for name in FILES}
    from hahrobust.provenance import git_commit, versions

    result = {"settings": vars(args) | {"json": str(args.json) if args.json else None,
                                        "keep": str(args.keep) if args.keep else None},
              "versions": versions(), "git_commit": git_commit(), "cpus": os.cpu_count(),
              "seconds": {"one process": seconds_one, f"--jobs {args.jobs}": seconds_jobs},
              "speedup": seconds_one / seconds_jobs, "same_files": same}
    print(f"one process {seconds_one:.0f} s, --jobs {args.jobs} {seconds_jobs:.0f} s: "
          f"{result['speedup']:.2f}× faster; same files: {all(same.values())} {same}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    if not all(same.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
