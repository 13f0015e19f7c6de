"""hahrobust: robustness evaluation for neuro-inspired CNNs with sparse, strong activations."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("hahrobust")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

from hahrobust.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from hahrobust.errors import HahrobustError  # noqa: E402
from hahrobust.models import build  # noqa: E402

__all__ = ["HahrobustError", "__version__", "build", "load_checkpoint", "save_checkpoint"]
