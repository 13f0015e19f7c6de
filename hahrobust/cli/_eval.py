"""What every evaluation command shares: checkpoint/--label/--images/--data/--batch-size/--device/--seed/--out options,
loading labelled checkpoints and the (subset of the) CIFAR-10 test set, and emitting a Result.

A command looks like this (see ``cli/noise_sweep.py``)::

    @handle_errors
    def command(checkpoints: list[Path] = CHECKPOINTS, label: Optional[list[str]] = LABEL, n: Optional[int] = N,
                data: Optional[str] = DATA, batch_size: int = BATCH_SIZE, device: str = DEVICE,
                seed: int = SEED, out: Optional[Path] = OUT, ...own options...) -> None:
        options = EvalOptions(checkpoints, label, n, data, batch_size, device, seed, out)
        session = open_session(options)          # checks --out, --device, --batch-size, --images, loads checkpoints
        ...validate the command's own options (before any data is loaded)...
        with make_progress() as progress:
            test = load_test_set(options, progress)
            rows = per_model(session, lambda model: my_metric(model, test, ..., progress=progress))
        finish(Result(command=NAME, rows=rows, settings={**common_settings(session, test), ...},
                      checkpoints=session.checkpoints, layout=..., started=session.started), session)

Bad input fails before any computation with a one-line :class:`HahrobustError`: an unwritable ``--out``, an
unknown device, a file that is not a checkpoint, mismatched ``--label``\\ s, ``--images`` outside 1…len(test set).

Register a command with :data:`SUBSET_CONTEXT` as its context settings when it takes :data:`N`
(``cli/__init__.py`` does so for every command whose signature uses it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import typer
from rich.progress import Progress

from hahrobust import distributed
from hahrobust.checkpoint import load_checkpoint
from hahrobust.cli._common import console, load_split
from hahrobust.data import ImageSet, balanced_subset
from hahrobust.devices import resolve_device
from hahrobust.errors import HahrobustError
from hahrobust.models import HahrobustModel
from hahrobust.results import Result, check_out_dir, show, write

# Typer option declarations shared by every evaluation command (use them as parameter defaults).
CHECKPOINTS = typer.Argument(..., help="One or more hahrobust .safetensors checkpoints to compare.")
LABEL = typer.Option(
    None, "--label", "-l",
    help="Name of each model in tables and figures, once per checkpoint in order (default: its model name).",
)
# Not "--n": torchrun's own parser reads every argument, even those after `-m hahrobust`, and stops at
# "--n" ("ambiguous option: --n could match --nnodes, --nproc-per-node") before hahrobust starts.
N = typer.Option(
    None, "--images", metavar="N", help="Evaluate a deterministic class-balanced subset of N test images (default: all)."
)
#: ``--n``, the first name of ``--images``, still works outside torchrun (for scripts written before the rename)
#: but is shown nowhere: while parsing a command that takes :data:`N`, click reads ``--n`` as ``--images``.
OLD_OPTION_NAMES = {"n": "images"}
SUBSET_CONTEXT: dict[str, Any] = {"token_normalize_func": lambda name: OLD_OPTION_NAMES.get(name, name)}
DATA = typer.Option(
    None, "--data",
    help="CIFAR-10: an image-folder directory or .tar.gz (test/<class>/*.jpg), or a torchvision CIFAR-10 root. "
    "Default: $HAHROBUST_DATA.",
)
BATCH_SIZE = typer.Option(500, "--batch-size", help="Images per forward pass (bounds memory).")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N.")
SEED = typer.Option(0, "--seed", help="Seed of the --images subset and of every random draw.")
OUT = typer.Option(None, "--out", "-o", help="Write <command>.csv, .md, .json and .png into this directory.")


@dataclass(frozen=True)
class EvalOptions:
    """The options every evaluation command takes, as parsed."""

    checkpoints: list[Path]
    labels: list[str] | None = None
    n: int | None = None
    data: str | None = None
    batch_size: int = 500
    device: str = "auto"
    seed: int = 0
    out: Path | None = None


@dataclass(frozen=True)
class LoadedModel:
    label: str
    path: Path
    model: HahrobustModel
    metadata: dict[str, Any]


@dataclass
class Session:
    """Checked options and loaded models, ready for computing: what :func:`open_session` returns."""

    options: EvalOptions
    device: torch.device
    models: list[LoadedModel]
    out_dir: Path | None
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def checkpoints(self) -> dict[str, Path]:
        return {m.label: m.path for m in self.models}


def open_session(options: EvalOptions) -> Session:
    """Check the shared options and load every checkpoint (in eval mode, on the device); nothing is computed."""
    started = datetime.now(timezone.utc)
    out = options.out
    out_dir = Path(out).expanduser() if out is not None else None
    if out is not None:  # rank 0 writes the results; the folder is made when there are results to write
        distributed.on_rank0(lambda: check_out_dir(out))
    device = resolve_device(options.device)
    if options.batch_size < 1:
        raise HahrobustError(f"--batch-size must be at least 1, got {options.batch_size}")
    if options.n is not None and options.n < 1:
        raise HahrobustError(f"--images must be at least 1, got {options.n}")
    if not options.checkpoints:
        raise HahrobustError("no checkpoint given")
    if options.labels and len(options.labels) != len(options.checkpoints):
        raise HahrobustError(
            f"got {len(options.labels)} --label value(s) for {len(options.checkpoints)} checkpoint(s); "
            "give one per checkpoint"
        )
    loaded = [(Path(path), *load_checkpoint(path, device)) for path in options.checkpoints]
    labels = model_labels([path for path, _, _ in loaded], [meta for _, _, meta in loaded], options.labels)
    models = [LoadedModel(label, path, model, meta) for label, (path, model, meta) in zip(labels, loaded)]
    return Session(options, device, models, out_dir, started)


def model_labels(paths: list[Path], metadata: list[dict[str, Any]], labels: list[str] | None = None) -> list[str]:
    """``labels`` if given (one per checkpoint, distinct), else each checkpoint's model name from its metadata.

    Checkpoints that share a model name (two seeds of hah-vgg16, say) are labelled by file name instead.
    """
    if labels:
        if len(labels) != len(paths):
            raise HahrobustError(
                f"got {len(labels)} --label value(s) for {len(paths)} checkpoint(s); give one per checkpoint"
            )
        _check_distinct(list(labels), "--label values")
        return list(labels)
    names = [str(meta.get("model", {}).get("name", path.stem)) for path, meta in zip(paths, metadata)]
    shown = [path.stem if names.count(name) > 1 else name for path, name in zip(paths, names)]
    _check_distinct(shown, "model labels (pass --label to name each checkpoint)")
    return shown


def _check_distinct(labels: list[str], what: str) -> None:
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise HahrobustError(f"{what} must be distinct; repeated: {', '.join(repeated)}")


def load_test_set(options: EvalOptions, progress: Progress | None = None) -> ImageSet:
    """The CIFAR-10 test set, or its class-balanced subset of ``--images`` images chosen by ``--seed``."""
    test = load_split(options.data, "test", progress=progress)
    if options.n is None:
        return test
    if options.n > len(test):
        raise HahrobustError(f"--images {options.n} is larger than the test set ({len(test)} images in {test.source})")
    return balanced_subset(test, options.n, options.seed)


def takes_subset_option(command: Callable[..., Any]) -> bool:
    """Whether a command's signature uses the shared :data:`N` option."""
    return any(p.default is N for p in inspect.signature(command).parameters.values())


def per_model(session: Session, evaluate: Callable[[LoadedModel], pd.DataFrame]) -> pd.DataFrame:
    """Run ``evaluate`` on each model in order; one frame with a leading ``model`` column (its label)."""
    frames = [evaluate(m).assign(model=m.label) for m in session.models]
    rows = pd.concat(frames, ignore_index=True)
    return rows[["model", *[c for c in rows.columns if c != "model"]]]


def common_settings(session: Session, test: ImageSet) -> dict[str, Any]:
    """The shared settings that change numbers (for Result.settings); the device is recorded for provenance."""
    options = session.options
    return {
        "data": test.source,
        "n": len(test),
        "subset": options.n is not None,
        "seed": options.seed,
        "batch_size": options.batch_size,
        "device": str(session.device),
    }


def finish(result: Result, session: Session) -> list[Path]:
    """Show the result on the terminal and, with ``--out``, write its files; returns the paths written."""
    show(result, console)
    if session.out_dir is None or not distributed.current().is_main:  # under torchrun rank 0 writes
        return []
    paths = write(result, session.out_dir)
    console.print(f"wrote {', '.join(str(p) for p in paths)}", highlight=False, soft_wrap=True)
    return paths
