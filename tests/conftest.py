"""Shared fixtures: tiny synthetic CIFAR-10-layout datasets and tiny checkpoints (seconds, no downloads)."""

from __future__ import annotations

import contextlib
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError
from torch import nn

from hahrobust.checkpoint import checkpoint_metadata, save_checkpoint
from hahrobust.data import CIFAR10_CLASSES, ImageSet, batches
from hahrobust.models import build, resolve_config

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"

#: Small enough for seconds on 2 cores, deep enough to have HaH blocks and regular blocks.
TINY = {"width": 0.125}


@pytest.fixture(scope="session")
def shared_cifar() -> Path:
    """The real CIFAR-10 archive in ../shared; tests that need it skip cleanly when it is absent."""
    if not SHARED_CIFAR.is_file():
        pytest.skip(f"real CIFAR-10 not available at {SHARED_CIFAR}")
    return SHARED_CIFAR


def write_image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """CIFAR-10 layout with learnable synthetic images: each class a colour plus a class-placed bright square."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for label, name in enumerate(CIFAR10_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            base = np.array([(label * 37) % 256, (label * 91) % 256, (label * 151) % 256], dtype=np.float64)
            for i in range(n):
                img = base + rng.normal(0, 40, size=(32, 32, 3))
                r, c = 4 + 2 * (label % 5), 4 + 10 * (label // 5)
                img[r : r + 8, c : c + 8] = 255
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .tar.gz in the CIFAR-10 image-folder layout: 20 train and 10 test images per class."""
    root = write_image_folder(tmp_path_factory.mktemp("tiny-cifar"), {"train": 20, "test": 10})
    archive = root.parent / "tiny-cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "train", arcname="train")
        tar.add(root / "test", arcname="test")
    return archive


def pytest_configure(config: pytest.Config) -> None:
    """Each xdist worker takes its share of the cores (2 workers on 2 cores: one thread each), and so do the
    subprocesses it starts. Without this every worker runs torch's default one thread per core: 4 OpenMP
    threads on 2 cores, where each op waits for a descheduled thread. Measured at the last stop: the suite took
    ≈ 30 min on CI's idle 2-core machine with two workers, against 12.4 min in one process."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread, restored afterwards. Attacks and small-batch evaluations run thousands of small
    ops; on a shared 2-core machine, OpenMP with 2 threads stalls at every op whenever other processes hold
    a core (measured: AutoAttack on 4 images 5 s alone, 150 s under load; 8 s with one thread). It also
    makes in-process runs use the kernels a torchrun rank (OMP_NUM_THREADS=1) uses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread_per_module() -> Iterator[None]:
    """:func:`single_thread` for a whole test module: ``pytestmark = pytest.mark.usefixtures(...)``."""
    with single_thread():
        yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep decode caches out of the user's home directory."""
    monkeypatch.setenv("HAHROBUST_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """make_checkpoint("hah-vgg11", seed=0, **overrides) -> path of an untrained tiny checkpoint."""
    folder = tmp_path_factory.mktemp("checkpoints")

    def make(name: str = "hah-vgg11", seed: int = 0, **overrides: object) -> Path:
        fields = {**TINY, **overrides}
        torch.manual_seed(seed)
        model = build(name, **fields)
        family, _ = resolve_config(name, **fields)
        path = folder / f"{name}-{seed}-{abs(hash(tuple(sorted(fields.items()))))}.safetensors"
        save_checkpoint(path, model, checkpoint_metadata(model, name, family, seed=seed))
        return path

    return make


def train_tiny_vgg11(train_set: ImageSet, epochs: int = 10, *, hah: bool = False) -> nn.Module:
    """A VGG-11 (width 0.125; ``hah=True``: hah-vgg11, its first 4 blocks HaH) trained with Adam on ``train_set``,
    seeded without touching the caller's RNG; on ``tiny_data`` it reaches well above chance in ≈ 5 s, so attacks
    have work to do. Returned in train mode."""
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = build("hah-vgg11" if hah else "vgg11", width=0.125)
    torch.random.set_rng_state(state)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(epochs):
        model.train()
        for x, y, _ in batches(train_set, 50, shuffle=True, seed=0, epoch=epoch):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


#: What safetensors raises when the disk fills up during a write.
NO_SPACE = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def fill_disk_after(monkeypatch: pytest.MonkeyPatch, module: ModuleType, files: int) -> None:
    """Let ``module``'s safetensors writer save ``files`` files, then fail as on a full disk: part of the file
    written, then safetensors' error."""
    real, calls = module.save_file, []

    def writer(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str] | None = None) -> None:
        calls.append(filename)
        if len(calls) <= files:
            return real(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(b"\0" * 1000)
        raise NO_SPACE

    monkeypatch.setattr(module, "save_file", writer)
