"""Cost of the gradient-free attacks (Square, HopSkipJump) on a checkpoint: images/s and what they found.

Attacks the first ``--images`` correctly classified images of a class-balanced test subset (as ``run_attack`` attacks
only correctly classified images) once per (attack, norm), at the norm's default ε, and reports wall time,
images/s, how many were fooled (verified), the machine's load average before and after, and for
HopSkipJump's minimum-distance mode the median verified distance.

    python benchmarks/blackbox_cost.py --checkpoint checkpoints/hah-vgg16-small.safetensors \\
        --data ../shared/data/cifar10-jpeg.tar.gz --images 20 --threads 1 --json blackbox.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from hahrobust.attacks import DEFAULT_EPS, verify
from hahrobust.attacks.decision import DecisionConfig, decision, hop_skip_jump
from hahrobust.attacks.square import SquareConfig, square
from hahrobust.checkpoint import load_checkpoint
from hahrobust.data import balanced_subset, load_cifar10

RUNS = ("square", "square-batched", "decision", "hop-skip-jump")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=20, help="correctly classified images attacked")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--norms", nargs="+", default=["linf", "l2"])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint(args.checkpoint)
    model.eval()
    test = balanced_subset(load_cifar10(args.data, "test"), 10 * args.images, seed=0)
    x, y = test.images.float() / 255, test.labels
    with torch.no_grad():
        correct = model(x).argmax(dim=1) == y
    x, y = x[correct][: args.images], y[correct][: args.images]
    idx = torch.arange(len(x))
    results: list[dict[str, Any]] = []
    for norm in args.norms:
        eps = DEFAULT_EPS[norm][0]
        for run in args.runs:
            load_before = os.getloadavg()[0]
            start = time.perf_counter()
            if run == "square":
                x_adv = square(model, x, y, norm=norm, eps=eps, indices=idx)
            elif run == "square-batched":
                x_adv = square(model, x, y, norm=norm, eps=eps, indices=idx, config=SquareConfig(per_image=False))
            elif run == "decision":
                x_adv = decision(model, x, y, norm=norm, eps=eps, indices=idx)
            else:
                x_adv = hop_skip_jump(model, x, y, norm=norm, indices=idx)
            seconds = time.perf_counter() - start
            checked = verify(model, x, x_adv, y, norm=norm, eps=None if run == "hop-skip-jump" else eps)
            found = checked.distance[checked.adversarial]
            row = {
                "run": run, "norm": norm, "eps": None if run == "hop-skip-jump" else eps, "n": len(x),
                "seconds": round(seconds, 2), "images_per_s": round(len(x) / seconds, 4),
                "fooled": int(checked.adversarial.sum()),
                # unchanged: no example tried (Square: not fooled; HopSkipJump: no noise start was adversarial)
                "unchanged": int((x_adv == x).flatten(1).all(dim=1).sum()),
                "median_distance": float(found.median()) if run == "hop-skip-jump" and len(found) else None,
                "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        record = {
            "checkpoint": args.checkpoint, "n": len(x), "threads": args.threads,
            "square": asdict(SquareConfig()), "decision": asdict(DecisionConfig()), "results": results,
            "torch": torch.__version__,
        }
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
