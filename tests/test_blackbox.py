"""Gradient-free attacks (Square Attack, HopSkipJump): hand-computed cases, their constraints, their strength
against PGD on a plain model, their success where gradients are masked (what they are for), determinism,
batch independence, faithfulness to foolbox's HopSkipJump and global-RNG isolation."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import train_tiny_vgg11
from hahrobust.attacks import PGDConfig, fmn, pgd, verify
from hahrobust.attacks._common import image_seed, isolated_global_rng
from hahrobust.attacks.decision import (
    DecisionConfig, _attack_each, _foolbox, _starting_point, decision, hop_skip_jump,
)
from hahrobust.attacks.square import SquareConfig, square
from hahrobust.data import balanced_subset, load_cifar10
from hahrobust.errors import HahrobustError

pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest.single_thread explains why

#: Budgets for the tests on the trained model: a fraction of the defaults, so the module runs in seconds.
SQUARE = SquareConfig(queries=300)
#: HopSkipJump with γ = 100: its probes must cross 8-bit quantisation steps (see DecisionConfig.gamma).
HSJ = DecisionConfig(steps=6, initial_evals=50, max_evals=200, gamma=100.0)

#: "A couple of images" out of 10.
COUPLE = 2


@pytest.fixture(scope="module")
def trained(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The tiny VGG-11 of test_attacks.py (trained on the synthetic set, ≈ 5 s), in eval mode, and 10 test
    images (one per class) that it classifies correctly."""
    cache = tmp_path_factory.mktemp("blackbox-cache")
    model = train_tiny_vgg11(load_cifar10(tiny_data, "train", cache_dir=cache)).eval()
    test = balanced_subset(load_cifar10(tiny_data, "test", cache_dir=cache), 50, seed=0)
    x, y = test.images[::5].float() / 255, test.labels[::5]
    with torch.no_grad():
        assert (model(x).argmax(1) == y).all(), "the test images should be classified correctly"
    return model, x, y


@pytest.fixture(scope="module")
def fmn_median(trained: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """FMN's median verified distance on the 10 images per norm (every image is fooled): the ε at which
    a strong gradient attack leaves about half of them robust."""
    model, x, y = trained
    out = {}
    for norm in ("linf", "l2"):
        checked = verify(model, x, fmn(model, x, y, norm=norm), y, norm=norm, eps=None)
        assert checked.adversarial.all()
        out[norm] = float(checked.distance.median())
    return out


@pytest.fixture(scope="module")
def pgd_fooled(trained: tuple[nn.Module, torch.Tensor, torch.Tensor], fmn_median: dict[str, float]) -> dict[str, int]:
    """How many of the 10 images default PGD fools at ε = FMN's median, per norm."""
    model, x, y = trained
    return {
        norm: fooled(model, x, pgd(model, x, y, norm=norm, eps=eps, indices=torch.arange(len(x))), y, norm, eps)
        for norm, eps in fmn_median.items()
    }


class Quantised(nn.Module):
    """``model`` behind 8-bit input quantisation x → round(255·x)/255: the same decisions as ``model`` on 8-bit
    images, but a zero input gradient everywhere (torch.round's derivative) — textbook gradient masking."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 255) / 255)


class ZeroGradient(nn.Module):
    """Exactly ``model``'s logits with an input gradient of exactly zero: the limit of gradient masking, where
    the function (all a gradient-free attack sees) is unchanged and a gradient attack is blind."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.detach()) + 0 * x.sum()  # + 0: keeps x in the graph, so autograd returns zeros


class Curved2(nn.Module):
    """Two classes on the mean pixel m: logit₁ − logit₀ = 10u + 5u², u = m − 0.5 (test_attacks.py's Curved2).
    The boundary is m = 0.5: from a 10×10 image at 0.45 the closest adversarial point adds 0.05 to every value,
    at ℓ∞ distance 0.05 and ℓ2 distance 0.05·√100 = 0.5. (Square's ℓ2 version needs at least 5×5 pixels.)"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.flatten(1).mean(dim=1, keepdim=True) - 0.5
        return torch.cat([torch.zeros_like(u), 10 * u + 5 * u * u], dim=1)


def fooled(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, norm: str, eps: float) -> int:
    """How many verified adversarial examples within ε (verify raises on any example outside ε or [0, 1])."""
    return int(verify(model, x, x_adv, y, norm=norm, eps=eps).adversarial.sum())


# ------------------------------------------------------------------------------------------- by hand


#: Curved2's clean image and the minimal adversarial distance from it per norm.
FLAT = torch.full((1, 1, 10, 10), 0.45)
MINIMAL = {"l2": 0.5, "linf": 0.05}


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_hop_skip_jump_finds_the_known_boundary(norm: str) -> None:
    """On Curved2 the minimal distance is known; HopSkipJump from a noise start gets within 5 % of it."""
    x, y = FLAT, torch.tensor([0])
    out = hop_skip_jump(Curved2().eval(), x, y, norm=norm, indices=torch.arange(1), config=DecisionConfig(steps=20))
    checked = verify(Curved2().eval(), x, out, y, norm=norm, eps=None)
    assert checked.adversarial.all()
    assert float(checked.distance[0]) == pytest.approx(MINIMAL[norm], rel=0.05)


@pytest.mark.parametrize(
    ("attack", "norm", "room", "fools"),
    [
        ("square", "linf", 0.8, False), ("square", "linf", 1.4, True), ("square", "l2", 0.8, False),
        ("decision", "linf", 0.8, False), ("decision", "linf", 1.2, True),
        ("decision", "l2", 0.8, False), ("decision", "l2", 1.2, True),
    ],
)
def test_fixed_eps_attacks_fool_only_beyond_the_known_distance(attack: str, norm: str, room: float, fools: bool) -> None:
    """Curved2 from 0.45 at ε = room × the minimal distance: nothing within it is adversarial (room < 1), and
    with room to spare both attacks find an example; nothing they return lies outside ε or [0, 1]. (No
    "fools" case for Square-ℓ2: its window updates have a + half and a − half, so they barely move the mean
    pixel, the one direction this model responds to; the trained-model tests below cover it.)"""
    x, y, eps = FLAT, torch.tensor([0]), room * MINIMAL[norm]
    if attack == "square":
        out = square(Curved2().eval(), x, y, norm=norm, eps=eps, indices=torch.arange(1), config=SquareConfig(queries=200))
    else:
        out = decision(Curved2().eval(), x, y, norm=norm, eps=eps, indices=torch.arange(1), config=DecisionConfig(steps=20))
    assert fooled(Curved2().eval(), x, out, y, norm, eps) == int(fools)


def test_unsupported_norms_are_clear_errors() -> None:
    x, y = torch.zeros(1, 1, 2, 2), torch.tensor([0])
    with pytest.raises(HahrobustError, match="Square Attack has no l1"):
        square(Curved2().eval(), x, y, norm="l1", eps=1.0, indices=torch.arange(1))
    with pytest.raises(HahrobustError, match="HopSkipJump has no l0"):
        decision(Curved2().eval(), x, y, norm="l0", eps=1.0, indices=torch.arange(1))


# ------------------------------------------------------------- under gradient masking, and against PGD


#: PGD with its default 5 restarts but 5 steps each: against a zero input gradient no step moves an iterate
#: (ℓ∞ sign(0) = 0, ℓ2 0/‖0‖ = 0), so only the restarts' random starts count, exactly as with 100 steps.
BLIND_PGD = PGDConfig(steps=5)

#: The "large ε" per attack and norm, as a multiple of FMN's median distance, with the test budgets above.
#: Measured on this model (trained on synthetic images told apart by their overall colour): Square's local
#: square updates are slow here — at 300 queries it fooled 3/10 at 4× (ℓ∞), 0/10 at 4× and 4/10 at 6×, 9/10 at
#: 8× (ℓ2), 10/10 at 6× (ℓ∞). HopSkipJump walks from a noise image whose boundary point lies ≈ 12× FMN's ℓ2
#: distance away; with 6 steps it ends at 4.2–10.9× (plain) and 4.6–10.0× (quantised). PGD blind behind the
#: quantisation fooled 0/10 at 8–12× (ℓ2): random points this far out do not fool the model. HopSkipJump-ℓ∞
#: is left out: at this budget it ends ≈ 6× FMN's distance away on the plain model, barely closer than its
#: noise start, and behind quantisation its probes (ℓ2 radius γ·‖δ‖∞/d, 55× smaller than ℓ2's) stay inside a
#: quantisation step — measured 6/10 fooled plain, 4/10 quantised, at 10× with γ = 1 or 100.
LARGE = {("square", "linf"): 6.0, ("square", "l2"): 8.0, ("decision", "l2"): 10.0}


def black_box(attack: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    idx = torch.arange(len(x))
    if attack == "square":
        return square(model, x, y, norm=norm, eps=eps, indices=idx, config=SQUARE)
    return decision(model, x, y, norm=norm, eps=eps, indices=idx, config=HSJ)


@pytest.mark.parametrize("masking", ["plain", "quantised"])
@pytest.mark.parametrize(("attack", "norm"), [("square", "linf"), ("decision", "l2"),
                                              pytest.param("square", "l2", marks=pytest.mark.slow)])
def test_gradient_free_attacks_fool_a_clear_majority_where_pgd_is_blind(
    trained: tuple[nn.Module, torch.Tensor, torch.Tensor], fmn_median: dict[str, float], attack: str, norm: str,
    masking: str,
) -> None:
    """At a large ε both attacks fool ≥ 7 of 10 images, on the plain model and on the same model behind 8-bit
    input quantisation, where PGD (zero input gradient: only its random restarts move) fools at most a couple.
    That is the Carlini et al. (2019) check this toolkit runs: white-box robust accuracy above black-box
    means the gradients are masked."""
    model, x, y = trained
    model = Quantised(model).eval() if masking == "quantised" else model
    eps = LARGE[attack, norm] * fmn_median[norm]
    black = fooled(model, x, black_box(attack, model, x, y, norm, eps), y, norm, eps)
    assert black >= 7, f"{attack} fooled {black}/10 at {norm} ε = {eps:.4g} ({masking})"
    if masking == "quantised":
        white = fooled(model, x, pgd(model, x, y, norm=norm, eps=eps, indices=torch.arange(len(x)), config=BLIND_PGD),
                       y, norm, eps)
        assert white <= COUPLE, f"PGD should be blind behind quantisation, fooled {white}/10"


@pytest.mark.parametrize(("attack", "norm"), [("square", "linf"), ("square", "l2"), ("decision", "l2"), ("decision", "linf")])
def test_gradient_free_attacks_do_not_see_gradient_masking(
    random_net: tuple[nn.Module, torch.Tensor, torch.Tensor], attack: str, norm: str
) -> None:
    """The same function with its input gradient zeroed gives the very same examples: these attacks only ever
    ask for outputs. (Against the zero gradient, PGD is blind: see the test above.)"""
    model, x, y = random_net
    eps = {"linf": 0.1, "l2": 2.0}[norm]
    plain = black_box_fast(attack, model, x, y, norm, eps)
    assert fooled(model, x, plain, y, norm, eps) >= 1  # something was found, so the comparison means something
    assert torch.equal(black_box_fast(attack, ZeroGradient(model).eval(), x, y, norm, eps), plain)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", ["square", "decision"])
def test_not_stronger_than_pgd_on_a_plain_model(
    trained: tuple[nn.Module, torch.Tensor, torch.Tensor], fmn_median: dict[str, float], attack: str, norm: str,
) -> None:
    """On a differentiable model PGD (white-box) must be at least as strong as a gradient-free attack, up to a
    couple of images, at ε = FMN's median distance (PGD fools about half). ≈ 2 minutes."""
    model, x, y = trained
    eps = fmn_median[norm]
    white = fooled(model, x, pgd(model, x, y, norm=norm, eps=eps, indices=torch.arange(len(x))), y, norm, eps)
    black = fooled(model, x, black_box(attack, model, x, y, norm, eps), y, norm, eps)
    assert black <= white + COUPLE, f"{attack} fooled {black}/10, PGD {white}/10 at {norm} ε = {eps:.4g}"


# ------------------------------------------------------------------------ determinism and faithfulness


@pytest.fixture(scope="module")
def random_net() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small untrained CNN (seeded, caller's RNG untouched) and 4 random images labelled by it: cheap to
    query and easy to fool, for the tests about how the attacks run rather than how strong they are."""
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 7 * 7, 10)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        x = torch.rand(4, 3, 32, 32, generator=generator)
        y = model(x).argmax(dim=1)
    return model, x, y


def black_box_fast(attack: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float,
                   indices: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """A gradient-free attack with a budget of a few hundred queries per image."""
    indices = torch.arange(len(x)) if indices is None else indices
    if attack == "square":
        return square(model, x, y, norm=norm, eps=eps, indices=indices, seed=seed, config=SquareConfig(queries=100))
    return decision(model, x, y, norm=norm, eps=eps, indices=indices, seed=seed,
                    config=DecisionConfig(steps=3, initial_evals=20, max_evals=40))


@pytest.mark.parametrize(("attack", "norm"), [("square", "linf"), ("square", "l2"), ("decision", "l2"), ("decision", "linf")])
def test_same_seed_same_examples_whatever_the_batching(
    random_net: tuple[nn.Module, torch.Tensor, torch.Tensor], attack: str, norm: str
) -> None:
    """Per-image seeding: one batch of 4 or batches of 1 and 3 give identical examples; the caller's global RNG
    states (torch, Python, NumPy) are untouched; another seed changes the examples."""
    model, x, y = random_net
    eps, idx = {"linf": 0.1, "l2": 2.0}[norm], torch.arange(4)

    def run(rows: slice, seed: int = 0) -> torch.Tensor:
        return black_box_fast(attack, model, x[rows], y[rows], norm, eps, indices=idx[rows], seed=seed)

    torch.manual_seed(123), random.seed(5), np.random.seed(6)
    states = torch.random.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    whole = run(slice(0, 4))
    assert torch.equal(torch.random.get_rng_state(), states[0]) and random.getstate() == states[1]
    assert np.array_equal(np.random.get_state()[1], states[2])
    assert torch.equal(torch.cat([run(slice(0, 1)), run(slice(1, 4))]), whole)
    assert torch.equal(run(slice(0, 4)), whole)
    assert not torch.equal(run(slice(0, 4), seed=1), whole)


@pytest.mark.parametrize(("gamma", "query_batch"), [(1.0, 1), (100.0, 256)])
def test_chunked_hop_skip_jump_is_foolbox_hop_skip_jump(
    random_net: tuple[nn.Module, torch.Tensor, torch.Tensor], gamma: float, query_batch: int
) -> None:
    """Our HopSkipJump (no early stop, no push) returns exactly what foolbox's own HopSkipJumpAttack returns
    from the same starting point and the same seeded global generator: with one probe per model call, as
    foolbox asks, and with chunks of probes when the probes are not within float rounding of the boundary
    (γ = 100; with γ = 1 a chunked forward's rounding flips a few probes, see the module docstring)."""
    foolbox = _foolbox()
    model, x, y = random_net
    image, label = x[:1], y[:1]
    config = DecisionConfig(steps=3, initial_evals=30, max_evals=60, gamma=gamma, query_batch=query_batch,
                            boundary_push=0.0)
    ours = _attack_each(model, image, label, norm="l2", indices=torch.tensor([7]), seed=0, config=config, stop_at=None)

    def is_adversarial(batch: torch.Tensor) -> torch.Tensor:
        return model(batch).argmax(dim=1) != label

    with torch.no_grad(), isolated_global_rng("cpu"):
        start = _starting_point(image, 7, 0, config.start_tries, is_adversarial)
        torch.manual_seed(image_seed(0, 7, "decision-l2"))
        stock = foolbox.attacks.HopSkipJumpAttack(steps=3, initial_gradient_eval_steps=30, max_gradient_eval_steps=60,
                                                  gamma=gamma, constraint="l2")
        theirs, _, _ = stock(foolbox.PyTorchModel(model, bounds=(0, 1)), image, foolbox.criteria.Misclassification(label),
                             epsilons=None, starting_points=start)
    assert not torch.equal(ours, image)  # it did find something
    assert torch.equal(ours, theirs)


def test_decision_never_returns_a_point_beyond_eps(random_net: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    """At an ε below HopSkipJump's distances every image comes back within ε (verify raises otherwise) — the
    clean image or the projection onto the ε-ball — while the minimum-distance points lie beyond it."""
    model, x, y = random_net
    idx, config = torch.arange(len(x)), DecisionConfig(steps=3, initial_evals=20, max_evals=40)
    far = verify(model, x, hop_skip_jump(model, x, y, norm="l2", indices=idx, config=config), y, norm="l2", eps=None)
    eps = 0.5 * float(far.distance.min())
    assert far.adversarial.all()
    near = decision(model, x, y, norm="l2", eps=eps, indices=idx, config=config)
    verify(model, x, near, y, norm="l2", eps=eps)
