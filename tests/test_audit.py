"""Adaptive attacks and the audit: surrogate gradients keep the forward pass exact, EOT is per-image
deterministic, a deliberately masked model is caught and broken, a plain model is not called masked, and the
worst case is never above any attack's robust accuracy."""

from __future__ import annotations

from dataclasses import replace

from pathlib import Path

import numpy as np
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
from hahrobust import stats
from hahrobust.errors import HahrobustError
from hahrobust.models import build
from hahrobust.nn.layers import FractionalThreshold, MeanThreshold
from hahrobust.nn.surrogate import BPDA, Surrogate, register_surrogate, surrogate_gradients, surrogate_layers
from hahrobust.attacks.square import SquareConfig
from hahrobust.studies.audit import (
    WORST, AuditConfig, Member, ModelAudit, all_members, audit_model, convergence_bound, convergence_text, effort_config,
    judge, verdict,
)
from hahrobust.studies.audit_verdict import LEAD_WEIGHT

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


def test_sigmoid_surrogate_is_exact_and_finite_on_a_one_by_one_map() -> None:
    """A 1×1 map has no spread of its own (its std was NaN, and the NaN reached the forward pass)."""
    z = torch.randn(3, 8, 1, 1, requires_grad=True)
    exact = z * (z >= z.flatten(1).median(dim=1).values[:, None, None, None])
    out = Surrogate("sigmoid").gradient_of(z, exact, None)
    assert torch.equal(out, exact)
    out.sum().backward()
    assert torch.isfinite(z.grad).all()


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
                   effort_steps=2, effort_restarts=1, effort_rounds=2, long_steps=3, long_rounds=1,
                   square=SquareConfig(queries=100, per_image=False))
GRADIENT_ONLY = (
    Member("PGD", "white-box", "pgd", survivors=False),
    Member("PGD·BPDA", "adaptive", "pgd", gradient="bpda"),
)


def test_masked_model_is_called_masked_and_bpda_brings_it_to_its_twins_robustness(plain_and_masked) -> None:
    model, masked, data = plain_and_masked
    eps = [8 / 255]
    audited = audit_model(masked, data, norm="linf", eps=eps, ensemble=GRADIENT_ONLY, config=FAST)
    twin = run_attack(model, data, attack="pgd", norm="linf", eps=eps, config=FAST.pgd)
    plain, worst = audited.plain[0].mean(), audited.worst[0].mean()
    assert plain >= worst + 0.2  # plain PGD is blind behind the quantiser; BPDA breaks what it left
    assert abs(worst - float(twin["robust_acc"].iloc[0])) <= 0.04 + 1e-9
    fired = set(audited.diagnostics.loc[audited.diagnostics["fired"].astype(bool), "indicator"])
    assert "unavailable gradients" in fired
    (judged,) = judge(audited)
    assert judged.masking.adaptive_only >= 5 and judged.significant
    line = verdict("masked-net", [audited])
    assert line.startswith("masked-net: masked") and f"plain {plain:.1%} → worst case {worst:.1%}" in line


def _audit_plain(model: nn.Module, data: ImageSet, reference: Member) -> tuple[ModelAudit, str]:
    ensemble = (
        reference,
        Member("PGD·BPDA", "adaptive", "pgd", gradient="bpda"),  # dropped: no threshold to bypass
        Member("PGD·EOT", "adaptive", "pgd", gradient="bpda+eot"),  # becomes plain EOT
    )
    audited = audit_model(model, data, norm="linf", eps=[4 / 255], ensemble=ensemble, config=FAST)
    assert list(audited.attacks["attack"]) == [reference.name, "PGD·EOT", WORST]
    assert audited.attacks.loc[audited.attacks["attack"] == "PGD·EOT", "gradient"].item() == "eot"
    return audited, verdict("net", [audited])


def test_plain_model_is_not_called_masked(plain_and_masked) -> None:
    model, _, data = plain_and_masked
    audited, line = _audit_plain(model, data, Member("PGD", "white-box", "pgd", survivors=False))
    assert audited.plain[0].sum() - audited.worst[0].sum() < 5  # EOT adds at most a few, not significantly
    assert "masked" not in line.split(" — ")[0], line


@pytest.mark.slow  # AutoAttack's APGD-T runs 9 targets × 100 steps: minutes on 2 loaded cores
def test_plain_model_worst_case_is_near_autoattack(plain_and_masked) -> None:
    model, _, data = plain_and_masked
    audited, line = _audit_plain(model, data, Member("AutoAttack", "standard", "autoattack", aa_version="paper",
                                                     survivors=False))
    assert audited.plain[0].mean() - audited.worst[0].mean() <= 0.02 + 1e-9
    assert not line.startswith("net: masked"), line


def test_plain_model_under_the_full_ensemble_shows_no_sign_of_masking(plain_and_masked) -> None:
    """A model without thresholds, every default member (transfer from its masked twin): no adaptive member can
    be credited with masking, because none changes this model's gradient; what transfer, Square or more effort
    add is reported as the plain attacks' weakness."""
    model, masked, data = plain_and_masked
    audited = audit_model(model, data, norm="linf", eps=[4 / 255, 8 / 255], transfer_source=masked, config=FAST)
    assert not any(m.changes_gradient and "bpda" in m.gradient for m in audited.members)
    assert all(j.masking.adaptive_only == 0 or not j.significant for j in judge(audited))
    line = verdict("net", [audited])
    assert not line.startswith("net: masked"), line


def test_the_verdict_reads_per_image_evidence_not_the_smallest_member() -> None:
    """The old verdict's defect: AutoAttack breaks images {0, 1} and PGD {2, 3} of 100 — the plain union is 4
    images, nothing adaptive broke anything more, so this is no sign of masking (it read "masked, 98 % → 96 %")."""
    members = (Member("AutoAttack", "standard", "autoattack", survivors=False),
               Member("PGD", "white-box", "pgd", survivors=False),
               Member("PGD·BPDA", "adaptive", "pgd", gradient="bpda"),
               Member("Square", "black-box", "square"))
    broken = {m.name: np.zeros((1, 100), dtype=bool) for m in members}
    broken["AutoAttack"][0, [0, 1]] = True
    broken["PGD"][0, [2, 3]] = True
    audited = _synthetic(members, broken)
    (judged,) = judge(audited)
    assert judged.plain_robust == 96 and judged.masking.adaptive_only == 0 and judged.weak == 0
    assert verdict("base", [audited]).startswith("base: no sign of masking")
    broken["Square"][0, [10, 11]] = True  # black-box breaks beyond the plain ones: weak plain attacks, not masking
    (judged,) = judge(_synthetic(members, broken))
    assert judged.weak == 2 and "transfer/black-box found 2 more" in judged.line()
    broken["PGD·BPDA"][0, [20]] = True  # one image: suspect, not significant
    line = verdict("m", [_synthetic(members, broken)])
    assert line.startswith("m: suspect") and "not significant after Holm" in line
    broken["PGD·BPDA"][0, 20:25] = True  # five: p = 1/32 < 0.05
    assert verdict("m", [_synthetic(members, broken)]).startswith("m: masked")


def _synthetic(members: tuple[Member, ...], broken: dict[str, np.ndarray]) -> ModelAudit:
    worst = ~np.logical_or.reduce([b for b in broken.values()])
    empty = pd.DataFrame({"indicator": [], "fired": []})
    plain = ~np.logical_or.reduce([broken[m.name] for m in members if m.plain])
    return ModelAudit("linf", [2 / 255], members, pd.DataFrame(), empty, np.ones(100, dtype=bool),
                      {k: v.copy() for k, v in broken.items()}, worst, plain, {}, [])


def test_worst_case_is_monotone_in_eps_and_never_above_any_attack(plain_and_masked) -> None:
    _, masked, data = plain_and_masked
    # Five images relabelled so the model misclassifies them: they are never robust, under any member.
    labels = data.labels.clone()
    labels[:5] = (labels[:5] + 1) % 10
    data = ImageSet(data.images, labels, data.source + " [5 relabelled]")
    ensemble = (*GRADIENT_ONLY, Member("more effort", "adaptive", "pgd", gradient="bpda", effort=True))
    audited = audit_model(masked, data, norm="l2", eps=[1.0, 0.25], ensemble=ensemble, config=FAST)
    attacks = audited.attacks
    assert attacks["clean_acc"].max() <= 45 / 50 and not audited.worst[:, :5].any()
    small, large = 1, 0  # the ε were given out of order on purpose
    assert (audited.worst[large] <= audited.worst[small]).all()  # a break at 0.25 is one at 1.0
    for name, broken in audited.broken_by.items():
        assert (broken[small] <= broken[large]).all(), name
    for eps, group in attacks.groupby("eps"):
        worst = group.loc[group["attack"] == WORST, "robust_acc"].item()
        assert worst <= group.loc[group["attack"] == "PGD", "robust_acc"].item()
        clean = group["clean_acc"].iloc[0]
        members = group[group["attack"] != WORST]
        assert worst == pytest.approx(clean - members["first_breaks"].sum() / len(data), abs=1e-12)


def test_survivors_members_attack_only_what_is_left_and_effort_runs_in_rounds_until_one_breaks_nothing(
    plain_and_masked,
) -> None:
    """More effort and then Square (black-box members run last) attack the images no earlier member broke; their
    breaks lower the worst case; more
    effort's rounds stop at the first that breaks nothing (or the round limit), and the verdict says which."""
    _, masked, data = plain_and_masked
    ensemble = (
        Member("PGD", "white-box", "pgd", survivors=False),
        Member("Square", "black-box", "square"),  # what plain PGD left (it is blind here)
        Member("more effort", "adaptive", "pgd", gradient="bpda", effort=True),
    )
    eps = [64 / 255]  # the tiny model's clean margins withstand 100 random-search queries at small ε
    audited = audit_model(masked, data, norm="linf", eps=eps, ensemble=ensemble, config=FAST)
    rows = audited.attacks.set_index("attack")
    pgd_only = run_attack(masked, data, attack="pgd", norm="linf", eps=eps, config=FAST.pgd)
    survivors = round(float(pgd_only["robust_acc"].iloc[0]) * len(data))
    assert rows.loc["more effort", "n"] == survivors  # only what plain PGD left
    assert rows.loc["Square", "n"] == survivors - rows.loc["more effort", "first_breaks"]  # black-box last
    assert list(rows.index[:3]) == ["PGD", "more effort", "Square"]
    without_rounds = audit_model(masked, data, norm="linf", eps=eps, ensemble=ensemble[:2], config=FAST)
    assert without_rounds.attacks.set_index("attack").loc["Square", "first_breaks"] > 0  # logits only: not blinded
    assert rows.loc["more effort", "first_breaks"] > 0  # BPDA sees through the quantiser on the rest
    assert pd.isna(rows.loc["more effort", "robust_acc"]) and pd.isna(rows.loc["Square", "robust_acc"])
    assert 1 <= len(audited.rounds) <= FAST.effort_rounds + FAST.long_rounds
    attacked, broke = audited.rounds[-1]
    # stopped for a reason: a round broke nothing, nothing was left, or the long rounds ran out
    assert broke in (0, attacked) or audited.passes.get(f"more effort long round {FAST.long_rounds}") is not None
    text = convergence_text(audited)
    assert text.startswith({0: "converged after", attacked: "every survivor broken"}.get(broke, "not converged"))
    assert (rows.loc[rows["n"] > 0, "forward_passes"] > 0).all() and rows.loc[WORST, "forward_passes"] == rows["forward_passes"].iloc[:-1].sum()
    shown = audited.diagnostics.set_index("indicator")["value"]
    assert shown["white-box ≤ black-box"].startswith(f"{rows.loc['Square', 'first_breaks']} images broken only by Square")


def test_smooth_twin_transfers_through_the_threshold_and_counts_as_masking_evidence(plain_and_masked) -> None:
    """PGD on the model's smooth twin (here: without the quantiser) breaks what plain PGD could not, every example
    verified on the exact model; the twin changes the model the gradient comes from, so its breaks count in the verdict."""
    _, masked, data = plain_and_masked
    ensemble = (Member("PGD", "white-box", "pgd", survivors=False), Member("smooth twin", "adaptive", "pgd", twin=True))
    audited = audit_model(masked, data, norm="linf", eps=[8 / 255], ensemble=ensemble, config=FAST)
    rows = audited.attacks.set_index("attack")
    assert rows.loc["smooth twin", "first_breaks"] >= 5
    (judged,) = judge(audited)
    assert judged.masking.adaptive_only == rows.loc["smooth twin", "first_breaks"] and judged.significant


def test_batched_square_does_not_depend_on_the_batch_size(plain_and_masked) -> None:
    """The audit's Square is the reference's batched call (its examples depend on which images share the call), so
    the audit gives it all its images at once: the result is the same at any --batch-size. Measured on this model
    at 64/255 with 100 queries: batches of 7 instead of one call of 50 change 12 of the 50 images' outcomes."""
    model, _, data = plain_and_masked
    ensemble = (Member("PGD", "white-box", "pgd", survivors=False), Member("Square", "black-box", "square", survivors=False))
    config = replace(FAST, pgd=PGDConfig(steps=1, restarts=1), square=SquareConfig(queries=100, per_image=False))
    runs = [audit_model(model, data, norm="linf", eps=[64 / 255], ensemble=ensemble, config=config, batch_size=b).attacks
            for b in (50, 7)]
    assert 0 < runs[0].set_index("attack").loc["Square", "robust_acc"] < runs[0]["clean_acc"].iloc[0]
    pd.testing.assert_frame_equal(runs[0].drop(columns="seconds"), runs[1].drop(columns="seconds"))


def test_bpda_beats_plain_gradients_on_a_trained_thresholded_model(tiny_data: Path) -> None:
    """Strength, not bookkeeping: on a trained hah-vgg11 (top-k thresholds, no quantiser trick), PGD through the
    sigmoid surrogate breaks clearly more than plain PGD at the same budget."""
    from conftest import train_tiny_vgg11

    model = train_tiny_vgg11(load_cifar10(tiny_data, "train"), hah=True).eval()
    data = balanced_subset(load_cifar10(tiny_data, "test"), 100, seed=0)
    config = PGDConfig(steps=20, restarts=1)
    plain = run_attack(model, data, attack="pgd", norm="linf", eps=[2 / 255], config=config)
    bpda = run_attack(model, data, attack="pgd", norm="linf", eps=[2 / 255], config=config, gradient=GradientPath("bpda"))
    assert float(bpda["robust_acc"].iloc[0]) <= float(plain["robust_acc"].iloc[0]) - 0.05


@pytest.mark.parametrize("skip", [""] + [m.key for m in all_members()] + ["pgd,autoattack", "pgd"])
def test_every_skip_runs_or_is_refused_in_one_line_before_any_attack(skip: str) -> None:
    from hahrobust.cli.audit import choose_members

    try:
        ensemble = choose_members(skip, None)
    except HahrobustError as exc:
        assert "\n" not in str(exc) and ("plain-gradient" in str(exc) or "no attack" in str(exc))
        assert "pgd" in skip.split(",")
        return
    assert ensemble and any(m.plain for m in ensemble)
    assert all(m.key not in skip.split(",") for m in ensemble)


def test_every_skip_combination_is_decided_before_any_attack() -> None:
    """All 2^k subsets of the default members: a runnable ensemble with a plain member, or a one-line refusal."""
    from itertools import combinations

    from hahrobust.cli.audit import choose_members

    keys = [m.key for m in all_members() if m.default]
    for r in range(len(keys) + 1):
        for chosen in combinations(keys, r):
            try:
                ensemble = choose_members(",".join(chosen), None)
            except HahrobustError as exc:
                assert "pgd" in chosen and "\n" not in str(exc)
                continue
            assert any(m.plain for m in ensemble)


def test_pass_counting_counts_every_image_through_the_model() -> None:
    from hahrobust.attacks.passes import count_passes

    model = nn.Linear(4, 3)
    with count_passes(model) as count:
        for _ in range(3):
            x = torch.randn(5, 4, requires_grad=True)
            model(x).sum().backward()
        with torch.no_grad():
            model(torch.randn(7, 4))
    assert (count.forward, count.backward) == (3 * 5 + 7, 3 * 5)


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("args, message", [
    (["attack", "{ckpt}", "--attack", "pgd", "--gradient", "smooth"], "unknown gradient 'smooth'"),
    (["attack", "{ckpt}", "--attack", "pgd", "--loss", "hinge"], "unknown --loss 'hinge'"),
    (["attack", "{ckpt}", "--attack", "fmn", "--loss", "margin"], "--loss applies to --attack pgd only"),
    (["audit", "{ckpt}", "--norm", "l0"], "audit does not support l0"),
    (["audit", "{ckpt}", "--skip", "nothing"], "--skip: unknown member 'nothing'"),
    (["audit", "{ckpt}", "--skip", "pgd"], "--skip leaves no plain-gradient member"),
    (["audit", "{ckpt}", "--include", "pgd", "--skip", "pgd"], "--skip and --include both name PGD"),
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


def test_the_waterfall_colours_a_member_by_the_verdicts_own_rule() -> None:
    """Red exactly for the members whose breaks count as masking evidence (Member.changes_gradient), grey for the
    plain ones, blue for the rest: the picture cannot disagree with the verdict it illustrates."""
    from hahrobust.evaluate.audit_figures import BLUE, GREY, RED, _member_colours

    colours = _member_colours()
    for member in all_members():
        expected = RED if member.changes_gradient else GREY if member.plain else BLUE
        assert colours[member.name] == expected, member.name
    assert {m.name for m in all_members() if m.twin} and colours["smooth twin"] == RED and "worst case" not in colours


def test_converged_rounds_state_their_cost_and_the_bound_on_one_more_round(plain_and_masked) -> None:
    """A round that breaks nothing ends the rounds; the verdict states its passes per survivor and
    stats.zero_breaks_bound of its survivors, and a round that broke something gets no bound."""
    model, _, data = plain_and_masked
    ensemble = (Member("PGD", "white-box", "pgd", survivors=False),
                Member("more effort", "adaptive", "pgd", gradient="bpda", effort=True))
    audited = audit_model(model, data, norm="linf", eps=[1 / 255], ensemble=ensemble, config=FAST)
    attacked, broke = audited.rounds[-1]
    assert broke == 0 and attacked > 0  # a smooth model at a small ε: PGD already found every break
    per_survivor = audited.passes[f"more effort round {len(audited.rounds)}"].total / attacked
    bound = stats.zero_breaks_bound(attacked)
    assert convergence_bound(audited) == (f" (the last round, {per_survivor:,.0f} passes per survivor, broke 0 of "
                                          f"{attacked}: one more is expected to break at most {bound:.1f}, 95 % bound)")
    assert convergence_bound(audited) in verdict("plain", [audited])
    unconverged = replace(audited, rounds=[(attacked, 1)])
    assert convergence_bound(unconverged) == "" and "not converged" in verdict("plain", [unconverged])


def test_a_thresholded_model_gets_long_rounds_after_the_short_ones_and_a_smooth_one_does_not(plain_and_masked) -> None:
    """The rounds come in two sizes (AuditConfig): short margin rounds, then, through BPDA only, long ones whose
    untargeted restart ascends the cross-entropy; the bound names the last round that ran, a long one here."""
    model, masked, data = plain_and_masked
    ensemble = (Member("PGD", "white-box", "pgd", survivors=False),
                Member("more effort", "adaptive", "pgd", gradient="bpda", effort=True))
    config = replace(FAST, effort_rounds=1, long_rounds=1)
    short, long = effort_config(config), effort_config(config, long=True)
    assert (short.steps, long.steps) == (config.pgd.steps * config.effort_steps, config.pgd.steps * config.long_steps)
    assert short.loss == "margin" and long.loss is None and not short.clean_start and not long.clean_start
    audited = audit_model(masked, data, norm="linf", eps=[0.5 / 255], ensemble=ensemble, config=config)
    assert audited.rounds[0][0] > audited.rounds[0][1]  # survivors left for the long round
    assert [k for k in audited.passes if "round" in k] == ["more effort round 1", "more effort long round 1"]
    if audited.rounds[-1][1] == 0:
        per_survivor = audited.passes["more effort long round 1"].total / audited.rounds[-1][0]
        assert f"{per_survivor:,.0f} passes per survivor" in convergence_bound(audited)
    smooth = audit_model(model, data, norm="linf", eps=[0.5 / 255], ensemble=ensemble, config=config)
    assert not any("long round" in k for k in smooth.passes)


def test_the_other_twins_run_only_when_the_lead_pair_does_not_decide(plain_and_masked) -> None:
    """On the quantised model the lead pair (PGD·BPDA and its twin) decides at a large ε, so the smooth twin's plain
    twin does not run and the judgement names the lead pair; at an ε where the lead pair cannot decide, every twin
    runs (lead_decides, the gate of audit_verdict)."""
    _, masked, data = plain_and_masked
    ensemble = (*GRADIENT_ONLY, Member("smooth twin", "adaptive", "pgd", twin=True))
    decided = audit_model(masked, data, norm="linf", eps=[8 / 255], ensemble=ensemble, config=FAST)
    names = [m.name for m in decided.members]
    assert "PGD·BPDA (plain twin)" in names and "smooth twin (plain twin)" not in names
    (judged,) = judge(decided)
    assert judged.pair == "PGD·BPDA and its twin" and judged.significant
    assert judged.p_value == pytest.approx(judged.masking.p_value / LEAD_WEIGHT)
    undecided = audit_model(masked, data, norm="linf", eps=[0.25 / 255], ensemble=ensemble, config=FAST)
    assert "smooth twin (plain twin)" in [m.name for m in undecided.members]
