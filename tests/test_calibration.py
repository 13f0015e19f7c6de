"""Issue 30's known-truth defences at test scale, and the pieces behind them: k-WTA (a known positive: masked), PGD
adversarial training (a known negative: robust, not masked), the plain twins of the effort-controlled masking test,
and ``hahrobust calibrate`` (one command over the cases, resumable per case)."""

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

from conftest import single_thread
from hahrobust.attacks.pgd import PGDConfig
from hahrobust.cli import app
from hahrobust.cli.train import parse_adversarial
from hahrobust.data import ImageSet, load_cifar10
from hahrobust.errors import HahrobustError
from hahrobust.models import build
from hahrobust.nn import KWinnersTakeAll
from hahrobust.nn.surrogate import Surrogate, surrogate_gradients, surrogate_layers
from hahrobust.studies.audit import AuditConfig, Member, audit_model, judge_all, member_config, members_for, verdict
from hahrobust.training import TrainConfig, train
from hahrobust.training.adversarial import adversarial_batch

runner = CliRunner()
FAST = AuditConfig(pgd=PGDConfig(steps=20, restarts=2))
ENSEMBLE = (Member("PGD", "white-box", "pgd", survivors=False), Member("PGD·BPDA", "adaptive", "pgd", gradient="bpda"),
            Member("PGD·EOT", "adaptive", "pgd", gradient="bpda+eot"))


# --------------------------------------------------------------------------------- k-WTA


def test_kwta_keeps_the_layers_top_values_and_hides_its_winners_from_plain_gradients() -> None:
    z = torch.randn(3, 4, 6, 6, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    layer = KWinnersTakeAll(0.1)
    out = layer(z)
    k = int(np.ceil(0.1 * 4 * 6 * 6))  # 15 of each image's 144 values, over channels and positions together
    assert ((out != 0).flatten(1).sum(dim=1) == k).all()
    kept = out.detach().flatten(1)
    assert torch.equal(kept.abs().max(dim=1).values, z.detach().flatten(1).max(dim=1).values)
    upstream = torch.randn_like(z)
    (plain,) = torch.autograd.grad((out * upstream).sum(), z)
    assert torch.equal(plain, upstream * (out != 0))  # autograd: the losers get no gradient at all
    with surrogate_gradients(layer, Surrogate("sigmoid")):
        smooth_out = layer(z)
        (smooth,) = torch.autograd.grad((smooth_out * upstream).sum(), z)
    assert torch.equal(smooth_out, out) and bool((smooth[out == 0] != 0).any())  # BPDA sees units near τ


def test_kwta_vgg16_replaces_every_relu_and_bpda_finds_each_one() -> None:
    model = build("kwta-vgg16", width=0.125)
    assert model.config.activation == "kwta" and model.config.kwta_ratio == 0.1
    assert len(surrogate_layers(model)) == 13 and not surrogate_layers(build("vgg16", width=0.125))
    with pytest.raises(ValueError):
        KWinnersTakeAll(0.0)


# --------------------------------------------------------------------------------- adversarial training


@pytest.mark.parametrize(("norm", "eps"), [("linf", 8 / 255), ("l2", 0.5)])
def test_adversarial_batch_is_within_eps_and_raises_the_loss(norm: str, eps: float) -> None:
    torch.manual_seed(0)
    model = build("vgg11", width=0.125).train()
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    config = TrainConfig(adversarial_norm=norm, adversarial_eps=eps, adversarial_steps=3)
    adv = adversarial_batch(model, x, y, torch.arange(8), config, epoch=0)
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps * (1 + 1e-5)).all() and adv.min() >= 0 and adv.max() <= 1 and not adv.requires_grad
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)


def test_adversarial_training_options_are_checked() -> None:
    assert parse_adversarial("linf:2/255") == {"adversarial_norm": "linf", "adversarial_eps": 2 / 255}
    assert parse_adversarial(None) == {}
    for bad in ("linf", "l1x:2", "linf:1/255,2/255"):
        with pytest.raises(HahrobustError):
            parse_adversarial(bad)
    with pytest.raises(HahrobustError):
        TrainConfig(adversarial_norm="l0", adversarial_eps=1.0)
    with pytest.raises(HahrobustError):
        TrainConfig(adversarial_norm="linf", adversarial_eps=0.0)


# --------------------------------------------------------------------------------- the plain twins


class Jittered(nn.Module):
    """A randomised defence: Gaussian noise on the input in eval mode too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.01 * torch.randn_like(x)


def test_members_for_adds_a_plain_twin_per_gradient_changing_member_and_eot_is_plain_when_deterministic() -> None:
    plain_model = build("vgg11", width=0.125).eval()
    members = members_for(plain_model, ENSEMBLE, None)
    eot = next(m for m in members if m.name == "PGD·EOT")
    assert eot.plain_eot and eot.plain and not eot.changes_gradient and not any(m.twin_of for m in members)
    stochastic = members_for(nn.Sequential(Jittered(), plain_model), ENSEMBLE, None, stochastic=True)
    assert [m.name for m in stochastic] == ["PGD", "PGD·EOT", "PGD·EOT (plain twin)"]
    thresholded = members_for(build("kwta-vgg16", width=0.125), ENSEMBLE, None)
    assert [m.name for m in thresholded] == ["PGD", "PGD·BPDA", "PGD·EOT", "PGD·BPDA (plain twin)",
                                             "PGD·EOT (plain twin)"]
    twin = thresholded[-1]
    config = member_config(twin, FAST)
    assert twin.plain is False and twin.twin_of is not None and twin.gradient == "plain"
    # EOT's (samples + 1) passes a step become as many random-start restarts of EOT's own config
    assert config == replace(FAST.eot, restarts=FAST.eot.restarts * (FAST.eot_samples + 1), clean_start=False)


def test_the_audit_runs_twins_on_the_images_the_plain_reference_left(tiny_kwta: tuple[nn.Module, ImageSet]) -> None:
    model, test = tiny_kwta
    with single_thread():
        audited = audit_model(model, test, norm="linf", eps=[8 / 255], ensemble=ENSEMBLE[:2], config=FAST)
    reference = audited.broken_by["PGD"][0]
    twin = audited.broken_by["PGD·BPDA (plain twin)"][0]
    assert not (twin & reference).any()  # it attacked only what plain PGD left
    rows = audited.attacks.set_index("attack")
    assert rows.loc["PGD·BPDA (plain twin)", "n"] == int((audited.correct & ~reference).sum())


# --------------------------------------------------------------------------------- known truths at test scale


@pytest.fixture(scope="module")
def tiny_sets(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageSet, ImageSet]:
    cache = tmp_path_factory.mktemp("calibration-cache")
    return load_cifar10(tiny_data, "train", cache_dir=cache), load_cifar10(tiny_data, "test", cache_dir=cache)


def _train_tiny(name: str, sets: tuple[ImageSet, ImageSet], out: Path, **extra: object) -> nn.Module:
    with single_thread():
        result = train(name, *sets, out, config=TrainConfig(epochs=10, batch_size=50, lr=3e-3, **extra),  # type: ignore[arg-type]
                       model_overrides={"arch": "vgg11", "width": 0.125})
    return result.model.eval()


@pytest.fixture(scope="module")
def tiny_kwta(tiny_sets: tuple[ImageSet, ImageSet], tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, ImageSet]:
    return _train_tiny("kwta-vgg16", tiny_sets, tmp_path_factory.mktemp("kwta") / "kwta.safetensors"), tiny_sets[1]


def test_small_kwta_is_called_masked(tiny_kwta: tuple[nn.Module, ImageSet]) -> None:
    """The known positive at test scale: BPDA breaks images plain PGD and its equal-budget plain twin cannot."""
    model, test = tiny_kwta
    with single_thread():
        audited = audit_model(model, test, norm="linf", eps=[8 / 255], ensemble=ENSEMBLE[:2], config=FAST)
    (judged,) = judge_all([audited])
    assert judged.significant and judged.masking.adaptive_only > 3 * judged.masking.plain_only
    assert verdict("k-wta", [audited]).startswith("k-wta: masked")
    assert audited.worst[0].sum() < audited.plain[0].sum()


def test_small_adversarial_training_is_robust_and_not_masked(tiny_sets: tuple[ImageSet, ImageSet],
                                                             tmp_path: Path) -> None:
    """The known negative at test scale: PGD-trained at ℓ∞ 8/255, far more robust than the same net trained on
    clean images, and the audit sees no sign of masking (EOT is plain on it: no threshold, deterministic)."""
    robust = _train_tiny("vgg16", tiny_sets, tmp_path / "adv.safetensors", adversarial_norm="linf",
                         adversarial_eps=8 / 255)
    clean = _train_tiny("vgg16", tiny_sets, tmp_path / "clean.safetensors")
    test = tiny_sets[1]
    with single_thread():
        audits = {name: audit_model(m, test, norm="linf", eps=[8 / 255], ensemble=ENSEMBLE, config=FAST)
                  for name, m in (("adversarial", robust), ("clean", clean))}
    worst = {name: a.worst[0].mean() for name, a in audits.items()}
    assert worst["adversarial"] >= worst["clean"] + 0.3
    assert verdict("adv", [audits["adversarial"]]).startswith("adv: no sign of masking")


# --------------------------------------------------------------------------------- hahrobust calibrate


@pytest.fixture(scope="module")
def case_checkpoints(tiny_sets: tuple[ImageSet, ImageSet], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoints folder with the baseline, k-WTA and HaH cases' file names, holding tiny models."""
    root = tmp_path_factory.mktemp("case-checkpoints")
    (root / "calibration").mkdir()
    for name, path in (("vgg16", "vgg16-small.safetensors"), ("kwta-vgg16", "calibration/kwta-vgg16-small.safetensors"),
                       ("hah-vgg16", "hah-vgg16-small.safetensors")):
        with single_thread():
            train(name, *tiny_sets, root / path, config=TrainConfig(epochs=2, batch_size=50, lr=3e-3),
                  model_overrides={"arch": "vgg11", "width": 0.125, **({"hah_blocks": 4} if name == "hah-vgg16" else {})})
    return root


def test_calibrate_writes_the_table_and_each_case_and_resumes_per_case(
    case_checkpoints: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command's plumbing (files, per-case reuse, refusals), with a two-member audit: the numbers are the
    tests above's business."""
    import hahrobust.evaluate.calibration as calibration

    monkeypatch.setattr(calibration, "default_ensemble", lambda include=(): ENSEMBLE[:2])
    monkeypatch.setattr(calibration, "_config", lambda rounds: replace(FAST, effort_rounds=rounds or 3))
    out = tmp_path / "calibration"
    base = ["calibrate", "--checkpoint-dir", str(case_checkpoints), "--data", str(tiny_data), "--images", "10",
            "--self-test-images", "3", "--norm", "linf", "--rounds", "1", "--out", str(out)]
    with single_thread():
        first = runner.invoke(app, [*base, "baseline"])
        assert first.exit_code == 0, first.output
        assert (out / "baseline" / "calibration-case.json").is_file() and not (out / "journal").exists()
        refused = runner.invoke(app, [*base, "baseline", "k-wta"])  # results exist: --resume or --overwrite
        assert refused.exit_code == 2
        both = runner.invoke(app, [*base, "baseline", "k-wta", "--resume"])  # baseline reused, k-wta run
        assert both.exit_code == 0, both.output
    table = pd.read_csv(out / "calibrate.csv")
    assert list(table["model"]) == ["baseline", "k-wta"] and set(table["norm"]) == {"linf"}
    assert {"b", "c", "p_holm", "self_test", "worst", "autoattack", "convergence", "agrees"} <= set(table.columns)
    assert (out / "calibrate.png").is_file() and (out / "k-wta" / "audit.md").is_file()
    again = runner.invoke(app, [*base, "baseline", "k-wta", "--resume"])
    assert again.exit_code == 0 and pd.read_csv(out / "calibrate.csv").equals(table)
    other = runner.invoke(app, [*base[:-4], "--rounds", "2", "--out", str(out), "baseline", "--resume"])
    assert other.exit_code == 2 and "other settings" in other.output
    assert runner.invoke(app, ["calibrate", "nope", "--checkpoint-dir", str(case_checkpoints)]).exit_code == 2
