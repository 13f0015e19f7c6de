"""hahrobust.data.corruptions (the CIFAR-10-C generator) and hahrobust.data.cifar10c (generated and official
sets), in seconds.

The port was also checked once against Hendrycks' make_cifar_c.py itself (see the module docstring and the
README): deterministic corruptions bit-identical, random ones with the same mean distortion per severity.
Here: the CIFAR parameters are the ones applied, draws are per image, and the official-file reader reads
the right rows and rejects what is not the release's layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hahrobust.data import ImageSet, balanced_indices
from hahrobust.data.cifar10c import GeneratedCorruptions, OfficialCorruptions
from hahrobust.data.corruptions import (
    BENCHMARK,
    CORRUPTION_NAMES,
    FAMILIES,
    corrupt,
    corrupt_images,
    corruption_rng,
    parse_corruptions,
    parse_severities,
)
from hahrobust.errors import HahrobustError


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Eight smooth, textured 32×32 RGB images (gradients plus a disc), uint8 [8, 32, 32, 3]."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:32, 0:32]
    images = []
    for _ in range(8):
        base = rng.uniform(40, 200, size=3)
        slope = rng.uniform(-3, 3, size=(2, 3))
        image = base + rows[..., None] * slope[0] + cols[..., None] * slope[1]
        cy, cx = rng.integers(8, 24, size=2)
        image[(rows - cy) ** 2 + (cols - cx) ** 2 < 36] = rng.uniform(0, 255, size=3)
        images.append(np.clip(image, 0, 255))
    return np.stack(images).astype(np.uint8)


def test_parse_corruptions_groups_names_and_order() -> None:
    assert parse_corruptions("all") == BENCHMARK and len(BENCHMARK) == 15
    assert parse_corruptions("extra,all") == CORRUPTION_NAMES and len(CORRUPTION_NAMES) == 19
    assert parse_corruptions("fog, noise,fog") == ("gaussian_noise", "shot_noise", "impulse_noise", "fog")
    assert parse_corruptions("digital") == FAMILIES["digital"]
    with pytest.raises(HahrobustError, match="unknown corruption 'rain'"):
        parse_corruptions("noise,rain")


@pytest.mark.parametrize(("spec", "expected"), [("1-5", (1, 2, 3, 4, 5)), ("5", (5,)), ("4,1-2", (1, 2, 4))])
def test_parse_severities(spec: str, expected: tuple[int, ...]) -> None:
    assert parse_severities(spec) == expected


@pytest.mark.parametrize(("spec", "message"), [("0", "outside 1–5"), ("1-6", "outside 1–5"), ("x", "numbers or ranges"),
                                               ("4-2", "backwards"), ("", "empty")])
def test_parse_severities_rejects(spec: str, message: str) -> None:
    with pytest.raises(HahrobustError, match=message):
        parse_severities(spec)


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_every_corruption_is_per_image_deterministic(name: str, photos: np.ndarray) -> None:
    """Image i's corruption depends on (seed, corruption, severity, i) only: corrupting a slice equals the same
    rows of the whole, a second call repeats it, and the output is a changed uint8 image."""
    whole = corrupt_images(photos, range(8), name, 5, seed=1)
    assert whole.dtype == np.uint8 and whole.shape == photos.shape
    assert np.array_equal(corrupt_images(photos[5:7], [5, 6], name, 5, seed=1), whole[5:7])
    assert not np.array_equal(whole, photos)


@pytest.mark.parametrize("name", [n for n in CORRUPTION_NAMES if n not in
                                  ("defocus_blur", "gaussian_blur", "zoom_blur", "brightness", "contrast",
                                   "pixelate", "jpeg_compression", "saturate")])
def test_random_corruptions_depend_on_the_seed_and_leave_global_rngs_alone(name: str, photos: np.ndarray) -> None:
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    torch_state = torch.random.get_rng_state()
    assert not np.array_equal(corrupt_images(photos, range(8), name, 4, seed=1),
                              corrupt_images(photos, range(8), name, 4, seed=2))
    assert np.array_equal(np.random.get_state()[1], state) and torch.equal(torch.random.get_rng_state(), torch_state)


def test_gaussian_noise_uses_the_cifar_sigmas() -> None:
    """On mid-grey (no clipping) the noise std is the CIFAR σ, 0.04…0.10 (ImageNet-C's would be 0.08…0.38)."""
    grey = np.full((32, 32, 3), 128, dtype=np.uint8)
    for severity, sigma in zip(range(1, 6), (0.04, 0.06, 0.08, 0.09, 0.10)):
        noisy = [corrupt(grey, "gaussian_noise", severity, corruption_rng(0, "gaussian_noise", severity, i))
                 for i in range(20)]
        measured = (np.stack(noisy).astype(float) - 128 + 0.5).std() / 255  # +0.5: uint8 truncation's mean
        assert measured == pytest.approx(sigma, rel=0.05)


def test_contrast_uses_the_cifar_factor(photos: np.ndarray) -> None:
    """Severity 5 keeps 15 % of the deviation from the per-channel mean (ImageNet-C's would keep 5 %)."""
    x = photos[0] / 255.0
    means = x.mean(axis=(0, 1), keepdims=True)
    expected = np.uint8(np.clip((x - means) * 0.15 + means, 0, 1) * 255)
    assert np.array_equal(corrupt(photos[0], "contrast", 5, corruption_rng(0, "contrast", 5, 0)), expected)


@pytest.mark.parametrize("family", ["noise", "blur"])
def test_distortion_grows_with_severity(family: str, photos: np.ndarray) -> None:
    for name in FAMILIES[family]:
        if name == "glass_blur":  # its CIFAR parameters are not monotone in pixel change (σ 0.4 at 3 and 5)
            continue
        change = [np.abs(corrupt_images(photos, range(8), name, s, 0).astype(float) - photos).mean() for s in (1, 3, 5)]
        assert change[0] < change[1] < change[2], (name, change)


def test_generated_sets_are_cached(photos: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = ImageSet(torch.from_numpy(photos).permute(0, 3, 1, 2).contiguous(), torch.arange(8) % 10, "photos")
    first = GeneratedCorruptions(clean, seed=3, cache_dir=tmp_path)("frost", 2)
    assert len(list(tmp_path.glob("cifar10c-frost-2-*.safetensors"))) == 1

    def no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("generated again instead of reading the cache")

    monkeypatch.setattr("hahrobust.data.cifar10c.corrupt_images", no_generation)
    again = GeneratedCorruptions(clean, seed=3, cache_dir=tmp_path)("frost", 2)
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, clean.labels)
    with pytest.raises(AssertionError, match="generated again"):  # another seed is another set
        GeneratedCorruptions(clean, seed=4, cache_dir=tmp_path)("frost", 2)


# ------------------------------------------------------------------------------------------ official files


def write_official(folder: Path, names: tuple[str, ...], per_severity: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10-C's layout at a small size: <name>.npy uint8 [5·M, 32, 32, 3] and labels.npy [5·M] (uint8, as
    released). Pixel (0, 0, 0) of image i at severity s holds s, pixel (0, 0, 1) holds i."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.arange(per_severity) % 10
    images = np.random.default_rng(0).integers(0, 256, size=(5 * per_severity, 32, 32, 3), dtype=np.uint8)
    for s in range(5):
        images[s * per_severity : (s + 1) * per_severity, 0, 0, 0] = s + 1
        images[s * per_severity : (s + 1) * per_severity, 0, 0, 1] = np.arange(per_severity)
    for name in names:
        np.save(folder / f"{name}.npy", images)
    np.save(folder / "labels.npy", np.tile(labels, 5).astype(np.uint8))
    return images, labels


def test_official_reader_takes_each_severitys_rows(tmp_path: Path) -> None:
    write_official(tmp_path, ("fog", "snow"))
    full = OfficialCorruptions(tmp_path, ("fog", "snow"))
    three = full("snow", 3)
    assert three.images.shape == (20, 3, 32, 32) and three.images.dtype == torch.uint8
    assert (three.images[:, 0, 0, 0] == 3).all() and torch.equal(three.images[:, 1, 0, 0], torch.arange(20, dtype=torch.uint8))
    assert torch.equal(three.labels, torch.arange(20) % 10)
    subset = OfficialCorruptions(tmp_path, ("fog",), n=10, seed=2)
    chosen = balanced_indices(torch.arange(20) % 10, 10, 2)
    for severity in (1, 5):  # the same images at every severity
        part = subset("fog", severity)
        assert torch.equal(part.images[:, 1, 0, 0].long(), chosen) and (part.images[:, 0, 0, 0] == severity).all()
        assert torch.equal(part.labels, chosen % 10)


def _truncate(folder: Path) -> None:
    np.save(folder / "fog.npy", np.load(folder / "fog.npy")[:-5])


def _float_images(folder: Path) -> None:
    np.save(folder / "fog.npy", np.load(folder / "fog.npy").astype(np.float32))


def _labels_disagree(folder: Path) -> None:
    labels = np.load(folder / "labels.npy")
    labels[-1] = (labels[-1] + 1) % 10
    np.save(folder / "labels.npy", labels)


def _not_npy(folder: Path) -> None:
    (folder / "fog.npy").write_bytes(b"not an array")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda folder: (folder / "fog.npy").unlink(), "fog.npy is missing"),
        (lambda folder: (folder / "labels.npy").unlink(), "labels.npy is missing"),
        (_truncate, "expected uint8 [100, 32, 32, 3]"),
        (_float_images, "expected uint8 [100, 32, 32, 3] (5 severities × 20 images, as labels.npy), got float32"),
        (_labels_disagree, "the same M labels"),
        (_not_npy, "not a NumPy .npy array"),
    ],
    ids=["missing-file", "missing-labels", "wrong-shape", "wrong-dtype", "labels", "not-npy"],
)
def test_official_reader_rejects_a_wrong_layout(damage: object, message: str, tmp_path: Path) -> None:
    write_official(tmp_path, ("fog",))
    damage(tmp_path)  # type: ignore[operator]
    with pytest.raises(HahrobustError, match=None) as error:
        OfficialCorruptions(tmp_path, ("fog",))
    assert message in str(error.value) and "\n" not in str(error.value)
