"""CIFAR-10-C test sets for the corruption sweep, one (corruption, severity) at a time, from either source:

- :class:`GeneratedCorruptions`: the evaluated test set corrupted by :mod:`hahrobust.data.corruptions`, image
  ``i`` (its position in that set) from the seed of (seed, corruption, severity, i). Each generated set is cached
  as safetensors beside the decoded CIFAR-10 (:func:`hahrobust.data.cifar10.cache_root`), keyed by the clean
  images' content, the seed, the corruption, the severity and the versions of the generator and the libraries it
  calls, so a second run with the same seed reads it back at once. Under torchrun each rank corrupts every
  ``world_size``-th chunk of images and the chunks are gathered, so every rank holds the same set.
- :class:`OfficialCorruptions`: Hendrycks' released files, ``<corruption>.npy`` (uint8 [5·M, 32, 32, 3]: the M
  test images at severity 1, then at 2, …, 5) and ``labels.npy`` ([5·M]: the M labels five times), as
  RobustBench reads them; M = 10,000 for the real release. Files are memory-mapped, so a subset reads only its
  rows. Everything is checked when the folder is opened, before any evaluation.

Both return an :class:`~hahrobust.data.ImageSet` (uint8 [N, 3, 32, 32]) per call, so the sweep is the same.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from hahrobust import distributed
from hahrobust.data.batching import balanced_indices
from hahrobust.data.cifar10 import CIFAR10_CLASSES, ImageSet, cache_root, read_cache, write_cache
from hahrobust.data.corruptions import SEVERITIES, corrupt_images, require_generator_libraries
from hahrobust.distributed import Shard
from hahrobust.errors import HahrobustError

#: Part of every generated set's cache key: bump it whenever a corruption's code or parameters change.
GENERATOR_VERSION = 1
#: Images per generation chunk; under torchrun chunk k goes to rank k mod world_size.
CHUNK = 50
#: Distributions whose versions enter the cache key: the generated pixels depend on them.
_LIBRARIES = ("numpy", "scipy", "scikit-image", "opencv-python", "pillow", "imagecorruptions-imaug")

#: ``progress()``: called after each generated image.
Advance = Callable[[], None]


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


class GeneratedCorruptions:
    """Corrupted copies of ``clean``, generated on first use and cached (see the module docstring)."""

    def __init__(
        self, clean: ImageSet, seed: int, *, cache_dir: str | Path | None = None, shard: Shard | None = None
    ) -> None:
        require_generator_libraries()  # before any work: a missing extra is reported first
        self.clean = clean
        self.seed = seed
        self.shard = shard or distributed.current()
        self.root = cache_root(cache_dir)
        digest = hashlib.sha256()
        digest.update(clean.images.contiguous().numpy().tobytes())
        digest.update(clean.labels.numpy().tobytes())
        versions = ",".join(f"{name}={_version(name)}" for name in _LIBRARIES)
        self._key = f"v{GENERATOR_VERSION}|{digest.hexdigest()}|seed={seed}|{versions}"
        self.description = f"generated from {clean.source}, seed {seed}"

    def cache_file(self, name: str, severity: int) -> Path:
        key = hashlib.sha256(f"{self._key}|{name}|{severity}".encode()).hexdigest()[:32]
        return self.root / f"cifar10c-{name}-{severity}-{key}.safetensors"

    def cached(self, name: str, severity: int) -> bool:
        """Whether this set is in this process's cache (for planning progress bars; :meth:`__call__` decides)."""
        return self.cache_file(name, severity).is_file()

    def own_images(self) -> int:
        """How many images of one set this rank generates (for its progress bar)."""
        starts = range(0, len(self.clean), CHUNK)
        return sum(min(CHUNK, len(self.clean) - start) for k, start in enumerate(starts) if self.shard.owns(k))

    def __call__(self, name: str, severity: int, progress: Advance | None = None) -> ImageSet:
        file = self.cache_file(name, severity)
        cached = read_cache(file)
        usable = cached is not None and cached[0].shape == self.clean.images.shape
        source = f"{name} severity {severity} ({self.description})"
        # All ranks take the same branch (generating gathers from every rank), so they decide together.
        if distributed.all_sum([0 if usable else 1], self.shard)[0] == 0:
            return ImageSet(cached[0], self.clean.labels, source=source)
        images = self._generate(name, severity, progress)
        if not usable:
            write_cache(file, images, self.clean.labels)
        return ImageSet(images, self.clean.labels, source=source)

    def _generate(self, name: str, severity: int, progress: Advance | None) -> torch.Tensor:
        clean = self.clean.images.permute(0, 2, 3, 1).numpy()  # [N, 32, 32, 3], as the corruptions take them
        chunks: dict[int, np.ndarray] = {}
        for k, start in enumerate(range(0, len(clean), CHUNK)):
            if self.shard.owns(k):
                stop = min(start + CHUNK, len(clean))
                chunks[k] = corrupt_images(clean[start:stop], range(start, stop), name, severity, self.seed, progress)
        merged = distributed.gather(chunks, self.shard)
        return torch.from_numpy(np.concatenate(list(merged.values()))).permute(0, 3, 1, 2).contiguous()


class OfficialCorruptions:
    """The released CIFAR-10-C files in ``root`` for ``corruptions``; ``n`` selects a class-balanced subset of
    the M images per severity (the same images at every severity), chosen by ``seed``."""

    def __init__(self, root: str | Path, corruptions: Sequence[str], n: int | None = None, seed: int = 0) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise HahrobustError(f"--corruptions-dir {self.root}: not a directory")
        labels = self._load("labels")
        if labels.ndim != 1 or labels.shape[0] == 0 or labels.shape[0] % len(SEVERITIES) or labels.dtype.kind not in "iu":
            raise HahrobustError(
                f"{self.root / 'labels.npy'}: expected 5·M integer labels (M per severity), "
                f"got {labels.dtype} {list(labels.shape)}"
            )
        self.per_severity = labels.shape[0] // len(SEVERITIES)
        blocks = np.asarray(labels).reshape(len(SEVERITIES), self.per_severity)
        if (blocks != blocks[0]).any() or blocks.min() < 0 or blocks.max() >= len(CIFAR10_CLASSES):
            raise HahrobustError(
                f"{self.root / 'labels.npy'}: expected the same M labels in 0–9 for each of the 5 severities"
            )
        self.labels = torch.from_numpy(blocks[0].astype(np.int64))
        self.files = {name: self._load(name) for name in corruptions}
        expected = (len(SEVERITIES) * self.per_severity, 32, 32, 3)
        for name, array in self.files.items():
            if array.shape != expected or array.dtype != np.uint8:
                raise HahrobustError(
                    f"{self.root / (name + '.npy')}: expected uint8 {list(expected)} (5 severities × {self.per_severity} "
                    f"images, as labels.npy), got {array.dtype} {list(array.shape)}"
                )
        if n is not None and n > self.per_severity:
            raise HahrobustError(f"a subset of {n} images is larger than the {self.per_severity} per severity in {self.root}")
        self.index = (
            torch.arange(self.per_severity) if n is None or n == self.per_severity
            else balanced_indices(self.labels, n, seed, str(self.root))
        )
        self.description = f"official files in {self.root}" + (f", balanced n={n} seed={seed}" if n is not None else "")

    def _load(self, name: str) -> np.ndarray:
        path = self.root / f"{name}.npy"
        if not path.is_file():
            raise HahrobustError(f"--corruptions-dir {self.root}: {path.name} is missing")
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise HahrobustError(f"{path}: not a NumPy .npy array ({' '.join(str(exc).split())})") from None

    def cached(self, name: str, severity: int) -> bool:
        return True  # nothing to generate

    def own_images(self) -> int:
        return 0

    def __call__(self, name: str, severity: int, progress: Advance | None = None) -> ImageSet:
        rows = (severity - 1) * self.per_severity + self.index.numpy()
        images = torch.from_numpy(np.ascontiguousarray(self.files[name][rows])).permute(0, 3, 1, 2).contiguous()
        return ImageSet(images, self.labels[self.index].clone(), source=f"{name} severity {severity} ({self.description})")


#: What the sweep takes: either source.
CorruptionSource = GeneratedCorruptions | OfficialCorruptions
