"""SPSA, the zeroth-order attack: correct where the answer is known in closed form, strong where gradients are
zero, and in agreement with an independent implementation (torchattacks' SPSA, itself advertorch's)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hahrobust.attacks._common import margin
from hahrobust.attacks.pgd import PGDConfig, pgd
from hahrobust.attacks.spsa import SPSAConfig, _estimate, spsa
from hahrobust.attacks.registry import get
from hahrobust.studies.audit import all_members, default_ensemble

SHAPE = (3, 8, 8)  # d = 192: large enough that a random point of the ε-ball almost never breaks an image
CLASSES = 4


class Linear(nn.Module):
    """logits = W·x + b, optionally on the input rounded to 8 bits (whose autograd gradient is exactly zero)."""

    def __init__(self, seed: int, rounded: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(CLASSES, SHAPE[0] * SHAPE[1] * SHAPE[2], generator=g) * 0.1)
        self.bias = nn.Parameter(torch.zeros(CLASSES))
        self.rounded = rounded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rounded:
            x = torch.round(x * 255) / 255  # zero gradient almost everywhere: plain PGD is blind here
        return x.flatten(1) @ self.weight.T + self.bias


def _setup(seed: int = 0, n: int = 40) -> tuple[Linear, torch.Tensor, torch.Tensor]:
    model = Linear(seed).eval()
    g = torch.Generator().manual_seed(seed + 1)
    x = 0.3 + 0.4 * torch.rand(n, *SHAPE, generator=g)  # inside [0.3, 0.7]: the box never binds at ε ≤ 0.3
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _minimal_eps(model: Linear, x: torch.Tensor, y: torch.Tensor, dual: float) -> torch.Tensor:
    """The exact smallest ε (ℓ∞: dual = 1, the ℓ1 norm of the weight difference; ℓ2: dual = 2) that breaks each
    image of a linear model when the box does not bind: min over j of (z_y − z_j) / ‖w_y − w_j‖_dual."""
    with torch.no_grad():
        z = model(x)
        w = model.weight
        gaps = z.gather(1, y[:, None]) - z  # [n, classes]
        norms = torch.stack([(w[y] - w[j]).norm(p=dual, dim=1) for j in range(CLASSES)], dim=1)
        ratio = gaps / norms.clamp_min(1e-12)
        ratio[torch.arange(len(y)), y] = float("inf")
        return ratio.min(dim=1).values


@pytest.mark.parametrize("norm, dual", [("linf", 1.0), ("l2", 2.0)])
def test_spsa_breaks_exactly_the_images_a_linear_model_allows(norm: str, dual: float) -> None:
    model, x, y = _setup()
    needed = _minimal_eps(model, x, y, dual)
    eps = float(needed.median())
    adv = spsa(model, x, y, norm=norm, eps=eps, indices=torch.arange(len(x)), seed=3,
               config=SPSAConfig(steps=60, samples=64))
    with torch.no_grad():
        fooled = margin(model(adv), y) > 0
    distance = (adv - x).flatten(1).norm(p=float("inf") if norm == "linf" else 2, dim=1)
    assert bool((distance <= eps * (1 + 1e-5)).all()) and bool(((adv >= 0) & (adv <= 1)).all())
    easy, impossible = needed < 0.8 * eps, needed > eps
    assert easy.sum() >= 10 and impossible.sum() >= 10
    assert bool(fooled[easy].all()), f"missed {int((~fooled[easy]).sum())} of {int(easy.sum())} breakable images"
    assert not bool(fooled[impossible].any())


def test_spsa_breaks_where_the_gradient_is_zero_and_pgd_cannot() -> None:
    _, x, y = _setup()
    model = Linear(0, rounded=True).eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    needed = _minimal_eps(Linear(0).eval(), x, y, 1.0)
    eps = float(needed.median())
    easy = needed < 0.7 * eps
    indices = torch.arange(len(x))
    plain = pgd(model, x, y, norm="linf", eps=eps, indices=indices, seed=3, config=PGDConfig(steps=20, restarts=1))
    zeroth = spsa(model, x, y, norm="linf", eps=eps, indices=indices, seed=3, config=SPSAConfig(steps=60, samples=64))
    with torch.no_grad():
        by_pgd, by_spsa = margin(model(plain), y) > 0, margin(model(zeroth), y) > 0
    assert int(by_pgd[easy].sum()) == 0  # autograd's gradient of the rounded input is zero
    assert float(by_spsa[easy].float().mean()) >= 0.9


def test_spsa_does_not_depend_on_the_batch() -> None:
    model, x, y = _setup(n=12)
    config = SPSAConfig(steps=5, samples=16, chunk=30)  # 3, 2 or 1 directions a call, by batch
    eps = 0.05
    whole = spsa(model, x, y, norm="linf", eps=eps, indices=torch.arange(12), seed=1, config=config)
    parts = torch.cat([spsa(model, x[i:i + 5], y[i:i + 5], norm="linf", eps=eps, indices=torch.arange(i, min(i + 5, 12)),
                            seed=1, config=config) for i in range(0, 12, 5)])
    assert torch.allclose(whole, parts, atol=1e-6)


def test_spsa_gradient_estimate_agrees_with_torchattacks_and_the_truth() -> None:
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = _setup(n=4)
    x_grad = x.clone().requires_grad_(True)
    margin(model(x_grad), y).sum().backward()
    truth = x_grad.grad.flatten(1)
    samples = 2048
    generators = [torch.Generator().manual_seed(i) for i in range(len(x))]
    ours = _estimate(model, x, y, generators, SPSAConfig(samples=samples, delta=0.01)).flatten(1)
    reference = torchattacks.SPSA(model, eps=0.05, delta=0.01, nb_sample=samples, max_batch_size=256)
    torch.manual_seed(0)
    theirs = -reference.spsa_grad(x, y, 0.01, samples, 256).flatten(1)  # their loss is −margin (untargeted)
    cos = nn.functional.cosine_similarity
    expected = (samples / (samples + truth.shape[1] - 1)) ** 0.5  # Rademacher sampling's cosine with the truth
    assert bool((cos(ours, truth) > expected - 0.05).all()) and bool((cos(theirs, truth) > expected - 0.05).all())
    assert bool((cos(ours, theirs) > expected ** 2 - 0.08).all())


def test_spsa_breaks_what_torchattacks_spsa_breaks() -> None:
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = _setup()
    eps = float(_minimal_eps(model, x, y, 1.0).median())
    config = SPSAConfig(steps=40, samples=64)
    ours = spsa(model, x, y, norm="linf", eps=eps, indices=torch.arange(len(x)), seed=0, config=config)
    torch.manual_seed(0)
    theirs = torchattacks.SPSA(model, eps=eps, delta=config.delta, lr=config.lr_fraction * eps, nb_iter=config.steps,
                               nb_sample=config.samples, max_batch_size=64)(x, y)
    with torch.no_grad():
        a, b = margin(model(ours), y) > 0, margin(model(theirs), y) > 0
    assert float((a == b).float().mean()) >= 0.9 and int(a.sum()) >= int(b.sum())


def test_spsa_is_registered_and_an_opt_in_zeroth_order_audit_member() -> None:
    assert get("spsa").norms == ("linf", "l2")
    member = next(m for m in all_members() if m.key == "spsa")
    assert member.kind == "zeroth-order" and member.changes_gradient and not member.plain and member.survivors
    assert "spsa" not in [m.key for m in default_ensemble()]
    keys = [m.key for m in default_ensemble(["spsa"])]
    assert keys.index("spsa") < keys.index("more-effort")
