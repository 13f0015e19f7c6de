"""The Hebbian/anti-Hebbian cost (Eq. 4), a quantity to maximize."""

from __future__ import annotations

import math

import torch


def hah_cost(y: torch.Tensor, k_ratio: float = 0.1, lam: float = 0.1) -> torch.Tensor:
    """Mean over locations and images of  mean(top-K channels) − λ·mean(other N−K channels).

    ``y`` is [B, N, H, W] (the authors apply it to ReLU(conv), before divisive normalization);
    K = ceil(k_ratio·N), clamped to [1, N]. With K = N the anti-Hebbian term is empty and counts 0.
    Only the top-K *sum* is needed, so this selects K values per location (``topk``) instead of
    sorting all N channels, and gets the rest as (total − top-K sum). Computed in fp32.
    """
    n = y.shape[1]
    k = max(1, min(n, math.ceil(k_ratio * n - 1e-9)))
    y = y.float()
    total = y.sum(dim=1)
    top_sum = y.topk(k, dim=1, sorted=False).values.sum(dim=1) if k < n else total
    rest_mean = (total - top_sum) / (n - k) if k < n else torch.zeros_like(total)
    return (top_sum / k - lam * rest_mean).mean()
