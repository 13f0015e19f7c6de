"""Sparsity, SNR and noise metrics against hand-computed values; determinism and batch-size independence."""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from hahrobust.data import CIFAR10_MEAN, CIFAR10_STD, ImageSet
from hahrobust.errors import HahrobustError
from hahrobust.metrics import (
    accuracy,
    add_noise,
    default_block_count,
    hoyer,
    measured_tensor,
    noise_accuracy,
    power_ratio,
    snr,
    sparsity,
    unit_noise,
)
from hahrobust.metrics.noise import check_sigmas
from hahrobust.metrics.snr import to_db
from hahrobust.metrics.sparsity import TENSOR_BN_INPUT, TENSOR_OUTPUT
from hahrobust.models import HahrobustModel, build

SQRT2 = math.sqrt(2)


pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest.single_thread explains why


@pytest.fixture(scope="module")
def images() -> ImageSet:
    generator = torch.Generator().manual_seed(11)
    pixels = (torch.rand(50, 3, 32, 32, generator=generator) * 255).to(torch.uint8)
    return ImageSet(pixels, torch.arange(50) % 10, "random")


@pytest.fixture(scope="module")
def hah() -> HahrobustModel:
    torch.manual_seed(0)
    return build("hah-vgg11", width=0.125).eval()


@pytest.fixture(scope="module")
def base() -> HahrobustModel:
    torch.manual_seed(1)
    return build("vgg11", width=0.125).eval()


# ---------------------------------------------------------------------------------------------------- Hoyer


@pytest.mark.parametrize(
    ("vector", "expected"),
    [
        ([0.0, 0.0, 1.0, 0.0], 0.0),  # one channel active: sparsest
        ([0.0, 5.0, 0.0, 0.0], 0.0),  # ... whatever its value
        ([2.0, 2.0, 2.0, 2.0], 1.0),  # all equal: densest
        ([1.0, 1.0, 0.0, 0.0], SQRT2 - 1),  # ‖a‖₁/‖a‖₂ = √2, √N − 1 = 1
        ([3.0, 4.0], (7 / 5 - 1) / (SQRT2 - 1)),  # ‖a‖₁ = 7, ‖a‖₂ = 5
        ([-1.0, 1.0], 1.0),  # magnitudes count
        ([0.0, 0.0, 0.0], math.nan),  # all zero: undefined
        ([4.0], math.nan),  # one channel: undefined
    ],
)
def test_hoyer_hand_computed(vector: list[float], expected: float) -> None:
    value = float(hoyer(torch.tensor(vector)[None, :, None, None], dim=1).item())
    if math.isnan(expected):
        assert math.isnan(value)
    else:
        assert value == pytest.approx(expected, abs=1e-6)


class _Fixed(nn.Module):
    """Outputs the same [4 channels, 2 × 2] activation map for every image, whatever the input."""

    def __init__(self, pattern: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("pattern", pattern)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pattern.expand(len(x), -1, -1, -1) + 0 * x.mean()


class _FixedModel(HahrobustModel):
    def __init__(self, pattern: torch.Tensor) -> None:
        super().__init__()
        self.config = None
        self.features = nn.Sequential(OrderedDict(block1=_Fixed(pattern)))
        self.classifier = nn.Linear(pattern.numel(), 10)

    def block_names(self) -> list[str]:
        return ["features.block1"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def test_sparsity_hand_computed_with_an_all_zero_location(images: ImageSet) -> None:
    # Locations (channels listed): one-hot, constant, all zero, [1, 1, 0, 0].
    by_location = torch.tensor([[0.0, 0.0, 1.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    pattern = by_location.T.reshape(4, 2, 2)
    rows = sparsity(_FixedModel(pattern), images, batch_size=7)
    row = rows.iloc[0]
    assert row["hoyer"] == pytest.approx((0 + 1 + (SQRT2 - 1)) / 3)  # the all-zero location is left out
    assert row["zero_locations"] == pytest.approx(1 / 4)
    assert row["nonzero"] == pytest.approx(7 / 16)
    assert row["tensor"] == TENSOR_OUTPUT and row["channels"] == 4 and row["block_type"] == "_Fixed"


def test_sparsity_matches_a_per_image_reference(hah: HahrobustModel, images: ImageSet) -> None:
    from hahrobust.nn import ActivationExtractor

    images = ImageSet(images.images[:12], images.labels[:12], "first 12")
    rows = sparsity(hah, images, batch_size=5)
    assert rows["block"].tolist() == [1, 2, 3, 4] and set(rows["block_type"]) == {"HaHBlock"}
    names = hah.block_names()[:4]
    values: dict[str, list[np.ndarray]] = {name: [] for name in names}
    with torch.no_grad(), ActivationExtractor(hah, names) as acts:
        for i in range(len(images)):  # one image at a time: the plainest possible reference
            hah(images.images[i : i + 1].float() / 255)
            for name in names:
                a = acts.outputs[name][0].flatten(1).numpy()  # [C, locations]
                values[name].append(a)
    for row, name in zip(rows.itertuples(), names):
        a = np.concatenate(values[name], axis=1)  # [C, all locations]
        nonzero = (a != 0).any(axis=0)
        n = a.shape[0]
        h = (np.abs(a).sum(0)[nonzero] / np.sqrt((a**2).sum(0))[nonzero] - 1) / (np.sqrt(n) - 1)
        assert row.hoyer == pytest.approx(h.mean(), rel=1e-4)
        assert row.nonzero == pytest.approx((a != 0).mean(), rel=1e-4)
        assert row.zero_locations == pytest.approx(1 - nonzero.mean(), abs=1e-4)


def test_sparsity_is_deterministic_and_batch_size_independent(base: HahrobustModel, images: ImageSet) -> None:
    a = sparsity(base, images, 3, batch_size=7)
    b = sparsity(base, images, 3, batch_size=50)
    assert a.equals(sparsity(base, images, 3, batch_size=7))
    # oneDNN may pick another convolution kernel for another batch size: equal to float32 rounding.
    assert np.allclose(a[["hoyer", "nonzero", "zero_locations"]], b[["hoyer", "nonzero", "zero_locations"]], rtol=1e-5)
    assert set(a["tensor"]) == {TENSOR_BN_INPUT}


@pytest.mark.parametrize(
    ("name", "overrides", "module", "side"),
    [
        ("vgg11", {}, "features.block1.norm", "input"),  # conv → ReLU → BatchNorm: the ReLU output
        ("hah-vgg11", {}, "features.block1", "output"),  # divisive norm + threshold
        ("hah-vgg11", {"norm": "batch"}, "features.block1", "output"),  # BatchNorm, then threshold zeros
        ("hah-vgg11", {"norm": "batch", "threshold": "none"}, "features.block1.norm", "input"),
        ("hah-vgg11", {"threshold": "none"}, "features.block1", "output"),  # divisive norm keeps zeros
    ],
)
def test_measured_tensor(name: str, overrides: dict[str, str], module: str, side: str) -> None:
    measured = measured_tensor(build(name, width=0.125, **overrides), "features.block1")
    assert (measured.module, measured.side) == (module, side)
    assert measured.description == (TENSOR_BN_INPUT if side == "input" else TENSOR_OUTPUT)


def test_batchnorm_blocks_are_measured_at_the_relu_output(base: HahrobustModel, images: ImageSet) -> None:
    """For conv → ReLU → BatchNorm the BatchNorm input is the ReLU output: non-negative, with exact zeros."""
    from hahrobust.nn import ActivationExtractor

    trained_like = copy.deepcopy(base)
    trained_like.features.block1.norm.running_mean.fill_(0.5)  # as after training: ReLU outputs have mean > 0
    with torch.no_grad(), ActivationExtractor(trained_like, ["features.block1.relu", "features.block1.norm"]) as acts:
        trained_like(images.images[:4].float() / 255)
    assert torch.equal(acts.inputs["features.block1.norm"], acts.outputs["features.block1.relu"])
    assert (acts.outputs["features.block1.norm"] != 0).all()  # BatchNorm's output is dense


def test_default_block_count(hah: HahrobustModel, base: HahrobustModel) -> None:
    assert default_block_count([hah, base]) == 4
    assert default_block_count([base, build("hah-vgg16", width=0.125)]) == 6
    assert default_block_count([base]) == 8  # no HaH block anywhere: every block


def test_sparsity_rejects_too_many_blocks(base: HahrobustModel, images: ImageSet) -> None:
    with pytest.raises(HahrobustError, match="has 8 conv blocks"):
        sparsity(base, images, 9)


# ------------------------------------------------------------------------------------------------------ SNR


@pytest.mark.parametrize(
    ("clean", "noisy", "expected"),
    [
        ([[3.0, 4.0]], [[3.0, 5.0]], 25.0),  # ‖f‖² = 25, ‖Δ‖² = 1
        ([[1.0, 1.0]], [[2.0, 2.0]], 1.0),
        ([[3.0, 4.0]], [[3.0, 4.0]], math.inf),  # no noise reached the block
        ([[0.0, 0.0]], [[0.0, 0.0]], math.inf),
        ([[0.0, 0.0]], [[0.0, 1.0]], 0.0),
    ],
)
def test_power_ratio(clean: list[list[float]], noisy: list[list[float]], expected: float) -> None:
    assert power_ratio(torch.tensor(clean), torch.tensor(noisy)).item() == expected


def test_to_db() -> None:
    assert to_db(np.array([100.0, 1.0, math.inf, 0.0])).tolist() == [20.0, 0.0, math.inf, -math.inf]


def test_snr_is_infinite_without_noise(hah: HahrobustModel, images: ImageSet) -> None:
    rows = snr(hah, images, 0.0, repeats=2, batch_size=25)
    assert len(rows) == 8 and np.isinf(rows["snr_db"]).all() and (rows["snr_db"] > 0).all()


def test_snr_block1_is_the_normalized_image_by_hand(
    hah: HahrobustModel, base: HahrobustModel, images: ImageSet
) -> None:
    """Block 1's input is the normalized image, so its SNR follows from the images and the noise alone."""
    sigma, repeats = 0.1, 2
    x = images.images.float() / 255
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    ratios = []
    for r in range(repeats):
        noisy = (x + sigma * unit_noise(torch.arange(len(x)), (3, 32, 32), seed=5, repeat=r)).clamp(0, 1)
        f, g = ((x - mean) / std).double(), ((noisy - mean) / std).double()
        ratios.append((f.square().sum((1, 2, 3)) / (g - f).square().sum((1, 2, 3))).numpy())
    expected = 10 * math.log10(np.mean(ratios))  # E of the linear ratio, then dB
    for model in (hah, base):
        rows = snr(model, images, sigma, repeats=repeats, seed=5, batch_size=20)
        assert rows.loc[0, "snr_db"] == pytest.approx(expected, rel=1e-5)
        assert np.isfinite(rows["snr_db"]).all() and rows.loc[0, "snr_db_std"] > 0


def test_snr_deterministic_and_batch_size_independent(hah: HahrobustModel, images: ImageSet) -> None:
    state = torch.get_rng_state()
    a = snr(hah, images, 0.1, repeats=2, seed=1, batch_size=7)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is never used
    assert a.equals(snr(hah, images, 0.1, repeats=2, seed=1, batch_size=7))
    b = snr(hah, images, 0.1, repeats=2, seed=1, batch_size=50)
    assert np.allclose(a["snr_db"], b["snr_db"], rtol=1e-5)  # same noise; conv kernels round differently
    c = snr(hah, images, 0.1, repeats=2, seed=2, batch_size=50)
    assert not np.allclose(a["snr_db"], c["snr_db"], rtol=1e-6)


# ---------------------------------------------------------------------------------------------------- noise


def test_unit_noise_depends_only_on_seed_repeat_and_index() -> None:
    whole = unit_noise(torch.arange(10), (3, 4, 4), seed=3, repeat=1)
    parts = torch.cat([unit_noise(torch.arange(0, 3), (3, 4, 4), seed=3, repeat=1),
                       unit_noise(torch.arange(3, 10), (3, 4, 4), seed=3, repeat=1)])
    assert torch.equal(whole, parts)
    assert torch.equal(unit_noise(torch.tensor([7, 2]), (3, 4, 4), seed=3, repeat=1), whole[[7, 2]])
    assert not torch.equal(whole, unit_noise(torch.arange(10), (3, 4, 4), seed=3, repeat=0))
    assert not torch.equal(whole, unit_noise(torch.arange(10), (3, 4, 4), seed=4, repeat=1))


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_unit_noise_has_unit_std(kind: str) -> None:
    z = unit_noise(torch.arange(200), (3, 32, 32), kind=kind)  # type: ignore[arg-type]
    assert abs(z.mean().item()) < 0.01 and z.std().item() == pytest.approx(1.0, abs=0.01)
    if kind == "uniform":
        assert z.abs().max().item() <= math.sqrt(3)


def test_add_noise_clips_and_sigma_zero_is_exact() -> None:
    x = torch.tensor([[0.0, 0.5, 1.0]])
    z = torch.tensor([[-1.0, 1.0, 1.0]])
    assert add_noise(x, z, 0.0) is x
    assert add_noise(x, z, 0.2).tolist() == [[0.0, pytest.approx(0.7), 1.0]]


@pytest.mark.parametrize(
    ("sigmas", "message"),
    [([-0.1], "≥ 0"), ([0.1, math.nan], "finite"), ([math.inf], "finite"), ([], "no noise level"),
     ([0.1, 0.1], "distinct")],
)
def test_check_sigmas_rejects(sigmas: list[float], message: str) -> None:
    with pytest.raises(HahrobustError, match=message):
        check_sigmas(sigmas)


def test_noise_sweep_sigma_zero_is_clean_accuracy(hah: HahrobustModel, images: ImageSet) -> None:
    rows = noise_accuracy(hah, images, [0.0, 0.1], repeats=2, batch_size=25)
    clean = accuracy(hah, images, batch_size=25)
    assert rows.loc[0, "accuracy"] == clean and rows.loc[0, "accuracy_std"] == 0.0
    assert rows["sigma"].tolist() == [0.0, 0.1] and set(rows["noise"]) == {"gaussian"}


def test_noise_sweep_counts_by_hand(hah: HahrobustModel, images: ImageSet) -> None:
    """Accuracy per repeat recomputed with the same per-image noise: mean and sample std over repeats."""
    sigma, x, y = 0.2, images.images.float() / 255, images.labels
    per_repeat = []
    with torch.no_grad():
        for r in range(3):
            noisy = add_noise(x, unit_noise(torch.arange(len(x)), (3, 32, 32), kind="uniform", seed=9, repeat=r), sigma)
            per_repeat.append((hah(noisy).argmax(1) == y).double().mean().item())
    rows = noise_accuracy(hah, images, [sigma], noise="uniform", repeats=3, seed=9, batch_size=50)
    assert rows.loc[0, "accuracy"] == pytest.approx(np.mean(per_repeat))
    assert rows.loc[0, "accuracy_std"] == pytest.approx(np.std(per_repeat, ddof=1))


def test_noise_sweep_batch_size_independent(hah: HahrobustModel, images: ImageSet) -> None:
    a = noise_accuracy(hah, images, [0.0, 0.05, 0.3], repeats=2, seed=4, batch_size=7)
    b = noise_accuracy(hah, images, [0.0, 0.05, 0.3], repeats=2, seed=4, batch_size=50)
    assert a.equals(b)


class AlwaysClassZero(nn.Module):
    """Predicts class 0 for every image, and counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10).float()


def test_noise_sweep_numbers_are_whole_counts_divided_once() -> None:
    """1 of 5 images right in every repeat: the accuracy is exactly 1/5 and its spread exactly 0 (averaging
    three copies of 0.2 gives 0.20000000000000004 ± 3.4e-17). σ = 0 has no randomness: one pass per batch."""
    images = ImageSet(torch.zeros(5, 3, 32, 32, dtype=torch.uint8), torch.arange(5), source="five images")
    model = AlwaysClassZero()
    rows = noise_accuracy(model, images, [0.0, 0.1], repeats=3, batch_size=5)
    assert rows["accuracy"].tolist() == [0.2, 0.2] and rows["accuracy_std"].tolist() == [0.0, 0.0]
    assert model.calls == 1 + 3  # σ = 0 once, σ = 0.1 once per repeat


def test_single_repeat_has_no_std(hah: HahrobustModel, images: ImageSet) -> None:
    rows = noise_accuracy(hah, images, [0.1], repeats=1, batch_size=50)
    assert math.isnan(rows.loc[0, "accuracy_std"])
