"""Evaluation throughput: images/s of hahrobust's full attack path (``run_attack``: clean pass, attack,
verification of every example) for PGD and AutoAttack, and the overhead of our AutoAttack wrapper over
calling the reference implementation directly on the same model, images and seed.

Claim checked: the wrapper (explicit seeding, RNG isolation, clean-pass bookkeeping, verification) costs
≤ 5 % over ``AutoAttack(...).run_standard_evaluation`` — the attack itself dominates. Both sides do the same
attack work (same seed, same images, misclassified images skipped by both), so the ratio of their wall
times is the overhead. Rounds interleave the runs in rotated order; reported are medians, and the median
over rounds of the per-round ratio (the machine is shared: ratios from one round are comparable, absolute
times are not).

    python benchmarks/eval_throughput.py --checkpoint checkpoints/hah-vgg16-small.safetensors \\
        --data cifar10-jpeg.tar.gz --images 100 --rounds 3 --device cpu
    python benchmarks/eval_throughput.py --checkpoint hah.safetensors --data ~/data --images 1000 --device cuda
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

from hahrobust.attacks import DEFAULT_EPS, AutoAttackConfig, PGDConfig, run_attack
from hahrobust.attacks.autoattack import AA_NORMS, load_autoattack, reference_adversary
from hahrobust.checkpoint import load_checkpoint
from hahrobust.data import ImageSet, balanced_subset, load_cifar10
from hahrobust.devices import resolve_device
from hahrobust.errors import HahrobustError
from hahrobust.models import build
from hahrobust.provenance import git_commit, sha256_file, versions


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="a hahrobust checkpoint (default: --model untrained)")
    parser.add_argument("--model", default="hah-vgg16", help="with no --checkpoint: an untrained registry model")
    parser.add_argument("--width", type=float, default=0.25, help="with no --checkpoint")
    parser.add_argument("--data", default=None, help="CIFAR-10 (test split); default: random images labelled by the model")
    parser.add_argument("--images", type=int, default=100, help="images per run")
    parser.add_argument("--batch-size", type=int, default=None, help="default: all images at once")
    parser.add_argument("--norms", nargs="+", default=["linf", "l2"], choices=sorted(AA_NORMS))
    parser.add_argument("--aa-version", default="standard", choices=["standard", "paper"])
    parser.add_argument("--pgd-steps", type=int, default=PGDConfig().steps)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write settings, versions and timings here")
    args = parser.parse_args(argv)
    for name in ("images", "rounds", "pgd_steps"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


def images(args: argparse.Namespace, model: torch.nn.Module) -> ImageSet:
    if args.data:
        return balanced_subset(load_cifar10(args.data, "test"), args.images, seed=args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.randint(0, 256, (args.images, 3, 32, 32), generator=generator, dtype=torch.uint8)
    with torch.no_grad():
        labels = model(x.float().div(255).to(next(model.parameters()).device)).argmax(1).cpu()
    return ImageSet(x, labels, source="random images labelled by the model")


def reference_autoattack(model: torch.nn.Module, data: ImageSet, norm: str, eps: float, args: argparse.Namespace,
                         device: torch.device) -> Callable[[], object]:
    """The reference implementation called directly (the same configuration hahrobust builds), on the same
    images, seed and batch size, with none of hahrobust's bookkeeping around it."""
    x, y = data.images.float().div(255).to(device), data.labels.to(device)
    run = reference_adversary(model, norm=norm, eps=eps, seed=args.seed, version=args.aa_version, device=device,
                              batch_size=args.batch_size or args.images)
    return lambda: run(x, y)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        if args.checkpoint is not None:
            model, _ = load_checkpoint(args.checkpoint, device)
        else:
            model = build(args.model, width=args.width).to(device).eval()
        data = images(args, model)
        load_autoattack()
    except HahrobustError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bs = args.batch_size or args.images
    runs: dict[str, Callable[[], object]] = {}
    for norm in args.norms:
        eps = DEFAULT_EPS[norm][0]
        runs[f"pgd {norm}"] = lambda n=norm, e=eps: run_attack(
            model, data, attack="pgd", norm=n, eps=[e], batch_size=bs, seed=args.seed, device=device,
            config=PGDConfig(steps=args.pgd_steps, restarts=1),
        )
        runs[f"autoattack {norm} hahrobust"] = lambda n=norm, e=eps: run_attack(
            model, data, attack="autoattack", norm=n, eps=[e], batch_size=bs, seed=args.seed, device=device,
            config=AutoAttackConfig(args.aa_version),
        )
        runs[f"autoattack {norm} reference"] = reference_autoattack(model, data, norm, eps, args, device)
    seconds = time_interleaved(runs, args.rounds, device)

    name = args.checkpoint.name if args.checkpoint else f"{args.model} width {args.width} (untrained)"
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"{name} on {data.source}: n={args.images}, batch {bs}, {device_name}, AutoAttack {args.aa_version}")
    print(f"{'run':<28}{'median s':>10}{'images/s':>10}")
    results = []
    for key, times in seconds.items():
        median = statistics.median(times)
        results.append({"run": key, "seconds": times, "median_s": median, "images_per_s": args.images / median})
        print(f"{key:<28}{median:>10.2f}{args.images / median:>10.1f}")
    overheads = {}
    for norm in args.norms:
        ours, theirs = seconds[f"autoattack {norm} hahrobust"], seconds[f"autoattack {norm} reference"]
        overheads[norm] = statistics.median(a / b for a, b in zip(ours, theirs))
        print(f"AutoAttack {norm}: hahrobust / reference = {overheads[norm]:.3f} (median of per-round ratios)")
    if args.json is not None:
        record = {
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "device": device_name, "versions": versions(), "git_commit": git_commit(),
            "checkpoint_sha256": sha256_file(args.checkpoint) if args.checkpoint else None,
            "results": results, "autoattack_overhead": overheads,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
