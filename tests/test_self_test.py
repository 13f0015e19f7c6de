"""The attack self-test (binarization test, Zimmermann et al. 2022): the planted example is real, a working attack
finds it, an attack that cannot see through a zero-gradient layer does not, and the result is batch-size free."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from hahrobust.attacks.gradients import GradientPath
from hahrobust.attacks.norms import distances, tolerance
from hahrobust.attacks.pgd import PGDConfig
from hahrobust.data import ImageSet
from hahrobust.errors import HahrobustError
from hahrobust.models import build
from hahrobust.nn.surrogate import BPDA, surrogate_layers
from hahrobust.studies.self_test import (
    BinarizedModel, PenultimateFeatures, binarize, feature_extractor, fit_readout, self_test,
)

FAST = PGDConfig(steps=20, restarts=1)
EPS = {"linf": 8 / 255, "l2": 0.5}


class Round8(nn.Module):
    """Input rounded to 8-bit levels with a plain torch.round: the same forward as the identity up to 1/510, and a
    zero gradient everywhere (gradient masking)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 255) / 255


class Tiny(nn.Module):
    """A small untrained conv net with hahrobust's features / classifier split (64 features)."""

    def __init__(self, masked: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            *([Round8()] if masked else []),
            nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def labelled(model: nn.Module, n: int = 24) -> ImageSet:
    """Random uint8 images labelled with the model's own predictions (so every image is classified correctly)."""
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    with torch.no_grad():
        labels = model.eval()(images.float() / 255).argmax(1)
    return ImageSet(images, labels.long(), "random")


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_planted_example_is_within_eps_and_class_1_while_x_is_class_0(norm: str) -> None:
    model = Tiny()
    data = labelled(model)
    b = binarize(model, data, norm=norm, eps=EPS[norm], images=16, seed=3, inner=32)
    assert b.valid.sum() == 16  # a 64-feature net separates one point from 33
    clean = b.clean.float() / 255
    dist = distances(b.boundary - clean, norm)
    assert (dist <= EPS[norm]).all()  # strictly within ε, not only up to the verifier's tolerance
    assert (dist >= EPS[norm] * 0.999).all()  # and on the surface (mirroring keeps it there)
    assert b.boundary.min() >= 0 and b.boundary.max() <= 1
    with torch.no_grad():
        assert (b.model(clean[b.valid]).argmax(1) == 0).all()
        assert (b.model(b.boundary[b.valid]).argmax(1) == 1).all()
        # the readout is scaled so x's margin is ≤ −1 and the boundary point's +1
        z = b.model(b.boundary[b.valid]).diff(dim=1).squeeze(1)
    assert torch.allclose(z, torch.ones_like(z), atol=1e-3)
    assert tolerance(norm, clean[0].numel()) > 0  # (the runner would also accept a hair beyond ε)


def test_pgd_passes_on_a_smooth_model() -> None:
    model = Tiny()
    for norm in ("linf", "l2"):
        result = self_test(model, labelled(model), norm=norm, eps=EPS[norm], images=20, inner=32, config=FAST)
        assert result.n_valid == 20 and result.skipped == 0
        assert result.rate.value >= 0.95 and result.trustworthy()
        assert result.random_rate.value <= 0.1  # random surface points rarely hit class 1: the test is not trivial
        assert result.line().startswith(f"self-test {'ℓ∞ 8/255' if norm == 'linf' else 'ℓ2 0.5'}: attacks found "
                                        f"the planted example on {result.passed} of 20 images (")


def test_a_gradient_masking_model_fails_plain_pgd_and_passes_bpda() -> None:
    """Rounding the input hides every example from plain gradients: plain PGD fails the test on most images, PGD
    through a straight-through BPDA of the rounding (an attack that sees through it) passes. The self-test tells the
    two attacks apart, so it detects an attack that cannot find examples that exist."""
    model = Tiny(masked=True)
    data = labelled(model)
    plain = self_test(model, data, norm="linf", eps=8 / 255, images=20, inner=32, config=FAST)
    assert plain.n_valid == 20 and plain.rate.value <= 0.2 and not plain.trustworthy()
    adaptive = self_test(model, data, norm="linf", eps=8 / 255, images=20, inner=32, config=FAST,
                         gradient=GradientPath("bpda", surrogate="identity"), bpda_types={Round8: "identity"})
    assert adaptive.rate.value >= 0.95 and adaptive.trustworthy()
    # the same images, binarized the same way: only the attack differs
    pd.testing.assert_frame_equal(plain.table.drop(columns="passed"), adaptive.table.drop(columns="passed"))


def test_same_result_for_two_batch_sizes_and_a_custom_attack_sees_the_valid_images() -> None:
    model = Tiny()
    data = labelled(model)
    a = self_test(model, data, norm="l2", eps=0.5, images=12, seed=5, inner=16, config=FAST, batch_size=100)
    b = self_test(model, data, norm="l2", eps=0.5, images=12, seed=5, inner=16, config=FAST, batch_size=5)
    pd.testing.assert_frame_equal(a.table, b.table)
    c = self_test(model, data, norm="l2", eps=0.5, images=12, seed=6, inner=16, config=FAST)
    assert not np.array_equal(a.table["index"], c.table["index"])  # another seed, other images
    seen: list[int] = []

    def never(binarized: nn.Module, images: ImageSet) -> np.ndarray:
        seen.append(len(images))
        assert (images.labels == 0).all()
        return np.zeros(len(images), dtype=bool)

    d = self_test(model, data, norm="l2", eps=0.5, images=12, seed=5, inner=16, attack=never)
    assert seen == [d.n_valid] and d.passed == 0 and d.line().endswith("(0 % [0, 24]); 0 skipped")


def test_an_unfittable_readout_is_skipped_and_counted() -> None:
    class Constant(nn.Module):  # features that ignore the image: no readout can separate anything
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones(len(x), 4) + 0 * x.flatten(1)[:, :1]

    model = Tiny()
    result = self_test(model, labelled(model), norm="linf", eps=2 / 255, images=5, inner=8, features=Constant(),
                       attack=lambda m, s: np.ones(len(s), dtype=bool))
    assert result.n_valid == 0 and result.skipped == 5 and set(result.table["reason"]) == {"not separable"}
    assert result.line() == "self-test ℓ∞ 2/255: no valid image (5 skipped)" and not result.trustworthy()
    assert fit_readout(torch.zeros(3, 2), torch.zeros(2)) is None


def test_hah_models_keep_their_thresholds_inside_the_binarized_model() -> None:
    model = build("hah-vgg16", width=0.25).eval()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    extractor = feature_extractor(model)
    assert isinstance(extractor, PenultimateFeatures)
    with torch.no_grad():
        assert torch.equal(extractor(x), model.features(model.normalize(x)).flatten(1))
    binarized = BinarizedModel(extractor, x, torch.randn(4, extractor(x).shape[1]), torch.zeros(4))
    assert surrogate_layers(binarized) and len(surrogate_layers(binarized)) == len(surrogate_layers(model))
    with torch.no_grad():
        assert torch.equal(BPDA(binarized)(x), binarized(x))  # BPDA wraps it: same logits
    with pytest.raises(HahrobustError, match="feature extractor"):
        feature_extractor(nn.Conv2d(3, 3, 1))
