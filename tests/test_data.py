"""Tests for hahrobust.data on tiny synthetic image folders (PNG, so pixels are exact) plus one real-data check."""

from __future__ import annotations

import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from hahrobust.data import cifar10
from hahrobust.data import (
    CIFAR10_CLASSES,
    ImageSet,
    balanced_subset,
    batches,
    load_cifar10,
    num_batches,
    random_crop_flip,
)
from hahrobust.errors import HahrobustError

PER_CLASS = {"train": 3, "test": 2}
REAL_ARCHIVE = Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def _private_default_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests that pass no cache_dir must never touch the user's ~/.cache.
    monkeypatch.setenv("HAHROBUST_CACHE", str(tmp_path / "default-cache"))


def write_split(root: Path, split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Write random 32x32 PNGs as root/split/<class>/NNNN.png; return the tensors a loader must produce."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, name in enumerate(CIFAR10_CLASSES):
        folder = root / split / name
        folder.mkdir(parents=True)
        count = PER_CLASS[split]
        pixels = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        # Written in shuffled name order, so the test also checks that files are sorted by name.
        names = [f"{k:04d}.png" for k in rng.permutation(count)]
        for pixel, file_name in zip(pixels, names):
            Image.fromarray(pixel).save(folder / file_name)
        images.append(torch.from_numpy(pixels[np.argsort(names)]).permute(0, 3, 1, 2))
        labels += [label] * count
    return torch.cat(images), torch.tensor(labels)


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    root = tmp_path / "cifar"
    expected = {split: write_split(root, split, seed) for seed, split in enumerate(PER_CLASS)}
    return root, expected


def make_tar(root: Path, out: Path, top: str = "") -> Path:
    with tarfile.open(out, "w:gz" if out.name.endswith("gz") else "w") as tar:
        for split in PER_CLASS:
            tar.add(root / split, arcname=f"{top}{split}")
    return out


def assert_same(loaded: ImageSet, expected: tuple[torch.Tensor, torch.Tensor]) -> None:
    assert loaded.images.dtype == torch.uint8 and loaded.images.is_contiguous()
    assert torch.equal(loaded.images, expected[0])
    assert torch.equal(loaded.labels, expected[1])


# ------------------------------------------------------------------------------------------------- loading


def test_directory_loads_exact_pixels_in_class_order(folder, tmp_path):
    root, expected = folder
    for split, count in PER_CLASS.items():
        loaded = load_cifar10(root, split, cache_dir=tmp_path / "cache")
        assert len(loaded) == 10 * count and loaded.source == str(root)
        assert torch.equal(loaded.labels, torch.arange(10).repeat_interleave(count))
        assert_same(loaded, expected[split])


@pytest.mark.parametrize(
    "layout", ["dir-nested", "tar.gz", "tgz-nested", "tar", "tar-dot-prefix"],
)
def test_archives_and_nested_folders_match_directory(folder, tmp_path, layout):
    root, expected = folder
    if layout == "dir-nested":
        path = tmp_path / "outer"
        path.mkdir()
        root.rename(path / "cifar")
    else:
        name = {"tar.gz": "c.tar.gz", "tgz-nested": "c.tgz", "tar": "c.tar", "tar-dot-prefix": "c.tar"}[layout]
        top = {"tgz-nested": "cifar10/", "tar-dot-prefix": "./"}.get(layout, "")
        path = make_tar(root, tmp_path / name, top)
    for split in PER_CLASS:
        assert_same(load_cifar10(path, split, cache_dir=tmp_path / "cache"), expected[split])


def test_grayscale_and_rgba_become_rgb(folder, tmp_path):
    root, _ = folder
    rng = np.random.default_rng(7)
    gray = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    rgba = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    # "0000.png"/"0001.png" are airplane's first two files in sorted order, i.e. images 0 and 1.
    Image.fromarray(gray, "L").save(root / "test/airplane/0000.png")
    Image.fromarray(rgba, "RGBA").save(root / "test/airplane/0001.png")
    images = load_cifar10(root, "test", cache_dir=tmp_path / "cache").images
    assert torch.equal(images[0], torch.from_numpy(gray).expand(3, 32, 32))
    assert torch.equal(images[1], torch.from_numpy(rgba[..., :3]).permute(2, 0, 1))


def test_progress_callback_and_silence(folder, tmp_path, capsys):
    root, _ = folder
    calls = []
    load_cifar10(root, "train", cache_dir=tmp_path / "cache", progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (30, 30)
    assert capsys.readouterr() == ("", "")


# --------------------------------------------------------------------------------------------------- cache


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args):
        raise AssertionError("decoded although a valid cache exists")

    monkeypatch.setattr(cifar10, "_decode", fail)


@pytest.mark.parametrize("kind", ["dir", "archive"])
def test_cache_is_written_and_reused(folder, tmp_path, monkeypatch, kind):
    root, expected = folder
    path = root if kind == "dir" else make_tar(root, tmp_path / "c.tar.gz")
    cache = tmp_path / "cache"
    load_cifar10(path, "test", cache_dir=cache)
    assert [f.suffix for f in cache.iterdir()] == [".safetensors"]  # and no leftover temporary file
    forbid_decoding(monkeypatch)
    assert_same(load_cifar10(path, "test", cache_dir=cache), expected["test"])


def test_default_cache_dir_comes_from_environment(folder, tmp_path):
    root, _ = folder
    load_cifar10(root, "test")
    assert len(list((tmp_path / "default-cache").glob("*.safetensors"))) == 1


def test_changed_directory_invalidates_cache(folder, tmp_path):
    root, expected = folder
    cache = tmp_path / "cache"
    load_cifar10(root, "test", cache_dir=cache)
    new = np.full((32, 32, 3), 9, dtype=np.uint8)
    Image.fromarray(new).save(root / "test/truck/0000.png")
    loaded = load_cifar10(root, "test", cache_dir=cache)
    assert torch.equal(loaded.images[-2], torch.from_numpy(new).permute(2, 0, 1))
    assert torch.equal(loaded.images[:-2], expected["test"][0][:-2])


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong-tensors"])
def test_corrupt_cache_is_rebuilt(folder, tmp_path, damage):
    root, expected = folder
    cache = tmp_path / "cache"
    load_cifar10(root, "test", cache_dir=cache)
    (cache_file,) = cache.iterdir()
    if damage == "garbage":
        cache_file.write_bytes(b"not a safetensors file")
    elif damage == "truncated":
        cache_file.write_bytes(cache_file.read_bytes()[:1000])
    else:
        save_file({"images": torch.zeros(2, 3, 32, 32), "labels": torch.zeros(2)}, cache_file)
    assert_same(load_cifar10(root, "test", cache_dir=cache), expected["test"])
    assert torch.equal(load_file(cache_file)["images"], expected["test"][0])


def test_unwritable_cache_dir_is_skipped(folder, tmp_path):
    root, expected = folder
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a cache dir below a regular file can never be created, even by root
    assert_same(load_cifar10(root, "test", cache_dir=blocker / "cache"), expected["test"])


# -------------------------------------------------------------------------------------------------- errors


def _break(case: str, root: Path, tmp_path: Path) -> Path:
    """Damage the synthetic dataset in one way; return the path to load."""
    if case == "missing-path":
        return tmp_path / "does-not-exist"
    if case == "empty-dir":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty"
    if case == "wrong-classes":
        (root / "test/cat").rename(root / "test/kitten")
    elif case == "no-split-folder":
        for f in (root / "test").rglob("*.png"):
            f.unlink()
    elif case == "two-top-folders":
        (tmp_path / "outer/a").mkdir(parents=True)
        root.rename(tmp_path / "outer/b")
        (tmp_path / "outer/b/test").rename(tmp_path / "outer/a/test")
        return tmp_path / "outer"
    elif case in ("not-an-archive", "truncated-archive"):
        archive = make_tar(root, tmp_path / "c.tar.gz")
        raw = archive.read_bytes()
        archive.write_bytes(b"\x00junk" * 100 if case == "not-an-archive" else raw[: len(raw) // 2])
        return archive
    elif case in ("bad-image", "bad-image-in-archive"):
        (root / "test/cat/0001.png").write_bytes(b"not an image")
        if case == "bad-image-in-archive":
            return make_tar(root, tmp_path / "c.tar.gz")
    elif case == "truncated-image":
        png = root / "test/cat/0001.png"
        png.write_bytes(png.read_bytes()[:200])
    elif case == "wrong-size":
        Image.new("RGB", (64, 64)).save(root / "test/cat/0001.png")
    elif case == "empty-torchvision-root":
        (root / "cifar-10-batches-py").mkdir()
    return root


@pytest.mark.parametrize(
    ("case", "mentions"),
    [
        ("missing-path", "no such file"),
        ("empty-dir", "train/ and test/"),
        ("wrong-classes", "missing: cat; unknown: kitten"),
        ("no-split-folder", "test/<class>/"),
        ("two-top-folders", "train/ and test/"),
        ("not-an-archive", "archive"),
        ("truncated-archive", "archive"),
        ("bad-image", "test/cat/0001.png"),
        ("bad-image-in-archive", "test/cat/0001.png"),
        ("truncated-image", "test/cat/0001.png"),
        ("wrong-size", "64x64"),
        ("empty-torchvision-root", "torchvision"),
    ],
)
def test_errors_are_one_line_and_name_the_path(folder, tmp_path, case, mentions):
    root, _ = folder
    path = _break(case, root, tmp_path)
    with pytest.raises(HahrobustError) as info:
        load_cifar10(path, "test", cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert str(path) in message and mentions in message and "\n" not in message


def test_unknown_split_is_rejected(folder):
    with pytest.raises(HahrobustError, match="'val'"):
        load_cifar10(folder[0], "val")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- torchvision


class FakeCIFAR10:
    """Stands in for torchvision.datasets.CIFAR10 so no test downloads or needs the 170 MB pickles."""

    calls: list[tuple[str, bool, bool]] = []

    def __init__(self, root: str, train: bool, download: bool) -> None:
        FakeCIFAR10.calls.append((root, train, download))
        self.data = np.arange(2 * 32 * 32 * 3, dtype=np.uint8).reshape(2, 32, 32, 3)
        self.targets = [3, 7]


@pytest.mark.parametrize(("make_root", "download"), [(True, False), (False, True)])
def test_torchvision_root(tmp_path, monkeypatch, make_root, download):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    FakeCIFAR10.calls.clear()
    root = tmp_path / "tv"
    if make_root:
        (root / "cifar-10-batches-py").mkdir(parents=True)
    loaded = load_cifar10(root, "train", download=download)
    assert FakeCIFAR10.calls == [(str(root), True, download)]
    assert loaded.source == f"torchvision:{root}" and loaded.labels.tolist() == [3, 7]
    assert torch.equal(loaded.images, torch.from_numpy(FakeCIFAR10(str(root), True, False).data).permute(0, 3, 1, 2))
    assert loaded.images.is_contiguous()
    if make_root:  # passing the inner folder by mistake loads its parent
        load_cifar10(root / "cifar-10-batches-py", "test")
        assert FakeCIFAR10.calls[-1] == (str(root), False, False)


# ------------------------------------------------------------------------------------------------- subsets


def indexed_set(per_class: int = 20) -> ImageSet:
    """A set whose image i is filled with the value i, so subsets reveal which indices they took."""
    n = 10 * per_class
    labels = (torch.arange(n) % 10)[torch.randperm(n, generator=torch.Generator().manual_seed(5))]
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 3, 32, 32).contiguous()
    return ImageSet(images, labels, source="synthetic")


def taken(subset: ImageSet) -> torch.Tensor:
    return subset.images[:, 0, 0, 0].long()


def test_balanced_subset_counts_order_and_content():
    full = indexed_set()
    rng_state = torch.get_rng_state()
    subset = balanced_subset(full, 25, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_state)  # the global RNG is never touched
    index = taken(subset)
    assert torch.bincount(subset.labels, minlength=10).tolist() == [3] * 5 + [2] * 5
    assert torch.all(index[1:] > index[:-1])  # sorted by original index, no duplicates
    assert torch.equal(subset.labels, full.labels[index])


def test_balanced_subset_is_deterministic_per_seed():
    full = indexed_set()
    assert torch.equal(taken(balanced_subset(full, 30, seed=1)), taken(balanced_subset(full, 30, seed=1)))
    assert not torch.equal(taken(balanced_subset(full, 30, seed=1)), taken(balanced_subset(full, 30, seed=2)))
    assert torch.equal(taken(balanced_subset(full, 200)), torch.arange(200))


@pytest.mark.parametrize("n", [0, -1, 201])
def test_balanced_subset_rejects_bad_n(n):
    with pytest.raises(HahrobustError, match=f"n={n}.*len=200"):
        balanced_subset(indexed_set(), n)


def test_balanced_subset_rejects_too_small_class():
    full = indexed_set()
    lopsided = ImageSet(full.images, torch.where(full.labels == 0, 1, full.labels), source="lopsided")
    with pytest.raises(HahrobustError, match="airplane"):
        balanced_subset(lopsided, 20)


# ---------------------------------------------------------------------------------------------- augmentation


def random_batch(b: int = 32, dtype: torch.dtype = torch.uint8, h: int = 32, w: int = 32) -> torch.Tensor:
    x = torch.randint(1, 256, (b, 3, h, w), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_crop_flip_shape_dtype_and_determinism(dtype):
    x = random_batch(dtype=dtype, h=24, w=28)
    out = random_crop_flip(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.equal(out, random_crop_flip(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(out, random_crop_flip(x, torch.Generator().manual_seed(2)))
    assert torch.equal(x, random_batch(dtype=dtype, h=24, w=28))  # input untouched


def test_flip_really_flips():
    x = random_batch(64)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), padding=0)
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert torch.all(same ^ flipped) and same.any() and flipped.any()


def test_crop_is_a_window_of_the_padded_image():
    x, pad = random_batch(16), 4
    out = random_crop_flip(x, torch.Generator().manual_seed(0), padding=pad)
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    found = set()
    for i in range(len(x)):
        matches = [
            (dy, dx, flip)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            for flip in (False, True)
            if torch.equal(out[i], (lambda c: c.flip(-1) if flip else c)(padded[i, :, dy : dy + 32, dx : dx + 32]))
        ]
        assert len(matches) == 1
        found.add(matches[0])
    assert len(found) > 8  # offsets really vary between images


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_crop_flip_same_on_gpu():
    x = random_batch()
    cpu = random_crop_flip(x, torch.Generator().manual_seed(4))
    gpu = random_crop_flip(x.cuda(), torch.Generator().manual_seed(4))
    assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)


# --------------------------------------------------------------------------------------------------- batches


def epoch_indices(data_set: ImageSet, **kwargs) -> list[int]:
    return torch.cat([idx for _, _, idx in batches(data_set, 5, **kwargs)]).tolist()


def test_batches_cover_every_index_once():
    odd = balanced_subset(indexed_set(), 23)
    got = list(batches(odd, 5, shuffle=True, augment=True))
    assert len(got) == num_batches(23, 5, False) == 5
    assert [len(idx) for _, _, idx in got] == [5, 5, 5, 5, 3]
    assert sorted(torch.cat([idx for _, _, idx in got]).tolist()) == list(range(23))
    kept = torch.cat([idx for _, _, idx in batches(odd, 5, shuffle=True, drop_last=True)])
    assert len(kept) == 20 == len(set(kept.tolist())) == 5 * num_batches(23, 5, True)


def test_batch_contents():
    full = indexed_set()
    for x, y, idx in batches(full, 64, shuffle=True):
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and idx.dtype == torch.int64
        assert torch.equal(x, full.images[idx].float() / 255)
        assert torch.equal(y, full.labels[idx])
    for x, _, _ in batches(full, 64, augment=True):
        assert 0 <= x.min() and x.max() <= 1


def test_batch_order_depends_on_seed_and_epoch_only():
    full = indexed_set()
    base = epoch_indices(full, shuffle=True, seed=0, epoch=0)
    assert base == epoch_indices(full, shuffle=True, seed=0, epoch=0)
    assert base != epoch_indices(full, shuffle=True, seed=0, epoch=1)
    assert base != epoch_indices(full, shuffle=True, seed=1, epoch=0)
    assert epoch_indices(full, seed=3, epoch=2) == list(range(200))  # no shuffle: data order


def test_batches_reproducible_with_augmentation():
    full = balanced_subset(indexed_set(), 50)
    def run(epoch):
        return [torch.cat(t) for t in zip(*batches(full, 8, shuffle=True, augment=True, seed=9, epoch=epoch))]
    first = run(1)
    run(0)  # an earlier epoch having run must not change epoch 1 (exact resume)
    assert all(torch.equal(a, b) for a, b in zip(first, run(1)))
    assert not torch.equal(first[0], run(2)[0])


def test_bad_batch_size_fails_eagerly():
    with pytest.raises(HahrobustError, match="batch size"):
        batches(indexed_set(), 0)
    assert (num_batches(10, 3, False), num_batches(10, 3, True), num_batches(0, 3, False)) == (4, 3, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_on_gpu():
    x, y, idx = next(batches(indexed_set(), 16, augment=True, device="cuda"))
    assert x.is_cuda and y.is_cuda and not idx.is_cuda


# ------------------------------------------------------------------------------------------------- real data


def test_real_cifar10_test_split(tmp_path):
    if not REAL_ARCHIVE.is_file():
        pytest.skip(f"real data not found at {REAL_ARCHIVE}")
    loaded = load_cifar10(REAL_ARCHIVE, "test", cache_dir=tmp_path)
    assert loaded.images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(loaded.labels).tolist() == [1000] * 10
    # Measured on this JPEG export's test split (0.49407/0.48506/0.45038).
    means = (loaded.images.float() / 255).mean(dim=(0, 2, 3))
    assert torch.allclose(means, torch.tensor([0.4941, 0.4851, 0.4504]), atol=0.01)
    start = time.perf_counter()
    cached = load_cifar10(REAL_ARCHIVE, "test", cache_dir=tmp_path)
    assert time.perf_counter() - start < 2
    assert torch.equal(cached.images, loaded.images)
