"""Cost of the adaptive audit: both reference models, both norms, as a user on 2 cores runs it.

Runs ``hahrobust audit`` (each model with the next as its transfer source) in two lanes side by side, one
process at a time per lane with ``--threads`` torch threads (one per core on a 2-core machine): by default one
lane per norm, each auditing the models in turn (``--split norm``: the two norms cost about the same, so the
cores finish together), or one lane per model (``--split model``). It reports each audit's wall time, every
member's attack seconds per norm (from the audit's own ``audit.csv``), the rest (diagnostics, loading, writing)
and the worst case beside each member's robust accuracy — so a speed-up that changed a result shows here too.
The figure the audit's issue asks about is ``wall_s``: the time until every audit has finished.

    python benchmarks/audit_cost.py --data ../shared/data/cifar10-jpeg.tar.gz --json audit-cost.json

Options: ``--models LABEL=CKPT`` (two or more; each is audited with the next one, cyclically, as its transfer source),
``--norm``, ``--split``, ``--images``, ``--threads``, ``--out`` (where the audits write; a fresh temporary folder by
default, so no journal is resumed), ``--audit-args`` (more options for every audit, e.g. ``"--skip AutoAttack"``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = (
    f"HaH={ROOT / 'checkpoints' / 'hah-vgg16-small.safetensors'}",
    f"baseline={ROOT / 'checkpoints' / 'vgg16-small.safetensors'}",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--models", nargs="+", default=list(REFERENCE), metavar="LABEL=CKPT")
    parser.add_argument("--norm", default="linf,l2")
    parser.add_argument("--split", choices=("model", "norm"), default="norm",
                        help="one process per model (all norms), or per norm (the models in turn)")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out", type=Path, help="where the audits write (default: a fresh temporary folder)")
    parser.add_argument("--audit-args", default="", help="more options for every audit, shell-quoted")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    models = [m.split("=", 1) for m in args.models]
    norms = args.norm.split(",")
    if len(models) < 2 or any(len(m) != 2 for m in models):
        parser.error("--models takes two or more LABEL=CKPT")
    if args.threads < 1 or args.images < 1:
        parser.error("--threads and --images must be ≥ 1")

    with tempfile.TemporaryDirectory(prefix="audit-cost-") as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)

        def audit(i: int, norm: str) -> tuple[str, list[str], Path]:
            label, ckpt = models[i]
            where = out / f"{label}-{norm.replace(',', '-')}"
            source = models[(i + 1) % len(models)][1]
            return label, [sys.executable, "-m", "hahrobust", "audit", ckpt, "-l", label, "--transfer-from", source,
                           "--norm", norm, "--images", str(args.images), "--data", args.data, "--out", str(where),
                           *shlex.split(args.audit_args)], where

        if args.split == "model":
            lanes = {label: [audit(i, args.norm)] for i, (label, _) in enumerate(models)}
        else:
            lanes = {norm: [audit(i, norm) for i in range(len(models))] for norm in norms}
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        load_before = os.getloadavg()
        start = time.perf_counter()
        total = sum(len(jobs) for jobs in lanes.values())
        with Progress(console=Console(stderr=True), transient=True) as progress, ThreadPoolExecutor(len(lanes)) as pool:
            task = progress.add_task(f"auditing ({total} audits in {len(lanes)} lanes)", total=total)
            # one process at a time per lane, the lanes side by side
            timed = dict(zip(lanes, pool.map(lambda jobs: _run_lane(jobs, env, lambda: progress.advance(task)),
                                             lanes.values())))
        wall = time.perf_counter() - start
        load_after = os.getloadavg()
        results = []
        for lane, jobs in lanes.items():
            for (label, _, where), seconds in zip(jobs, timed[lane]):
                rows = pd.read_csv(where / "audit.csv")
                attack_s = float(rows.loc[rows["attack"] == "worst case", "seconds"].sum())
                results.append({
                    "lane": lane, "model": label, "wall_s": seconds, "attack_s": attack_s, "other_s": seconds - attack_s,
                    "members": rows[["norm", "attack", "robust_acc", "first_breaks", "seconds"]].to_dict("records"),
                })
    _print(results, wall)
    if args.json:
        record: dict[str, Any] = {
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "versions": {"python": platform.python_version(), "torch": torch.__version__},
            "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
            "cpu_count": os.cpu_count(), "load_before": load_before, "load_after": load_after,
            "wall_s": wall, "lane_s": {lane: sum(seconds) for lane, seconds in timed.items()}, "results": results,
        }
        args.json.write_text(json.dumps(record, indent=2))


def _run_lane(jobs: list[tuple[str, list[str], Path]], env: dict[str, str], done: Callable[[], None]) -> list[float]:
    """Run one lane's audits in turn (``done()`` after each); the wall seconds of each. A failed audit stops the
    benchmark."""
    seconds = []
    for _, command, where in jobs:
        where.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        with open(where / "audit.log", "w") as log:
            code = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        if code != 0:  # its one-line error, not the log's path: the default --out is deleted on the way out
            last = (where / "audit.log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            sys.exit(f"audit failed (exit {code}): {last[0]} — {shlex.join(command)}")
        seconds.append(time.perf_counter() - began)
        done()
    return seconds


def _print(results: list[dict[str, Any]], wall: float) -> None:
    table = Table(title=f"audit cost: both finished in {wall / 60:.1f} min")
    for column in ("model", "norm", "member", "robust acc.", "first breaks", "seconds"):
        table.add_column(column, justify="left" if column in ("model", "norm", "member") else "right")
    for result in results:
        for m in result["members"]:
            acc = "—" if pd.isna(m["robust_acc"]) else f"{m['robust_acc']:.1%}"
            table.add_row(result["model"], m["norm"], m["attack"], acc, str(m["first_breaks"]), f"{m['seconds']:.0f}")
        table.add_row(result["model"], "", "diagnostics, loading, writing", "", "", f"{result['other_s']:.0f}")
        table.add_row(result["model"], "", f"[b]wall[/b] (lane {result['lane']})", "", "", f"[b]{result['wall_s']:.0f}[/b]",
                      end_section=True)
    Console().print(table)


if __name__ == "__main__":
    main()
