"""Throughput of hahrobust's attacks: images/s and gradient steps/s per attack × norm on one model.

Each attack runs on the same batch of random images whose labels are the model's own predictions, so every
image is attacked (none is skipped as misclassified). PGD runs one restart (its later restarts only revisit
images not yet fooled, which makes their cost data-dependent). AutoAttack runs the ``paper`` version
(APGD-CE + APGD-T: 100 + 9·100 steps per image still robust). Timings on a shared machine are noisy: each
measurement is the median of ``--rounds`` rounds, attacks interleaved in rotated order.

    python benchmarks/attack_throughput.py --model vgg16 --width 1 --batch-size 100 --steps 20 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from _timing import time_interleaved  # benchmarks/_timing.py (this script's folder is on sys.path)

from hahrobust.attacks import ATTACK_NORMS, DEFAULT_EPS, DDNConfig, FMNConfig, PGDConfig, autoattack, ddn, fmn, pgd
from hahrobust.errors import HahrobustError
from hahrobust.models import build, model_names
from hahrobust.provenance import git_commit, versions


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16", help=f"one of {', '.join(model_names())}")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="PGD/FMN/DDN steps")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--attacks", nargs="+", default=["pgd", "fmn", "ddn", "autoattack"])
    parser.add_argument("--norms", nargs="+", default=["linf", "l2", "l1", "l0"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write settings and timings here")
    args = parser.parse_args(argv)
    for name in ("width", "batch_size", "steps", "rounds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    unknown = [a for a in args.attacks if a not in ATTACK_NORMS]
    if unknown:
        parser.error(f"unknown attack(s) {', '.join(unknown)}; choose from {', '.join(ATTACK_NORMS)}")
    bad = [n for n in args.norms if n not in DEFAULT_EPS]
    if bad:
        parser.error(f"unknown norm(s) {', '.join(bad)}; choose from {', '.join(DEFAULT_EPS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(args.seed)
    try:
        model = build(args.model, width=args.width)
    except HahrobustError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model = model.to(device).eval()
    x = torch.rand(args.batch_size, 3, 32, 32, generator=generator).to(device)
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # every image "correct": every image gets attacked
    idx = torch.arange(args.batch_size)
    runs: dict[tuple[str, str], tuple[Callable[[], torch.Tensor], int | None]] = {}
    for attack in args.attacks:
        for norm in args.norms:
            if norm not in ATTACK_NORMS[attack]:
                continue
            eps = DEFAULT_EPS[norm][0]
            if attack == "pgd":
                config = PGDConfig(steps=args.steps, restarts=1)
                runs[(attack, norm)] = (lambda n=norm, e=eps, c=config: pgd(model, x, y, norm=n, eps=e, indices=idx, config=c), args.steps)
            elif attack == "fmn":
                runs[(attack, norm)] = (lambda n=norm: fmn(model, x, y, norm=n, config=FMNConfig(steps=args.steps)), args.steps)
            elif attack == "ddn":
                runs[(attack, norm)] = (lambda: ddn(model, x, y, config=DDNConfig(steps=args.steps)), args.steps)
            else:
                runs[(attack, norm)] = (lambda n=norm, e=eps: autoattack(model, x, y, norm=n, eps=e, version="paper"), None)
    seconds = time_interleaved({key: run for key, (run, _) in runs.items()}, args.rounds, device)
    results = []
    print(f"{args.model} width {args.width}, batch {args.batch_size}, {args.steps} steps, "
          f"{torch.get_num_threads()} threads, {device}")
    print(f"{'attack':<11}{'norm':<6}{'median s':>10}{'images/s':>10}{'grad steps/s':>14}")
    for (attack, norm), times in seconds.items():
        median = statistics.median(times)
        steps = runs[(attack, norm)][1]
        row = {"attack": attack, "norm": norm, "seconds": times, "median_s": median,
               "images_per_s": args.batch_size / median,
               # AutoAttack stops attacking an image once fooled, so its step count is not fixed: not reported.
               "image_steps_per_s": None if steps is None else args.batch_size * steps / median}
        results.append(row)
        per_step = "—" if steps is None else f"{row['image_steps_per_s']:.0f}"
        print(f"{attack:<11}{norm:<6}{median:>10.3f}{row['images_per_s']:>10.1f}{per_step:>14}")
    if args.json is not None:
        record = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                  "threads": torch.get_num_threads(), "versions": versions(), "git_commit": git_commit(),
                  "results": results}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
