"""Capture block inputs and outputs by module name with forward hooks, and pick layers by type or name.

hahtorch's ActivationExtractor overrides ``__getattribute__`` on an nn.Module subclass and fails to
construct on torch 2.x; this one is a plain context manager that does not wrap the model at all.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from types import TracebackType

import torch
from torch import nn

from hahrobust.errors import HahrobustError


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


def select_layers(model: nn.Module, selector: str | Sequence[str], *, input_shape: Sequence[int] = (3, 32, 32)) -> list[str]:
    """Full names of the submodules of ``model`` that ``selector`` picks, in the order the forward pass calls them.

    ``selector`` is a comma-separated list (or a sequence) of tokens. A token that is the name of a module
    class in ``model``, or of one of its base classes, picks every module of that type (``Conv2d`` also picks
    subclasses such as ImplicitNormConv2d); any other token is a glob over module names (``features.*.relu``).
    The order comes from one forward pass on a zero batch of ``input_shape`` (no gradients): a picked module
    that the forward pass never calls, or calls more than once (a shared module, whose hooked tensor would be
    only the last call's), is refused with a :class:`HahrobustError`, as is a token that picks nothing.
    """
    tokens = [t.strip() for t in (selector.split(",") if isinstance(selector, str) else selector) if t.strip()]
    if not tokens:
        raise HahrobustError("empty layer selector")
    modules = [(name, module) for name, module in model.named_modules() if name]  # not the model itself
    type_names = {cls.__name__ for _, module in modules for cls in type(module).__mro__}
    picked: dict[str, nn.Module] = {}
    for token in tokens:
        if token in type_names:
            hits = [(n, m) for n, m in modules if token in {cls.__name__ for cls in type(m).__mro__}]
        else:
            hits = [(n, m) for n, m in modules if fnmatch.fnmatchcase(n, token)]
        if not hits:
            raise HahrobustError(f"layer selector {token!r} matches no module type or module name")
        picked.update(hits)
    calls: list[str] = []
    handles = [module.register_forward_hook(_recorder(name, calls)) for name, module in picked.items()]
    device = next(iter(model.state_dict().values()), torch.empty(0)).device
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for handle in handles:
            handle.remove()
    never = [name for name in picked if name not in calls]
    if never:
        raise HahrobustError(f"layer {never[0]} is never called in the forward pass; narrow the selector")
    repeated = sorted({name for name in calls if calls.count(name) > 1})
    if repeated:
        raise HahrobustError(f"layer {repeated[0]} is called {calls.count(repeated[0])} times per forward pass; "
                             "its activations are ambiguous")
    return calls


def _recorder(name: str, calls: list[str]):  # type: ignore[no-untyped-def]
    def record(_module: nn.Module, _args: tuple, _output: torch.Tensor) -> None:
        calls.append(name)

    return record
