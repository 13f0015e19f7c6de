"""Capture block inputs and outputs by module name with forward hooks.

hahtorch's ActivationExtractor overrides ``__getattribute__`` on an nn.Module subclass and fails to
construct on torch 2.x; this one is a plain context manager that does not wrap the model at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

import torch
from torch import nn


class ActivationExtractor:
    """Record the input and output of named submodules during forward passes.

    >>> with ActivationExtractor(model, ["features.block1"]) as acts:
    ...     model(x)
    >>> acts.inputs["features.block1"].shape, acts.outputs["features.block1"].shape

    Tensors are detached (``detach=False`` keeps the graph); each forward pass overwrites them.
    Hooks are removed on exit, even if the body raises.
    """

    def __init__(self, model: nn.Module, names: Iterable[str], *, detach: bool = True) -> None:
        modules = dict(model.named_modules())
        self.names = list(names)
        missing = [name for name in self.names if name not in modules]
        if missing:
            raise KeyError(f"no submodule named {', '.join(missing)}")
        self.detach = detach
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in self.names]

    def _hook(self, name: str):
        def record(_module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            x = args[0]
            self.inputs[name] = x.detach() if self.detach else x
            self.outputs[name] = output.detach() if self.detach else output

        return record

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> "ActivationExtractor":
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.remove()
