"""Start-up time of the ``hahrobust`` command as a ratio to ``python -c pass`` on the same machine, measured
interleaved in one run: each round starts every command once, in an order rotated every round, so a shared
machine's load drift hits all alike. Reported: the median wall time of each command and the median over rounds
of its time divided by ``python -c pass``'s in the same round. Also whether ``hahrobust check`` imported torch.

    python benchmarks/startup.py --rounds 7 --json startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name → arguments after ``python``: the baseline, the group's help, and the lightest command's help.
COMMANDS: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "hahrobust --help": ["-m", "hahrobust", "--help"],
    "hahrobust check --help": ["-m", "hahrobust", "check", "--help"],
}


def run(args: list[str]) -> float:
    """Wall seconds of ``python args`` (from this source tree), which must succeed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def check_imports_torch() -> bool:
    """Whether ``hahrobust check`` on two results files imports torch (it never needs it)."""
    with tempfile.TemporaryDirectory() as folder:
        for name in ("a", "b"):
            (Path(folder) / f"{name}.csv").write_text("model,accuracy\nx,0.5\n")
        probe = (
            "import sys\nfrom hahrobust.cli import app\n"
            f"try:\n    app(['check', '{folder}/a.csv', '--expected', '{folder}/b.csv'])\n"
            "except SystemExit as exit:\n    code = exit.code\n"
            "print(code, 'torch' in sys.modules)\n"
        )
        out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                             capture_output=True, text=True, check=True).stdout.split()
    if out[-2] != "0":
        raise SystemExit(f"error: hahrobust check exited {out[-2]} on identical files")
    return out[-1] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds; each starts every command once")
    parser.add_argument("--json", type=Path, help="write the settings and every time here")
    options = parser.parse_args()
    if options.rounds < 1:
        parser.exit(2, f"error: --rounds must be at least 1, got {options.rounds}\n")
    names = list(COMMANDS)
    run(COMMANDS[names[1]])  # warm the file cache once, untimed
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(options.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            seconds[name].append(run(COMMANDS[name]))
    base = seconds[names[0]]
    report = {
        "rounds": options.rounds, "python": sys.version.split()[0], "cpus": os.cpu_count(),
        "seconds": seconds,
        "median_s": {name: statistics.median(times) for name, times in seconds.items()},
        "ratio_to_python": {name: statistics.median(t / b for t, b in zip(times, base)) for name, times in seconds.items()},
        "check_imports_torch": check_imports_torch(),
    }
    for name in names:
        print(f"{name:24} median {report['median_s'][name]:.3f} s   ×{report['ratio_to_python'][name]:.2f} of python -c pass")
    print(f"hahrobust check imports torch: {report['check_imports_torch']}")
    if options.json:
        options.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
