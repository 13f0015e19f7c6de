"""Adaptive attacks and the audit: surrogate gradients keep the forward pass exact, EOT is per-image
deterministic, a deliberately masked model is caught and broken, a plain model is not called masked, and the
worst case is never above any attack's robust accuracy."""

from __future__ import annotations

from dataclasses import replace

from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from conftest import train_tiny_vgg11
from hahrobust.attacks import GradientPath, PGDConfig, run_attack
from hahrobust.attacks.gradients import EOT, jitter
from hahrobust.cli import app
from hahrobust.data import ImageSet, balanced_subset, load_cifar10
from hahrobust.errors import HahrobustError
from hahrobust.models import build
from hahrobust.nn.layers import FractionalThreshold, MeanThreshold
from hahrobust.nn.surrogate import BPDA, Surrogate, register_surrogate, surrogate_gradients, surrogate_layers
from hahrobust.attacks.square import SquareConfig
from hahrobust.studies.audit import WORST, AuditConfig, Member, audit_model, verdict

pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest.single_thread explains why


class Quantize(nn.Module):
    """Input quantisation to 8 bits: exact on CIFAR images, zero gradient everywhere (a masked model)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 255) / 255


register_surrogate(Quantize, "identity")  # BPDA: straight-through, the textbook bypass (Athalye et al. 2018)


@pytest.fixture(scope="module")
def plain_and_masked(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, nn.Module, ImageSet]:
    """A trained tiny VGG-11, the same network behind Quantize, and 50 class-balanced test images."""
    cache = tmp_path_factory.mktemp("audit-cache")
    model = train_tiny_vgg11(load_cifar10(tiny_data, "train", cache_dir=cache)).eval()
    masked = nn.Sequential(Quantize(), model).eval()
    return model, masked, balanced_subset(load_cifar10(tiny_data, "test", cache_dir=cache), 50, seed=0)


# --------------------------------------------------------------------------------- surrogate gradients


@pytest.mark.parametrize("layer", [FractionalThreshold(0.2), MeanThreshold()], ids=["fraction", "mean"])
def test_surrogates_keep_the_output_and_replace_the_masks_gradient(layer: nn.Module) -> None:
    z = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    weights = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    exact = layer(z)
    (plain,) = torch.autograd.grad((exact * weights).sum(), z)
    mask = (exact != 0).float()
    assert torch.equal(plain, weights * mask)  # autograd sees the mask as a constant
    with surrogate_gradients(layer, Surrogate("identity")):
        out = layer(z)
        (straight,) = torch.autograd.grad((out * weights).sum(), z)
    assert torch.equal(out, exact) and torch.equal(straight, weights)
    with surrogate_gradients(layer, Surrogate("sigmoid", temperature=0.5)):
        out = layer(z)
        (smooth,) = torch.autograd.grad((out * weights).sum(), z)
    assert torch.equal(out, exact)
    # d/dz [z σ((z − τ)/T)] = σ + z σ (1 − σ) / T, with τ and T (0.5 × the channel's std) held fixed
    tau = z.detach().mean(dim=(2, 3), keepdim=True) if isinstance(layer, MeanThreshold) else \
        torch.where(mask.bool(), z.detach(), torch.inf).flatten(2).amin(-1)[..., None, None]
    scale = 0.5 * z.detach().flatten(2).std(dim=-1)[..., None, None]
    s = torch.sigmoid((z.detach() - tau) / scale)
    torch.testing.assert_close(smooth, weights * (s + z.detach() * s * (1 - s) / scale))
    assert layer.surrogate is None  # restored after the block


def test_bpda_model_has_the_exact_logits_and_other_gradients() -> None:
    torch.manual_seed(0)
    model = build("hah-vgg11", width=0.125).eval()
    assert len(surrogate_layers(model)) > 0
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    y = torch.arange(4)
    wrapped = BPDA(model)
    logits, bpda_logits = model(x), wrapped(x)
    assert torch.equal(logits, bpda_logits)
    (g_plain,) = torch.autograd.grad(F.cross_entropy(logits, y), x)
    (g_bpda,) = torch.autograd.grad(F.cross_entropy(bpda_logits, y), x)
    assert not torch.allclose(g_plain, g_bpda)
    with pytest.raises(ValueError, match="no layer with a surrogate"):
        BPDA(build("vgg11", width=0.125))


def test_registered_module_gets_a_straight_through_gradient(plain_and_masked) -> None:
    model, masked, data = plain_and_masked
    x = (data.images[:8].float() / 255).requires_grad_(True)
    y = data.labels[:8]
    (g_masked,) = torch.autograd.grad(F.cross_entropy(masked(x), y), x)
    assert torch.count_nonzero(g_masked) == 0  # masked: nothing to follow
    (g_bpda,) = torch.autograd.grad(F.cross_entropy(BPDA(masked)(x), y), x)
    (g_twin,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    torch.testing.assert_close(g_bpda, g_twin)  # on 8-bit images the quantiser is the identity


def test_eot_logits_are_exact_and_its_noise_does_not_depend_on_the_batch() -> None:
    torch.manual_seed(0)
    model = build("vgg11", width=0.125).eval()
    x = torch.rand(5, 3, 32, 32)
    assert torch.equal(jitter(x, 3, seed=1)[:, 2:4], jitter(x[2:4], 3, seed=1))
    assert not torch.equal(jitter(x, 3, seed=1), jitter(x, 3, seed=2))
    eot = EOT(model, samples=3, sigma=0.05)
    xr = x.clone().requires_grad_(True)
    assert torch.equal(eot(xr), model(x))
    (g,) = torch.autograd.grad(eot(xr)[:, 0].sum(), xr)
    noise = jitter(x, 3, seed=0)
    xm = x.clone().requires_grad_(True)
    mean = torch.stack([model((xm + 0.05 * n).clamp(0, 1)) for n in noise]).mean(0)
    (expected,) = torch.autograd.grad(mean[:, 0].sum(), xm)
    torch.testing.assert_close(g, expected)


@pytest.mark.parametrize("bad", [dict(name="smooth"), dict(surrogate="tanh"), dict(eot_samples=0), dict(temperature=0)])
def test_bad_gradient_settings_are_refused(bad: dict) -> None:
    with pytest.raises(HahrobustError):
        GradientPath(**bad)


# ------------------------------------------------------------------------------------------- the audit

FAST = AuditConfig(pgd=PGDConfig(steps=20, restarts=2), eot=PGDConfig(steps=10, restarts=1), eot_samples=2,
                   effort_steps=2, effort_restarts=1)
GRADIENT_ONLY = (
    Member("PGD", "white-box", "pgd"),
    Member("PGD·BPDA", "adaptive", "pgd", gradient="bpda"),
)


def test_masked_model_is_flagged_and_bpda_brings_it_to_its_twins_robustness(plain_and_masked) -> None:
    model, masked, data = plain_and_masked
    eps = [8 / 255]
    attacks, diagnostics, (plain, worst) = audit_model(
        masked, data, norm="linf", eps=eps, ensemble=GRADIENT_ONLY, config=FAST)
    twin = run_attack(model, data, attack="pgd", norm="linf", eps=eps, config=FAST.pgd)
    robust = attacks.set_index("attack")["robust_acc"]
    assert robust["PGD"] >= robust["PGD·BPDA"] + 0.2  # plain PGD is blind behind the quantiser
    assert abs(robust["PGD·BPDA"] - float(twin["robust_acc"].iloc[0])) <= 0.04 + 1e-9
    fired = set(diagnostics.loc[diagnostics["fired"].astype(bool), "indicator"])
    assert "unavailable gradients" in fired
    line = verdict("masked-net", {"linf": (plain, worst)}, diagnostics, FAST)
    assert line.startswith("masked-net: masked") and f"{plain:.1%} to {worst:.1%}" in line


def _audit_plain(model: nn.Module, data: ImageSet, reference: Member) -> tuple[pd.DataFrame, str]:
    ensemble = (
        reference,
        Member("PGD·BPDA", "adaptive", "pgd", gradient="bpda"),  # dropped: no threshold to bypass
        Member("PGD·EOT", "adaptive", "pgd", gradient="bpda+eot"),  # becomes plain EOT
    )
    attacks, diagnostics, (plain, worst) = audit_model(model, data, norm="linf", eps=[4 / 255], ensemble=ensemble,
                                                       config=FAST)
    assert list(attacks["attack"]) == [reference.name, "PGD·EOT", WORST]
    assert attacks.loc[attacks["attack"] == "PGD·EOT", "gradient"].item() == "eot"
    return attacks, verdict("net", {"linf": (plain, worst)}, diagnostics, FAST)


def test_plain_model_is_not_called_masked(plain_and_masked) -> None:
    model, _, data = plain_and_masked
    attacks, line = _audit_plain(model, data, Member("PGD", "white-box", "pgd"))
    robust = attacks.set_index("attack")["robust_acc"]
    assert robust["PGD"] - robust[WORST] <= 0.02 + 1e-9
    assert line.startswith("net: no sign of masking"), line


@pytest.mark.slow  # AutoAttack's APGD-T runs 9 targets × 100 steps: minutes on 2 loaded cores
def test_plain_model_worst_case_is_near_autoattack(plain_and_masked) -> None:
    model, _, data = plain_and_masked
    attacks, line = _audit_plain(model, data, Member("AutoAttack", "standard", "autoattack", aa_version="paper"))
    robust = attacks.set_index("attack")["robust_acc"]
    assert robust["AutoAttack"] - robust[WORST] <= 0.02 + 1e-9
    assert line.startswith("net: no sign of masking"), line


def test_worst_case_is_never_above_any_attack(plain_and_masked) -> None:
    _, masked, data = plain_and_masked
    # Five images relabelled so the model misclassifies them: they are never robust, under any member.
    labels = data.labels.clone()
    labels[:5] = (labels[:5] + 1) % 10
    data = ImageSet(data.images, labels, data.source + " [5 relabelled]")
    ensemble = (*GRADIENT_ONLY, Member("more effort", "adaptive", "pgd", gradient="bpda", survivors=True, effort=True))
    attacks, _, _ = audit_model(masked, data, norm="l2", eps=[0.25, 1.0], ensemble=ensemble, config=FAST)
    assert attacks["clean_acc"].max() <= 45 / 50
    for eps, group in attacks.groupby("eps"):
        members = group[group["attack"] != WORST]
        assert group.loc[group["attack"] == WORST, "robust_acc"].item() <= members["robust_acc"].min()
        # every break is credited to the first member that found it: clean − breaks / n is the worst case
        clean = group["clean_acc"].iloc[0]
        worst = group.loc[group["attack"] == WORST, "robust_acc"].item()
        assert worst == pytest.approx(clean - members["first_breaks"].sum() / len(data), abs=1e-12)


def test_survivors_members_attack_only_what_is_left_and_add_their_breaks(plain_and_masked) -> None:
    """More effort and Square run on the images no earlier member broke; their breaks lower the worst case and
    are counted by the more-effort and white-box ≤ black-box indicators."""
    _, masked, data = plain_and_masked
    ensemble = (
        Member("PGD", "white-box", "pgd"),
        Member("Square", "black-box", "square", survivors=True),  # what plain PGD left (it is blind here)
        Member("more effort", "adaptive", "pgd", gradient="bpda", survivors=True, effort=True),
    )
    # The tiny model's clean margins withstand 100 random-search queries at small ε: 64/255 gives Square work.
    config = replace(FAST, square=SquareConfig(queries=100))
    eps = [64 / 255]
    attacks, diagnostics, (plain, worst) = audit_model(masked, data, norm="linf", eps=eps, ensemble=ensemble, config=config)
    rows = attacks.set_index("attack")
    pgd_only = run_attack(masked, data, attack="pgd", norm="linf", eps=eps, config=FAST.pgd)
    survivors = round(float(pgd_only["robust_acc"].iloc[0]) * len(data))
    assert rows.loc["Square", "n"] == survivors  # only what plain PGD left
    assert rows.loc["more effort", "n"] == survivors - rows.loc["Square", "first_breaks"]
    assert rows.loc["Square", "first_breaks"] > 0  # logits only: the quantiser does not blind it
    assert rows.loc["more effort", "first_breaks"] > 0  # BPDA sees through the quantiser on the rest
    assert pd.isna(rows.loc["more effort", "robust_acc"]) and pd.isna(rows.loc["Square", "robust_acc"])
    assert worst == pytest.approx(rows.loc["PGD", "clean_acc"] - rows["first_breaks"].sum() / len(data), abs=1e-12)
    shown = diagnostics.set_index("indicator")["value"]
    assert shown["more steps/restarts lower robust acc."].startswith(f"{rows.loc['more effort', 'first_breaks']} of {rows.loc['more effort', 'n']} survivors")
    assert shown["white-box ≤ black-box"].startswith(f"{rows.loc['Square', 'first_breaks']} images broken only by Square")


def test_batched_square_does_not_depend_on_the_batch_size(plain_and_masked) -> None:
    """The audit's Square is the reference's batched call (its examples depend on which images share the call), so
    the audit gives it all its images at once: the result is the same at any --batch-size. Measured on this model
    at 64/255 with 100 queries: batches of 7 instead of one call of 50 change 12 of the 50 images' outcomes."""
    model, _, data = plain_and_masked
    ensemble = (Member("PGD", "white-box", "pgd"), Member("Square", "black-box", "square"))
    config = replace(FAST, pgd=PGDConfig(steps=1, restarts=1), square=SquareConfig(queries=100, per_image=False))
    runs = [audit_model(model, data, norm="linf", eps=[64 / 255], ensemble=ensemble, config=config, batch_size=b)[0]
            for b in (50, 7)]
    assert 0 < runs[0].set_index("attack").loc["Square", "robust_acc"] < runs[0]["clean_acc"].iloc[0]
    pd.testing.assert_frame_equal(runs[0].drop(columns="seconds"), runs[1].drop(columns="seconds"))


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("args, message", [
    (["attack", "{ckpt}", "--attack", "pgd", "--gradient", "smooth"], "unknown gradient 'smooth'"),
    (["attack", "{ckpt}", "--attack", "pgd", "--loss", "hinge"], "unknown --loss 'hinge'"),
    (["attack", "{ckpt}", "--attack", "fmn", "--loss", "margin"], "--loss applies to --attack pgd only"),
    (["audit", "{ckpt}", "--norm", "l0"], "audit does not support l0"),
    (["audit", "{ckpt}", "--skip", "nothing"], "--skip: unknown member 'nothing'"),
    (["attack", "{ckpt}", "--attack", "pgd", "--transfer-from", "{other}"], "--transfer-from .*: 7 classes, the attacked model has 10"),
    # the old spelling is a hidden alias of --transfer-from
    (["attack", "{ckpt}", "--attack", "pgd", "--surrogate", "{other}"], "--transfer-from .*: 7 classes, the attacked model has 10"),
])
def test_bad_adaptive_options_are_one_line_errors(
    args: list[str], message: str, make_checkpoint, tiny_data: Path, tmp_path: Path
) -> None:
    ckpt, other = make_checkpoint("vgg11"), make_checkpoint("vgg11", num_classes=7)
    out = tmp_path / "out"
    argv = [a.format(ckpt=ckpt, other=other) for a in args] + ["--data", str(tiny_data), "--out", str(out)]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert pd.Series([lines[0]]).str.contains(message).item(), lines[0]
    assert not any(out.rglob("*.csv")) and not any(out.rglob("*.json"))
