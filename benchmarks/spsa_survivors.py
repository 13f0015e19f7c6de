"""Does the zeroth-order member earn a place in the audit's default ensemble? SPSA on the images the default
audit left robust.

A finished ``hahrobust report`` keeps the audit's per-image worst case of each model (``steps/audit-<side>.npz``:
``<norm>.worst``, robust after every default member). This script rebuilds the report's attack images from its
header (same data, seed and number), runs SPSA (:mod:`hahrobust.attacks.spsa`, its defaults: 100 steps × 128
directions) on the survivors of each norm through the toolkit's runner (every example verified on the exact model),
and prints what it broke and what it cost in forward passes. A member that breaks nothing here and costs more than
the rest of the audit's survivors-only members stays opt-in (``--include spsa``).

    python benchmarks/spsa_survivors.py REPORT_DIR MODEL.safetensors --side a --data ../shared/data/cifar10-jpeg.tar.gz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hahrobust.attacks.run import AttackRequest, run_attack_images  # noqa: E402
from hahrobust.attacks.spsa import SPSAConfig  # noqa: E402
from hahrobust.checkpoint import load_checkpoint  # noqa: E402
from hahrobust.data import ImageSet, balanced_subset, load_cifar10  # noqa: E402
from hahrobust.provenance import git_commit, sha256_file, versions  # noqa: E402
from hahrobust.report.steps import TABLE_EPS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("checkpoint", type=Path, help="the model of --side (its hash is checked against the report)")
    parser.add_argument("--side", choices=("a", "b"), default="a")
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=SPSAConfig.steps)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    header = json.loads((args.report / "steps" / "header.json").read_text())
    if header["models"][args.side]["sha256"] != sha256_file(args.checkpoint):
        sys.exit(f"{args.checkpoint} is not the report's model {args.side}")
    seed, n = header["seed"], header["budget"]["attack_images"]
    test = load_cifar10(args.data, "test")
    attack_set = test if n is None else balanced_subset(test, n, seed)
    audit = np.load(args.report / "steps" / f"audit-{args.side}.npz")
    model, _ = load_checkpoint(args.checkpoint)
    config = SPSAConfig(steps=args.steps)
    rows = []
    for norm, eps in TABLE_EPS.items():
        survivors = np.flatnonzero(audit[f"{norm}.worst"])
        if len(survivors) == 0:
            rows.append({"norm": norm, "eps": eps, "survivors": 0, "broken_by_spsa": 0, "forward_passes": 0,
                         "backward_passes": 0, "seconds": 0.0})
            continue
        subset = ImageSet(attack_set.images[survivors], attack_set.labels[survivors], attack_set.source)
        outcome = run_attack_images(model, subset, AttackRequest("spsa", norm, [eps], config, seed=seed,
                                                                 batch_size=len(survivors)))
        broken = int((~outcome.robust[0] & outcome.correct).sum())
        rows.append({"norm": norm, "eps": eps, "survivors": len(survivors), "broken_by_spsa": broken,
                     "forward_passes": int(outcome.passes[0]), "backward_passes": int(outcome.passes[1]),
                     "seconds": float(outcome.table["seconds"].sum())})
        print(f"{norm} ε={eps:.4g}: SPSA broke {broken} of {len(survivors)} survivors, "
              f"{outcome.passes[0]:,} forward passes, {rows[-1]['seconds']:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({"report": str(args.report), "side": args.side, "config": vars(config),
                                         "rows": rows, "threads": torch.get_num_threads(), "versions": versions(),
                                         "git_commit": git_commit()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
