"""`hahrobust ablate`: Table 2 from one preset and seed, resumable per variant, reusing checkpoints."""

from __future__ import annotations

from types import SimpleNamespace

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hahrobust import load_checkpoint
from hahrobust.studies import ablation as ablation_module
from hahrobust.studies import audit as audit_module
from hahrobust.studies.ablation import VARIANTS, check_variants
from hahrobust.cli import app
from hahrobust.errors import HahrobustError
from hahrobust.studies.paper_table import PAPER_CONDITIONS

runner = CliRunner()


def ablate_args(tiny_data: Path, out: Path, *extra: str) -> list[str]:
    # pgd keeps the adversarial columns fast; a tiny test set keeps evaluation to seconds
    return ["ablate", "--preset", "small", "--epochs", "1", "--variants", "all,no-threshold,baseline",
            "--attack", "pgd", "--images", "20", "--data", str(tiny_data), "--device", "cpu", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def small_width():
    # the small preset trains 10,000 images at width ¼; tiny data has 200, so shrink the subset and width
    original = ablation_module.preset

    def tiny_preset(name: str):
        chosen = original(name)
        return type(chosen)(chosen.description, {**chosen.model, "width": 0.0625}, {**chosen.train, "train_subset": None})

    ablation_module.preset = tiny_preset
    yield
    ablation_module.preset = original


def test_ablate_trains_evaluates_and_resumes(small_width, tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "ablation"
    result = runner.invoke(app, ablate_args(tiny_data, out))
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "ablate.csv")
    assert list(table["variant"].unique()) == ["all", "no-threshold", "baseline"]
    assert list(table["condition"].unique()) == [c.title for c in PAPER_CONDITIONS]
    assert table["accuracy"].between(0, 1).all()
    for variant in ("all", "no-threshold", "baseline"):
        clean = table[(table.variant == variant) & (table.condition == "Clean")]["accuracy"].item()
        for condition in PAPER_CONDITIONS[2:]:
            robust = table[(table.variant == variant) & (table.condition == condition.title)]["accuracy"].item()
            assert robust <= clean
    _, metadata = load_checkpoint(out / "checkpoints" / "no-threshold.safetensors")
    assert metadata["model"]["config"]["threshold"] == "none" and metadata["model"]["config"]["width"] == 0.0625
    for name in ("ablate.md", "ablate.json", "ablate.png", "ablate-paired.md", "ablate-paired.json"):
        assert (out / name).is_file()
    # Each variant against the full model on the same images: the paired difference is the accuracies' difference,
    # its discordant images give it, and Holm's p is never below the test's own.
    paired = pd.read_csv(out / "ablate-paired.csv")
    assert sorted(paired["variant"].unique()) == ["baseline", "no-threshold"] and len(paired) == 8
    accuracy = table.set_index(["variant", "condition"])["accuracy"]
    for row in paired.itertuples():
        assert row.difference == pytest.approx(accuracy[(row.variant, row.condition)] - accuracy[("all", row.condition)])
        assert row.difference == pytest.approx((row.variant_only - row.reference_only) / row.n)
        assert row.low <= row.difference <= row.high and row.p_value <= row.p_holm <= 1
    assert "p (Holm)" in (out / "ablate-paired.md").read_text()

    # a second run retrains nothing and re-evaluates nothing: same table
    def fail(*args, **kwargs):
        raise AssertionError("a finished variant was redone")

    monkeypatch.setattr(ablation_module, "train", fail)
    monkeypatch.setattr(ablation_module, "paper_table", fail)
    refused = runner.invoke(app, ablate_args(tiny_data, out))  # its results are there: never silently replaced
    assert refused.exit_code == 2 and "pass --resume to continue" in refused.output
    again = runner.invoke(app, [*ablate_args(tiny_data, out), "--resume"])
    assert again.exit_code == 0, again.output
    assert (out / "ablate.csv").read_text() == table.to_csv(index=False, lineterminator="\n")


def test_from_reuses_checkpoints(small_width, tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    first = tmp_path / "first"
    assert runner.invoke(app, ablate_args(tiny_data, first, "--variants", "baseline")).exit_code == 0
    monkeypatch.setattr(ablation_module, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    second = tmp_path / "second"
    result = runner.invoke(app, ablate_args(tiny_data, second, "--variants", "baseline", "--from", str(first / "checkpoints")))
    assert result.exit_code == 0, result.output
    document = json.loads((second / "ablate.json").read_text())
    assert document["checkpoints"]["Baseline (VGG-16)"]["path"].startswith(str(first.resolve()))


def fake_audit(n: int, pgd: float, worst: float) -> SimpleNamespace:
    """The audit's ModelAudit, as far as the table reads it: every image correct, PGD and the worst case robust on
    the first ``pgd``·n and ``worst``·n images, the convergence rounds converged after one."""
    rows = pd.DataFrame({"attack": ["PGD", "worst case"], "robust_acc": [pgd, worst]})
    index = np.arange(n)
    return SimpleNamespace(attacks=rows, rounds=[(2, 0)], members=(SimpleNamespace(effort=True),),
                           correct=np.ones(n, bool), broken_by={"PGD": (index >= round(pgd * n))[None]},
                           worst=(index < round(worst * n))[None])


def test_adaptive_adds_the_worst_case_beside_each_adversarial_column(
    small_width, tiny_data: Path, tmp_path: Path, monkeypatch
) -> None:
    """The wiring of --adaptive (the audit itself: tests/test_audit.py): with --attack pgd the audit's PGD member
    fills the adversarial column and its worst case the column beside it; the cached plain evaluation is not
    taken for the adaptive one."""
    out = tmp_path / "ablation"
    assert runner.invoke(app, ablate_args(tiny_data, out, "--variants", "all,baseline")).exit_code == 0
    seen: list[tuple[str, ...]] = []

    def audit(model, data, *, norm, eps, ensemble, **kw):
        seen.append(tuple(m.name for m in ensemble))
        return fake_audit(len(data), *((0.5, 0.25) if norm == "linf" else (0.4, 0.2)))

    monkeypatch.setattr(audit_module, "audit_model", audit)
    result = runner.invoke(app, ablate_args(tiny_data, out, "--variants", "all,baseline", "--adaptive", "--resume"))
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "ablate.csv")
    conditions = ["Clean", "Noisy (σ = 0.1)", "Adv ℓ∞ (ε = 2/255)", "Worst case ℓ∞ (ε = 2/255)",
                  "Adv ℓ2 (ε = 0.25)", "Worst case ℓ2 (ε = 0.25)"]
    assert table["condition"].tolist() == conditions * 2
    assert table["accuracy"].iloc[2:6].tolist() == pytest.approx([0.5, 0.25, 0.4, 0.2])
    assert len(seen) == 4 and all("AutoAttack" not in names and "PGD" in names for names in seen)
    # --adaptive's paired tests cover the worst-case columns too (the fake audits agree per image: no difference)
    paired = pd.read_csv(out / "ablate-paired.csv")
    assert paired["condition"].tolist() == conditions and (paired.loc[2:, "difference"] == 0).all()
    assert "Worst ℓ∞ converged after 1 round; Worst ℓ2 converged after 1 round" in (out / "ablate.md").read_text()


def test_adaptive_audits_journal_and_resume_inside_a_variant(
    small_width, tiny_data: Path, tmp_path: Path, monkeypatch
) -> None:
    """A variant's audit journals into out/checkpoints/journal under a name keyed by the evaluation settings,
    resumes from it, and leaves nothing behind once the evaluation is cached; other settings, other journals."""
    out = tmp_path / "ablation"
    assert runner.invoke(app, ablate_args(tiny_data, out, "--variants", "baseline")).exit_code == 0
    calls: list[dict] = []

    def audit(model, data, *, norm, eps, ensemble, journal_dir, journal_stem, resume, **kw):
        calls.append({"dir": journal_dir, "stem": journal_stem, "resume": resume})
        (journal_dir / f"{journal_stem}-{norm}-pgd.jsonl").parent.mkdir(parents=True, exist_ok=True)
        (journal_dir / f"{journal_stem}-{norm}-pgd.jsonl").write_text("{}\n")  # what a member would leave
        return fake_audit(len(data), 0.5, 0.25)

    monkeypatch.setattr(audit_module, "audit_model", audit)
    assert runner.invoke(app, ablate_args(tiny_data, out, "--variants", "baseline", "--adaptive", "--resume")).exit_code == 0
    assert len(calls) == 2 and all(c["resume"] for c in calls)
    assert calls[0]["dir"] == out / "checkpoints" / "journal" and calls[0]["stem"].startswith("table2-baseline-")
    assert calls[0]["stem"] == calls[1]["stem"]
    assert not list((out / "checkpoints" / "journal").glob("*.jsonl"))
    assert (out / "checkpoints" / "baseline.eval.json").is_file()
    assert runner.invoke(app, ablate_args(tiny_data, out, "--variants", "baseline", "--adaptive", "--images", "10",
                                      "--resume")).exit_code == 0
    assert calls[2]["stem"].startswith("table2-baseline-") and calls[2]["stem"] != calls[0]["stem"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--variants", "all,nope"], "unknown variant"), (["--attack", "ddn"], "ddn"),
     (["--aa-version", "weird", "--attack", "autoattack"], "AutoAttack version"), (["--preset", "huge"], "unknown preset")],
)
def test_ablate_bad_input(extra: list[str], message: str, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad"
    result = runner.invoke(app, [*ablate_args(tiny_data, out), *extra])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())


def test_variant_table_is_data() -> None:
    assert check_variants(None) == list(VARIANTS)
    with pytest.raises(HahrobustError):
        check_variants(["all", "all"])
