"""Data: CIFAR-10 and CIFAR-10-C, one job per module.

- :mod:`.cifar10`: the :class:`ImageSet` and CIFAR-10 loading (image folders, tar archives, torchvision roots)
  with an on-disk decode cache.
- :mod:`.batching`: class-balanced subsets, batches and batched crop/flip augmentation.
- :mod:`.corruptions`: the common corruptions of CIFAR-10-C, generated per image and seed.
- :mod:`.cifar10c`: CIFAR-10-C test sets, generated (and cached) or read from the official files.

The CIFAR-10 names are re-exported here, so ``from hahrobust.data import ImageSet, batches`` is the short form;
the CIFAR-10-C modules are imported by name (their dependencies are only needed by the corruption sweep).
"""

from hahrobust.data.batching import balanced_indices, balanced_subset, batches, num_batches, random_crop_flip
from hahrobust.data.cifar10 import (
    CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, ImageSet, Progress, Split, cache_root, load_cifar10, read_cache,
    write_cache,
)

__all__ = [
    "CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "ImageSet", "Progress", "Split", "balanced_indices",
    "balanced_subset", "batches", "cache_root", "load_cifar10", "num_batches", "random_crop_flip", "read_cache",
    "write_cache",
]
