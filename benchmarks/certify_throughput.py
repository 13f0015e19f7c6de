"""Certification throughput: noisy samples/s of randomized smoothing's sampling loop
(:func:`hahrobust.metrics.smoothing.sample_counts`: seeded CPU noise in fixed blocks, the image plus noise,
the forward pass, class counts) against the plain forward throughput of the same model at the same batch size,
its upper bound.

Claim checked: sampling costs ≤ 10 % over the forward passes alone (ratio ≥ 0.9) — the model dominates.
Both runs push the same number of images through the model in batches of ``--batch-size``: the forward run on
one fixed batch of noisy images made beforehand, the certify run on one image's ``--samples`` noisy copies
drawn as `hahrobust certify` draws them. Rounds interleave the two in rotated order; reported are the median
samples/s of each and the median over rounds of the per-round ratio (a shared machine's absolute speed drifts).

    python benchmarks/certify_throughput.py --checkpoint checkpoints/hah-vgg16-small.safetensors \\
        --batch-size 500 --samples 5000 --rounds 5 --threads 1 --json certify.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from _timing import time_interleaved  # benchmarks/_timing.py (this script's folder is on sys.path)

from hahrobust.checkpoint import load_checkpoint
from hahrobust.devices import resolve_device
from hahrobust.errors import HahrobustError
from hahrobust.metrics.smoothing import noise_generator, sample_counts
from hahrobust.models import build
from hahrobust.provenance import git_commit, sha256_file, versions


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="a hahrobust checkpoint (default: --model untrained)")
    parser.add_argument("--model", default="hah-vgg16", help="with no --checkpoint: an untrained registry model")
    parser.add_argument("--width", type=float, default=0.25, help="with no --checkpoint")
    parser.add_argument("--batch-size", type=int, default=500, help="noisy copies per forward pass")
    parser.add_argument("--samples", type=int, default=5000, help="noisy copies per timed run (a multiple of the batch)")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write settings, versions and timings here")
    args = parser.parse_args(argv)
    for name in ("batch_size", "samples", "rounds", "threads"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.samples % args.batch_size:
        parser.error("--samples must be a multiple of --batch-size (both runs then make the same forward passes)")
    if args.sigma <= 0:
        parser.error("--sigma must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        if args.checkpoint is not None:
            model, _ = load_checkpoint(args.checkpoint, device)
        else:
            model = build(args.model, width=args.width).to(device)
    except HahrobustError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model.eval()
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.rand((3, 32, 32), generator=generator).to(device)
    batch = (x + args.sigma * torch.randn((args.batch_size, 3, 32, 32), generator=generator)).to(device)
    passes = args.samples // args.batch_size

    @torch.no_grad()
    def forward() -> None:
        for _ in range(passes):
            model(batch).argmax(dim=1)

    def certify() -> None:
        sample_counts(model, x, args.sigma, args.samples, args.batch_size, noise_generator(args.seed, args.sigma, 0, "n"))

    forward()  # warm-up: allocator and kernels
    seconds = time_interleaved({"forward": forward, "certify": certify}, args.rounds, device)
    rates = {k: args.samples / statistics.median(v) for k, v in seconds.items()}
    ratio = statistics.median(f / c for f, c in zip(seconds["forward"], seconds["certify"]))
    name = args.checkpoint.name if args.checkpoint else f"{args.model} width {args.width} (untrained)"
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"{name}: batch {args.batch_size}, {args.samples} samples per run, {args.rounds} rounds, {device_name}")
    for key, rate in rates.items():
        print(f"{key:<10}{rate:>10.1f} samples/s  (median {statistics.median(seconds[key]):.3f} s)")
    print(f"certify / forward throughput = {ratio:.3f} (median of per-round ratios; goal ≥ 0.9)")
    if args.json is not None:
        record = {
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "device": device_name, "versions": versions(), "git_commit": git_commit(),
            "checkpoint_sha256": sha256_file(args.checkpoint) if args.checkpoint else None,
            "seconds": seconds, "samples_per_s": rates, "ratio": ratio,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
