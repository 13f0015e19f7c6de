"""Reading a model's weights without executing anything: safetensors, or a PyTorch state dict through
``torch.load(weights_only=True)``, and saying in one line why a state dict does not fit a model."""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from hahrobust.errors import HahrobustError

_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")  # a zip archive (torch.save's format) or a bare pickle


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """(tensors by name, SHA-256 of the bytes they were read from). Never executes anything: safetensors
    parses a JSON header and raw arrays; ``torch.load(weights_only=True)`` refuses any pickled object
    beyond tensors and plain containers, without constructing it."""
    if not path.is_file():
        raise HahrobustError(f"--weights {path}: file not found")
    data = path.read_bytes()  # hashed and parsed from the same bytes: the hash is of what was loaded
    if not _is_safetensors(data) and data.startswith(_TORCH_MAGIC):
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            named = re.search(r"GLOBAL ([\w.]+)", str(exc))
            what = f" ({named[1]})" if named else ""
            raise HahrobustError(
                f"{path}: refused: the pickle holds Python objects{what} beyond tensors, which "
                "torch.load(weights_only=True) will not construct; save model.state_dict() with torch.save, "
                "or a safetensors file"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise HahrobustError(f"{path}: unreadable PyTorch file ({first_line(exc)})") from None
    else:
        try:
            state = load_safetensors(data)
        except (SafetensorError, ValueError) as exc:
            raise HahrobustError(
                f"{path}: neither a safetensors file nor a PyTorch state dict ({first_line(exc)})"
            ) from None
    if not isinstance(state, Mapping) or not state:
        raise HahrobustError(f"{path}: holds a {type(state).__name__}, not a state dict (a dict of tensors)")
    others = [str(k) for k, v in state.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if others:
        raise HahrobustError(
            f"{path}: not a flat state dict: entries that are not tensors: {', '.join(others[:3])}"
            f"{' …' if len(others) > 3 else ''} (save model.state_dict() itself)"
        )
    return dict(state), hashlib.sha256(data).hexdigest()


def _is_safetensors(data: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header that starts with ``{``."""
    return len(data) > 8 and data[8:9] == b"{" and int.from_bytes(data[:8], "little") <= len(data) - 8


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str:
    """What keeps ``found`` from loading strictly into a model whose state dict is ``expected``, in one line
    ("" when nothing): missing and unexpected names, and tensors of another shape, a few of each named."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [
        f"{k} {tuple(found[k].shape)} for {tuple(expected[k].shape)}"
        for k in expected if k in found and found[k].shape != expected[k].shape
    ]
    parts = [
        f"{len(names)} {what} ({', '.join(names[:3])}{', …' if len(names) > 3 else ''})"
        for what, names in (("missing", missing), ("unexpected", unexpected), ("with another shape", reshaped))
        if names
    ]
    return "; ".join(parts)


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
