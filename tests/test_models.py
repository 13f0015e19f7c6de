"""Model registry, VGG family layout, ablation switches and the HaH loss plumbing."""

from __future__ import annotations

import pytest
import torch

from hahrobust.errors import HahrobustError
from hahrobust.models import PAPER_ALPHA, ModelName, build, model_names
from hahrobust.models.vgg import ConvBlock
from hahrobust.nn import DivisiveNorm2d, FractionalThreshold, HaHBlock, MeanThreshold


@pytest.mark.parametrize(
    ("name", "n_blocks", "n_hah"),
    [("vgg11", 8, 0), ("vgg13", 10, 0), ("vgg16", 13, 0), ("vgg19", 16, 0),
     ("hah-vgg11", 8, 4), ("hah-vgg13", 10, 6), ("hah-vgg16", 13, 6), ("hah-vgg19", 16, 6)],
)
def test_registry_layouts(name: str, n_blocks: int, n_hah: int) -> None:
    model = build(name, width=0.0625)
    assert len(model.block_names()) == n_blocks
    assert len(model.hah_block_names()) == n_hah
    assert model.hah_block_names() == model.block_names()[:n_hah]
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_every_registered_name_builds() -> None:
    assert set(model_names()) == {m.value for m in ModelName}
    for name in model_names():
        build(name, width=0.0625)


def test_width_and_classes() -> None:
    model = build("vgg16", width=0.25, num_classes=7)
    modules = dict(model.named_modules())
    assert modules["features.block1"].conv.out_channels == 16
    assert modules["features.block13"].conv.out_channels == 128
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 7)


def test_hah_blocks_override_and_block_types() -> None:
    model = build("vgg16", hah_blocks=2, width=0.0625)
    modules = dict(model.named_modules())
    assert isinstance(modules["features.block2"], HaHBlock)
    assert isinstance(modules["features.block3"], ConvBlock)


@pytest.mark.parametrize(
    ("overrides", "norm_type", "threshold_type"),
    [({}, DivisiveNorm2d, FractionalThreshold), ({"norm": "batch"}, torch.nn.BatchNorm2d, FractionalThreshold),
     ({"threshold": "none"}, DivisiveNorm2d, torch.nn.Identity), ({"threshold": "mean"}, DivisiveNorm2d, MeanThreshold)],
)
def test_ablation_switches_are_config_fields(overrides: dict, norm_type: type, threshold_type: type) -> None:
    block = dict(build("hah-vgg16", width=0.0625, **overrides).named_modules())["features.block1"]
    assert isinstance(block.norm, norm_type)
    assert isinstance(block.threshold, threshold_type)


def test_loss_weights_follow_alpha_and_the_no_hah_loss_switch() -> None:
    assert build("hah-vgg16", width=0.0625).loss_weights() == list(PAPER_ALPHA)
    assert build("hah-vgg16", width=0.0625, hah_loss=False).loss_weights() == [0.0] * 6
    assert build("hah-vgg19", width=0.0625, hah_blocks=8).loss_weights()[-2:] == [PAPER_ALPHA[-1]] * 2


def test_hah_objective_is_the_weighted_sum_of_block_costs() -> None:
    torch.manual_seed(0)
    model = build("hah-vgg11", width=0.125)
    model.record_hah_costs(True)
    model(torch.rand(2, 3, 32, 32))
    blocks = [dict(model.named_modules())[n] for n in model.hah_block_names()]
    expected = sum(a * b.cost for a, b in zip(model.loss_weights(), blocks))
    assert torch.allclose(model.hah_objective(), expected)
    model.record_hah_costs(False)
    model(torch.rand(2, 3, 32, 32))
    assert model.hah_objective() is None


def test_input_normalization_is_inside_the_model() -> None:
    model = build("vgg11", width=0.0625)
    x = torch.rand(1, 3, 32, 32)
    expected = (x - torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2470, 0.2435, 0.2616]
    ).view(1, 3, 1, 1)
    assert torch.allclose(model.normalize(x), expected)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [("resnet", {}, "unknown model"), ("vgg16", {"depth": 3}, "unknown vgg model setting"),
     ("vgg16", {"hah_blocks": 14}, "hah_blocks"), ("vgg16", {"width": 0}, "width")],
)
def test_bad_model_requests(name: str, overrides: dict, message: str) -> None:
    with pytest.raises(HahrobustError, match=message):
        build(name, **overrides)
