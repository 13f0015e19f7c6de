"""The sparse-coding frontend's attack step: an untrained ``sparse-coding-vgg16`` (500 atoms, top-15) through its
BPDA surrogate, forward and backward to the input, with the frontend as matrix products over unfolded patches and an
atoms-last code (``matmul``: the model as shipped) against the same weights as a 500-channel convolution, a
channels-first code and ``nn.ConvTranspose2d`` (``conv``: the first implementation).

Claim checked: ``matmul`` is faster (ratio conv / matmul > 1) and gives the same logits and input gradients to float
rounding. Rounds interleave the two in rotated order; reported are the median seconds of each and the median over
rounds of the per-round ratio (a shared machine's absolute speed drifts).

    python benchmarks/sparse_code.py --batch-size 100 --rounds 7 --threads 1 --json sparse_code.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from _timing import time_interleaved  # benchmarks/_timing.py (this script's folder is on sys.path)

from hahrobust.models import build
from hahrobust.models.sparse_coding import SparseCodingNet
from hahrobust.nn.surrogate import Surrogate, surrogate_gradients
from hahrobust.provenance import git_commit, versions


def conv_forward(model: SparseCodingNet, x: torch.Tensor) -> torch.Tensor:
    """The first implementation: the same weights through convolutions, the code channels-first."""
    coefficients = F.conv2d(model.normalize(x), model.dictionary, stride=model.config.stride)
    return model.backbone(model.decoder(model.code(coefficients)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write settings, versions and timings here")
    args = parser.parse_args(argv)
    for name in ("batch_size", "rounds", "threads"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build("sparse-coding-vgg16", width=0.25).eval()
    x = torch.rand((args.batch_size, 3, 32, 32), generator=torch.Generator().manual_seed(args.seed))

    def step(forward) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001 (a model or a function of x)
        xs = x.clone().requires_grad_(True)
        logits = forward(xs)
        return logits.detach(), torch.autograd.grad(logits.logsumexp(dim=1).sum(), xs)[0]

    with surrogate_gradients(model, Surrogate()):  # BPDA, for both runs
        runs = {"conv": lambda: step(lambda xs: conv_forward(model, xs)), "matmul": lambda: step(model)}
        (conv_logits, conv_grad), (logits, grad) = runs["conv"](), runs["matmul"]()  # warm-up, and the check
        seconds = time_interleaved(runs, args.rounds, torch.device("cpu"))
    same = {"logits": torch.allclose(logits, conv_logits, rtol=1e-4, atol=1e-5),
            "gradients": torch.allclose(grad, conv_grad, rtol=1e-3, atol=1e-5 * float(conv_grad.abs().max()))}
    ratio = statistics.median(c / m for c, m in zip(seconds["conv"], seconds["matmul"]))
    print(f"sparse-coding-vgg16 (untrained, width 0.25): batch {args.batch_size}, BPDA forward + input gradient, "
          f"{args.rounds} rounds, cpu, {args.threads} threads")
    for key, values in seconds.items():
        print(f"{key:<8}{statistics.median(values):>8.3f} s")
    print(f"conv / matmul = {ratio:.2f} (median of per-round ratios); same logits {same['logits']}, "
          f"same gradients {same['gradients']}")
    if args.json is not None:
        record = {"settings": vars(args) | {"json": str(args.json)}, "versions": versions(), "git_commit": git_commit(),
                  "seconds": seconds, "ratio": ratio, "same": same}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
