"""Which kind of run breaks the small HaH audit's hardest survivors, and how often (issue 33's probe).

The images are those the second edition's convergence rounds attacked in their second round, read from the
committed verified examples (``docs/results/audit/small-hah/adv/audit-HaH-<norm>-more-effort-round-2.safetensors``;
``--pick`` indexes them: at ℓ∞ 1 and 3 are the two that round broke, at ℓ2 2 is the one it broke). Each run is
cosine-annealed PGD through BPDA (sigmoid surrogate, temperature 0.1 unless the plan says otherwise), from the clean
image or a random start, ascending the cross-entropy, the untargeted margin or the margin towards the k-th
likeliest wrong class (``t<k>``); a run records the step at which each image first became adversarial (−1: never).
The plans: ``first`` (100–800 steps of every kind, several seeds), ``long`` (1,600 steps) and ``smoke``. Results are written
after every run, so a killed probe keeps what it measured. Summarised in docs/results/audit.md (third edition):

    python benchmarks/hard_survivors.py linf 1,3 --plan first --json docs/results/audit/hard-survivors-linf.json
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hahrobust.attacks._common import margin  # noqa: E402
from hahrobust.attacks.gradients import GradientPath, adapt  # noqa: E402
from hahrobust.attacks.norms import project, random_start  # noqa: E402
from hahrobust.checkpoint import load_checkpoint  # noqa: E402

EPS = {"linf": 2 / 255, "l2": 0.25}
# (loss, steps, start, BPDA temperature, seeds)
PLANS = {
    "first": [("ce", 800, "clean", 0.1, 1), ("ce", 100, "clean", 0.1, 1), ("ce", 400, "clean", 0.1, 1),
              ("t1", 800, "random", 0.1, 6), ("t1", 200, "random", 0.1, 6), ("ce", 800, "random", 0.1, 4),
              ("margin", 800, "random", 0.1, 4), ("t1", 400, "random", 0.3, 4), ("t1", 400, "random", 0.03, 4),
              ("t1", 800, "clean", 0.1, 1), ("ce", 1600, "clean", 0.1, 1)],
    "long": [("ce", 1600, "clean", 0.1, 1), ("ce", 1600, "random", 0.1, 3), ("t1", 1600, "random", 0.1, 2),
             ("margin", 1600, "random", 0.1, 2)],
    "smoke": [("t1", 3, "random", 0.1, 1), ("ce", 3, "clean", 0.1, 1)],  # the test's: that the probe runs
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("norm", choices=sorted(EPS))
    parser.add_argument("pick", help="comma-separated indices into the round-2 file")
    parser.add_argument("--plan", choices=sorted(PLANS), default="first")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    norm, eps = args.norm, EPS[args.norm]
    pick = [int(i) for i in args.pick.split(",")]
    path = ROOT / f"docs/results/audit/small-hah/adv/audit-HaH-{norm}-more-effort-round-2.safetensors"
    with safe_open(str(path), "pt") as s:
        x, y = s.get_tensor("x")[pick], s.get_tensor("label")[pick]
    model = load_checkpoint(ROOT / "checkpoints/hah-vgg16-small.safetensors")[0].eval()
    with torch.no_grad():
        ranked = model(x).scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)

    def run(kind: str, steps: int, seed: int, start: str, temperature: float) -> list[int]:
        bpda = adapt(model, GradientPath("bpda", temperature=temperature))
        g = torch.Generator().manual_seed(seed)
        delta = torch.zeros_like(x) if start == "clean" else random_start(torch.rand(x.shape, generator=g), x, eps, norm)
        broke = torch.full((len(x),), -1)
        for step in range(steps + 1):
            xa = (x + delta).requires_grad_(True)
            logits = bpda(xa)
            broke[(margin(logits.detach(), y) > 0) & (broke < 0)] = step
            if step == steps or bool((broke >= 0).all()):
                break
            if kind.startswith("t"):
                t = ranked[:, int(kind[1:]) - 1]
                loss = (logits.gather(1, t[:, None]) - logits.gather(1, y[:, None])).sum()
            elif kind == "ce":
                loss = F.cross_entropy(logits, y, reduction="sum")
            else:
                loss = margin(logits, y).sum()
            (grad,) = torch.autograd.grad(loss, xa)
            alpha = eps * (1 + math.cos(math.pi * step / steps)) / 2
            flat = grad.flatten(1)
            direction = flat.sign() if norm == "linf" else flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
            delta = project(delta + (alpha * direction).reshape(x.shape), x, eps, norm).detach()
        return broke.tolist()

    out, t0 = [], time.time()
    for kind, steps, start, temperature, seeds in PLANS[args.plan]:
        for seed in range(seeds):
            broke = run(kind, steps, 7919 * seed + steps, start, temperature)
            out.append({"kind": kind, "steps": steps, "start": start, "temperature": temperature, "seed": seed,
                        "broke_at": broke})
            print(kind, steps, start, temperature, seed, broke, f"{time.time() - t0:.0f}s", flush=True)
            args.json.write_text(json.dumps({"norm": norm, "pick": pick, "labels": y.tolist(), "runs": out}) + "\n")


if __name__ == "__main__":
    main()
