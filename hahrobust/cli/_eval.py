"""What every evaluation command shares: checkpoint/--label/--images/--data/--batch-size/--device/--seed/--out options,
model specs with --weights/--normalize, loading labelled models and the (subset of the) CIFAR-10 test set, and
emitting a Result.

A command looks like this (see ``cli/noise_sweep.py``)::

    @handle_errors
    def command(checkpoints: list[Path] = CHECKPOINTS, label: Optional[list[str]] = LABEL, n: Optional[int] = N,
                data: Optional[str] = DATA, batch_size: int = BATCH_SIZE, device: str = DEVICE,
                seed: int = SEED, out: Optional[Path] = OUT, weights: Optional[list[Path]] = WEIGHTS,
                normalize: Optional[list[str]] = NORMALIZE, overwrite: bool = OVERWRITE, ...own options...) -> None:
        options = EvalOptions(checkpoints, label, n, data, batch_size, device, seed, out,
                              weights=weights, normalize=normalize, overwrite=overwrite, results=(NAME,))
        session = open_session(options)          # checks --out (and the results already there), --device,
                                                 # --batch-size, --images, loads the models
        ...validate the command's own options (before any data is loaded)...
        with make_progress() as progress:
            test = load_test_set(options, progress)
            rows = per_model(session, lambda model: my_metric(model, test, ..., progress=progress))
        finish(Result(command=NAME, rows=rows, settings={**common_settings(session, test), ...},
                      checkpoints=session.checkpoints, layout=..., started=session.started), session)

Bad input fails before any computation with a one-line :class:`HahrobustError`: an unwritable ``--out``, an
unknown device, a file that is not a checkpoint, mismatched ``--label``\\ s, ``--images`` outside 1…len(test set),
a model spec that does not build, weights that are not a plain state dict, a model that fails
:func:`hahrobust.models.foreign.check_classifier`.

Old option spellings (``--n`` for ``--images``) are hidden aliases: ``cli/__init__.py`` gives each command the
aliases of the shared options its signature uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import typer
from rich.progress import Progress
from torch import nn

from hahrobust import distributed
from hahrobust.cli._common import DEVICE, OVERWRITE, console, load_split, refuse_to_replace, takes_option
from hahrobust.data import ImageSet, balanced_subset
from hahrobust.devices import resolve_device
from hahrobust.errors import HahrobustError
from hahrobust.evaluate._common import common_settings as library_settings, origins, per_model as models_per_model
from hahrobust.evaluate.opening import LoadedModel, bpda_types_for, layers_for, open_models
from hahrobust.nn.surrogate import SURROGATE_KINDS, SurrogateKind
from hahrobust.results import Result, check_out_dir, show, write

# Typer option declarations shared by every evaluation command (use them as parameter defaults).
CHECKPOINTS = typer.Argument(
    ...,
    help="One or more models to compare: hahrobust .safetensors checkpoints, or model specs "
    "py:PACKAGE.MODULE:FACTORY or FILE.py:FACTORY, each with --weights.",
    metavar="MODELS",
)
WEIGHTS = typer.Option(
    None, "--weights",
    help="Weights for each model spec, once per spec in order: a safetensors file or a PyTorch state dict "
    "(read by torch.load(weights_only=True); a pickle holding any other Python object is refused unread). "
    "A spec runs your code: py:PACKAGE.MODULE:FACTORY imports PACKAGE.MODULE (current directory first), "
    "FILE.py:FACTORY executes FILE.py, then FACTORY() is called with no arguments; the weights are loaded "
    "strictly and never execute anything. The model must take [B, 3, 32, 32] images in [0, 1] (normalizing "
    "inside, or see --normalize) and return [B, 10] logits, deterministically, with gradients reaching the "
    "input; this is checked on two probe images before any evaluation.",
)
NORMALIZE = typer.Option(
    None, "--normalize",
    help="Standardize a model spec's input, (x − mean)/std, for a model that expects normalized images: "
    "MEAN,STD (numbers, or per channel joined by /), cifar10, or none. Once for every spec, or once per spec.",
)
LAYERS = typer.Option(
    None, "--layers",
    help="The layers to measure in a model spec's model (hahrobust checkpoints keep their blocks): "
    "comma-separated module types (Conv2d, ReLU, a threshold class; a type also picks its subclasses) or "
    "globs over module names (features.*.relu), in forward order.",
)
BPDA_TYPES = typer.Option(
    None, "--bpda",
    help="TYPE=sigmoid|identity: back-propagate through a surrogate at every layer of module type TYPE "
    "(class name or module.Class) of a model, e.g. your own threshold; repeat for more types. hahrobust's "
    "and hahtorch's thresholds need none. sigmoid: a smooth mask around the smallest value the layer kept; "
    "identity: straight-through.",
)
LABEL = typer.Option(
    None, "--label", "-l",
    help="Name of each model in tables and figures, once per checkpoint in order.", show_default="its model name",
)
# Not "--n": torchrun's own parser reads every argument, even those after `-m hahrobust`, and stops at
# "--n" ("ambiguous option: --n could match --nnodes, --nproc-per-node") before hahrobust starts.
N = typer.Option(
    None, "--images", metavar="N", help="Evaluate a deterministic class-balanced subset of N test images.",
    show_default="all",
)
DATA = typer.Option(
    None, "--data",
    help="CIFAR-10: an image-folder directory or .tar.gz (test/<class>/*.jpg), or a torchvision CIFAR-10 root.",
    show_default="$HAHROBUST_DATA",
)
BATCH_SIZE = typer.Option(500, "--batch-size", help="Images per forward pass (bounds memory).")
ATTACK_BATCH_SIZE = typer.Option(100, "--batch-size", help="Images attacked together (bounds memory).")
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
    weights: list[Path] | None = None  # one per model spec among ``checkpoints``, in order
    normalize: list[str] | None = None  # none, one for every spec, or one per spec
    overwrite: bool = False  # replace result files already in ``out``
    resume: bool | None = None  # continue an earlier run in ``out``; None: the command cannot resume
    results: tuple[str, ...] = ()  # the result names (commands) whose files the run writes in ``out``


@dataclass
class Session:
    """Checked options and loaded models, ready for computing: what :func:`open_session` returns."""

    options: EvalOptions
    device: torch.device
    models: list[LoadedModel]
    out_dir: Path | None
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def checkpoints(self) -> dict[str, Any]:
        """What each label's numbers came from, for :class:`Result`: a checkpoint, or a spec's provenance."""
        return origins(self.models)


def open_session(options: EvalOptions) -> Session:
    """Check the shared options and load every model (in eval mode, on the device); nothing is computed.

    Model specs are paired with ``--weights`` in order and checked (:func:`hahrobust.evaluate.open_models`) before
    any data is read; every option is checked before any user code runs.
    """
    started = datetime.now(timezone.utc)
    out = options.out
    out_dir = Path(out).expanduser() if out is not None else None
    if out is not None:  # rank 0 writes the results; the folder is made when there are results to write
        distributed.on_rank0(lambda: check_out_dir(out))
        if not options.results:
            raise ValueError("EvalOptions.results must name the results the command writes")  # a programming error
        refuse_to_replace(out, options.results, overwrite=options.overwrite, resume=bool(options.resume),
                          resumable=options.resume is not None)
    device = resolve_device(options.device)
    if options.batch_size < 1:
        raise HahrobustError(f"--batch-size must be at least 1, got {options.batch_size}")
    if options.n is not None and options.n < 1:
        raise HahrobustError(f"--images must be at least 1, got {options.n}")
    models = open_models(options.checkpoints, labels=options.labels, weights=options.weights,
                         normalize=options.normalize, device=device)
    return Session(options, device, models, out_dir, started)


def open_step_session(command: str, out: Path, resume: bool, options: EvalOptions) -> Session:
    """:func:`open_session` for a command whose ``--out`` is a folder of step journals (report, leaderboard): the
    folder is refused when it is a file, or when it holds an earlier run's files and ``--resume`` was not given (a
    run's files are never replaced silently; its steps resume)."""
    if out.exists() and not out.is_dir():
        raise HahrobustError(f"--out {out}: not a folder")
    refuse_to_replace(out, (command,), overwrite=False, resume=resume, resumable=True, overwritable=False)
    return open_session(options)


def session_layers(session: Session, selector: str | None, foreign_default: str | None = None) -> dict[str, list[str] | None]:
    """:func:`hahrobust.evaluate.opening.layers_for` of the session's models."""
    return layers_for(session.models, selector, foreign_default)


def parse_bpda(values: list[str] | None) -> dict[str, SurrogateKind]:
    """``--bpda TYPE=KIND`` values as {type name: kind}; syntax and kinds only (types resolve per model)."""
    mapping: dict[str, SurrogateKind] = {}
    for value in values or []:
        name, sep, kind = (part.strip() for part in value.partition("="))
        if not sep or not name or kind not in SURROGATE_KINDS:
            raise HahrobustError(f"--bpda {value!r}: expected MODULE_TYPE=KIND with KIND one of {', '.join(SURROGATE_KINDS)}")
        if name in mapping and mapping[name] != kind:
            raise HahrobustError(f"--bpda maps {name} twice ({mapping[name]} and {kind})")
        mapping[name] = kind  # type: ignore[assignment]
    return mapping


def bpda_types(session: Session, names: dict[str, SurrogateKind]) -> dict[str, dict[type[nn.Module], SurrogateKind]]:
    """:func:`hahrobust.evaluate.opening.bpda_types_for` of the session's models."""
    return bpda_types_for(session.models, names)


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
    return takes_option(command, N)


def per_model(session: Session, evaluate: Callable[[LoadedModel], pd.DataFrame]) -> pd.DataFrame:
    """Run ``evaluate`` on each of the session's models in order; one frame with a leading ``model`` column."""
    return models_per_model(session.models, evaluate)


def common_settings(session: Session, test: ImageSet) -> dict[str, Any]:
    """The shared settings that change numbers (for Result.settings); the device is recorded for provenance."""
    options = session.options
    return library_settings(test, seed=options.seed, batch_size=options.batch_size, device=session.device)


def finish(result: Result, session: Session) -> list[Path]:
    """Show the result on the terminal and, with ``--out``, write its files; returns the paths written. The
    result's start time becomes the command's."""
    result = dataclasses.replace(result, started=session.started)
    show(result, console)
    if session.out_dir is None or not distributed.current().is_main:  # under torchrun rank 0 writes
        return []
    paths = write(result, session.out_dir)
    console.print(f"wrote {', '.join(str(p) for p in paths)}", highlight=False, soft_wrap=True)
    return paths


# DEVICE and OVERWRITE are declared in cli._common (commands without models use them too) and offered here with
# the other shared evaluation options.
__all__ = [
    "BATCH_SIZE", "BPDA_TYPES", "CHECKPOINTS", "DATA", "DEVICE", "EvalOptions", "LABEL", "LAYERS", "N", "NORMALIZE",
    "OUT", "OVERWRITE", "SEED", "Session", "WEIGHTS", "bpda_types", "common_settings", "finish", "load_test_set",
    "open_session", "parse_bpda", "per_model", "session_layers", "takes_subset_option",
]
