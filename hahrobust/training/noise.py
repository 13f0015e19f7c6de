"""Gaussian data augmentation (Cohen, Rosenfeld & Kolter, ICML 2019, Sec. 4): the base classifiers they certify
are trained on images with N(0, σ²I) noise added, at the σ they are certified at. Without it a smoothed
classifier's base model sees noise it never learned (``docs/results/certify.md``: both clean-trained small models
near 20 % at r = 0.25).

The noise is in [0, 1]-pixel units before the model's own normalization and is not clipped, exactly as
:mod:`hahrobust.metrics.smoothing` adds it when certifying. Each image's noise in epoch e comes from one generator
seeded by (seed, e, image index): never from the batch it is in, the device or the process count.
"""

from __future__ import annotations

import torch

from hahrobust.seeding import derived_seed


def noisy_batch(x: torch.Tensor, indices: torch.Tensor, sigma: float, *, seed: int, epoch: int) -> torch.Tensor:
    """``x`` plus N(0, σ²) noise drawn per image from (seed, epoch, index) on the CPU."""
    noise = torch.empty(x.shape, dtype=torch.float32)
    generator = torch.Generator()
    for row, index in zip(noise, indices.tolist()):
        generator.manual_seed(derived_seed("noise-training", seed, epoch, index))
        torch.randn(row.shape, generator=generator, out=row)
    return x + sigma * noise.to(device=x.device, dtype=x.dtype)
