"""Helpers every attack shares: per-image random numbers, loss margins, eval mode, and global-RNG isolation."""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from hahrobust.seeding import derived_seed


def image_seed(seed: int, index: int, stream: str) -> int:
    """A 63-bit generator seed for image ``index`` (its position in the evaluated set) in a named stream."""
    return derived_seed("attack", stream, seed, index)


def per_image_uniform(indices: torch.Tensor, shape: torch.Size, *, seed: int, stream: str) -> torch.Tensor:
    """Uniform [0, 1) noise [len(indices), *shape] on the CPU, one seeded generator per image.

    So a random start depends on (seed, image, stream) only: never on the batch size, the device or the
    global RNG, which stays untouched.
    """
    out = torch.empty((len(indices), *shape), dtype=torch.float32)
    generator = torch.Generator()
    for row, index in zip(out, indices.tolist()):
        generator.manual_seed(image_seed(seed, index, stream))
        torch.rand(row.shape, generator=generator, out=row)
    return out


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Best other logit minus the true logit, per image: > 0 exactly when the image is misclassified
    (up to exact ties)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return other - true


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Switch ``model`` to eval mode (fixed BatchNorm statistics, no dropout) and restore its mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def isolated_global_rng(device: torch.device | str) -> Iterator[None]:
    """Run code that reseeds global RNGs (third-party attacks) and restore every global RNG state afterwards:
    torch's CPU generator, the CUDA generator of ``device`` (when CUDA), Python's ``random`` and NumPy's."""
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


class AttackFlag(UserWarning):
    """An attack's own sanity check failed (e.g. AutoAttack's "Square Attack has decreased the robust accuracy").
    Raised as a warning; the runner keeps each message with the batch's record, so a resumed run reports it too."""


@contextlib.contextmanager
def attack_flags() -> Iterator[list[str]]:
    """Collect (each once) the messages of the :class:`AttackFlag` warnings raised inside the block; every other
    warning passes through unchanged."""
    flags: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AttackFlag)
        try:
            yield flags
        finally:
            flags.extend(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, AttackFlag)))
    for w in caught:
        if not issubclass(w.category, AttackFlag):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
