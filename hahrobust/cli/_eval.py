"""What every evaluation command shares: checkpoint/--label/--images/--data/--batch-size/--device/--seed/--out options,
model specs with --weights/--normalize, loading labelled models and the (subset of the) CIFAR-10 test set, and
emitting a Result.

A command looks like this (see ``cli/noise_sweep.py``)::

    @handle_errors
    def command(checkpoints: list[Path] = CHECKPOINTS, label: Optional[list[str]] = LABEL, n: Optional[int] = N,
                data: Optional[str] = DATA, batch_size: int = BATCH_SIZE, device: str = DEVICE,
                seed: int = SEED, out: Optional[Path] = OUT, weights: Optional[list[Path]] = WEIGHTS,
                normalize: Optional[list[str]] = NORMALIZE, ...own options...) -> None:
        options = EvalOptions(checkpoints, label, n, data, batch_size, device, seed, out,
                              weights=weights, normalize=normalize)
        session = open_session(options)          # checks --out, --device, --batch-size, --images, loads the models
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

Register a command with :data:`SUBSET_CONTEXT` as its context settings when it takes :data:`N`
(``cli/__init__.py`` does so for every command whose signature uses it).
"""

from __future__ import annotations

import dataclasses
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
from torch import nn

from hahrobust import distributed
from hahrobust.checkpoint import load_checkpoint
from hahrobust.cli._common import console, load_split
from hahrobust.data import ImageSet, balanced_subset
from hahrobust.devices import resolve_device
from hahrobust.errors import HahrobustError
from hahrobust.models.foreign import (
    ForeignSource, ModelSpec, Normalization, load_foreign, parse_model_spec, parse_normalization,
)
from hahrobust.nn.hooks import select_layers
from hahrobust.nn.surrogate import SURROGATE_KINDS, SurrogateKind, surrogate_types
from hahrobust.results import Layout, Result, check_out_dir, show, write

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
    weights: list[Path] | None = None  # one per model spec among ``checkpoints``, in order
    normalize: list[str] | None = None  # none, one for every spec, or one per spec


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to evaluate: a hahrobust checkpoint's (``source`` None; ``path`` is the checkpoint) or a
    model spec's (``source`` its provenance; ``path`` is its weights file)."""

    label: str
    path: Path
    model: nn.Module
    metadata: dict[str, Any]
    source: ForeignSource | None = None

    @property
    def is_foreign(self) -> bool:
        return self.source is not None


@dataclass
class Session:
    """Checked options and loaded models, ready for computing: what :func:`open_session` returns."""

    options: EvalOptions
    device: torch.device
    models: list[LoadedModel]
    out_dir: Path | None
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def checkpoints(self) -> dict[str, Path | ForeignSource]:
        """What each label's numbers came from, for :class:`Result`: a checkpoint, or a spec's provenance."""
        return {m.label: m.source or m.path for m in self.models}


def open_session(options: EvalOptions) -> Session:
    """Check the shared options and load every model (in eval mode, on the device); nothing is computed.

    Model specs are paired with ``--weights`` in order and checked (:func:`load_foreign`) before any data
    is read; every option is checked before any user code runs.
    """
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
    specs = [parse_model_spec(str(entry)) for entry in options.checkpoints]
    weights = _weights_per_spec(specs, options.weights)
    normalizations = _normalization_per_spec(specs, options.normalize)
    loaded: list[tuple[Path, nn.Module, dict[str, Any], ForeignSource | None]] = []
    for entry, spec in zip(options.checkpoints, specs):
        if spec is None:
            loaded.append((Path(entry), *load_checkpoint(entry, device), None))
            continue
        model, source = load_foreign(spec, weights.pop(0), device, normalize=normalizations.pop(0))
        # A spec is named by its weights file (the factory is often a generic build()).
        loaded.append((source.weights, model, {"model": {"name": source.weights.stem}, "foreign": source.provenance()}, source))
    labels = model_labels([path for path, *_ in loaded], [meta for _, _, meta, _ in loaded], options.labels)
    models = [LoadedModel(label, *entry) for label, entry in zip(labels, loaded)]
    return Session(options, device, models, out_dir, started)


def _weights_per_spec(specs: list[ModelSpec | None], weights: list[Path] | None) -> list[Path]:
    count, given = sum(spec is not None for spec in specs), list(weights or [])
    if len(given) != count:
        raise HahrobustError(
            f"got {len(given)} --weights for {count} model spec(s); give one weights file per spec, in order"
            + ("" if count else " (--weights goes with py:MODULE:FACTORY or FILE.py:FACTORY, not checkpoints)")
        )
    return given


def _normalization_per_spec(specs: list[ModelSpec | None], values: list[str] | None) -> list[Normalization | None]:
    count, given = sum(spec is not None for spec in specs), list(values or [])
    if given and not count:
        raise HahrobustError("--normalize applies to model specs; hahrobust checkpoints normalize inside the model")
    if len(given) not in (0, 1, count):
        raise HahrobustError(f"got {len(given)} --normalize values for {count} model specs; give one, or one per spec")
    parsed = [parse_normalization(value) for value in given]
    return parsed * count if len(parsed) == 1 else (parsed or [None] * count)


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


def session_layers(session: Session, selector: str | None, foreign_default: str | None = None) -> dict[str, list[str] | None]:
    """Per model label, the layers to measure: None for a hahrobust checkpoint (its own block view), the
    layers ``--layers`` picks in a model spec's model (:func:`select_layers`; ``foreign_default`` when
    ``--layers`` is not given, else an error asking for it). ``--layers`` without any spec is an error."""
    if selector is not None and not any(m.is_foreign for m in session.models):
        raise HahrobustError("--layers picks layers of model specs; hahrobust checkpoints are measured per block")
    layers: dict[str, list[str] | None] = {}
    for m in session.models:
        chosen = selector or foreign_default
        if not m.is_foreign:
            layers[m.label] = None
            continue
        if chosen is None:
            raise HahrobustError(
                f"{m.label} is not a hahrobust model: name the layers to measure with --layers "
                "(module types such as ReLU or its threshold class, or name globs)"
            )
        try:
            layers[m.label] = select_layers(m.model, chosen)
        except HahrobustError as exc:
            raise HahrobustError(f"--layers {chosen!r} in {m.label}: {exc}") from None
    return layers


def with_layers_note(layout: Layout, layers: dict[str, list[str] | None], selector: str | None, what: str) -> Layout:
    """``layout`` plus a note naming the models measured at ``--layers`` layers (``what``: which tensor of
    each layer), or ``layout`` itself when every model was measured per block."""
    picked = [label for label, names in layers.items() if names is not None]
    if not picked:
        return layout
    note = (f"{', '.join(picked)}: {what} of each layer --layers {selector} picks, in forward order; "
            "block_name in the CSV names each.")
    return dataclasses.replace(layout, notes=(*layout.notes, note))


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
    """Per model label, the module types of that model that ``--bpda`` names (each model its own mapping:
    nothing is registered globally). A name that no model has is an error (a typo would attack plainly)."""
    per_model: dict[str, dict[type[nn.Module], SurrogateKind]] = {}
    for m in session.models:
        try:
            per_model[m.label] = surrogate_types(m.model, names)
        except ValueError as exc:
            raise HahrobustError(f"--bpda for {m.label}: {exc}") from None
    found = {name for types in per_model.values() for cls in types for name in (cls.__name__, f"{cls.__module__}.{cls.__qualname__}")}
    missing = [name for name in names if name not in found]
    if missing:
        raise HahrobustError(f"--bpda {missing[0]}: no model has a module of that type")
    return per_model


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
