"""The Hebbian/anti-Hebbian cost (Eq. 4), a quantity to maximize, and the exact selection it shares
with :class:`hahrobust.nn.FractionalThreshold`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

#: Rows up to this length are sorted by NumPy's SIMD sort (NumPy ≥ 2; measured with AVX-512), 3–6×
#: faster on CPU than ``torch.topk``/``kthvalue`` for the rows a HaH block selects from (≤ 512
#: channels, 64–256 locations); longer rows are cut into chunks of this length first (see
#: :func:`top_values`), which for 1024 locations makes it ~4× faster than ``torch.topk``.
SORT_CHUNK = 512


def top_values(x: torch.Tensor, k: int, dim: int, *, overwrite: bool = False) -> torch.Tensor:
    """The k largest values (1 ≤ k ≤ size, in no stated order) of ``x`` along ``dim``; no gradient.

    An exact selection. On CPU (fp32/fp64) rows are sorted with NumPy: a row longer than
    :data:`SORT_CHUNK` is cut into chunks, each chunk sorted and only its top min(k, chunk) kept
    (the row's top k lie among them), which for 32×32 maps halves the sorted length. On other
    devices, and for other dtypes, ``torch.topk`` selects them. ``overwrite=True`` lets the CPU
    path sort ``x``'s own memory in place (its values are then permuted along ``dim``), which
    saves allocating (and, for large tensors, page-faulting) a sorted copy.
    """
    x = x.detach()
    n = x.shape[dim]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return x.topk(k, dim=dim, sorted=False).values
    rows = x.movedim(dim, -1)
    flat = rows.reshape(-1, n)  # a view of x, or a copy we may sort in place
    copied = flat.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    top = torch.from_numpy(_top_rows(flat.numpy(), k, overwrite=overwrite or copied))
    return top.view(*rows.shape[:-1], k).movedim(-1, dim)


def kth_largest(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """The k-th largest value of ``x`` along ``dim``, kept as a size-1 dim (see :func:`top_values`). On CPU, for a
    few of many (k ≤ n/16, n ≥ 256: a sparse code's 15 of 500 atoms) a NumPy partition selects it, ~2× faster than
    sorting the rows (measured: 22,500 rows of 500, 0.048 vs 0.112 s); the same value either way (exact)."""
    n = x.shape[dim]
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and n >= 256 and 1 <= k <= n // 16:
        rows = x.detach().movedim(dim, -1)
        flat = rows.reshape(-1, n).numpy()
        kth = torch.from_numpy(np.partition(flat, n - k, axis=-1)[:, n - k].copy())
        return kth.view(*rows.shape[:-1], 1).movedim(-1, dim)
    return top_values(x, k, dim).amin(dim=dim, keepdim=True)


def _top_rows(a: np.ndarray, k: int, *, overwrite: bool) -> np.ndarray:
    """The k largest values of each row of a 2-D array, ascending ([rows, k], maybe a view into
    ``a``); ``a`` is sorted in place when ``overwrite``, else left alone."""
    rows, n = a.shape
    while n > SORT_CHUNK:
        chunks = -(-n // SORT_CHUNK)
        keep = min(k, SORT_CHUNK)
        if chunks * keep >= n:  # nothing to discard: sort the whole rows
            break
        if chunks * SORT_CHUNK != n:  # pad with -inf, which never displaces one of the top k
            a = np.concatenate([a, np.full((rows, chunks * SORT_CHUNK - n), -np.inf, dtype=a.dtype)], axis=1)
            overwrite = True  # a is now our own copy
        part = a.reshape(rows, chunks, SORT_CHUNK)
        if overwrite or not np.may_share_memory(part, a):  # ours to sort in place
            part.sort(axis=-1)
        else:
            part = np.sort(part, axis=-1)
        a = part[:, :, SORT_CHUNK - keep :].reshape(rows, chunks * keep)  # a copy (strided source)
        overwrite, n = True, a.shape[1]
    if overwrite:
        a.sort(axis=-1)
    else:
        a = np.sort(a, axis=-1)
    return a[:, n - k :]


def _channels_last(y: torch.Tensor) -> torch.Tensor:
    """[B, N, H, W] → a new contiguous [B, H, W, N]: each location's N channels become one row."""
    b, n, h, w = y.shape
    out = torch.empty(b, h, w, n, dtype=y.dtype)
    if n * h * w >= 1 << 15:
        # Per image this is a 2-D transpose, which torch copies in cache-sized blocks: several
        # times faster than one strided 4-D copy once an image no longer fits in cache.
        src, dst = y.reshape(b, n, h * w), out.view(b, h * w, n)
        for i in range(b):
            dst[i].copy_(src[i].t())
    else:
        out.copy_(y.permute(0, 2, 3, 1))
    return out


def hah_cost(y: torch.Tensor, k_ratio: float = 0.1, lam: float = 0.1) -> torch.Tensor:
    """Mean over locations and images of  mean(top-K channels) − λ·mean(other N−K channels).

    ``y`` is [B, N, H, W] (the authors apply it to ReLU(conv), before divisive normalization);
    K = ceil(k_ratio·N), clamped to [1, N]. With K = N the anti-Hebbian term is empty and counts 0.
    The K largest channel values at each location come from an exact selection (:func:`top_values`:
    on CPU a vectorised NumPy sort of the location's channels, else ``torch.topk``); t is the
    smallest of them, and the rest is (total − top-K sum). Computed in fp32 (fp64 for fp64
    input). Gradient: 1/K per top-K channel, −λ/(N−K) per other channel (over B·H·W);
    channels tied at t share equally the top-K weight left after those above t.
    """
    return _HaHCost.apply(y, k_ratio, lam, False)


def relu_hah_cost(y: torch.Tensor, k_ratio: float = 0.1, lam: float = 0.1) -> torch.Tensor:
    """``hah_cost(relu(y), k_ratio, lam)`` with its gradient, without materialising relu(y) for autograd.

    ReLU is monotone, so relu(t) is the K-th largest of relu(y); the gradient carries ReLU's
    mask (y > 0, PyTorch's ReLU derivative).
    """
    return _HaHCost.apply(y, k_ratio, lam, True)


def _kept_channels(n: int, k_ratio: float) -> int:
    return max(1, min(n, math.ceil(k_ratio * n - 1e-9)))


class _HaHCost(torch.autograd.Function):
    """The cost with a hand-written backward: its gradient is a constant per channel class.

    d cost/d y = (1/K or −λ/(N−K)) / (B·H·W) for top-K or other channels (times y > 0 with the
    ReLU), written from two comparisons with the per-location K-th value: no top-K indices to
    keep, and none of autograd's zero-fill, scatter, expand, add and cast passes over [B, N, H, W].
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, y: torch.Tensor, k_ratio: float, lam: float, relu: bool
    ) -> torch.Tensor:
        n = y.shape[1]
        k = _kept_channels(n, k_ratio)
        yf = y if y.dtype == torch.float64 else y.float()  # no copy for fp32 (or fp64) input
        if y.device.type == "cpu":
            # A channels-last copy: each location's N channels become one contiguous row, which
            # the selection then sorts in place (no strided gather, no second buffer).
            rows, channel_dim = _channels_last(yf), -1
            if relu:
                rows.clamp_(min=0)
        else:
            rows, channel_dim = (yf.clamp(min=0) if relu else yf), 1
        total = rows.sum(dim=channel_dim)
        kth = None
        if k < n:
            # the K largest channel values per location (rows is scratch: it may be sorted in place)
            top = top_values(rows, k, dim=channel_dim, overwrite=True)
            kth, top_sum = top.amin(dim=channel_dim, keepdim=True), top.sum(dim=channel_dim)
            kth = kth.movedim(channel_dim, 1)  # [B, 1, H, W]
            rest_mean = (total - top_sum) / (n - k)
        else:
            top_sum, rest_mean = total, torch.zeros_like(total)
        ctx.save_for_backward(y, kth)
        ctx.conf = (k, n, lam, relu)
        return (top_sum / k - lam * rest_mean).mean()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):  # type: ignore[override]
        y, kth = ctx.saved_tensors
        k, n, lam, relu = ctx.conf
        scale = grad / (y.numel() // n)  # the mean over images and locations
        top = scale / k
        if kth is None:  # K = N: every channel is a top channel
            if relu:
                return torch.gt(y, 0, out=torch.empty_like(y)).mul_(top.to(y.dtype)), None, None, None
            return top.to(y.dtype).expand_as(y).clone(), None, None, None
        rest = -lam / (n - k) * scale
        if relu:  # y ≥ max(t, smallest positive float) marks the top channels with y > 0
            info = torch.finfo(y.dtype)
            kth = kth.clamp(min=info.smallest_normal * info.eps)
        kth = kth.to(y.dtype)  # exact: t is one of y's values (or that smallest float)
        # Float masks straight from the comparison (out=): a bool mask's cast costs more than the compare.
        above = torch.ge(y, kth, out=torch.empty_like(y))
        weight = _tie_shares(y, kth, k, above) if bool((above.sum(dim=1) > k).any()) else above
        grad_y = weight.mul_((top - rest).to(y.dtype))
        if relu:
            grad_y.addcmul_(torch.gt(y, 0, out=torch.empty_like(y)), rest.to(y.dtype))
        else:
            grad_y += rest.to(y.dtype)
        return grad_y, None, None, None


def _tie_shares(y: torch.Tensor, kth: torch.Tensor, k: int, above: torch.Tensor) -> torch.Tensor:
    """Where more than K channels are ≥ the K-th value t (values tied at t): 1 above t, and the
    channels equal to t share equally the K − #(above t) top places left (at most 1 each)."""
    greater = torch.gt(y, kth, out=torch.empty_like(y))
    equal = above - greater
    share = (k - greater.sum(dim=1, keepdim=True)) / equal.sum(dim=1, keepdim=True).clamp(min=1)
    return greater + equal * share.clamp(max=1)
