"""The audit's cost in passes against AutoAttack's (standard version), on the same images.

Passes (forward and backward image-passes through the model and the transfer source, counted by
:func:`hahrobust.attacks.passes.count_passes`) do not depend on the machine or its load, so two attacks compare
where seconds on a shared CPU would not. For each reference model and norm the script runs AutoAttack standard
(Croce & Hein's APGD-CE, APGD-T, FAB-T, Square, through the reference implementation) and the default audit on the
same class-balanced images, and reports each one's passes, their ratio, both robust accuracies and the audit's
convergence. ``--threads`` sets torch's thread count for the audits, so the same command with ``--threads 1`` and
``--threads 2`` shows whether the convergence verdict survives a change of float paths (AutoAttack runs once, with
one thread: its passes are the yardstick, not what is being tested).

Every finished measurement is written to the JSON at once, and a rerun with the same JSON skips it: a killed run
resumes. Compare with Issue 33's "Done when": audit ≤ 1.0× AutoAttack's passes, converged, worst case no higher
than the second edition's (HaH 1.5 / 2.0 %, baseline 8.5 / 10.5 % at 200 images).

    python benchmarks/audit_passes.py --data ../shared/data/cifar10-jpeg.tar.gz --images 200 --threads 1 2 \\
        --json docs/results/audit/passes-200-images.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hahrobust.attacks.autoattack import AutoAttackConfig  # noqa: E402
from hahrobust.attacks.run import AttackRequest, run_attack_images  # noqa: E402
from hahrobust.checkpoint import load_checkpoint  # noqa: E402
from hahrobust.data import balanced_subset, load_cifar10  # noqa: E402
from hahrobust.provenance import git_commit, versions, write_atomically  # noqa: E402
from hahrobust.studies.audit import AuditConfig, audit_model, convergence_text  # noqa: E402

REFERENCE = {"HaH": ROOT / "checkpoints" / "hah-vgg16-small.safetensors",
             "baseline": ROOT / "checkpoints" / "vgg16-small.safetensors"}
EPS = {"linf": 2 / 255, "l2": 0.25}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--norm", default="linf,l2")
    parser.add_argument("--models", default="HaH,baseline")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads for the audits")
    parser.add_argument("--parts", default="autoattack,audit", help="which measurements to run")
    parser.add_argument("--json", type=Path, required=True, help="results; measurements already in it are skipped")
    parser.add_argument("--journal", type=Path, help="keep each audit member's journal here: a killed or changed "
                        "audit reuses every member whose settings did not change (passes are counted either way)")
    args = parser.parse_args()
    data = balanced_subset(load_cifar10(args.data, "test"), args.images, seed=0)
    models = {label: load_checkpoint(path)[0] for label, path in REFERENCE.items()}
    done = json.loads(args.json.read_text()) if args.json.exists() else {}
    measured: dict[str, dict] = done.get("measured", {})
    parts = args.parts.split(",")
    for label in args.models.split(","):
        source = models["baseline" if label == "HaH" else "HaH"]
        for norm in args.norm.split(","):
            jobs = [("autoattack", 1)] if "autoattack" in parts else []
            jobs += [("audit", t) for t in args.threads] if "audit" in parts else []
            for what, threads in jobs:
                key = f"{label} {norm} {what} threads={threads}"
                if key in measured:
                    continue
                torch.set_num_threads(threads)
                start = time.perf_counter()
                if what == "autoattack":
                    outcome = run_attack_images(models[label], data, AttackRequest(
                        "autoattack", norm, [EPS[norm]], AutoAttackConfig("standard")))
                    row = {"passes": sum(outcome.passes), "robust": float(outcome.table["robust_acc"].iloc[0])}
                else:
                    journal = args.journal / f"threads-{threads}" if args.journal else None
                    if journal is not None:
                        journal.mkdir(parents=True, exist_ok=True)
                    audit = audit_model(models[label], data, norm=norm, eps=[EPS[norm]], transfer_source=source,
                                        journal_dir=journal, journal_stem=label, resume=journal is not None)
                    row = {"passes": sum(c.total for c in audit.passes.values()),
                           "robust": float(audit.worst[0].mean()), "convergence": convergence_text(audit),
                           "rounds": [list(r) for r in audit.rounds],
                           "breaks": {str(r.attack): int(r.first_breaks) for r in audit.attacks.itertuples()},
                           "members": {k: v.total for k, v in audit.passes.items()}}
                measured[key] = row | {"model": label, "norm": norm, "what": what, "threads": threads,
                                       "seconds": time.perf_counter() - start}
                Console().print(f"{key}: {row['passes']:,} passes, robust {row['robust']:.1%}"
                                + (f", {row['convergence']}" if "convergence" in row else ""))
                _write(args, measured)
    _write(args, measured)
    _table(args, measured)


def _rows(measured: dict[str, dict]) -> list[dict]:
    """One row per model, norm and audit thread count: the audit against AutoAttack on the same images."""
    rows = []
    for m in measured.values():
        aa = measured.get(f"{m['model']} {m['norm']} autoattack threads=1")
        if m["what"] != "audit" or aa is None:
            continue
        rows.append({"model": m["model"], "norm": m["norm"], "threads": m["threads"], "autoattack_passes": aa["passes"],
                     "audit_passes": m["passes"], "ratio": m["passes"] / aa["passes"], "autoattack_robust": aa["robust"],
                     "worst_case": m["robust"], "convergence": m["convergence"]})
    return rows


def _write(args: argparse.Namespace, measured: dict[str, dict]) -> None:
    payload = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "audit_config": str(AuditConfig()), "versions": versions(), "git_commit": git_commit(),
               "measured": measured, "rows": _rows(measured)}
    # never a half-written results file
    write_atomically(args.json, lambda path: path.write_text(json.dumps(payload, indent=2) + "\n"), "the results")


def _table(args: argparse.Namespace, measured: dict[str, dict]) -> None:
    table = Table(title=f"Audit passes against AutoAttack standard's, {args.images} images")
    for column in ("model", "norm", "threads", "AutoAttack passes", "audit passes", "ratio", "AutoAttack",
                   "worst case", "convergence"):
        table.add_column(column, justify="left" if column in ("model", "norm", "convergence") else "right")
    for r in _rows(measured):
        table.add_row(r["model"], r["norm"], str(r["threads"]), f"{r['autoattack_passes']:,}", f"{r['audit_passes']:,}",
                      f"{r['ratio']:.2f}", f"{r['autoattack_robust']:.1%}", f"{r['worst_case']:.1%}", r["convergence"])
    Console().print(table)


if __name__ == "__main__":
    main()
