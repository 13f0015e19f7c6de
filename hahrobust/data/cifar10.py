"""CIFAR-10 images: the :class:`ImageSet` they are held in, and loading (image folders, tar archives,
torchvision roots) with an on-disk decode cache.

Nothing is printed: the CLI owns the terminal, so progress is reported through an optional callback.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hahrobust.errors import HahrobustError

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

Split = Literal["train", "test"]
Progress = Callable[[int, int], None]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_TORCHVISION_FOLDER = "cifar-10-batches-py"
# Part of every cache key: bump it whenever decoding changes, so caches written by older code are not reused.
_CACHE_VERSION = 1
_PROGRESS_EVERY = 1000
_LAYOUT = (
    "expected train/ and test/ folders each holding the 10 CIFAR-10 class folders of .jpg/.png images "
    "(optionally inside one top-level folder), a .tar/.tar.gz of that, or a torchvision CIFAR-10 root"
)


@dataclass(frozen=True)
class ImageSet:
    """A labelled set of images: uint8 [N, 3, H, W] images and int64 [N] labels (on the CPU unless moved
    with :meth:`to`)."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str  # where the images came from, for humans (a path or 'torchvision:<root>')

    def __post_init__(self) -> None:
        # Cheap invariant checks: every consumer relies on this exact dtype/shape contract.
        images, labels = self.images, self.labels
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {images.dtype} {list(images.shape)}")
        if labels.dtype != torch.int64 or labels.shape != (len(images),):
            raise ValueError(f"labels must be int64 [{len(images)}], got {labels.dtype} {list(labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> ImageSet:
        """The same set held on ``device``, still uint8: all 50,000 CIFAR-10 training images are 150 MB, and
        :func:`~hahrobust.data.batching.batches` then indexes, augments and converts on the device with no host
        transfer per batch."""
        return ImageSet(self.images.to(device), self.labels.to(device), self.source)


# ---------------------------------------------------------------------------------------------------- loading


def load_cifar10(
    path: str | Path,
    split: Split,
    *,
    download: bool = False,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> ImageSet:
    """Load one CIFAR-10 split from an image-folder directory, a tar archive of one, or a torchvision root.

    Image folders are decoded once and cached as safetensors in ``cache_dir`` (default: ``$HAHROBUST_CACHE`` or
    ``~/.cache/hahrobust``); ``progress(done, total)`` is called while decoding. With ``download=True`` a
    missing or empty ``path`` is filled by torchvision's downloader.
    """
    if split not in ("train", "test"):
        raise HahrobustError(f"unknown split {split!r} for {path}: expected 'train' or 'test'")
    path = Path(path).expanduser()
    if path.name == _TORCHVISION_FOLDER and path.is_dir():
        path = path.parent  # a common slip: torchvision wants the folder that holds cifar-10-batches-py
    if not path.exists():
        if download:
            return _load_torchvision(path, split, download=True)
        raise HahrobustError(f"{path}: no such file or directory ({_LAYOUT})")
    if path.is_dir():
        relpaths = _walk_images(path)
        if (path / _TORCHVISION_FOLDER).is_dir() or (download and not relpaths):
            return _load_torchvision(path, split, download=download)
        entries = _split_entries(relpaths, split, path)
        fingerprint = "dir:" + _fingerprint_files(path, [rel for rel, _ in entries])
    elif path.is_file():
        entries = None  # listing a compressed archive means reading all of it: only done on a cache miss
        fingerprint = "archive:" + _sha256_file(path)
    else:
        raise HahrobustError(f"{path}: neither a directory nor a file ({_LAYOUT})")

    cache_file = _cache_file(cache_dir, fingerprint, split)
    cached = read_cache(cache_file)
    if cached is not None:
        return ImageSet(*cached, source=str(path))
    if entries is None:
        blobs = _read_archive(path)
        entries = _split_entries(blobs, split, path)
        read: Callable[[str], bytes] = blobs.__getitem__
    else:
        read = lambda rel: (path / rel).read_bytes()  # noqa: E731
    images, labels = _decode_all(entries, read, path, progress)
    write_cache(cache_file, images, labels)
    return ImageSet(images, labels, source=str(path))


def _load_torchvision(root: Path, split: Split, download: bool) -> ImageSet:
    # Imported here: torchvision is slow to import and only this path needs it.
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(str(root), train=split == "train", download=download)
    except Exception as e:  # missing/corrupt batch files (RuntimeError, pickle errors) or a failed download (OSError)
        raise HahrobustError(f"{root}: cannot load torchvision CIFAR-10 ({_one_line(e)})") from e
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.tensor(dataset.targets, dtype=torch.int64), source=f"torchvision:{root}")


def _one_line(error: BaseException) -> str:
    # Library messages can span lines (tarfile lists every method it tried); HahrobustError must be one line.
    return " ".join(str(error).split())


def _is_image(name: str) -> bool:
    return name.lower().endswith(_IMAGE_SUFFIXES)


def _walk_images(root: Path) -> list[str]:
    """Relative POSIX paths of the image files at most 4 levels down (top folder / split / class / file)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        # Deeper folders cannot be part of the layout; hidden ones (.git, .ipynb_checkpoints) never are.
        dirnames[:] = [] if len(rel_dir.parts) >= 3 else [d for d in dirnames if not d.startswith(".")]
        found += [(rel_dir / name).as_posix() for name in filenames if _is_image(name)]
    return found


def _read_archive(path: Path) -> dict[str, bytes]:
    """Bytes of every image file in a tar archive, by normalised member path, read without extracting to disk."""
    blobs = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                rel = "/".join(p for p in PurePosixPath(member.name).parts if p not in (".", "/"))
                if member.isfile() and _is_image(rel):
                    blobs[rel] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        reason = _one_line(e)
        raise HahrobustError(f"{path}: unreadable or corrupt archive, expected a .tar/.tar.gz/.tgz ({reason})") from e
    return blobs


def _split_entries(relpaths: Iterable[str], split: Split, where: Path) -> list[tuple[str, int]]:
    """(relative path, label) of one split's images, ordered by label then file name; checks the layout."""
    paths = [PurePosixPath(p) for p in relpaths]
    prefix: tuple[str, ...] = ()
    if not any(len(p.parts) == 3 and p.parts[0] == split for p in paths):
        # Allow exactly one wrapping folder (what `tar czf x.tgz cifar10/` produces).
        tops = {p.parts[0] for p in paths if len(p.parts) > 1 and not p.parts[0].startswith(".")}
        if len(tops) != 1 or not any(len(p.parts) == 4 and p.parts[1] == split for p in paths):
            raise HahrobustError(f"{where}: no {split}/<class>/ image folders found; {_LAYOUT}")
        prefix = (tops.pop(),)
    by_class = defaultdict(list)
    for p in paths:
        if len(p.parts) == len(prefix) + 3 and p.parts[: len(prefix) + 1] == (*prefix, split):
            by_class[p.parts[-2]].append(p.as_posix())
    missing = [c for c in CIFAR10_CLASSES if c not in by_class]
    unknown = sorted(set(by_class) - set(CIFAR10_CLASSES))
    if missing or unknown:
        raise HahrobustError(
            f"{where}: {'/'.join((*prefix, split))}/ must hold exactly the 10 CIFAR-10 class folders "
            f"({', '.join(CIFAR10_CLASSES)}); missing: {', '.join(missing) or 'none'}; "
            f"unknown: {', '.join(unknown) or 'none'}"
        )
    # Sorted within each class so the tensor order never depends on the file system or archive order.
    return [(rel, label) for label, name in enumerate(CIFAR10_CLASSES) for rel in sorted(by_class[name])]


def _decode(data: bytes, rel: str, where: Path) -> np.ndarray:
    """One encoded image -> uint8 [32, 32, 3] RGB (grayscale, palette and RGBA are converted)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.size == (32, 32):
                return np.asarray(image.convert("RGB"))
            width, height = image.size
    except UnidentifiedImageError as e:
        raise HahrobustError(f"{where}: cannot decode image {rel} (not a recognised image format)") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise HahrobustError(f"{where}: cannot decode image {rel} ({_one_line(e)})") from e
    raise HahrobustError(f"{where}: image {rel} is {width}x{height} pixels; CIFAR-10 images must be 32x32")


def _decode_all(
    entries: list[tuple[str, int]], read: Callable[[str], bytes], where: Path, progress: Progress | None
) -> tuple[torch.Tensor, torch.Tensor]:
    # PIL decodes a 32x32 JPEG in ~75 us, so a plain loop handles 60k images in ~5 s; the archive's gzip
    # stream (~2 s) is the other cost, and no worker pool is worth its start-up on 2 cores.
    total = len(entries)
    images = np.empty((total, 32, 32, 3), dtype=np.uint8)
    for i, (rel, _) in enumerate(entries):
        try:
            data = read(rel)
        except OSError as e:
            raise HahrobustError(f"{where}: cannot read image {rel} ({_one_line(e)})") from e
        images[i] = _decode(data, rel, where)
        if progress is not None and ((i + 1) % _PROGRESS_EVERY == 0 or i + 1 == total):
            progress(i + 1, total)
    labels = torch.tensor([label for _, label in entries], dtype=torch.int64)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels


# ------------------------------------------------------------------------------------------------------ cache


def _sha256_lines(lines: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def _fingerprint_files(root: Path, relpaths: list[str]) -> str:
    # Paths + sizes + mtimes detect edits without reading every file, which keeps cached loads fast.
    try:
        stats = [(rel, (root / rel).stat()) for rel in relpaths]
    except OSError as e:  # e.g. a dangling symlink
        raise HahrobustError(f"{root}: cannot read image files ({_one_line(e)})") from e
    return _sha256_lines(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}" for rel, st in stats)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as e:
        raise HahrobustError(f"{path}: cannot read file ({_one_line(e)})") from e
    return digest.hexdigest()


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where decoded (and corrupted) image sets are cached: ``cache_dir``, else ``$HAHROBUST_CACHE``, else
    ``~/.cache/hahrobust``."""
    if cache_dir is None:
        cache_dir = Path(os.environ.get("HAHROBUST_CACHE") or Path.home() / ".cache" / "hahrobust")
    return Path(cache_dir).expanduser()


def _cache_file(cache_dir: str | Path | None, fingerprint: str, split: Split) -> Path:
    key = _sha256_lines([f"v{_CACHE_VERSION}", fingerprint, split])[:32]
    return cache_root(cache_dir) / f"cifar10-{split}-{key}.safetensors"


def read_cache(file: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached (images, labels), or None when absent or unusable (then the caller decodes again)."""
    if not file.is_file():
        return None
    try:
        tensors = load_file(file)
        images, labels = tensors["images"], tensors["labels"]
        ImageSet(images, labels, source=str(file))  # same checks as any loaded set
    except Exception:  # truncated, corrupt or foreign file: a cache is never worth failing for
        return None
    return (images, labels) if images.shape[1:] == (3, 32, 32) else None


def write_cache(file: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    # Write to a temporary file in the same folder, then rename: os.replace is atomic, so a crash can leave
    # a stray *.tmp but never a truncated cache under the real name.
    tmp = None
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the cache holds public data and may be shared
        save_file({"images": images, "labels": labels}, tmp)
        os.replace(tmp, file)
    except (OSError, SafetensorError):  # read-only or full disk: caching is only an optimisation
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
