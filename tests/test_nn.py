"""HaH building blocks against hand-computed values, scale invariance and layer-local gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hahrobust.nn import (
    ActivationExtractor,
    DivisiveNorm2d,
    FractionalThreshold,
    HaHBlock,
    ImplicitNormConv2d,
    MeanThreshold,
    hah_cost,
    kept_count,
    local_conv2d,
)


def test_implicit_norm_conv_divides_by_filter_norm() -> None:
    conv = ImplicitNormConv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([3.0, 4.0]).view(2, 1, 1, 1))  # norms 3 and 4
    x = torch.full((1, 1, 2, 2), 5.0)
    out = conv(x)
    assert torch.allclose(out[0, 0], torch.full((2, 2), 15.0 / (3.0 + 1e-6)))
    assert torch.allclose(out[0, 1], torch.full((2, 2), 20.0 / (4.0 + 1e-6)))


def test_implicit_norm_conv_ignores_weight_scale() -> None:
    torch.manual_seed(0)
    conv = ImplicitNormConv2d(3, 4, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 5, 5)
    before = conv(x)
    with torch.no_grad():
        conv.weight.mul_(7.0)
    assert torch.allclose(conv(x), before, atol=1e-5)


@pytest.mark.parametrize(
    ("pool", "expected_denominator"),
    [
        # y channel means per location: [[1, 2], [3, 4]] → M_max 4; σ=0.5 → 0.5·4 + 0.5·M
        (1, torch.tensor([[2.5, 3.0], [3.5, 4.0]])),
        # 3×3 max-pool of |y| covers the whole 2×2 map: field = per-channel max → channel means all equal
        (3, None),
    ],
)
def test_divisive_norm_hand_computed(pool: int, expected_denominator: torch.Tensor | None) -> None:
    y = torch.stack([torch.tensor([[0.0, 1.0], [2.0, 3.0]]), torch.tensor([[2.0, 3.0], [4.0, 5.0]])]).unsqueeze(0)
    z = DivisiveNorm2d(sigma=0.5, pool=pool, eps=0.0)(y)
    if expected_denominator is None:
        # pooled field: channel 0 → 3 everywhere, channel 1 → 5: mean 4 everywhere, M_max 4 → divide by 4
        expected_denominator = torch.full((2, 2), 4.0)
    assert torch.allclose(z, y / expected_denominator)


@pytest.mark.parametrize("pool", [1, 3])
def test_divisive_norm_is_scale_invariant(pool: int) -> None:
    torch.manual_seed(1)
    y = torch.rand(2, 8, 6, 6)
    dn = DivisiveNorm2d(sigma=0.1, pool=pool)
    assert torch.allclose(dn(y), dn(123.0 * y), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("keep", "locations", "expected"),
    [(0.2, 1024, 205), (0.2, 16, 4), (0.25, 16, 4), (0.2, 1, 1), (1.0, 9, 9), (0.01, 4, 1)],
)
def test_kept_count(keep: float, locations: int, expected: int) -> None:
    assert kept_count(keep, locations) == expected


def test_fractional_threshold_keeps_top_fraction() -> None:
    z = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    out = FractionalThreshold(keep=0.25)(z)  # k = 4: keep 12, 13, 14, 15
    assert torch.equal(out, z * (z >= 12))


def test_fractional_threshold_ties_at_tau_are_all_kept() -> None:
    z = torch.tensor([5.0, 3.0, 3.0, 3.0, 1.0, 0.0, 0.0, 0.0]).view(1, 1, 2, 4)
    out = FractionalThreshold(keep=0.25)(z)  # k = 2: τ = 3, and all three 3s tie
    assert torch.equal(out.flatten(), torch.tensor([5.0, 3.0, 3.0, 3.0, 0.0, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize("threshold", [FractionalThreshold(0.2), MeanThreshold()])
def test_thresholds_degenerate_shapes(threshold: torch.nn.Module) -> None:
    single = torch.tensor([[[[2.5]]], [[[-1.0]]]])  # H·W = 1: the value is its own percentile and mean
    assert torch.equal(threshold(single), single)
    zeros = torch.zeros(2, 3, 4, 4)
    assert torch.equal(threshold(zeros), zeros)


def test_mean_threshold_hand_computed() -> None:
    z = torch.tensor([1.0, 2.0, 3.0, 6.0]).view(1, 1, 2, 2)  # mean 3
    assert torch.equal(MeanThreshold()(z).flatten(), torch.tensor([0.0, 0.0, 3.0, 6.0]))


def test_fractional_threshold_is_per_image_and_channel() -> None:
    torch.manual_seed(2)
    z = torch.rand(3, 5, 8, 8)
    out = FractionalThreshold(keep=0.2)(z)
    assert torch.equal((out > 0).sum(dim=(2, 3)), torch.full((3, 5), kept_count(0.2, 64)))


def test_hah_cost_hand_computed() -> None:
    # one location, N = 10 channels 1..10; K = ceil(0.2·10) = 2: top mean 9.5, rest mean 4.5
    y = torch.arange(1.0, 11.0).view(1, 10, 1, 1)
    assert hah_cost(y, k_ratio=0.2, lam=0.1).item() == pytest.approx(9.5 - 0.1 * 4.5)
    assert hah_cost(y, k_ratio=0.2, lam=1.0).item() == pytest.approx(9.5 - 4.5)
    # K = N: no anti-Hebbian term
    assert hah_cost(y, k_ratio=1.0, lam=1.0).item() == pytest.approx(5.5)


def test_hah_cost_matches_sorting_reference() -> None:
    torch.manual_seed(3)
    y = torch.rand(4, 37, 5, 6)
    k = math.ceil(0.1 * 37)
    s = y.sort(dim=1, descending=True).values
    reference = (s[:, :k].mean(1) - 0.3 * s[:, k:].mean(1)).mean()
    assert hah_cost(y, 0.1, 0.3).item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize("threshold", ["fraction", "mean", "none"])
@pytest.mark.parametrize("pool", [1, 3])
@pytest.mark.parametrize("scale", [0.01, 3.0, 250.0])
def test_hah_block_output_is_invariant_to_input_scale(threshold: str, pool: int, scale: float) -> None:
    torch.manual_seed(4)
    block = HaHBlock(3, 16, threshold=threshold, pool=pool)  # type: ignore[arg-type]
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(block(x), block(scale * x), rtol=1e-3, atol=1e-5)


def test_local_conv2d_equals_conv_and_routes_gradients() -> None:
    torch.manual_seed(5)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    out, local = local_conv2d(x, w, b, 1, 1)
    reference = F.conv2d(x, w, b, 1, 1)
    assert torch.allclose(out, reference) and torch.allclose(local, reference)
    g_out, g_local = torch.randn_like(out), torch.randn_like(out)
    gx, gw, gb = torch.autograd.grad((out * g_out).sum() + (local * g_local).sum(), [x, w, b])
    # reference: the cost path sees a detached input, so only the weights get its gradient
    ref = F.conv2d(x, w, b, 1, 1)
    ref_local = F.conv2d(x.detach(), w, b, 1, 1)
    rx, rw, rb = torch.autograd.grad((ref * g_out).sum() + (ref_local * g_local).sum(), [x, w, b])
    assert torch.allclose(gx, rx, atol=1e-5) and torch.allclose(gw, rw, atol=1e-4) and torch.allclose(gb, rb, atol=1e-4)


def test_hah_cost_gradient_reaches_only_its_own_block() -> None:
    torch.manual_seed(6)
    first, second = HaHBlock(3, 8), HaHBlock(8, 8)
    second.record_cost = True
    x = torch.rand(2, 3, 8, 8)
    second(first(x))
    assert second.cost is not None
    grads = torch.autograd.grad(second.cost, [first.conv.weight, second.conv.weight], allow_unused=True)
    assert grads[0] is None or torch.count_nonzero(grads[0]) == 0
    assert grads[1] is not None and torch.count_nonzero(grads[1]) > 0


def test_hah_cost_gradient_on_own_weights_equals_a_detached_recompute() -> None:
    torch.manual_seed(7)
    block = HaHBlock(3, 8, lam=0.5)
    block.record_cost = True
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    block(x)
    assert block.cost is not None
    (g,) = torch.autograd.grad(block.cost, [block.conv.weight])
    reference = hah_cost(F.relu(block.conv(x.detach())), block.k_ratio, block.lam)
    (rg,) = torch.autograd.grad(reference, [block.conv.weight])
    assert torch.allclose(g, rg, atol=1e-6)


def test_recording_the_cost_leaves_output_and_main_gradients_unchanged() -> None:
    torch.manual_seed(8)
    block = HaHBlock(3, 8)
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    plain = block(x)
    (gx_plain,) = torch.autograd.grad(plain.sum(), [x])
    block.record_cost = True
    recorded = block(x)
    (gx_recorded,) = torch.autograd.grad(recorded.sum(), [x])
    assert torch.equal(plain, recorded)
    assert torch.allclose(gx_plain, gx_recorded)


def test_activation_extractor_records_and_removes_hooks() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    x = torch.randn(1, 3, 5, 5)
    with ActivationExtractor(model, ["0", "1"]) as acts:
        out = model(x)
    assert torch.equal(acts.inputs["0"], x)
    assert torch.equal(acts.outputs["1"], out)
    assert torch.equal(acts.inputs["1"], acts.outputs["0"])
    assert not model[0]._forward_hooks and not model[1]._forward_hooks
    with pytest.raises(KeyError, match="nope"):
        ActivationExtractor(model, ["nope"])


@pytest.mark.parametrize(
    ("layer", "message"),
    [(lambda: DivisiveNorm2d(sigma=1.5), "sigma"), (lambda: DivisiveNorm2d(pool=2), "pool"),
     (lambda: FractionalThreshold(keep=0.0), "keep"), (lambda: HaHBlock(3, 4, norm="group"), "norm")],  # type: ignore[arg-type]
)
def test_invalid_layer_settings(layer, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        layer()
