"""Competitive activations of the leaderboard's defences, each exact in the forward pass and with its BPDA surrogate.

- :class:`LocalWinnerTakeAll`: LWTA blocks (Srivastava et al. 2013; the deterministic variant of Panousis et al.,
  ICML 2021): channels in groups of U, per location only the group's largest value passes, the others are zeroed.
- :class:`TopMagnitudeQuantize`: the sparse-coding frontend's code (Bakiskan, Cekic, Sezer & Madhow 2021): per
  location the T dictionary coefficients of largest magnitude are kept and quantized to their sign, the rest zeroed.
- :class:`Triangle`: SoftHebb's activation (Journé et al., ICLR 2023): ReLU(u − mean over channels)^p.

Why each needs a surrogate: LWTA's and top-T's masks are piecewise constant (plain gradients never see a unit win
or lose, k-WTA's flaw); the sign quantization has gradient 0 everywhere, so plain gradients see *nothing* of the
frontend; the triangle's power p < 1 has an unbounded derivative near 0, so a few barely-active units dominate its
gradient. Under :class:`~hahrobust.nn.surrogate.BPDA` each back-propagates through a smooth version; the forward is
bit-identical (``tests/test_competition.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hahrobust.nn.cost import kth_largest
from hahrobust.nn.surrogate import SurrogateLayer, spread


class LocalWinnerTakeAll(SurrogateLayer):
    """Per image and location, channels in consecutive groups of ``units``: the group's largest value passes unchanged
    (ties all pass), the others become 0. No ReLU: a negative winner passes, as in Panousis et al.

    As a mask layer, unit i of a group is kept when z_i ≥ τ_i with τ_i the largest *other* value of its group, so
    the BPDA surrogate z·σ((z − τ)/T) is a soft competition between the group's units."""

    def __init__(self, units: int = 2) -> None:
        super().__init__()
        if units < 2:
            raise ValueError(f"an LWTA block needs at least 2 units, got {units}")
        self.units = units

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, c = z.shape[:2]
        if c % self.units:
            raise ValueError(f"LWTA: {c} channels do not split into blocks of {self.units}")
        groups = z.detach().reshape(b, c // self.units, self.units, *z.shape[2:])
        top2 = groups.topk(2, dim=2).values
        best, second = top2[:, :, :1], top2[:, :, 1:]
        tau = torch.where(groups >= best, second, best).reshape(z.shape)  # the largest other value of the group
        exact = z * (z.detach() >= tau).to(z.dtype)
        return self.with_surrogate(z, exact, tau)

    def extra_repr(self) -> str:
        return f"units={self.units}"


class TopMagnitudeQuantize(SurrogateLayer):
    """Per image and location of a coefficient map [B, A, H, W]: the ``keep`` coefficients of largest magnitude
    become their sign (±1), all others 0. Ties at the keep-th magnitude τ are all kept.

    The exact output has gradient 0 (sign): plain gradients carry no information through it. The surrogate's backward
    is that of (c/τ)·σ((|c| − τ)/T), a smooth top-T of the unquantized coefficients scaled so kept ones have magnitude
    ≥ 1 like the quantized ones (``identity``: of c/τ)."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        if keep < 1:
            raise ValueError(f"the sparse code keeps at least 1 coefficient, got {keep}")
        self.keep = keep

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        magnitude = c.detach().abs()
        keep = min(self.keep, c.shape[1])
        tau = kth_largest(magnitude, keep, dim=1)  # [B, 1, H, W]
        exact = torch.sign(c) * (magnitude >= tau).to(c.dtype)
        if self.surrogate is None:
            return exact
        scaled = c / tau.clamp_min(torch.finfo(c.dtype).tiny)
        if self.surrogate.kind == "identity":
            smooth = scaled
        else:
            width = (self.surrogate.temperature * spread(magnitude)).clamp_min(torch.finfo(c.dtype).tiny)
            smooth = scaled * torch.sigmoid((c.abs() - tau) / width)
        return smooth if self.surrogate.smooth_forward else exact.detach() + (smooth - smooth.detach())

    def extra_repr(self) -> str:
        return f"keep={self.keep}"


class Triangle(SurrogateLayer):
    """SoftHebb's triangle activation: ReLU(u − mean_c u)^p, the mean over channels detached as in the authors'
    code. The surrogate's backward is that of (T·s·softplus(v/(T·s)))^p (s the channel's spread), whose derivative
    stays bounded near 0 (``identity``: of v)."""

    def __init__(self, power: float = 1.0) -> None:
        super().__init__()
        if not power > 0:
            raise ValueError(f"the triangle's power must be > 0, got {power}")
        self.power = power

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        v = u - u.detach().mean(dim=1, keepdim=True)
        exact = F.relu(v) ** self.power
        if self.surrogate is None:
            return exact
        if self.surrogate.kind == "identity":
            smooth = v
        else:
            width = (self.surrogate.temperature * spread(v.detach())).clamp_min(torch.finfo(v.dtype).tiny)
            smooth = (width * F.softplus(v / width)) ** self.power
        return smooth if self.surrogate.smooth_forward else exact.detach() + (smooth - smooth.detach())

    def extra_repr(self) -> str:
        return f"power={self.power}"
