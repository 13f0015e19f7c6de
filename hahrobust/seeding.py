"""Seeds derived from names and numbers: how every per-image random draw in hahrobust gets its own stream.

A draw's seed is the first 63 bits of ``sha256("hahrobust.<namespace>:<part>:<part>…")``, so distinct
tuples of parts never share a stream in practice, a result never depends on what was drawn before (batch
size, process count, evaluation order), and the global RNGs are left alone. The namespaces in use:
``batches`` (shuffle and augmentation per epoch), ``noise`` (additive noise per repeat and image), ``attack``
(random starts per stream and image) and ``corruption`` (common corruptions per corruption, severity and image).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import numpy as np


def derived_seed(namespace: str, *parts: object) -> int:
    """A 63-bit seed for the stream named by ``namespace`` and ``parts`` (see the module docstring)."""
    text = ":".join([f"hahrobust.{namespace}", *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


@contextlib.contextmanager
def numpy_global_seed(seed: int) -> Iterator[None]:
    """Seed NumPy's legacy global RNG for third-party code that only draws from it, and restore its state after."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)
