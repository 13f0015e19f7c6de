"""Images/s of one full training step of HaH VGG-16 against the plain VGG-16 at equal width.

A step is :func:`hahrobust.training.training_step`, what the trainer runs per batch: forward, loss =
cross-entropy minus the HaH objective Σ α_l·L_l, backward, Adam step; with ``--amp bf16``,
``--channels-last`` and ``--compile`` it takes the GPU fast path exactly as ``hahrobust train`` does. Three models are timed in the same process:

* ``vgg16``      the baseline (implicit-norm conv → ReLU → BatchNorm in every block);
* ``hah-vgg16``  ours: first 6 blocks are :class:`hahrobust.nn.HaHBlock` with layer-local HaH costs;
* ``hahtorch``   the authors' published blocks (``hahtorch==0.0.5``): the same network with its first
  6 blocks replaced by ``hahtorch.HaHBlock`` and ``hahtorch.HaHCost`` applied to each block's conv
  output (it applies the ReLU itself), as the authors' training code does; everything else (input
  normalization, blocks 7–13, classifier, α, K, λ) is ours, so only the HaH block code differs.
  Its HaH-cost gradient flows through the whole network (plain autograd, one backward pass).

The CPU is shared and noisy, so the models are interleaved: each round times ``--steps`` steps of
every model, in an order rotated every round, after ``--warmup`` untimed steps per model. A model's
figure is the median step time over rounds; a ratio is the median over rounds of the per-round
ratio (model time / baseline time in the same round), which cancels slow drifts in machine load.

    python benchmarks/train_step.py --width 1.0 0.25 --batch-size 128 --rounds 7 --threads 2
    python benchmarks/train_step.py --device cuda --width 1.0 --batch-size 512 --rounds 7 --warmup 5 \
        --amp bf16 --channels-last [--compile]          # the GPU variant
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from torch import nn

from hahrobust.devices import resolve_device
from hahrobust.errors import HahrobustError
from hahrobust.models import HahrobustModel, build
from hahrobust.provenance import atomic_path, git_commit, versions
from hahrobust.training import Runtime, training_step

BASELINE = "vgg16"
MODELS = ("vgg16", "hah-vgg16", "hahtorch")
HAHTORCH_VERSION = "0.0.5"


class HahtorchVGG(nn.Module):
    """Our VGG-16 with its HaH blocks swapped for hahtorch's ``HaHBlock`` + ``HaHCost``.

    ``objective()`` returns Σ α_l·HaHCost(conv output of block l) for the last forward pass, the
    quantity subtracted from the loss, like :meth:`HahrobustModel.hah_objective`.
    """

    def __init__(self, width: float) -> None:
        super().__init__()
        try:
            import hahtorch
        except ImportError as exc:
            raise HahrobustError(
                f"hahtorch is not importable ({exc}); "
                f"`pip install hahtorch=={HAHTORCH_VERSION}` or drop it from --models"
            ) from None
        reference = build("hah-vgg16", width=width)
        config = reference.config  # α, K ratio, λ, keep and σ of the HaH blocks we replace
        self.net = build(BASELINE, width=width)
        self.alphas = reference.loss_weights()
        self.cost = hahtorch.HaHCost(ratio=config.k_ratio, demote=config.lam, dim=1)
        self._conv_outputs: list[torch.Tensor] = []
        for name in reference.hah_block_names():
            ours = reference.get_submodule(name)
            block = hahtorch.HaHBlock(
                ours.conv.in_channels, ours.conv.out_channels, kernel_size=3, padding=1,
                divisive_sigma=config.sigma, ratio=config.keep,
            )
            block.conv_layer.register_forward_hook(lambda _m, _i, out: self._conv_outputs.append(out))
            parent, child = name.rsplit(".", 1)
            setattr(self.net.get_submodule(parent), child, block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._conv_outputs.clear()
        return self.net(x)

    def objective(self) -> torch.Tensor:
        return torch.stack([a * self.cost(y) for a, y in zip(self.alphas, self._conv_outputs) if a > 0]).sum()


def make_model(name: str, width: float) -> tuple[nn.Module, Callable[[], torch.Tensor | None]]:
    """(model in train mode, function returning its HaH objective for the last forward pass)."""
    if name == "hahtorch":
        wrapped = HahtorchVGG(width)
        return wrapped.train(), wrapped.objective
    model: HahrobustModel = build(name, width=width)
    model.record_hah_costs(True)
    return model.train(), model.hah_objective


@dataclass
class WidthResult:
    """Per-round step times of every model at one width, and the figures derived from them."""

    width: float
    batch_size: int
    seconds: dict[str, list[float]] = field(default_factory=dict)  # model -> per-round mean step time

    def images_per_s(self, model: str) -> float:
        return self.batch_size / statistics.median(self.seconds[model])

    def ratio(self, model: str, baseline: str = BASELINE) -> float:
        """Median over rounds of (model step time / baseline step time in the same round)."""
        return statistics.median(m / b for m, b in zip(self.seconds[model], self.seconds[baseline]))

    def summary(self) -> dict[str, Any]:
        models = list(self.seconds)
        return {
            **asdict(self),
            "images_per_s": {m: self.images_per_s(m) for m in models},
            "ratio_to_baseline": {m: self.ratio(m) for m in models if BASELINE in models},
        }


def benchmark_width(
    models: Sequence[str],
    width: float,
    *,
    batch_size: int = 128,
    rounds: int = 5,
    steps: int = 1,
    warmup: int = 1,
    device: torch.device = torch.device("cpu"),
    seed: int = 0,
    progress: Progress | None = None,
    runtime: Runtime = Runtime(),
) -> WidthResult:
    """Time ``steps`` training steps per model per round, models interleaved, after ``warmup`` steps each."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, 3, 32, 32, generator=generator).to(device)
    y = torch.randint(0, 10, (batch_size,), generator=generator).to(device)
    fork = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
    with fork:  # model initialisation draws from the global RNG: leave the caller's untouched
        torch.manual_seed(seed)
        setups = {}
        for name in models:
            model, objective = make_model(name, width)
            model.to(device)
            if runtime.channels_last:
                model.to(memory_format=torch.channels_last)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            setups[name] = training_step(model, objective, optimizer, runtime, device)

    def timed(name: str, n: int) -> float:
        step = setups[name]
        _sync(device)
        start = time.perf_counter()
        for _ in range(n):
            step(x, y, 1.0)
        _sync(device)
        return (time.perf_counter() - start) / max(n, 1)

    result = WidthResult(width, batch_size, {name: [] for name in models})
    task = progress.add_task(f"width {width:g}", total=len(models) * (warmup + rounds * steps)) if progress else None
    for name in models:
        if warmup:
            timed(name, warmup)
        if progress is not None and task is not None:
            progress.advance(task, warmup)
    for r in range(rounds):
        order = list(models[r % len(models):]) + list(models[: r % len(models)])  # rotate: no fixed position
        for name in order:
            result.seconds[name].append(timed(name, steps))
            if progress is not None and task is not None:
                progress.advance(task, steps)
    return result


def _hahtorch_version() -> dict[str, str]:
    try:
        return {"hahtorch": metadata.version("hahtorch")}
    except metadata.PackageNotFoundError:
        return {}


def _device_name(device: torch.device) -> str:
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def results_table(results: Sequence[WidthResult]) -> Table:
    table = Table(title="training step: forward + CE − HaH objective + backward + Adam")
    for column in ("width", "model", "images/s", "step ms (median)", "min–max ms", f"× {BASELINE} step"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for res in results:
        for name, times in res.seconds.items():
            table.add_row(
                f"{res.width:g}", name, f"{res.images_per_s(name):.1f}", f"{1e3 * statistics.median(times):.0f}",
                f"{1e3 * min(times):.0f}–{1e3 * max(times):.0f}",
                f"{res.ratio(name):.2f}" if BASELINE in res.seconds else "—",
            )
        table.add_section()
    return table


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=float, nargs="+", default=[1.0, 0.25], help="channel multipliers")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (each model once per round)")
    parser.add_argument("--steps", type=int, default=1, help="steps per model per round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model before the rounds")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--amp", default="off", choices=["off", "bf16"], help="bfloat16 autocast (GPU fast path)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC model and batches (GPU fast path)")
    parser.add_argument("--compile", action="store_true", help="torch.compile each model (warm-up pays it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    for name in ("batch_size", "rounds", "steps", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if any(w <= 0 for w in args.width):
        parser.error("--width values must be > 0")
    if BASELINE not in args.models:
        args.models = [BASELINE, *args.models]  # ratios need the baseline in the same run
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    try:
        device = resolve_device(args.device)
        torch.set_num_threads(args.threads)
        results = []
        with Progress(console=console, transient=True) as progress:
            for width in args.width:
                results.append(benchmark_width(
                    args.models, width, batch_size=args.batch_size, rounds=args.rounds, steps=args.steps,
                    warmup=args.warmup, device=device, seed=args.seed, progress=progress,
                    runtime=Runtime(amp=args.amp, channels_last=args.channels_last, compile=args.compile),
                ))
        console.print(results_table(results))
        console.print(
            f"device {_device_name(device)}, amp {args.amp}, channels_last {args.channels_last}, "
            f"compile {args.compile}, {torch.get_num_threads()} thread(s), batch {args.batch_size}, "
            f"{args.rounds} round(s) × {args.steps} step(s), {args.warmup} warm-up step(s) per model"
        )
        if args.json_path:
            record = {
                "settings": {k: v for k, v in vars(args).items() if k != "json_path"} | {"device": _device_name(device)},
                "threads": torch.get_num_threads(),
                "versions": versions() | _hahtorch_version(),
                "git_commit": git_commit(),
                "results": [res.summary() for res in results],
            }
            with atomic_path(args.json_path) as tmp:
                tmp.write_text(json.dumps(record, indent=2))
    except HahrobustError as exc:
        Console(stderr=True).print(f"error: {exc}", markup=False)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
