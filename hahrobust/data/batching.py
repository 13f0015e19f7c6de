"""Class-balanced subsets, batching, and batched random crop/flip augmentation of an :class:`ImageSet`.

Everything random here draws from an explicit ``torch.Generator`` so results never depend on the global RNG.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from hahrobust.data.cifar10 import CIFAR10_CLASSES, ImageSet
from hahrobust.distributed import SINGLE, Shard
from hahrobust.errors import HahrobustError
from hahrobust.seeding import derived_seed

_PADDING = 4  # random-crop padding (pixels per side), as in the authors' code


def balanced_subset(data: ImageSet, n: int, seed: int = 0) -> ImageSet:
    """n images, n // 10 per class plus one more for each of the lowest n % 10 class ids, chosen by `seed`.

    The result is in original-index order, so it is the same set in the same order for the same (data, n, seed).
    """
    if n == len(data):
        return data
    index = balanced_indices(data.labels, n, seed, data.source)
    return ImageSet(data.images[index], data.labels[index], source=f"{data.source} [balanced n={n} seed={seed}]")


def balanced_indices(labels: torch.Tensor, n: int, seed: int = 0, source: str = "the data set") -> torch.Tensor:
    """The sorted positions in ``labels`` of the class-balanced subset :func:`balanced_subset` takes."""
    if not 0 < n <= len(labels):
        raise HahrobustError(f"subset size n={n} must be between 1 and the dataset size len={len(labels)}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    num_classes = len(CIFAR10_CLASSES)
    for label in range(num_classes):
        want = n // num_classes + (label < n % num_classes)
        members = (labels == label).nonzero().flatten()
        if len(members) < want:
            raise HahrobustError(
                f"subset size n={n} needs {want} images of class {CIFAR10_CLASSES[label]}, "
                f"but {source} (len={len(labels)}) has only {len(members)}"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[:want]])
    return torch.cat(chosen).sort().values


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop from the zero-padded [B, C, H, W] batch and random horizontal flip (p=0.5), per image.

    Vectorised with two gathers (rows, then columns), on the images' device; randomness comes from the CPU
    `generator` only, so the same generator state gives the same output on any device.
    """
    if images.dim() != 4 or padding < 0:
        raise HahrobustError(f"random_crop_flip needs a [B, C, H, W] batch and padding >= 0, "
                             f"got shape {list(images.shape)} and padding={padding}")
    return _apply_crop_flip(images, _draw_crop_flip(len(images), generator, padding), padding)


def _draw_crop_flip(b: int, generator: torch.Generator, padding: int) -> tuple[torch.Tensor, ...]:
    """Per-image (row offset, column offset, flip) for a batch of ``b`` images, in a fixed draw order."""
    dy = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator)
    flip = torch.rand(b, 1, generator=generator) < 0.5
    return dy, dx, flip


def _apply_crop_flip(images: torch.Tensor, draws: tuple[torch.Tensor, ...], padding: int) -> torch.Tensor:
    dy, dx, flip = draws
    b, c, h, w = images.shape
    rows = dy + torch.arange(h)
    cols = dx + torch.arange(w)
    cols = torch.where(flip, cols.flip(1), cols)  # reading the crop's columns backwards flips it
    padded = F.pad(images, (padding, padding, padding, padding))
    rows, cols = rows.to(images.device), cols.to(images.device)
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    """How many batches `batches` yields for n images."""
    if batch_size <= 0:
        raise HahrobustError(f"batch size must be positive, got {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(
    data: ImageSet,
    batch_size: int,
    *,
    shuffle: bool = False,
    augment: bool = False,
    seed: int = 0,
    epoch: int = 0,
    device: torch.device | str = "cpu",
    drop_last: bool = False,
    shard: Shard | None = None,
    split_batches: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (x, y, idx): float32 images in [0, 1] and int64 labels on `device`, and the CPU int64 indices.

    Order and augmentation depend only on (seed, epoch), never on what ran before, so a run resumed at
    epoch e sees exactly the batches it would have seen without the interruption.

    With a ``shard`` of several processes (see :mod:`hahrobust.distributed`): by default this process gets
    the whole batches it owns (evaluation); with ``split_batches`` it gets its slice of every batch
    (training), augmented with the draws of the whole batch, so the union over ranks is exactly the
    single-process batch. ``data.images`` may already live on ``device`` (uint8): then nothing is copied.
    """
    count = num_batches(len(data), batch_size, drop_last)  # validates eagerly, not at the first next()
    return _iterate(
        data, batch_size, count, shuffle, augment, _epoch_generator(seed, epoch), torch.device(device),
        shard or SINGLE, split_batches,
    )


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # A hash rather than e.g. seed + epoch, so distinct (seed, epoch) pairs never share a random stream.
    return torch.Generator().manual_seed(derived_seed("batches", seed, epoch))


def _iterate(
    data: ImageSet, batch_size: int, count: int, shuffle: bool, augment: bool,
    generator: torch.Generator, device: torch.device, shard: Shard, split_batches: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(data), generator=generator) if shuffle else torch.arange(len(data))
    for number, start in enumerate(range(0, count * batch_size, batch_size)):
        idx = order[start : start + batch_size]
        # Draw for the whole batch even when only a slice (or nothing) is ours: the stream stays the same.
        draws = _draw_crop_flip(len(idx), generator, _PADDING) if augment else None
        if split_batches:
            part = shard.slice(len(idx))
            idx = idx[part]
            draws = tuple(d[part] for d in draws) if draws is not None else None
        elif not shard.owns(number):
            continue
        # Move uint8 (4x less traffic) and convert on the device, one batch at a time to bound memory.
        x = data.images[idx.to(data.images.device)].to(device)
        if draws is not None:
            x = _apply_crop_flip(x, draws, _PADDING)
        yield x.float().div_(255), data.labels[idx.to(data.labels.device)].to(device), idx
