"""hahrobust: robustness evaluation for neuro-inspired CNNs with sparse, strong activations."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("hahrobust")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

from hahrobust.errors import HahrobustError  # noqa: E402

__all__ = ["HahrobustError", "__version__", "build", "evaluate", "load_checkpoint", "open_models", "save_checkpoint"]

#: What ``hahrobust.<name>`` imports on first use: each brings in torch (or the attacks and studies), which
#: ``import hahrobust`` alone — and so ``hahrobust --help`` and ``hahrobust check`` — does not need.
_LAZY = {
    "load_checkpoint": ("hahrobust.checkpoint", "load_checkpoint"),
    "save_checkpoint": ("hahrobust.checkpoint", "save_checkpoint"),
    "build": ("hahrobust.models", "build"),
    "open_models": ("hahrobust.evaluate.opening", "open_models"),
    "evaluate": ("hahrobust.evaluate", None),
}


def __getattr__(name: str) -> object:
    """The names of :data:`_LAZY`, imported on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'hahrobust' has no attribute {name!r}")
    import importlib

    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
