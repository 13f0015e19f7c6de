"""ZCA whitening inside the model (Amato et al. 2019, Sec. 4; the authors' data.py).

x ↦ W (x − μ) on the flattened image, with W = U diag(1/√(λ + ε)) Uᵀ from the eigendecomposition
of the training images' covariance. μ and W are buffers, so they are saved in (and restored from)
the checkpoint with the weights, and every tool still feeds the model images in [0, 1].
ε = 0.1 is the authors' smoothing constant (their images are normalised to unit variance first, as
here: the model applies its per-channel normalisation before this module).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from hahrobust.errors import HahrobustError


class ZCAWhitening(nn.Module):
    """Whitening of [B, *shape] inputs by a matrix fitted with :meth:`fit`; identity until fitted."""

    def __init__(self, shape: Sequence[int] = (3, 32, 32), eps: float = 0.1) -> None:
        super().__init__()
        if eps < 0:
            raise ValueError(f"ZCA smoothing eps must be >= 0, got {eps}")
        self.shape, self.eps = tuple(shape), eps
        dim = math.prod(self.shape)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("matrix", torch.eye(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1) - self.mean
        return (flat @ self.matrix).view_as(x)  # the matrix is symmetric: row-vector form needs no transpose

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor]) -> int:
        """Fit μ and W on the images in ``batches`` (each [B, *shape]); returns how many images were used.

        The covariance is accumulated in float64, batch by batch around the first batch's mean (so no
        [N, D] matrix is held and the uncentred sums lose no precision), then eigendecomposed.
        """
        dim = self.mean.numel()
        count, shift = 0, None
        total = outer = None
        for batch in batches:
            flat = batch.flatten(1).double()
            if flat.shape[1] != dim:
                raise HahrobustError(f"ZCA fitted for inputs of {dim} values, got {flat.shape[1]}")
            if shift is None:
                shift = flat.mean(0)
                total = torch.zeros(dim, dtype=torch.float64, device=flat.device)
                outer = torch.zeros(dim, dim, dtype=torch.float64, device=flat.device)
            centred = flat - shift
            total += centred.sum(0)
            outer += centred.t() @ centred
            count += flat.shape[0]
        if count < 2 or shift is None or total is None or outer is None:
            raise HahrobustError(f"ZCA whitening needs at least 2 training images, got {count}")
        offset = total / count
        covariance = (outer - count * torch.outer(offset, offset)) / (count - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        scale = 1.0 / torch.sqrt(eigenvalues.clamp_min(0) + self.eps) if self.eps > 0 else _inverse_sqrt(eigenvalues)
        matrix = (eigenvectors * scale) @ eigenvectors.t()
        self.mean.copy_((shift + offset).to(self.mean.dtype))
        self.matrix.copy_(matrix.to(self.matrix.dtype))
        return count

    def extra_repr(self) -> str:
        return f"shape={self.shape}, eps={self.eps}"


def _inverse_sqrt(eigenvalues: torch.Tensor) -> torch.Tensor:
    # ε = 0 is exact whitening: only defined when the covariance has full rank.
    if eigenvalues.min() <= 1e-12 * eigenvalues.max().clamp_min(1e-300):
        raise HahrobustError("ZCA with eps=0 needs a full-rank covariance (more images than pixels); use eps > 0")
    return eigenvalues.rsqrt()


__all__ = ["ZCAWhitening"]
