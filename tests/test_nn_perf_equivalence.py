"""The optimised HaH layers against straightforward reference implementations written here.

hahrobust.nn computes the same quantities as the formulas below with fewer passes over memory
(normalised weights instead of a divided output, NumPy sorting instead of torch.topk, hand-written
backward passes). These tests hold it to the formulas: outputs and gradients on random inputs,
inputs full of ties, H·W = 1, K = N, chunked selection rows, and fp64.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hahrobust.nn import DivisiveNorm2d, FractionalThreshold, HaHBlock, ImplicitNormConv2d, hah_cost, local_conv2d
from hahrobust.nn.cost import SORT_CHUNK, kth_largest, relu_hah_cost, top_values

# ----------------------------------------------------------------------------- reference formulas


def ref_conv(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """Eq. 1 as written: convolve, then divide each output channel by its filter norm + 1e-6."""
    norms = conv.weight.flatten(1).norm(dim=1) + 1e-6
    bias = None if conv.bias is None else conv.bias
    return F.conv2d(x, conv.weight, bias, conv.stride, conv.padding) / norms.view(1, -1, 1, 1)


def ref_divisive(y: torch.Tensor, sigma: float, pool: int, eps: float = 1e-7) -> torch.Tensor:
    field = y if pool == 1 else F.max_pool2d(y.abs(), pool, stride=1, padding=pool // 2)
    m = field.mean(dim=1, keepdim=True)
    return y / (sigma * m.amax(dim=(2, 3), keepdim=True) + (1 - sigma) * m + eps)


def ref_threshold(z: torch.Tensor, keep: float) -> torch.Tensor:
    """k = ceil(keep·H·W) ≥ 1; τ = k-th largest by a full sort; keep values ≥ τ (ties kept)."""
    flat = z.flatten(2)
    k = max(1, math.ceil(keep * flat.shape[-1] - 1e-9))
    tau = flat.detach().sort(dim=-1, descending=True).values[..., k - 1]
    return z * (z >= tau[..., None, None])


def ref_cost(y: torch.Tensor, k_ratio: float, lam: float) -> torch.Tensor:
    """Eq. 4 by a full sort over channels; autograd's sort backward routes the gradient."""
    n = y.shape[1]
    k = max(1, min(n, math.ceil(k_ratio * n - 1e-9)))
    s = y.sort(dim=1, descending=True).values
    rest = s[:, k:].mean(dim=1) if k < n else torch.zeros_like(s[:, 0])
    return (s[:, :k].mean(dim=1) - lam * rest).mean()


def ref_block(block: HaHBlock, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(block output, its HaH cost) where the cost sees a detached input: layer-local by construction."""
    y = ref_conv(x, block.conv)
    out = F.relu(y)
    out = ref_divisive(out, block.norm.sigma, block.norm.pool)
    out = ref_threshold(out, block.threshold.keep)
    cost = ref_cost(F.relu(ref_conv(x.detach(), block.conv)), block.k_ratio, block.lam)
    return out, cost


def tie_free(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Distinct values (a shuffled grid, then scaled) so sort and selection agree on every index."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    return ((torch.randperm(n, generator=g).to(dtype) - n / 2) / n * 7.0).view(*shape)


def tied(*shape: int, seed: int, levels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-1, levels - 1, shape, generator=g).float()


# ----------------------------------------------------------------------------- selection

SELECTION_CASES = [
    # (rows, n, k): plain rows, chunked rows (n > SORT_CHUNK, padded and not), k beyond a chunk
    (5, 1, 1), (7, 16, 2), (3, 64, 64), (4, 512, 103), (4, 1024, 205), (3, 1024, 922),
    (2, 1600, 320), (2, 1025, 1), (2, 2048, 2048), (6, 5, 3),
    # kth_largest's partition (k ≤ n/16, n ≥ 256): a sparse code's 15 of 500, at the boundary, just past it
    (3, 500, 15), (2, 256, 16), (2, 256, 17), (2, 255, 15),
]


@pytest.mark.parametrize(("rows", "n", "k"), SELECTION_CASES)
@pytest.mark.parametrize("data", ["random", "ties", "extremes"])
def test_top_values_and_kth_largest_match_a_full_sort(rows: int, n: int, k: int, data: str) -> None:
    g = torch.Generator().manual_seed(rows * 7919 + n + k)
    if data == "random":
        x = torch.randn(rows, n, generator=g)
    elif data == "ties":
        x = torch.randint(0, 4, (rows, n), generator=g).float()
    else:
        x = torch.randn(rows, n, generator=g)
        x[:, ::3] = -math.inf
        x[0] = 0.0
    expected = x.sort(dim=-1, descending=True).values[:, :k]
    original = x.clone()
    top = top_values(x, k, dim=-1)
    assert torch.equal(x, original)  # not overwritten unless allowed
    assert top.shape == (rows, k)
    assert torch.equal(top.sort(dim=-1, descending=True).values, expected)
    assert torch.equal(kth_largest(x, k, dim=-1), expected[:, k - 1 :])
    assert torch.equal(kth_largest(x.double(), k, dim=-1), expected[:, k - 1 :].double())
    scratch = x.clone()
    top = top_values(scratch, k, dim=-1, overwrite=True)
    assert torch.equal(top.sort(dim=-1, descending=True).values, expected)
    # scratch may have been sorted in place, but each row keeps its values
    assert torch.equal(scratch.sort(dim=-1).values, x.sort(dim=-1).values)


def test_selection_along_a_middle_dim_and_for_half_precision() -> None:
    x = tie_free(2, 9, 3, 4, seed=1)
    expected = x.topk(3, dim=1).values.amin(dim=1, keepdim=True)
    assert torch.equal(kth_largest(x, 3, dim=1), expected)
    # bf16 takes the torch.topk branch (the one other devices use): same answer
    xb = x.bfloat16()
    assert torch.equal(kth_largest(xb, 3, dim=1), xb.topk(3, dim=1).values.amin(dim=1, keepdim=True))
    # overwrite with a strided dim: the rows are a copy, x stays as it was
    original = x.clone()
    top = top_values(x, 3, dim=1, overwrite=True)
    assert torch.equal(x, original)
    assert torch.equal(top.sort(dim=1, descending=True).values, x.topk(3, dim=1).values)
    with pytest.raises(ValueError, match="k must be"):
        kth_largest(x, 10, dim=1)
    # the partition branch along a middle dim (a sparse code's [B, atoms, H, W], stored atoms-last or not)
    code = tie_free(2, 3, 4, 500, seed=2)
    for c in (code.permute(0, 3, 1, 2), code.permute(0, 3, 1, 2).contiguous()):
        assert torch.equal(kth_largest(c, 15, dim=1), c.topk(15, dim=1).values.amin(dim=1, keepdim=True))


def test_chunk_size_is_what_the_chunked_cases_exercise() -> None:
    assert any(n > SORT_CHUNK for _, n, _ in SELECTION_CASES)


# ----------------------------------------------------------------------------- layers


@pytest.mark.parametrize("bias", [False, True])
def test_implicit_norm_conv_matches_divided_output_with_gradients(bias: bool) -> None:
    torch.manual_seed(0)
    conv = ImplicitNormConv2d(3, 5, 3, padding=1, bias=bias)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    g = torch.randn(2, 5, 6, 6)
    out, ref = conv(x), ref_conv(x, conv)
    assert torch.allclose(out, ref, atol=1e-5)
    params = [x, *conv.parameters()]
    got = torch.autograd.grad((out * g).sum(), params)
    want = torch.autograd.grad((ref * g).sum(), params)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pool", [1, 3])
@pytest.mark.parametrize("shape", [(2, 6, 5, 5), (3, 4, 1, 1), (1, 1, 4, 3)])
def test_divisive_norm_matches_reference_with_gradients(pool: int, shape: tuple[int, ...]) -> None:
    y = tie_free(*shape, seed=2).abs().requires_grad_()
    g = tie_free(*shape, seed=3)
    out, ref = DivisiveNorm2d(0.1, pool)(y), ref_divisive(y, 0.1, pool)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-6)
    (got,) = torch.autograd.grad((out * g).sum(), [y])
    (want,) = torch.autograd.grad((ref * g).sum(), [y])
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("keep", [0.2, 0.5, 1.0, 0.01])
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 3, 40, 40), (3, 2, 5, 7), (4, 3, 1, 1)])
@pytest.mark.parametrize("data", ["random", "ties"])
def test_fractional_threshold_matches_reference_with_gradients(
    keep: float, shape: tuple[int, ...], data: str
) -> None:
    z = (tie_free(*shape, seed=4) if data == "random" else tied(*shape, seed=4)).requires_grad_()
    g = tie_free(*shape, seed=5)
    out, ref = FractionalThreshold(keep)(z), ref_threshold(z, keep)
    assert torch.equal(out, ref)
    (got,) = torch.autograd.grad((out * g).sum(), [z])
    (want,) = torch.autograd.grad((ref * g).sum(), [z])
    assert torch.equal(got, want)


COST_CASES = [
    # (shape, k_ratio, lam)
    ((2, 16, 8, 8), 0.1, 0.1), ((3, 37, 5, 6), 0.1, 0.3), ((2, 64, 4, 4), 0.1, 1.0),
    ((4, 8, 1, 1), 0.25, 0.1), ((2, 1, 3, 3), 0.1, 0.1), ((2, 5, 2, 2), 1.0, 0.5), ((1, 600, 2, 2), 0.1, 0.1),
    ((2, 40, 32, 32), 0.1, 0.1),  # N·H·W ≥ 2**15: the per-image transposed copy
]


@pytest.mark.parametrize(("shape", "k_ratio", "lam"), COST_CASES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hah_cost_matches_sorting_reference_with_gradients(
    shape: tuple[int, ...], k_ratio: float, lam: float, relu: bool, dtype: torch.dtype
) -> None:
    y = tie_free(*shape, seed=6, dtype=dtype).requires_grad_()
    cost = relu_hah_cost(y, k_ratio, lam) if relu else hah_cost(y, k_ratio, lam)
    ref = ref_cost(F.relu(y) if relu else y, k_ratio, lam)
    assert cost.dtype == ref.dtype
    assert torch.allclose(cost, ref, rtol=1e-5, atol=1e-6)
    (got,) = torch.autograd.grad(cost, [y])
    (want,) = torch.autograd.grad(ref, [y])
    assert got.dtype == dtype
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("relu", [False, True])
def test_hah_cost_with_ties_has_the_reference_value_and_shares_tied_gradient(relu: bool) -> None:
    y = tied(3, 12, 4, 4, seed=7).requires_grad_()
    f = relu_hah_cost if relu else hah_cost
    cost = f(y, 0.25, 0.5)
    assert torch.allclose(cost, ref_cost(F.relu(y) if relu else y, 0.25, 0.5), atol=1e-6)
    (grad,) = torch.autograd.grad(cost, [y])
    # Per location the gradient still totals K·(1/K) − (N−K)·λ/(N−K) over the channels that
    # count (all of them, or those with y > 0), divided by the B·H·W locations ...
    per_location = grad.sum(dim=1) * (3 * 4 * 4)
    k, n = 3, 12
    if not relu:
        assert torch.allclose(per_location, torch.full_like(per_location, 1.0 - 0.5), atol=1e-5)
    # ... and channels with equal values get equal gradients.
    for b, i, j in [(0, 0, 0), (1, 2, 3), (2, 3, 1)]:
        values, grads = y[b, :, i, j].detach(), grad[b, :, i, j]
        for v in values.unique():
            assert torch.allclose(grads[values == v], grads[values == v][0].expand(int((values == v).sum())))
    assert k < n


def test_hah_cost_tie_split_hand_computed() -> None:
    # one location, channels [3, 1, 1, 0], K = 2, λ = 1: top = {3, one 1}; the two 1s share it.
    y = torch.tensor([3.0, 1.0, 1.0, 0.0]).view(1, 4, 1, 1).requires_grad_()
    cost = hah_cost(y, k_ratio=0.5, lam=1.0)
    assert cost.item() == pytest.approx((3 + 1) / 2 - (1 + 0) / 2)
    (grad,) = torch.autograd.grad(cost, [y])
    # 3: 1/K = 0.5; each 1: half top (0.5·0.5) and half rest (0.5·(−1/2)) = 0; 0: −λ/(N−K) = −0.5
    assert torch.allclose(grad.flatten(), torch.tensor([0.5, 0.0, 0.0, -0.5]))


def test_relu_cost_with_fewer_positives_than_k() -> None:
    # K = 3 of N = 6 but only 2 positive channels: they are top, the rest are zeros after the ReLU.
    y = torch.tensor([2.0, -1.0, 0.5, -3.0, 0.0, -0.5]).view(1, 6, 1, 1).requires_grad_()
    cost = relu_hah_cost(y, k_ratio=0.5, lam=0.2)
    assert cost.item() == pytest.approx(2.5 / 3)
    (grad,) = torch.autograd.grad(cost, [y])
    assert torch.allclose(grad.flatten(), torch.tensor([1 / 3, 0, 1 / 3, 0, 0, 0]))


@pytest.mark.parametrize("bias", [False, True])
def test_local_conv2d_view_outputs_route_gradients_like_two_convolutions(bias: bool) -> None:
    torch.manual_seed(8)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True) if bias else None
    params = [x, w] + ([b] if b is not None else [])
    out, local = local_conv2d(x, w, b, 1, 1)
    for g_out, g_local in [(torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)), (None, torch.ones(2, 4, 6, 6))]:
        out, local = local_conv2d(x, w, b, 1, 1)
        ref, ref_local = F.conv2d(x, w, b, 1, 1), F.conv2d(x.detach(), w, b, 1, 1)
        loss = (local * g_local).sum() + ((out * g_out).sum() if g_out is not None else 0)
        ref_loss = (ref_local * g_local).sum() + ((ref * g_out).sum() if g_out is not None else 0)
        got = torch.autograd.grad(loss, params, allow_unused=True)
        want = torch.autograd.grad(ref_loss, params, allow_unused=True)
        for a, e in zip(got, want):
            if e is None:
                assert a is None or torch.count_nonzero(a) == 0
            else:
                assert torch.allclose(a, e, atol=1e-4)
    out, local = local_conv2d(x, w, b, 1, 1)
    out.add_(1.0)  # the two outputs share memory: autograd must refuse to use the stale one
    with pytest.raises(RuntimeError):
        local.sum().backward()


def test_local_conv2d_under_bf16_autocast_matches_a_detached_recompute() -> None:
    torch.manual_seed(10)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    g_out, g_local = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, local = local_conv2d(x, w, b, 1, 1)
        ref, ref_local = F.conv2d(x, w, b, 1, 1), F.conv2d(x.detach(), w, b, 1, 1)
    assert out.dtype == torch.bfloat16 and torch.equal(out, ref)
    got = torch.autograd.grad((out.float() * g_out).sum() + (local.float() * g_local).sum(), [x, w, b])
    want = torch.autograd.grad((ref.float() * g_out).sum() + (ref_local.float() * g_local).sum(), [x, w, b])
    for a, e in zip(got, want):
        assert a.dtype == torch.float32
        assert torch.allclose(a, e, rtol=2e-2, atol=1e-2 * e.abs().max().item())  # bf16 sums


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 3, 32, 32), (3, 4, 1, 1)])
@pytest.mark.parametrize("pool", [1, 3])
def test_hah_block_matches_reference_output_cost_and_gradients(shape: tuple[int, ...], pool: int) -> None:
    torch.manual_seed(9)
    block = HaHBlock(shape[1], 12, pool=pool, lam=0.3)
    block.record_cost = True
    x = torch.rand(*shape, requires_grad=True)
    out = block(x)
    ref_out, ref_cost_value = ref_block(block, x)
    assert block.cost is not None
    assert torch.allclose(out, ref_out, rtol=1e-4, atol=1e-5)
    assert torch.allclose(block.cost, ref_cost_value, rtol=1e-5)
    g = torch.randn_like(out)
    params = [x, block.conv.weight]
    got = torch.autograd.grad((out * g).sum() - 0.01 * block.cost, params)
    want = torch.autograd.grad((ref_out * g).sum() - 0.01 * ref_cost_value, params)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)
