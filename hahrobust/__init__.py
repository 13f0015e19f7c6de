"""hahrobust: robustness evaluation for neuro-inspired CNNs with sparse, strong activations."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("hahrobust")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

from hahrobust.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from hahrobust.errors import HahrobustError  # noqa: E402
from hahrobust.models import build  # noqa: E402

__all__ = ["HahrobustError", "__version__", "build", "evaluate", "load_checkpoint", "open_models", "save_checkpoint"]


def __getattr__(name: str) -> object:
    """``hahrobust.open_models`` and ``hahrobust.evaluate``, imported on first use: they bring in the attacks and
    studies, which ``import hahrobust`` alone does not need."""
    if name == "open_models":
        from hahrobust.evaluate.opening import open_models

        return open_models
    if name == "evaluate":
        import importlib

        return importlib.import_module("hahrobust.evaluate")
    raise AttributeError(f"module 'hahrobust' has no attribute {name!r}")
