"""Models that are not hahrobust checkpoints: a user's own factory plus a weights file.

A *model spec* names a factory, a zero-argument callable that returns a ``torch.nn.Module``:

- ``py:PACKAGE.MODULE:FACTORY``: ``import PACKAGE.MODULE`` (the current directory is searched first, as
  ``python -m`` does), then ``FACTORY()``; e.g. ``py:hahtorch:HaHVGG16``.
- ``path/to/file.py:FACTORY``: the file is executed as a module (its own directory searched first for its
  imports, as ``python path/to/file.py`` does), then ``FACTORY()``.

That is the user's own code, run as they asked. The weights are data and never execute anything: a
safetensors file, or a PyTorch state dict read by ``torch.load(weights_only=True)`` (a pickle that names
any Python object beyond tensors and containers is refused unread). They are loaded with ``strict=True``:
every parameter and persistent buffer comes from the file, none from the factory's initialization.

What hahrobust needs from such a model is checked on a probe batch before anything is evaluated
(:func:`check_classifier`): it takes [B, 3, 32, 32] images with values in [0, 1] and does any input
normalization itself (``normalize`` adds one), returns a [B, 10] tensor of finite logits, is in eval mode,
gives the same logits for the same image twice and whatever else is in the batch, and lets gradients reach
its input. The value range cannot be checked, only stated: a model that expects [0, 255] or standardized
images still runs, with wrong numbers.

Provenance (:class:`ForeignSource`) replaces a checkpoint's metadata in results: the spec, the SHA-256 of
the weights bytes that were loaded, the SHA-256 of the factory's source file, and the installed
distribution that provides the factory's package, if any.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hahrobust.data import CIFAR10_MEAN, CIFAR10_STD
from hahrobust.errors import HahrobustError
from hahrobust.models.weights import first_line as _first_line, read_state_dict, state_dict_mismatch

#: CIFAR-10 images as every hahrobust tool feeds them.
INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10

_IDENTIFIERS = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_MODULE_SPEC = re.compile(rf"py:(?P<module>{_IDENTIFIERS}):(?P<factory>{_IDENTIFIERS})")
_FILE_SPEC = re.compile(rf"(?P<file>.+\.py):(?P<factory>{_IDENTIFIERS})")
# A torch.save file is a zip archive (PK\x03\x04) or, in the legacy format, a pickle (protocol ≥ 2: 0x80).


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: where the factory lives (``module`` or ``file``) and its attribute path."""

    text: str
    factory: str
    module: str | None = None
    file: Path | None = None


def parse_model_spec(text: str) -> ModelSpec | None:
    """The spec in ``text``, or None when ``text`` is not one (then it is a checkpoint path).

    ``py:…`` must be a full module spec; anything else ending in ``.py:NAME`` is a file spec.
    """
    text = str(text)
    if text.startswith("py:"):
        match = _MODULE_SPEC.fullmatch(text)
        if match is None:
            raise HahrobustError(f"model spec {text!r}: expected py:PACKAGE.MODULE:FACTORY")
        return ModelSpec(text, match["factory"], module=match["module"])
    match = _FILE_SPEC.fullmatch(text)
    if match is None:
        return None
    return ModelSpec(text, match["factory"], file=Path(match["file"]))


@dataclass(frozen=True)
class Normalization:
    """(x − mean) / std per channel, added in front of a model that expects standardized images."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def text(self) -> str:
        return f"{'/'.join(f'{m:g}' for m in self.mean)},{'/'.join(f'{s:g}' for s in self.std)}"


def parse_normalization(text: str) -> Normalization | None:
    """``MEAN,STD`` (each a number, or per-channel numbers joined by ``/``), ``cifar10`` (hahrobust's CIFAR-10
    mean and std), or ``none``."""
    text = text.strip()
    if text.lower() == "none":
        return None
    if text.lower() == "cifar10":
        return Normalization(tuple(CIFAR10_MEAN), tuple(CIFAR10_STD))
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        mean, std = (tuple(float(v) for v in part.split("/")) for part in parts)
    except ValueError:
        raise HahrobustError(
            f"--normalize {text!r}: expected MEAN,STD (numbers, or per channel joined by /: "
            "0.49/0.48/0.45,0.25/0.24/0.26), cifar10 or none"
        ) from None
    channels = INPUT_SHAPE[0]
    if {len(mean), len(std)} - {1, channels}:
        raise HahrobustError(f"--normalize {text!r}: give 1 or {channels} values for the mean and for the std")
    if not all(s > 0 for s in std) or not all(map(_finite, (*mean, *std))):
        raise HahrobustError(f"--normalize {text!r}: the std must be > 0 and every value finite")
    return Normalization(mean * (channels // len(mean)), std * (channels // len(std)))


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


@dataclass(frozen=True)
class ForeignSource:
    """Where a foreign model came from, for results (in place of a checkpoint's path and SHA-256)."""

    spec: str
    weights: Path
    sha256: str  # of the weights bytes that were loaded
    factory_file: Path | None
    factory_sha256: str | None
    package: str | None  # "NAME VERSION" of the installed distribution providing the factory's package
    normalize: str | None

    @property
    def display(self) -> str:
        return f"{self.spec} --weights {self.weights.name}"

    @property
    def factory_display(self) -> str:
        if self.factory_file is None or self.factory_sha256 is None:
            return "(no source file)"
        return f"{self.factory_file.name} {self.factory_sha256[:16]}"

    def provenance(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "path": str(self.weights.resolve()),
            "sha256": self.sha256,
            "factory_file": str(self.factory_file) if self.factory_file is not None else None,
            "factory_sha256": self.factory_sha256,
            "package": self.package,
            "normalize": self.normalize,
        }


def load_foreign(
    spec: ModelSpec | str,
    weights: str | Path,
    device: str | torch.device = "cpu",
    *,
    normalize: Normalization | None = None,
    input_shape: Sequence[int] = INPUT_SHAPE,
    num_classes: int = NUM_CLASSES,
) -> tuple[nn.Module, ForeignSource]:
    """(model in eval mode on ``device``, its provenance): the factory's model with ``weights`` loaded
    strictly, ``normalize`` in front if given, and :func:`check_classifier` passed.

    Raises :class:`HahrobustError` (one line) for a spec that does not import or build, weights that are not
    a plain state dict or do not fit the model, and a model that fails the check.
    """
    parsed = parse_model_spec(str(spec)) if not isinstance(spec, ModelSpec) else spec
    if parsed is None:
        raise HahrobustError(f"{spec!r} is not a model spec (py:PACKAGE.MODULE:FACTORY or FILE.py:FACTORY)")
    weights = Path(weights)
    tensors, weights_sha256 = read_state_dict(weights)  # before running any user code: a bad file costs nothing
    factory = resolve_factory(parsed)
    model = build_model(parsed, factory)
    mismatch = state_dict_mismatch(model.state_dict(), tensors)
    if mismatch:
        raise HahrobustError(f"{weights}: does not fit {parsed.text}: {mismatch}")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise HahrobustError(f"{weights}: does not fit {parsed.text} ({_first_line(exc)})") from None
    model.to(device)
    model.eval()  # not chained: a model's own train() override need not return it
    if normalize is not None:
        add_input_normalization(model, normalize)
    check_classifier(model, parsed.text, input_shape=input_shape, num_classes=num_classes)
    source_file = _source_file(factory)
    return model, ForeignSource(
        spec=parsed.text,
        weights=weights,
        sha256=weights_sha256,
        factory_file=source_file,
        factory_sha256=hashlib.sha256(source_file.read_bytes()).hexdigest() if source_file is not None else None,
        package=_distribution(factory),
        normalize=normalize.text() if normalize is not None else None,
    )


# ---------------------------------------------------------------------------------------------- factories


def resolve_factory(spec: ModelSpec) -> Callable[[], Any]:
    """Import the spec's module or execute its file, and return the factory (not yet called)."""
    if spec.module is not None:
        with _search_first(Path.cwd()):
            try:
                module = importlib.import_module(spec.module)
            except ModuleNotFoundError as exc:
                raise HahrobustError(
                    f"{spec.text}: cannot import {spec.module} ({exc}); install it, or run from the directory "
                    "that holds it"
                ) from None
            except (Exception, SystemExit) as exc:  # the user's module raised while importing: one line
                raise HahrobustError(f"{spec.text}: importing {spec.module} failed: {_describe(exc)}") from None
    else:
        module = _exec_file(spec)
    target: Any = module
    for part in spec.factory.split("."):
        if not hasattr(target, part):
            raise HahrobustError(f"{spec.text}: {spec.module or spec.file} has no attribute {spec.factory!r}")
        target = getattr(target, part)
    if not callable(target):
        raise HahrobustError(f"{spec.text}: {spec.factory} is a {type(target).__name__}, not a callable factory")
    return target


def _exec_file(spec: ModelSpec) -> Any:
    assert spec.file is not None
    path = spec.file.expanduser()
    if not path.is_file():
        raise HahrobustError(f"{spec.text}: file {path} not found")
    source = path.read_bytes()
    # A name unique to the file's content, registered in sys.modules (dataclasses and pickling look there).
    name = f"hahrobust_foreign_{path.stem}_{hashlib.sha256(source).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise HahrobustError(f"{spec.text}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    with _search_first(path.resolve().parent):
        try:
            module_spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # a script that exits on import is an error, not an exit
            del sys.modules[name]
            raise HahrobustError(f"{spec.text}: executing {path} failed: {_describe(exc)}") from None
    return module


def build_model(spec: ModelSpec, factory: Callable[[], Any]) -> nn.Module:
    """``factory()``, which must return an ``nn.Module``. The global RNG is left as it was, so a factory's
    random initialization (overwritten by the weights anyway) never shifts the draws of what follows."""
    directory = spec.file.expanduser().resolve().parent if spec.file is not None else Path.cwd()
    with _search_first(directory), torch.random.fork_rng(devices=[]):
        try:
            model = factory()
        except (Exception, SystemExit) as exc:
            raise HahrobustError(f"{spec.text}: {spec.factory}() raised {_describe(exc)}") from None
    if not isinstance(model, nn.Module):
        raise HahrobustError(f"{spec.text}: {spec.factory}() returned a {type(model).__name__}, not a torch.nn.Module")
    return model


@contextlib.contextmanager
def _search_first(directory: Path) -> Iterator[None]:
    """``directory`` first on sys.path while the user's code imports (what ``python`` does for a script or
    ``-m``); the path is restored afterwards so nothing leaks into later imports."""
    saved = list(sys.path)
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        sys.path[:] = saved


def _source_file(factory: Callable[[], Any]) -> Path | None:
    with contextlib.suppress(TypeError, OSError):
        found = inspect.getsourcefile(factory)  # type: ignore[arg-type]
        if found is not None and Path(found).is_file():
            return Path(found)
    return None


def _distribution(factory: Callable[[], Any]) -> str | None:
    """``"hahtorch 0.0.5"`` when the factory's top-level package belongs to an installed distribution."""
    top = (getattr(factory, "__module__", None) or "").split(".")[0]
    names = metadata.packages_distributions().get(top, []) if top else []
    if not names:
        return None
    with contextlib.suppress(metadata.PackageNotFoundError):
        return f"{names[0]} {metadata.version(names[0])}"
    return None


# ---------------------------------------------------------------------------------------- normalization


def add_input_normalization(model: nn.Module, normalization: Normalization) -> None:
    """Make ``model`` standardize its input: (x − mean) / std before its own forward.

    A forward pre-hook rather than a wrapper, so the model's layers keep the names its author gave them
    (``--layers`` patterns, result tables). mean and std become buffers of the model, so they move with it
    and are part of its state (an attack journal's model fingerprint tells two normalizations apart).
    """
    device = next(iter(model.state_dict().values()), torch.empty(0)).device
    shape = (1, -1, 1, 1)
    model.register_buffer("hahrobust_input_mean", torch.tensor(normalization.mean, device=device).view(shape))
    model.register_buffer("hahrobust_input_std", torch.tensor(normalization.std, device=device).view(shape))

    def standardize(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        return ((x - module.hahrobust_input_mean) / module.hahrobust_input_std, *args[1:])

    model.register_forward_pre_hook(standardize)


# ------------------------------------------------------------------------------------------------ checks


def check_classifier(
    model: nn.Module, name: str, *, input_shape: Sequence[int] = INPUT_SHAPE, num_classes: int = NUM_CLASSES
) -> None:
    """Refuse ``model`` (one-line :class:`HahrobustError` naming ``name``) unless, on a probe batch of two
    random [0, 1] images of ``input_shape`` on the model's device:

    - it is in eval mode, every submodule included (dropout off, BatchNorm statistics fixed);
    - it returns one tensor of shape [2, ``num_classes``], every logit finite;
    - the same batch gives the same logits again, and each image alone gives its logits in the batch
      (so predictions depend on nothing but the image: no randomness, no batch statistics);
    - autograd reaches the input (gradient attacks need a path, even a zero one, from logits to pixels).

    The probe draws from its own generator: the global RNG is untouched.
    """
    training = [n or type(model).__name__ for n, m in model.named_modules() if m.training]
    if training:
        raise HahrobustError(f"{name}: {training[0]} stays in training mode after .eval() (it overrides train())")
    device = next(iter(model.state_dict().values()), torch.empty(0)).device
    probe = torch.rand((2, *input_shape), generator=torch.Generator().manual_seed(0)).to(device)
    shape = "×".join(str(s) for s in input_shape)
    with torch.no_grad():
        first = _logits(model, probe, name, shape)
        expected = (2, num_classes)
        if tuple(first.shape) != expected:
            raise HahrobustError(
                f"{name}: returns shape {tuple(first.shape)} for a batch of 2 images; hahrobust needs logits "
                f"[batch, {num_classes}] (CIFAR-10's classes)"
            )
        if not torch.isfinite(first).all():
            raise HahrobustError(f"{name}: returns non-finite logits for images in [0, 1]")
        again, alone = _logits(model, probe, name, shape), _logits(model, probe[:1], name, shape)
    tolerance = 1e-5 * (1 + float(first.abs().max()))  # batched kernels may round differently
    if not torch.allclose(first, again, rtol=0, atol=tolerance):
        raise HahrobustError(
            f"{name}: two forward passes on the same images give different logits (randomized or stateful "
            "models are not supported: attacks re-check every example)"
        )
    if not torch.allclose(first[:1], alone, rtol=0, atol=tolerance):
        raise HahrobustError(
            f"{name}: an image's logits depend on the other images in its batch (batch statistics in eval "
            "mode?); results would depend on the batch size"
        )
    x = probe.clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            _logits(model, x, name, shape).sum().backward()
    except RuntimeError as exc:  # logits without a graph
        raise HahrobustError(f"{name}: gradients do not reach the input ({_first_line(exc)})") from None
    finally:
        model.zero_grad(set_to_none=True)
    if x.grad is None:
        raise HahrobustError(f"{name}: gradients do not reach the input (the forward pass detaches it)")


def _logits(model: nn.Module, x: torch.Tensor, name: str, shape: str) -> torch.Tensor:
    try:
        out = model(x)
    except Exception as exc:
        raise HahrobustError(
            f"{name}: forward on [batch, {shape}] images in [0, 1] failed: {_describe(exc)}"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise HahrobustError(f"{name}: returns a {type(out).__name__}; hahrobust needs one tensor of logits")
    return out


# ------------------------------------------------------------------------------------------------ helpers


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_first_line(exc)}"[:300]


__all__ = [
    "INPUT_SHAPE", "NUM_CLASSES", "ForeignSource", "ModelSpec", "Normalization", "add_input_normalization",
    "build_model", "check_classifier", "load_foreign", "parse_model_spec", "parse_normalization",
    "read_state_dict", "resolve_factory", "state_dict_mismatch",
]
