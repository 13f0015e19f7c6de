"""The norm part of every attack: names, ε parsing and defaults, distances, tolerances, projections.

Perturbations live in [0, 1] pixel units on the flattened C·H·W values of an image, before the model's own
input normalization. The four threat models:

- ``linf``: max |δ_i|.  ``l2``: √Σ δ_i².  ``l1``: Σ |δ_i|.
- ``l0``: the number of **values** (elements of the C×H×W tensor) that differ from the clean image, so a pixel
  changed in all three colour channels counts 3. This is what the FMN reference implementation (Pintor et
  al. 2021), which the paper used for its ℓ0 results (Fig. 5), counts; PGD-ℓ0 here counts the same way, so
  ε for ``l0`` is a whole number of values and FMN's ℓ0 distances are directly comparable with it.

Every projection maps onto the ε-ball **intersected with the [0, 1] box**, so its output is always a valid image.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Literal

import torch

from hahrobust.errors import HahrobustError

Norm = Literal["linf", "l2", "l1", "l0"]
NORMS: tuple[str, ...] = ("linf", "l2", "l1", "l0")
SYMBOLS: dict[str, str] = {"linf": "ℓ∞", "l2": "ℓ2", "l1": "ℓ1", "l0": "ℓ0"}

#: Default ε per norm. ℓ∞ 2/255 and ℓ2 0.25 are the paper's (Table 1). The paper gives none for ℓ1/ℓ0, so:
#: ℓ1 3.0 is a quarter of RobustBench's ℓ1 threat model (ε = 12), the same ratio as the paper's ℓ∞ 2/255 to
#: RobustBench's 8/255; ℓ0 24 values is the budget of 24 used in the sparse-attack literature (Croce et al.'s
#: Sparse-RS on CIFAR-10), here counted in values (see the module docstring) — about 8 fully changed pixels.
DEFAULT_EPS: dict[str, tuple[float, ...]] = {"linf": (2 / 255,), "l2": (0.25,), "l1": (3.0,), "l0": (24.0,)}

#: Verification tolerance per coordinate: a stored float32 adversarial value may differ from the exact
#: x + δ by rounding (half an ulp, at most 2^-25 ≈ 3e-8 for values in [0, 1]); 2^-22 ≈ 2.4e-7 leaves 8× that.
#: A norm's tolerance is what that per-coordinate slack adds up to over d values: ℓ∞ τ, ℓ2 τ·√d, ℓ1 τ·d, and
#: ℓ0 none (a value either changed or it did not). For CIFAR-10 (d = 3072): ℓ2 1.3e-5, ℓ1 7.3e-4.
COORD_TOLERANCE = 2.0**-22


def check_norm(norm: str) -> Norm:
    """``norm`` lower-cased and checked, with common spellings (Linf, L2, inf, 2) accepted."""
    key = str(norm).strip().lower().replace("ℓ", "l")
    key = {"inf": "linf", "l_inf": "linf", "2": "l2", "1": "l1", "0": "l0"}.get(key, key)
    if key not in NORMS:
        raise HahrobustError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")
    return key  # type: ignore[return-value]


def parse_eps(text: str, norm: str) -> list[float]:
    """ε values from a comma-separated list of numbers or fractions, e.g. ``"2/255,8/255"`` or ``"0.25, 0.5"``."""
    values = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        if not re.fullmatch(r"[0-9.eE+\-]+(\s*/\s*[0-9.eE+\-]+)?", part):
            raise HahrobustError(f"--eps {text!r}: {part!r} is not a number or a fraction like 2/255")
        try:
            if "/" in part:
                num, den = (Fraction(s.strip()) for s in part.split("/"))
                values.append(float(num / den))
            else:
                values.append(float(part))
        except (ValueError, ZeroDivisionError):
            raise HahrobustError(f"--eps {text!r}: {part!r} is not a number or a fraction like 2/255") from None
    if not values:
        raise HahrobustError(f"--eps {text!r}: no value given")
    return check_eps(values, norm)


def check_eps(eps: Sequence[float], norm: str) -> list[float]:
    """ε values as floats, in the given order: finite, ≥ 0, distinct; ℓ∞ ≤ 1; ℓ0 a whole number of values."""
    norm = check_norm(norm)
    values = [float(e) for e in eps]
    if not values:
        raise HahrobustError("no ε given")
    for e in values:
        if not math.isfinite(e) or e < 0:
            raise HahrobustError(f"ε must be a finite number ≥ 0, got {e:g}")
        if norm == "linf" and e > 1:
            raise HahrobustError(f"ℓ∞ ε must be at most 1 (images are in [0, 1]), got {e:g}")
        if norm == "l0" and e != int(e):
            raise HahrobustError(f"ℓ0 ε counts changed values and must be a whole number, got {e:g}")
    if len(set(values)) != len(values):
        raise HahrobustError(f"ε values must be distinct, got {', '.join(f'{e:g}' for e in values)}")
    return values


def format_eps(eps: float, norm: str) -> str:
    """ε for humans: ℓ∞ as k/255 when it is one (2/255), ℓ0 as an integer, otherwise up to 4 significant digits."""
    if norm == "linf" and eps > 0 and abs(eps * 255 - round(eps * 255)) < 1e-9:
        return f"{round(eps * 255)}/255"
    if norm == "l0":
        return f"{int(eps)}"
    return f"{eps:.4g}"


# ----------------------------------------------------------------------------------------------- distances


def distances(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-image norm of a [B, ...] perturbation, computed in float64 (so summing 3072 values loses nothing)."""
    flat = delta.detach().flatten(1).double()
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(len(flat))
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    if norm == "l0":
        return (flat != 0).sum(dim=1).double()
    raise HahrobustError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")


def tolerance(norm: str, dim: int) -> float:
    """How far above ε a verified distance may lie (float32 rounding; see :data:`COORD_TOLERANCE`)."""
    return {"linf": COORD_TOLERANCE, "l2": COORD_TOLERANCE * math.sqrt(dim), "l1": COORD_TOLERANCE * dim, "l0": 0.0}[
        check_norm(norm)
    ]


def within(distance: torch.Tensor, eps: float | torch.Tensor, norm: str, dim: int) -> torch.Tensor:
    """Which distances are at most ε, up to the stated float tolerance."""
    return distance <= torch.as_tensor(eps, dtype=torch.float64, device=distance.device) + tolerance(norm, dim)


# --------------------------------------------------------------------------------------------- projections


def _rows(eps: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """ε as a [B, 1] column (a scalar is broadcast to every image)."""
    eps = torch.as_tensor(eps, dtype=like.dtype, device=like.device)
    return eps.expand(len(like)).reshape(-1, 1) if eps.dim() == 0 else eps.reshape(-1, 1).to(like.dtype)


def project(delta: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor, norm: str) -> torch.Tensor:
    """Map ``delta`` into {δ : ‖δ‖ ≤ ε, x + δ ∈ [0, 1]} (ε a scalar or one per image); returns a new tensor.

    ℓ∞, ℓ1 and ℓ0 are the exact Euclidean projections onto the ball ∩ box. ℓ2 projects onto the ball and then
    clips to the box, which stays inside both (clipping only shrinks |δ_i|) but is not the exact projection.
    """
    shape = delta.shape
    z, x = delta.flatten(1), x.flatten(1)
    lo, hi = -x, 1 - x  # the box for δ; lo ≤ 0 ≤ hi because x is in [0, 1]
    e = _rows(eps, z)
    if norm == "linf":
        out = torch.minimum(torch.maximum(z, -e), e)
    elif norm == "l2":
        norms = z.norm(dim=1, keepdim=True)
        out = z * torch.where(norms > e, e / norms.clamp_min(1e-30), torch.ones_like(norms))
    elif norm == "l1":
        out = _project_l1_box(z, lo, hi, e)
    elif norm == "l0":
        out = _project_l0_box(z, lo, hi, e)
    else:
        raise HahrobustError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")
    return torch.minimum(torch.maximum(out, lo), hi).reshape(shape)


def _project_l1_box(z: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto {‖δ‖₁ ≤ ε} ∩ [lo, hi] (lo ≤ 0 ≤ hi), per row.

    KKT gives δ_i = sign(z_i)·clip(|z_i| − θ, 0, cap_i), with cap_i the room in z_i's direction and the
    smallest θ ≥ 0 whose ℓ1 norm is ≤ ε. The norm is monotone in θ, so θ is found by bisection; the
    upper (feasible) end is used, so the result never exceeds ε beyond float rounding.
    """
    cap = torch.where(z >= 0, hi, -lo)
    a = z.abs()
    # Work in float64: 3072-term sums and 60 halvings need more than float32's 24 bits.
    a64, cap64, eps64 = a.double(), cap.double(), eps.double()

    def l1(theta: torch.Tensor) -> torch.Tensor:
        return (a64 - theta).clamp_min(0).minimum(cap64).sum(dim=1, keepdim=True)

    low = torch.zeros_like(eps64)
    high = a64.amax(dim=1, keepdim=True) if a64.shape[1] else low.clone()
    needs = l1(low) > eps64
    for _ in range(60):  # 2^-60 of the largest |z|: far below float32 resolution
        mid = (low + high) / 2
        over = l1(mid) > eps64
        low = torch.where(over, mid, low)
        high = torch.where(over, high, mid)
    theta = torch.where(needs, high, low)
    magnitude = (a64 - theta).clamp_min(0).minimum(cap64)
    return (torch.sign(z).double() * magnitude).to(z.dtype)


def _project_l0_box(z: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto {at most k = ε nonzero values} ∩ [lo, hi], per row.

    A kept value becomes clip(z_i) at squared cost (z_i − clip(z_i))²; a dropped one costs z_i². So keep the k
    values with the largest saving z_i² − (z_i − clip(z_i))², exactly k (ties broken by index), none if ε = 0.
    """
    clipped = torch.minimum(torch.maximum(z, lo), hi)
    saving = z.square() - (z - clipped).square()
    order = saving.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(z.shape[1], device=z.device).expand_as(order))
    keep = (ranks < eps.round().long()) & (clipped != 0)
    return torch.where(keep, clipped, torch.zeros_like(clipped))


# ------------------------------------------------------------------------------------------ random starts


def random_start(
    noise: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor, norm: str
) -> torch.Tensor:
    """A random perturbation in the ε-ball ∩ box, built from ``noise`` (uniform [0, 1) values shaped like x).

    ℓ∞: uniform in the cube. ℓ2/ℓ1: a random direction (from the noise, centred) scaled to a radius drawn
    as ε·u (u from the first noise value), then projected. ℓ0: a uniform box point, then the top-ε projection.
    Callers draw ``noise`` per image from seeded generators, so starts never depend on the batch.
    """
    e = _rows(eps, x.flatten(1)).reshape(-1, *([1] * (x.dim() - 1)))
    centred = 2 * noise - 1
    if norm == "linf":
        start = centred * e
    elif norm in ("l2", "l1"):
        flat = centred.flatten(1)
        radius = noise.flatten(1)[:, :1]  # in [0, 1): a radius spread over the ball rather than on its surface
        size = flat.norm(dim=1, keepdim=True) if norm == "l2" else flat.abs().sum(dim=1, keepdim=True)
        start = (flat / size.clamp_min(1e-12) * radius).reshape(x.shape) * e
    elif norm == "l0":
        start = noise - x  # a uniform random image in [0, 1], as a perturbation; top-ε keeps the biggest changes
    else:
        raise HahrobustError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")
    return project(start, x, eps, norm)
