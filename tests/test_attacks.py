"""The attack library: norms and ε parsing by hand-computed cases, verification, PGD/FMN/DDN/AutoAttack on a
small trained model (validated against each other), determinism, global-RNG isolation, resume, saved examples."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from safetensors import safe_open
from torch import nn

from conftest import train_tiny_vgg11
from hahrobust.attacks import (
    ATTACK_NORMS, AutoAttackConfig, DDNConfig, FMNConfig, PGDConfig, AttackVerificationError, autoattack, check_attack,
    check_norm, ddn, distances, fmn, format_eps, load_adversarial, parse_eps, pgd, project, recheck, run_attack,
    run_attack_images,
    tolerance, verify,
)
from hahrobust.attacks._common import margin
from hahrobust.attacks.run import AttackRequest
from hahrobust.attacks.norms import random_start, within
from hahrobust.checkpoint import load_checkpoint
from hahrobust.data import ImageSet, balanced_subset, batches, load_cifar10
from hahrobust.errors import HahrobustError
from hahrobust.models import build

#: "A few points" when one attack is compared with another on 50-100 images: 4 points (2 of 50 images), with
#: a hair of float slack so 0.42 + 0.04 still admits 0.46.
SLACK = 0.04 + 1e-9

# ------------------------------------------------------------------------------------------------ fixtures


pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest.single_thread explains why


def train_on_tiny_data(tiny_data: Path, cache: Path, n: int, *, hah: bool) -> tuple[nn.Module, ImageSet]:
    """A VGG-11 (width 0.125, HaH or baseline) trained for 10 epochs on the tiny synthetic set (≈ 5 s): clean
    test accuracy well above chance, so attacks have work to do. Returns (model in eval mode, n class-balanced
    test images)."""
    train_set = load_cifar10(tiny_data, "train", cache_dir=cache)
    test_set = load_cifar10(tiny_data, "test", cache_dir=cache)
    model = train_tiny_vgg11(train_set, hah=hah)
    model.eval()
    subset = balanced_subset(test_set, n, seed=0)
    with torch.no_grad():
        acc = (model(subset.images.float() / 255).argmax(1) == subset.labels).float().mean().item()
    assert acc >= 0.8, f"the test model should learn the synthetic classes, got clean accuracy {acc:.2f}"
    return model, subset


@pytest.fixture(scope="session")
def trained(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, ImageSet]:
    """The baseline VGG-11 of :func:`train_on_tiny_data` and 50 test images."""
    return train_on_tiny_data(tiny_data, tmp_path_factory.mktemp("attack-cache"), 50, hah=False)


@pytest.fixture(scope="session")
def trained_hah(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, ImageSet]:
    """The HaH VGG-11 (first 4 blocks HaH: sparse, strong activations) of :func:`train_on_tiny_data` and 20 test
    images. Kept small (20 images) because it is attacked twice per comparison, by hahrobust and by foolbox."""
    return train_on_tiny_data(tiny_data, tmp_path_factory.mktemp("attack-cache-hah"), 20, hah=True)


@pytest.fixture(scope="session")
def fmn_distances(trained: tuple[nn.Module, ImageSet]) -> dict[str, torch.Tensor]:
    """FMN's verified per-image distances on the trained model for every norm (0: misclassified clean,
    ∞: never fooled), computed once with the default settings; their median sets ε for the comparisons."""
    model, data = trained
    x, y = data.images.float() / 255, data.labels
    out = {}
    for norm in ATTACK_NORMS["fmn"]:
        checked = verify(model, x, fmn(model, x, y, norm=norm), y, norm=norm, eps=None)
        out[norm] = torch.where(checked.adversarial, checked.distance, torch.tensor(math.inf, dtype=torch.float64))
    return out


class Linear2(nn.Module):
    """A hand-made 2-class model on any image: logit₁ − logit₀ = 10·(mean pixel − 0.5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).mean(dim=1, keepdim=True)
        return torch.cat([torch.zeros_like(s), 10 * (s - 0.5)], dim=1)


class Curved2(nn.Module):
    """Like Linear2 with the same boundary (mean pixel 0.5) but curved: logit₁ − logit₀ = 10u + 5u², u = mean − 0.5.
    (On an exactly linear model FMN's first boundary estimate lands exactly on the boundary, margin 0, which is
    not adversarial; the curvature avoids that knife edge, as any real network does.)"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.flatten(1).mean(dim=1, keepdim=True) - 0.5
        return torch.cat([torch.zeros_like(u), 10 * u + 5 * u * u], dim=1)


def eps_at(distance: torch.Tensor, norm: str) -> float:
    """ε at FMN's median distance (rounded to whole values for ℓ0)."""
    median = float(distance.median())
    return float(round(median)) if norm == "l0" else median


def fmn_implied(distance: torch.Tensor, eps: float, norm: str) -> float:
    """The robust accuracy FMN's distances imply at ε: the fraction of images not fooled within ε."""
    return float((~within(distance, eps, norm, 3072)).double().mean())


# ----------------------------------------------------------------------------------- norms, ε and parsing


@pytest.mark.parametrize(
    ("text", "norm", "expected"),
    [
        ("2/255", "linf", [2 / 255]),
        ("2/255,8/255", "linf", [2 / 255, 8 / 255]),
        (" 0.25 , 0.5 ", "l2", [0.25, 0.5]),
        ("1e-3", "l2", [1e-3]),
        ("12", "l1", [12.0]),
        ("24, 48", "l0", [24.0, 48.0]),
        ("0", "linf", [0.0]),
    ],
)
def test_parse_eps(text: str, norm: str, expected: list[float]) -> None:
    assert parse_eps(text, norm) == pytest.approx(expected, rel=0, abs=1e-15)


@pytest.mark.parametrize(
    ("text", "norm", "message"),
    [
        ("", "linf", "no value"),
        ("abc", "linf", "not a number"),
        ("2/0", "linf", "not a number"),
        ("-0.1", "l2", "≥ 0"),
        ("2", "linf", "at most 1"),
        ("2.5", "l0", "whole number"),
        ("0.1,0.1", "l2", "distinct"),
        ("nan", "l2", "not a number"),
    ],
)
def test_parse_eps_rejects(text: str, norm: str, message: str) -> None:
    with pytest.raises(HahrobustError, match=message):
        parse_eps(text, norm)


@pytest.mark.parametrize(("given", "norm"), [("linf", "linf"), ("Linf", "linf"), ("inf", "linf"), ("L2", "l2"), ("ℓ1", "l1"), ("0", "l0")])
def test_check_norm_spellings(given: str, norm: str) -> None:
    assert check_norm(given) == norm


def test_unknown_and_unsupported() -> None:
    with pytest.raises(HahrobustError, match="unknown norm 'l3'"):
        check_norm("l3")
    with pytest.raises(HahrobustError, match="unknown attack 'cw'"):
        check_attack("cw", "l2")
    with pytest.raises(HahrobustError, match="autoattack does not support l0.*attacks that support l0: pgd, fmn"):
        check_attack("autoattack", "l0")
    with pytest.raises(HahrobustError, match="ddn does not support l1"):
        check_attack("ddn", "l1")


@pytest.mark.parametrize(("eps", "norm", "text"), [(2 / 255, "linf", "2/255"), (0.25, "l2", "0.25"), (24.0, "l0", "24"), (0.01, "linf", "0.01")])
def test_format_eps(eps: float, norm: str, text: str) -> None:
    assert format_eps(eps, norm) == text


@pytest.mark.parametrize(
    ("norm", "expected"), [("linf", 0.5), ("l2", math.sqrt(0.25 + 0.09 + 0.01)), ("l1", 0.9), ("l0", 3.0)]
)
def test_distances_by_hand(norm: str, expected: float) -> None:
    delta = torch.tensor([[0.5, -0.3, 0.0, 0.1], [0.0, 0.0, 0.0, 0.0]])
    assert distances(delta, norm).tolist() == pytest.approx([expected, 0.0], abs=1e-7)


def test_tolerances_stated() -> None:
    assert tolerance("linf", 3072) == 2.0**-22
    assert tolerance("l2", 3072) == pytest.approx(2.0**-22 * math.sqrt(3072))
    assert tolerance("l1", 3072) == pytest.approx(2.0**-22 * 3072)
    assert tolerance("l0", 3072) == 0.0


# Hand-computed projections of rows z (perturbations) for clean rows x onto the ε-ball ∩ box.
PROJECTIONS = [
    # ℓ∞: clip to ±ε, then to the box [−x, 1 − x].
    ("linf", [0.3, -0.3, 0.05], [0.5, 0.1, 0.5], 0.2, [0.2, -0.1, 0.05]),
    # ℓ2: (3, 4)/5·1 = (0.6, 0.8), inside the box for x = 0.
    ("l2", [3.0, 4.0], [0.0, 0.0], 1.0, [0.6, 0.8]),
    # ℓ1 ∩ box: caps (0.5, 1); δ = (min(3 − θ, 0.5), 1 − θ) with 0.5 + 1 − θ = 1.2 → θ = 0.3.
    ("l1", [3.0, 1.0], [0.5, 0.0], 1.2, [0.5, 0.7]),
    # ℓ1 already inside the ball: only the box applies.
    ("l1", [0.2, -0.1], [0.5, 0.5], 1.0, [0.2, -0.1]),
    # ℓ0 ∩ box, ε = 1: clipped (0.5, −0.5, 0.2); savings 0.81 − 0.16, 0.25, 0.04 → keep the first.
    ("l0", [0.9, -0.5, 0.2], [0.5, 0.5, 0.5], 1.0, [0.5, 0.0, 0.0]),
    # ℓ0, ε = 2: ties broken by index, exactly 2 kept.
    ("l0", [0.1, 0.1, 0.1], [0.5, 0.5, 0.5], 2.0, [0.1, 0.1, 0.0]),
    ("l0", [0.1, 0.1, 0.1], [0.5, 0.5, 0.5], 0.0, [0.0, 0.0, 0.0]),
]


@pytest.mark.parametrize(("norm", "z", "x", "eps", "expected"), PROJECTIONS)
def test_projection_by_hand(norm: str, z: list[float], x: list[float], eps: float, expected: list[float]) -> None:
    out = project(torch.tensor([z]), torch.tensor([x]), eps, norm)
    assert out[0].tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1", "l0"])
def test_projection_lands_in_ball_and_box(norm: str) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 4, 4, generator=generator)
    z = torch.randn(8, 3, 4, 4, generator=generator)
    eps = {"linf": 0.1, "l2": 0.5, "l1": 2.0, "l0": 7.0}[norm]
    out = project(z, x, eps, norm)
    assert ((x + out) >= 0).all() and ((x + out) <= 1).all()
    assert (distances(out, norm) <= eps + tolerance(norm, 48)).all()
    # Projection is idempotent, and a point already inside stays put.
    assert torch.allclose(project(out, x, eps, norm), out, atol=1e-6)
    start = random_start(torch.rand(8, 3, 4, 4, generator=generator), x, eps, norm)
    assert (distances(start, norm) <= eps + tolerance(norm, 48)).all() and ((x + start) >= 0).all()


def test_l1_projection_is_the_closest_point() -> None:
    """No feasible point of a random sample is closer to z than the ℓ1 ∩ box projection."""
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(1, 6, generator=generator)
    z = torch.randn(1, 6, generator=generator)
    p = project(z, x, 0.8, "l1")
    candidates = project(torch.randn(4000, 6, generator=generator), x.expand(4000, 6), 0.8, "l1")
    assert (candidates - z).norm(dim=1).min() >= (p - z).norm() - 1e-6


# ----------------------------------------------------------------------------------------------- verify


def test_verify_accepts_and_recomputes_predictions() -> None:
    model = Linear2()
    x = torch.full((2, 1, 2, 2), 0.45)
    y = torch.tensor([0, 1])
    x_adv = x + torch.tensor([0.1, 0.0]).view(2, 1, 1, 1)  # image 0 moves to mean 0.55 → class 1
    checked = verify(model, x, x_adv, y, norm="linf", eps=0.1)
    assert checked.pred.tolist() == [1, 0]
    assert checked.adversarial.tolist() == [True, True]  # image 1 was misclassified to begin with
    assert checked.distance.tolist() == pytest.approx([0.1, 0.0], abs=1e-7)


@pytest.mark.parametrize(
    ("tamper", "norm", "eps", "message"),
    [
        (lambda a: a + 1e-5, "linf", 0.1, "beyond ε"),  # 1e-5 over the bound, 40× the ℓ∞ tolerance
        (lambda a: a + torch.tensor([0.04, 0.0, 0.0, 0.0]).view(1, 1, 2, 2), "l0", 0.0, "beyond ε"),
        (lambda a: a + 0.6, "linf", 1.0, r"leaves the \[0, 1\] box"),
        (lambda a: a * float("nan"), "l2", 1.0, "non-finite"),
        (lambda a: a[:1], "l2", 1.0, "shape"),
    ],
)
def test_verify_rejects_tampered_examples(tamper, norm: str, eps: float, message: str) -> None:
    model = Linear2()
    x = torch.full((2, 1, 2, 2), 0.45)
    y = torch.tensor([0, 0])
    x_adv = project(torch.full_like(x, 0.1), x, eps, norm) + x if norm != "l0" else x.clone()
    verify(model, x, x_adv, y, norm=norm, eps=eps)  # the honest example passes
    with pytest.raises(AttackVerificationError, match=message):
        verify(model, x, tamper(x_adv), y, norm=norm, eps=eps)


def test_verify_rejects_tampered_pgd_example(trained: tuple[nn.Module, ImageSet]) -> None:
    model, data = trained
    x, y = data.images[:8].float() / 255, data.labels[:8]
    x_adv = pgd(model, x, y, norm="l2", eps=0.5, indices=torch.arange(8), config=PGDConfig(steps=5, restarts=1))
    verify(model, x, x_adv, y, norm="l2", eps=0.5)
    tampered = x_adv.clone()
    # 2 % outside the ball, inside the box: each value moves 0.51/√3072 away from its nearer box face.
    tampered[3] = x[3] + torch.where(x[3] < 0.5, 1.0, -1.0) * 0.51 / math.sqrt(x[3].numel())
    with pytest.raises(AttackVerificationError, match="image 3 .* beyond ε"):
        verify(model, x, tampered, y, norm="l2", eps=0.5)


# ------------------------------------------------------------------------------------ attack mechanics


def test_margin_sign() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert margin(logits, torch.tensor([0, 0])).tolist() == [-1.0, 3.0]


class Recorder(nn.Module):
    """Wraps a model and keeps every batch of margins it computes (every PGD iterate passes through it)."""

    def __init__(self, model: nn.Module, y: torch.Tensor) -> None:
        super().__init__()
        self.model, self.y, self.margins = model, y, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if len(x) == len(self.y):
            self.margins.append(margin(out.detach(), self.y))
        return out


class Trap(nn.Module):
    """10 classes on t = mean pixel − 0.3: logit₀ = 0, logit₁ = −0.5 − 10t, logits₂…₉ = −1.5 + 5t.

    At t = 0 the cross-entropy gradient for label 0 points to larger t (8·5·e^−1.5 > 10·e^−0.5), but the
    margin max(logit₁, logit₂) falls from −0.5 to −1.17 at t = 1/15 and is only −1.0 at t = 0.1. So PGD
    (ℓ∞, ε = 0.1, from the clean image) ascends into worse margins: its best iterate is the first one.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.flatten(1).mean(dim=1, keepdim=True) - 0.3
        return torch.cat([torch.zeros_like(t), -0.5 - 10 * t, (-1.5 + 5 * t).expand(-1, 8)], dim=1)


def test_pgd_returns_the_best_iterate_not_the_last() -> None:
    x, y = torch.full((1, 1, 2, 2), 0.3), torch.tensor([0])
    recorder = Recorder(Trap(), y)
    x_adv = pgd(recorder, x, y, norm="linf", eps=0.1, indices=torch.arange(1), config=PGDConfig(steps=20, restarts=1))
    seen = torch.stack(recorder.margins)[:, 0]  # clean + 21 iterates
    assert float(seen[-1]) == pytest.approx(-1.0, abs=1e-4)  # the last iterate ends at t = 0.1
    assert float(seen.max()) == pytest.approx(-0.5, abs=1e-6)
    assert float(margin(Trap()(x_adv), y)) == pytest.approx(-0.5, abs=1e-6)  # PGD returned the best one


def test_pgd_keeps_the_best_iterate_on_a_real_model(trained: tuple[nn.Module, ImageSet]) -> None:
    model, data = trained
    x, y = data.images[:10].float() / 255, data.labels[:10]
    recorder = Recorder(model, y).eval()
    config = PGDConfig(steps=20, restarts=1, early_stop=False)  # every image runs every step
    x_adv = pgd(recorder, x, y, norm="l1", eps=3.0, indices=torch.arange(10), config=config)
    seen = torch.stack(recorder.margins)
    with torch.no_grad():
        final = margin(model(x_adv), y)
    assert torch.allclose(final, seen.max(dim=0).values, atol=1e-5)


class RowCounter(nn.Module):
    """Counts the images a model is evaluated on (the work an attack does)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        return self.model(x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_early_stop_breaks_the_same_images_with_less_work(
    trained: tuple[nn.Module, ImageSet], fmn_distances: dict[str, torch.Tensor], norm: str
) -> None:
    """An image leaves PGD at its first adversarial iterate: the same images are broken as when every image runs
    every step (images never interact), the examples are adversarial and within ε, and the model sees fewer rows."""
    model, data = trained
    eps = float(fmn_distances[norm].median())  # FMN implies about half the images break: both kinds are tested
    outcomes, rows = {}, {}
    for early in (False, True):
        counter = RowCounter(model).eval()
        outcomes[early] = run_attack_images(counter, data, AttackRequest(
            "pgd", norm, [eps], PGDConfig(steps=20, restarts=3, early_stop=early), batch_size=50))
        rows[early] = counter.rows
    robust = outcomes[True].robust
    assert 0 < robust.sum() < outcomes[True].correct.sum()  # some broken, some not: the comparison means something
    np.testing.assert_array_equal(robust, outcomes[False].robust)
    # At FMN's median most broken images break late (measured: 7–11 % fewer rows); at the audit's ε on the
    # reference models most break in the first steps (benchmarks/audit_cost.py measures that).
    assert rows[True] < rows[False], rows


def test_pgd_restarts_never_lose_ground(trained: tuple[nn.Module, ImageSet]) -> None:
    """Restart 0 is the same with 1 or 3 restarts; later restarts may only raise each image's best margin."""
    model, data = trained
    x, y = data.images[:20].float() / 255, data.labels[:20]
    one = pgd(model, x, y, norm="l2", eps=0.8, indices=torch.arange(20), config=PGDConfig(steps=10, restarts=1))
    three = pgd(model, x, y, norm="l2", eps=0.8, indices=torch.arange(20), config=PGDConfig(steps=10, restarts=3))
    with torch.no_grad():
        m1, m3 = margin(model(one), y), margin(model(three), y)
    assert (m3 >= m1 - 1e-5).all()


def test_pgd_does_not_depend_on_batching(trained: tuple[nn.Module, ImageSet]) -> None:
    model, data = trained
    data = ImageSet(data.images[:20], data.labels[:20], data.source)
    config = PGDConfig(steps=10, restarts=2)
    a = run_attack(model, data, attack="pgd", norm="linf", eps=[0.02], batch_size=20, config=config)
    b = run_attack(model, data, attack="pgd", norm="linf", eps=[0.02], batch_size=7, config=config)
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))


def test_fmn_and_ddn_leave_misclassified_images_at_distance_zero() -> None:
    model = Curved2()
    x = torch.tensor([0.3, 0.45, 0.6]).view(3, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    y = torch.tensor([0, 0, 0])  # image 2 (mean 0.6) is already class 1
    for out in (fmn(model, x, y, norm="l2"), ddn(model, x, y)):
        checked = verify(model, x, out, y, norm="l2", eps=None)
        assert checked.adversarial.all()
        assert checked.distance[2] == 0
        # 4 values, boundary is at mean 0.5, i.e. ℓ2 distance 2·(0.5 − mean).
        assert checked.distance[:2].tolist() == pytest.approx([0.4, 0.1], rel=0.05)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1", "l0"])
def test_fmn_on_linear_model_by_hand(norm: str) -> None:
    """Mean of 4 values from 0.45 to 0.5 needs a total change of 0.2: ℓ1 0.2, ℓ2 0.1, ℓ∞ 0.05; ℓ0 1 value."""
    model = Curved2()
    x = torch.full((1, 1, 2, 2), 0.45)
    out = fmn(model, x, torch.tensor([0]), norm=norm, config=FMNConfig(steps=100))
    checked = verify(model, x, out, torch.tensor([0]), norm=norm, eps=None)
    assert checked.adversarial.all()
    assert float(checked.distance[0]) == pytest.approx({"linf": 0.05, "l2": 0.1, "l1": 0.2, "l0": 1.0}[norm], rel=0.05)


# ---------------------------------------------------------------------------------------- run_attack rows


@pytest.mark.parametrize(
    ("attack", "norm", "eps"),
    [
        ("pgd", "linf", [0.0, 0.02]), ("pgd", "l2", [0.5]), ("pgd", "l1", [5.0]), ("pgd", "l0", [10.0]),
        ("fmn", "linf", [0.02, 0.05]), ("fmn", "l2", [0.5]), ("fmn", "l1", [5.0]), ("fmn", "l0", [10.0]),
        ("ddn", "l2", [0.5]), ("autoattack", "linf", [0.02]), ("autoattack", "l2", [0.5]), ("autoattack", "l1", [5.0]),
    ],
)
def test_every_attack_respects_its_constraint(
    trained: tuple[nn.Module, ImageSet], tmp_path: Path, attack: str, norm: str, eps: list[float]
) -> None:
    """Each attack × norm on 10 images: the saved examples verify again, and the rows are consistent."""
    model, data = trained
    data = ImageSet(data.images[::5], data.labels[::5], data.source)  # 10 images, one per class
    rows = run_attack(
        model, data, attack=attack, norm=norm, eps=eps, batch_size=10, save_adv=tmp_path / "adv.safetensors",
        config={"autoattack": AutoAttackConfig("paper"), "pgd": PGDConfig(steps=10, restarts=2),
                "fmn": FMNConfig(steps=30), "ddn": DDNConfig(steps=30)}.get(attack),
    )
    assert rows["eps"].tolist() == eps and (rows["n"] == 10).all()
    assert (rows["robust_acc"] <= rows["clean_acc"]).all()
    if 0.0 in eps:
        assert rows.loc[rows.eps == 0, "robust_acc"].item() == rows.loc[rows.eps == 0, "clean_acc"].item()
    tensors, settings = load_adversarial(tmp_path / "adv.safetensors")
    for key in (k for k in tensors if k.startswith("x_adv/")):
        delta = tensors[key] - tensors["x"]
        bound = eps[int(key.split("/")[1])] if attack not in ("fmn", "ddn") else math.inf
        assert (distances(delta, norm) <= bound + tolerance(norm, 3072)).all()
        assert tensors[key].min() >= 0 and tensors[key].max() <= 1
    again = recheck(model, tmp_path / "adv.safetensors")
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), rows.drop(columns="seconds"))


def test_misclassified_images_count_as_non_robust_at_distance_zero(make_checkpoint, tiny_data: Path) -> None:
    from hahrobust.checkpoint import load_checkpoint

    model, _ = load_checkpoint(make_checkpoint("vgg11"))  # untrained: most images misclassified
    data = load_cifar10(tiny_data, "test")
    data = ImageSet(data.images[::10], data.labels[::10], data.source)
    rows = run_attack(model, data, attack="fmn", norm="l2", eps=[0.0, 1e-9], config=FMNConfig(steps=5))
    wrong = 1 - rows["clean_acc"].iloc[0]
    assert wrong > 0.5
    assert rows["robust_acc"].iloc[0] == rows["clean_acc"].iloc[0]  # ε = 0 only the clean errors count
    assert rows["median_distance"].iloc[0] == 0.0  # most images are at distance 0


def test_missing_autoattack_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from hahrobust.attacks.autoattack import load_autoattack

    cls, module = load_autoattack()
    assert cls.__name__ == "AutoAttack" and module.__name__ in ("autoattack", "pyautoattack")
    import sys

    monkeypatch.setitem(sys.modules, "autoattack", None)  # None in sys.modules makes the import fail
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    with pytest.raises(HahrobustError, match="pip install pyautoattack"):
        load_autoattack()


def test_bad_arguments() -> None:
    model, data = Linear2(), ImageSet(torch.zeros(2, 3, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), "x")
    with pytest.raises(HahrobustError, match="at most 1"):
        run_attack(model, data, attack="pgd", norm="linf", eps=[2.0])
    with pytest.raises(HahrobustError, match="≥ 0"):
        run_attack(model, data, attack="pgd", norm="l2", eps=[-1.0])
    with pytest.raises(HahrobustError, match="attacks that support l0"):
        run_attack(model, data, attack="autoattack", norm="l0")
    with pytest.raises(HahrobustError, match="unknown AutoAttack version"):
        run_attack(model, data, attack="autoattack", norm="linf", config=AutoAttackConfig("plus"))


# --------------------------------------------------------------------------------- randomness, resume


def test_autoattack_restores_the_callers_rng(trained: tuple[nn.Module, ImageSet]) -> None:
    model, data = trained
    x, y = data.images[:4].float() / 255, data.labels[:4]
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(6)
    states = torch.random.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    a = autoattack(model, x, y, norm="linf", eps=0.05, seed=7, version="paper")
    assert torch.equal(torch.random.get_rng_state(), states[0])
    assert random.getstate() == states[1]
    assert np.array_equal(np.random.get_state()[1], states[2])
    b = autoattack(model, x, y, norm="linf", eps=0.05, seed=7, version="paper")
    assert torch.equal(a, b)  # explicitly seeded: the same call gives the same examples


def test_run_attack_leaves_global_rng_and_model_mode(trained: tuple[nn.Module, ImageSet]) -> None:
    model, data = trained
    data = ImageSet(data.images[:5], data.labels[:5], data.source)
    state = torch.random.get_rng_state()
    model.train()
    try:
        run_attack(model, data, attack="pgd", norm="l2", eps=[0.3], config=PGDConfig(steps=3, restarts=2))
        assert model.training
    finally:
        model.eval()
    assert torch.equal(torch.random.get_rng_state(), state)


class Stop(KeyboardInterrupt):
    pass


def test_resume_skips_finished_batches_and_ends_with_the_same_numbers(
    trained: tuple[nn.Module, ImageSet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hahrobust.attacks.run as attack_run

    model, data = trained
    data = ImageSet(data.images[:30], data.labels[:30], data.source)
    kwargs = dict(attack="pgd", norm="linf", eps=[0.01, 0.03], batch_size=10, config=PGDConfig(steps=5, restarts=2))
    reference = run_attack(model, data, **kwargs, save_adv=tmp_path / "ref.safetensors")

    journal = tmp_path / "run.jsonl"

    def stop_after_two(batch: int) -> None:
        if batch == 1:
            raise Stop

    with pytest.raises(Stop):
        run_attack(model, data, **kwargs, journal_path=journal, save_adv=tmp_path / "adv.safetensors", on_batch=stop_after_two)
    assert not (tmp_path / "adv.safetensors").exists()  # nothing half-written
    assert len(journal.read_text().splitlines()) == 1 + 2  # header + two finished batches
    with journal.open("a") as f:
        f.write('{"batch": 2, "torn')  # a kill in the middle of an append

    with pytest.raises(HahrobustError, match="pass --resume"):
        run_attack(model, data, **kwargs, journal_path=journal)
    with pytest.raises(HahrobustError, match="different settings .*eps"):
        run_attack(model, data, **{**kwargs, "eps": [0.02]}, journal_path=journal, resume=True, save_adv=tmp_path / "a")

    attacked: list[int] = []
    real = attack_run._attack_batch

    def counting(*args, **kw):
        attacked.append(args[5])  # (model, attacked model, x, y, idx, batch)
        return real(*args, **kw)

    monkeypatch.setattr(attack_run, "_attack_batch", counting)
    resumed = run_attack(model, data, **kwargs, journal_path=journal, resume=True, save_adv=tmp_path / "adv.safetensors")
    assert attacked == [2]  # only the unfinished batch ran
    pd.testing.assert_frame_equal(resumed.drop(columns="seconds"), reference.drop(columns="seconds"))
    ref_t, _ = load_adversarial(tmp_path / "ref.safetensors")
    got_t, _ = load_adversarial(tmp_path / "adv.safetensors")
    assert ref_t.keys() == got_t.keys() and all(torch.equal(ref_t[k], got_t[k]) for k in ref_t)


def test_tampered_saved_file_fails_recheck(trained: tuple[nn.Module, ImageSet], tmp_path: Path) -> None:
    model, data = trained
    data = ImageSet(data.images[:6], data.labels[:6], data.source)
    path = tmp_path / "adv.safetensors"
    run_attack(model, data, attack="pgd", norm="linf", eps=[0.02], save_adv=path, config=PGDConfig(steps=5, restarts=1))
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    tensors["x_adv/0"][2] = (tensors["x"][2] + 0.05).clamp(0, 1)
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(AttackVerificationError, match="image 2 .* beyond ε = 0.02"):
        recheck(model, path)


# ------------------------------------------------------------- validation against independent methods


@pytest.mark.parametrize("norm", ["linf", "l2", "l1", "l0"])
def test_pgd_is_at_least_as_strong_as_fmn_implies(
    trained: tuple[nn.Module, ImageSet], fmn_distances: dict[str, torch.Tensor], norm: str
) -> None:
    """At ε = FMN's median distance FMN implies about 50 % robust; default PGD (a fixed-ε attack with the whole
    budget to use) must not leave more than 4 points (2 of 50 images) above that."""
    model, data = trained
    eps = eps_at(fmn_distances[norm], norm)
    implied = fmn_implied(fmn_distances[norm], eps, norm)
    robust = run_attack(model, data, attack="pgd", norm=norm, eps=[eps], batch_size=50)["robust_acc"].item()
    assert robust <= implied + SLACK, f"{norm}: PGD {robust:.2f} vs FMN-implied {implied:.2f} at ε={eps:.4g}"


def test_fmn_l2_distances_agree_with_ddn(trained: tuple[nn.Module, ImageSet], fmn_distances: dict[str, torch.Tensor]) -> None:
    """Two independent minimum-norm ℓ2 methods: medians within 10 %, and per image within 25 % for ≥ 80 %."""
    model, data = trained
    x, y = data.images.float() / 255, data.labels
    checked = verify(model, x, ddn(model, x, y), y, norm="l2", eps=None)
    d_ddn = torch.where(checked.adversarial, checked.distance, torch.tensor(math.inf, dtype=torch.float64))
    d_fmn = fmn_distances["l2"]
    attacked = d_fmn > 0
    assert torch.isfinite(d_fmn).all() and torch.isfinite(d_ddn).all()
    assert float(d_fmn[attacked].median()) == pytest.approx(float(d_ddn[attacked].median()), rel=0.10)
    close = ((d_fmn[attacked] - d_ddn[attacked]).abs() / d_ddn[attacked] <= 0.25).double().mean()
    assert close >= 0.8


def mean_distances_against_foolbox(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, norm: str
) -> tuple[float, float, int]:
    """hahrobust's and foolbox 3.3.4's mean distance over the images both fooled, and how many those are: the
    same attack (FMN or DDN) with the same number of steps, each distance recomputed from the returned image
    and each image re-checked to be misclassified (:func:`verify`). foolbox's ℓ2 FMN is not a reference: its
    projection never projects (it scales by norms / norms)."""
    import foolbox  # a test dependency (pyproject's test extra), imported here so the other tests run without it

    if attack == "ddn":
        ours, reference = ddn(model, x, y), foolbox.attacks.DDNAttack(steps=DDNConfig().steps)
    else:
        fmn_reference = {"l1": foolbox.attacks.L1FMNAttack, "linf": foolbox.attacks.LInfFMNAttack}[norm]
        ours, reference = fmn(model, x, y, norm=norm), fmn_reference(steps=FMNConfig().steps)
    theirs = reference.run(foolbox.PyTorchModel(model, bounds=(0, 1)), x, foolbox.criteria.Misclassification(y))
    checked_ours = verify(model, x, ours, y, norm=norm, eps=None)
    checked_theirs = verify(model, x, theirs, y, norm=norm, eps=None, attack="foolbox")
    both = checked_ours.adversarial & checked_theirs.adversarial
    return float(checked_ours.distance[both].mean()), float(checked_theirs.distance[both].mean()), int(both.sum())


#: The attacks compared with foolbox's: ℓ1 and ℓ∞ FMN, and DDN (ℓ2).
FOOLBOX_ROWS = [("fmn", "l1"), ("fmn", "linf"), ("ddn", "l2")]


@pytest.mark.parametrize(("attack", "norm"), FOOLBOX_ROWS)
def test_minimum_norm_distances_agree_with_foolbox(trained_hah: tuple[nn.Module, ImageSet], attack: str, norm: str) -> None:
    """The same algorithm as foolbox's finds the same distances: means within 10 % on the tiny HaH model.
    Measured (20 images, all fooled by both): ℓ1 FMN 14.51 vs 14.43, ℓ∞ FMN 0.02356 vs 0.02354, DDN 0.6556
    vs 0.6639. With ℓ1 FMN's former α₀ = 10 (issue 12) ℓ1 was 30.77, 2.13 × foolbox's."""
    model, data = trained_hah
    x, y = data.images.float() / 255, data.labels
    ours, theirs, both = mean_distances_against_foolbox(model, x, y, attack, norm)
    assert both >= 0.9 * len(x), f"only {both} of {len(x)} images fooled by both"
    assert ours == pytest.approx(theirs, rel=0.10), f"{attack} {norm}: hahrobust {ours:.4g} vs foolbox {theirs:.4g}"


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint", ["hah-vgg16-small", "vgg16-small"])
@pytest.mark.parametrize(("attack", "norm"), FOOLBOX_ROWS)
def test_minimum_norm_distances_agree_with_foolbox_on_the_reference_checkpoints(
    shared_cifar: Path, tmp_path: Path, checkpoint: str, attack: str, norm: str
) -> None:
    """Issue 12's setting: the first 10 test images of each class, those classified correctly (45 HaH, 61
    baseline), 100 steps; means within 10 %. Measured (hahrobust vs foolbox, HaH; baseline), every image fooled
    by both: ℓ1 FMN 7.572 vs 7.428; 1.697 vs 1.713 (with the former ℓ1 α₀ = 10: 16.53 and 2.473, ratios 2.23
    and 1.44); ℓ∞ FMN 0.01681 vs 0.01715; 0.003480 vs 0.003482; DDN 0.4487 vs 0.4508; 0.1333 vs 0.1334. About
    5 minutes on one thread."""
    model, _ = load_checkpoint(Path(__file__).resolve().parents[1] / "checkpoints" / f"{checkpoint}.safetensors")
    model.eval()
    test_set = load_cifar10(shared_cifar, "test", cache_dir=tmp_path / "cache")
    first = torch.cat([(test_set.labels == label).nonzero().flatten()[:10] for label in range(10)])
    x, y = test_set.images[first].float() / 255, test_set.labels[first]
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    x, y = x[correct], y[correct]
    ours, theirs, both = mean_distances_against_foolbox(model, x, y, attack, norm)
    assert both >= 0.9 * len(x), f"only {both} of {len(x)} images fooled by both"
    assert ours == pytest.approx(theirs, rel=0.10), f"{attack} {norm}: hahrobust {ours:.4g} vs foolbox {theirs:.4g}"


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_autoattack_is_at_least_as_strong_as_pgd(
    trained: tuple[nn.Module, ImageSet], fmn_distances: dict[str, torch.Tensor], norm: str
) -> None:
    model, data = trained
    data = ImageSet(data.images[::2], data.labels[::2], data.source)  # 25 images keep AutoAttack quick
    eps = eps_at(fmn_distances[norm], norm)
    aa = run_attack(model, data, attack="autoattack", norm=norm, eps=[eps], batch_size=25, config=AutoAttackConfig("paper"))
    pg = run_attack(model, data, attack="pgd", norm=norm, eps=[eps], batch_size=25)
    assert aa["robust_acc"].item() <= pg["robust_acc"].item() + SLACK


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_standard_autoattack_is_at_least_as_strong_as_default_pgd(
    trained: tuple[nn.Module, ImageSet], fmn_distances: dict[str, torch.Tensor], norm: str
) -> None:
    """Standard AutoAttack vs default PGD on 50 images at FMN's median (≈ 10 min). Measured: ℓ1 is the tight
    one — AutoAttack 46 % vs PGD 42 %, exactly the 2-image slack: our sparse ℓ1 PGD is a bit stronger there."""
    model, data = trained
    eps = eps_at(fmn_distances[norm], norm)
    aa = run_attack(model, data, attack="autoattack", norm=norm, eps=[eps], batch_size=50)
    pg = run_attack(model, data, attack="pgd", norm=norm, eps=[eps], batch_size=50)
    assert aa["robust_acc"].item() <= pg["robust_acc"].item() + SLACK


def test_throughput_benchmark_runs_and_reports(tmp_path: Path) -> None:
    """benchmarks/attack_throughput.py runs and reports every requested attack × norm (timings are not tested)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "attack_throughput.py"), "--model", "vgg11", "--width", "0.125",
         "--batch-size", "2", "--steps", "2", "--rounds", "1", "--threads", "1", "--attacks", "pgd", "fmn", "ddn",
         "--norms", "l2", "l0", "--json", str(out)],
        cwd=root, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert [(r["attack"], r["norm"]) for r in record["results"]] == [("pgd", "l2"), ("pgd", "l0"), ("fmn", "l2"), ("fmn", "l0"), ("ddn", "l2")]
    assert all(r["images_per_s"] > 0 for r in record["results"])


@pytest.mark.slow
def test_attacks_agree_on_a_model_trained_on_real_cifar(shared_cifar: Path, tmp_path: Path) -> None:
    """A VGG-11 (width 0.25) trained 8 epochs on 5000 real CIFAR-10 images (≈ 50 % clean accuracy), 100 test
    images, ε = FMN's median distance over the correctly classified ones, so FMN implies half the clean
    accuracy. Measured (CPU, one thread): FMN-implied 26 % for every norm; PGD 27 / 26 / 26 / 23 % (ℓ∞/ℓ2/ℓ1/ℓ0);
    AutoAttack (paper) 26 / 26 / 27 %; DDN's median ℓ2 distance 0.2795 vs FMN's 0.2792. About 5 minutes."""
    cache = tmp_path / "cache"
    train_set = balanced_subset(load_cifar10(shared_cifar, "train", cache_dir=cache), 5000, 0)
    test_set = balanced_subset(load_cifar10(shared_cifar, "test", cache_dir=cache), 100, 0)
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = build("vgg11", width=0.25)
    torch.random.set_rng_state(state)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(8):
        model.train()
        for x, y, _ in batches(train_set, 64, shuffle=True, augment=True, seed=0, epoch=epoch):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    x, y = test_set.images.float() / 255, test_set.labels
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    assert correct.double().mean() >= 0.35, "the model should be well above chance"
    inf = torch.tensor(math.inf, dtype=torch.float64)
    for norm in ("linf", "l2", "l1", "l0"):
        checked = verify(model, x, fmn(model, x, y, norm=norm), y, norm=norm, eps=None)
        d = torch.where(correct, torch.where(checked.adversarial, checked.distance, inf), torch.zeros_like(checked.distance))
        eps = eps_at(d[correct], norm)
        implied = fmn_implied(d, eps, norm)
        robust = run_attack(model, test_set, attack="pgd", norm=norm, eps=[eps])["robust_acc"].item()
        assert robust <= implied + SLACK, f"{norm}: PGD {robust:.2f} vs FMN-implied {implied:.2f}"
        if norm != "l0":
            aa = run_attack(model, test_set, attack="autoattack", norm=norm, eps=[eps], config=AutoAttackConfig("paper"))
            assert aa["robust_acc"].item() <= robust + SLACK
        if norm == "l2":
            checked_ddn = verify(model, x, ddn(model, x, y), y, norm="l2", eps=None)
            d_ddn = torch.where(checked_ddn.adversarial, checked_ddn.distance, inf)
            assert float(d_ddn[correct].median()) == pytest.approx(float(d[correct].median()), rel=0.10)


def test_minimum_norm_summary_statistics_by_hand() -> None:
    """Four images: misclassified (distance 0), fooled at 1 and at 3, never fooled (∞). Median over all n:
    sorted [0, 1, 3, ∞] → 2; mean (Fig. 5) over the attacked images with an example: (1 + 3) / 2 = 2;
    robust at ε = 2: the images at 3 and ∞."""
    from hahrobust.attacks.outcome import summarise as _summarise

    record = {"label": [0, 1, 2, 3], "clean_pred": [9, 1, 2, 3], "pred": [[9, 0, 0, 3]],
              "distance": [[0.0, 1.0, 3.0, None]], "seconds": [1.5]}
    (row,) = _summarise([record], [2.0], "fmn", "l2", 0, True, dim=3072).to_dict("records")
    assert row["median_distance"] == 2.0 and row["mean_distance"] == 2.0 and row["unfound"] == 1
    assert row["clean_acc"] == 0.75 and row["robust_acc"] == 0.5
    record["distance"] = [[0.0, 1.0, 4.0, None]]  # a misclassified zero never enters the mean
    (row,) = _summarise([record], [2.0], "fmn", "l2", 0, True, dim=3072).to_dict("records")
    assert row["mean_distance"] == 2.5 and row["median_distance"] == 2.5


class _QuantisedLinear(torch.nn.Module):
    """A linear classifier on a 16-level quantised image: its input gradient is zero almost everywhere,
    the textbook case of gradient masking that AutoAttack's own checks exist to catch."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(10, 3 * 32 * 32, generator=generator) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.round(x * 15) / 15).flatten(1) @ self.weight.t()


def test_autoattack_flags_reach_the_caller_and_survive_a_resume(tmp_path: Path) -> None:
    """Zero gradients, and Square finding what the gradient attacks missed: both of AutoAttack's doubts are
    raised as AutoAttackFlag warnings (not swallowed with its log output), also for journaled batches."""
    from hahrobust.attacks import AutoAttackFlag
    from hahrobust.attacks.autoattack import autoattack_flags

    model = _QuantisedLinear().eval()
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = model(images.float() / 255).argmax(1)
    data = ImageSet(images, labels, "random images labelled by the model")
    journal = tmp_path / "aa.jsonl"
    with autoattack_flags() as flags:
        fresh = run_attack(model, data, attack="autoattack", norm="linf", eps=[2 / 255], batch_size=10,
                           journal_path=journal)
    assert any("zero gradient" in f for f in flags) and any("Square Attack has decreased" in f for f in flags)
    assert fresh["robust_acc"].item() < fresh["clean_acc"].item()
    with pytest.warns(AutoAttackFlag) as caught:
        resumed = run_attack(model, data, attack="autoattack", norm="linf", eps=[2 / 255], batch_size=10,
                             journal_path=journal, resume=True)
    assert {str(w.message) for w in caught} == set(flags)  # read back from the journal, not recomputed
    assert resumed["robust_acc"].item() == fresh["robust_acc"].item()


def test_the_runner_takes_a_request_and_options_and_the_keyword_form_splits_into_them() -> None:
    from hahrobust.attacks.run import RunOptions, split_arguments

    request, options = split_arguments(attack="pgd", norm="l2", eps=[0.5], seed=3, device="cpu", resume=True)
    assert request == AttackRequest("pgd", "l2", [0.5], seed=3) and options == RunOptions("cpu", resume=True)
    with pytest.raises(TypeError, match="atack"):
        split_arguments(atack="pgd")  # a misspelt keyword is named, not swallowed
