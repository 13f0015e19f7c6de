"""`hahrobust attack` driven as a user would: a small trained checkpoint, --out files, --save-adv, --resume after a
kill, --table paper, and one-line errors for bad input with nothing written."""

from __future__ import annotations

import dataclasses

from types import SimpleNamespace

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

import hahrobust.attacks.journal as journal_module
import hahrobust.attacks.adversarial_files as adversarial_files_module
import hahrobust.attacks.run as run_module
import hahrobust.evaluate.robustness as attack_library  # the attack command's library function runs the attacks
import hahrobust.studies.audit as audit_module
from conftest import fill_disk_after, train_tiny_vgg11
from hahrobust import stats
from hahrobust.attacks import recheck
from hahrobust.checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint
from hahrobust.data import balanced_subset, load_cifar10
from hahrobust.cli import app
from hahrobust.metrics.noise import noise_accuracy
from hahrobust.models import resolve_config

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest.single_thread explains why


@pytest.fixture(scope="module")
def checkpoint(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VGG-11 (width 0.125) trained 10 epochs on the tiny set, saved as a checkpoint (≈ 5 s)."""
    train_set = load_cifar10(tiny_data, "train")
    model = train_tiny_vgg11(train_set)
    path = tmp_path_factory.mktemp("attack-ckpt") / "vgg11-tiny.safetensors"
    family, _ = resolve_config("vgg11", width=0.125)
    save_checkpoint(path, model.eval(), checkpoint_metadata(model, "vgg11", family))
    return path


def invoke(ckpt: Path, data: Path, *args: str) -> Result:
    return runner.invoke(app, ["attack", str(ckpt), "--data", str(data), "--device", "cpu", *args])


FAST_PGD = ["--attack", "pgd", "--steps", "10", "--restarts", "2"]


def test_pgd_run_writes_verified_results(checkpoint: Path, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(checkpoint, tiny_data, *FAST_PGD, "--norm", "l2", "--eps", "0.5, 1", "--images", "20",
                    "--batch-size", "10", "--out", str(out), "--save-adv")
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "attack.csv", dtype={"eps_label": str})
    assert rows.columns[:5].tolist() == ["model", "attack", "norm_label", "norm", "eps_label"]
    assert rows["eps"].tolist() == [0.5, 1.0] and rows["eps_label"].tolist() == ["0.5", "1"]
    assert (rows["robust_acc"] <= rows["clean_acc"]).all() and (rows["n"] == 20).all()
    assert rows["robust_acc"].iloc[1] <= rows["robust_acc"].iloc[0]
    assert sorted(p.name for p in out.iterdir()) == [
        "adv-vgg11-pgd-l2.safetensors", "attack.csv", "attack.json", "attack.md", "attack.png",
    ]  # the journal is removed once the results are written
    model, _ = load_checkpoint(checkpoint)
    again = recheck(model, out / "adv-vgg11-pgd-l2.safetensors")
    assert again["robust_acc"].tolist() == rows["robust_acc"].tolist()
    assert "| vgg11   | ℓ2     | 0.5" in (out / "attack.md").read_text()



def test_save_adv_on_a_full_disk(checkpoint: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk while --save-adv writes a batch's examples, or the final file: one line naming the file and
    the cause, no partial file, and --resume continues from the batches finished."""
    out = tmp_path / "out"
    args = [*FAST_PGD, "--norm", "linf", "--images", "20", "--batch-size", "10", "--out", str(out), "--save-adv"]
    journal = out / "journal" / "vgg11-pgd-linf.jsonl"
    with monkeypatch.context() as patch:  # full after the first batch's examples
        fill_disk_after(patch, journal_module, 1)
        result = invoke(checkpoint, tiny_data, *args)
    batch = journal.with_suffix(".adv") / "batch-00001.safetensors"
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr == f"error: {batch}: cannot write adversarial examples (No space left on device)\n"
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["batch-00000.safetensors", journal.name]

    with monkeypatch.context() as patch:  # resumed, full when the examples are put in one file
        fill_disk_after(patch, adversarial_files_module, 0)
        result = invoke(checkpoint, tiny_data, *args, "--resume")
    adv = out / "adv-vgg11-pgd-linf.safetensors"
    assert result.exit_code == 2
    assert result.stderr == f"error: {adv}: cannot write adversarial examples (No space left on device)\n"
    assert not adv.exists() and not (out / "attack.csv").exists()

    result = invoke(checkpoint, tiny_data, *args, "--resume")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [adv.name, "attack.csv", "attack.json", "attack.md", "attack.png"]

def test_fmn_over_several_norms(checkpoint: Path, tiny_data: Path, tmp_path: Path) -> None:
    result = invoke(checkpoint, tiny_data, "--attack", "fmn", "--norm", "l0,linf", "--steps", "20", "--images", "10",
                    "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "attack.csv")
    assert rows["norm"].tolist() == ["l0", "linf"]
    assert rows["eps"].tolist() == pytest.approx([24.0, 2 / 255])  # the documented defaults
    assert rows["median_distance"].notna().all() and (rows["median_distance"] > 0).all()


def test_minimum_norm_attacks_together_add_their_per_image_best(checkpoint: Path, tiny_data: Path, tmp_path: Path) -> None:
    result = invoke(checkpoint, tiny_data, "--attack", "fmn,ddn", "--norm", "l1,l2", "--steps", "20", "--images", "20",
                    "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "attack.csv").set_index(["attack", "norm"])
    # DDN has no ℓ1: ℓ1 is FMN alone, ℓ2 has both attacks and their per-image best.
    assert sorted(rows.index) == [("best of fmn, ddn", "l2"), ("ddn", "l2"), ("fmn", "l1"), ("fmn", "l2")]
    best, fmn_row, ddn_row = rows.loc[("best of fmn, ddn", "l2")], rows.loc[("fmn", "l2")], rows.loc[("ddn", "l2")]
    assert best["robust_acc"] <= min(fmn_row["robust_acc"], ddn_row["robust_acc"])
    assert best["median_distance"] <= min(fmn_row["median_distance"], ddn_row["median_distance"])
    sources = dict(part.rsplit(" ", 1) for part in best["best_from"].split(" · "))
    assert set(sources) == {"fmn", "ddn"}
    fooled = round(best["clean_acc"] * 20) - best["unfound"]
    assert sum(int(c) for c in sources.values()) == fooled  # every attacked, fooled image has exactly one source
    assert "smallest distance from" in (tmp_path / "attack.md").read_text()


def test_square_is_a_runner_attack(checkpoint: Path, tiny_data: Path, tmp_path: Path) -> None:
    """Gradient-free Square through the runner: verified, batch-independent (one seeded call per image). The tiny
    model's clean margins (≈ 8 logits) withstand 50 random-search queries up to 32/255, hence 64/255."""
    args = ["--attack", "square", "--norm", "linf", "--eps", "64/255", "--queries", "50", "--images", "10"]
    result = invoke(checkpoint, tiny_data, *args, "--batch-size", "10", "--out", str(tmp_path / "a"))
    assert result.exit_code == 0, result.output
    again = invoke(checkpoint, tiny_data, *args, "--batch-size", "3", "--out", str(tmp_path / "b"))
    assert again.exit_code == 0, again.output
    a, b = (pd.read_csv(tmp_path / d / "attack.csv") for d in "ab")
    assert a["robust_acc"].iloc[0] < a["clean_acc"].iloc[0]  # it fools something at this ε
    assert a["robust_acc"].tolist() == b["robust_acc"].tolist()
    assert '"queries": 50' in (tmp_path / "a" / "attack.json").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--attack", "cw"], "unknown attack 'cw'"),
        (["--attack", "fmn,pgd"], "only minimum-norm attacks .* run together"),
        (["--attack", "fmn,fmn"], "distinct attacks"),
        (["--adaptive"], "--adaptive adds columns to --table paper"),
        (["--table", "paper", "--adaptive", "--gradient", "bpda"], "--adaptive runs the audit's own gradient paths"),
        (["--attack", "square", "--norm", "l1"], "square does not support l1"),
        (["--attack", "square", "--steps", "10"], "--steps applies to pgd, fmn, ddn and spsa"),
        (["--attack", "pgd", "--queries", "10"], "--queries applies to --attack square only"),
        (["--norm", "l3"], "unknown norm 'l3'"),
        (["--norm", "l0"], "autoattack does not support l0 .*attacks that support l0: pgd, fmn"),
        (["--attack", "pgd", "--norm", "l2", "--eps", "-0.5"], "≥ 0"),
        (["--attack", "pgd", "--eps", "8"], "at most 1"),
        (["--attack", "pgd", "--norm", "l0", "--eps", "2.5"], "whole number"),
        (["--attack", "pgd", "--norm", "l2,linf", "--eps", "0.5"], "single --norm"),
        (["--aa-version", "plus"], "unknown AutoAttack version"),
        (["--table", "paper", "--norm", "l2"], "--table paper fixes the attacks"),
        (["--table", "two"], "unknown --table"),
        (["--attack", "fmn", "--restarts", "3"], "--restarts applies to --attack pgd only"),
        (["--resume"], "--resume needs --out"),
    ],
)
def test_bad_options_fail_in_one_line_before_any_work(
    checkpoint: Path, tiny_data: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    full = [*args, "--out", str(out)] if "--resume" not in args else args
    result = invoke(checkpoint, tiny_data, *full)
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert re.search(message, result.output), result.output
    assert not out.exists()  # checked before anything was loaded or created


def test_unreadable_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_text("not a checkpoint")
    result = runner.invoke(app, ["attack", str(bad), "--data", str(tiny_data), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "not a hahrobust checkpoint" in result.output
    assert not (tmp_path / "out").exists()


def test_killed_run_resumes_with_the_same_numbers(
    checkpoint: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [*FAST_PGD, "--norm", "linf", "--eps", "4/255,8/255", "--images", "30", "--batch-size", "10"]
    fresh = invoke(checkpoint, tiny_data, *args, "--out", str(tmp_path / "fresh"))
    assert fresh.exit_code == 0, fresh.output

    real = attack_library.run_attack_images
    finished: list[int] = []

    def killed_after_two_batches(model, data, request, options):
        def on_batch(b: int) -> None:
            finished.append(b)
            if b == 1:
                raise KeyboardInterrupt

        return real(model, data, request, dataclasses.replace(options, on_batch=on_batch))

    out = tmp_path / "run"
    monkeypatch.setattr(attack_library, "run_attack_images", killed_after_two_batches)
    killed = invoke(checkpoint, tiny_data, *args, "--out", str(out))
    assert killed.exit_code == 130 and "--resume" in killed.output
    assert not (out / "attack.csv").exists()
    journal = out / "journal" / "vgg11-pgd-linf.jsonl"
    assert len(journal.read_text().splitlines()) == 3  # header + 2 batches

    monkeypatch.setattr(attack_library, "run_attack_images", real)
    again = invoke(checkpoint, tiny_data, *args, "--out", str(out))
    assert again.exit_code == 2 and "pass --resume" in again.output

    calls: list[int] = []
    real_batch = run_module._attack_batch  # the runner lives in attacks/run.py; the package only re-exports
    monkeypatch.setattr(run_module, "_attack_batch", lambda *a, **kw: (calls.append(a[5]), real_batch(*a, **kw))[1])
    resumed = invoke(checkpoint, tiny_data, *args, "--out", str(out), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert calls == [2]  # only the batch that had not finished
    a, b = (pd.read_csv(p / "attack.csv").drop(columns="seconds") for p in (tmp_path / "fresh", out))
    pd.testing.assert_frame_equal(a, b)
    assert not journal.exists()


def test_table_paper(checkpoint: Path, tiny_data: Path, tmp_path: Path) -> None:
    result = invoke(checkpoint, tiny_data, "--table", "paper", "--aa-version", "paper", "--images", "10", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "attack-table1.csv")
    assert rows["condition"].tolist() == ["Clean", "Noisy (σ = 0.1)", "Adv ℓ∞ (ε = 2/255)", "Adv ℓ2 (ε = 0.25)"]
    # The noisy column is the noise-sweep metric itself.
    model, _ = load_checkpoint(checkpoint)
    test = balanced_subset(load_cifar10(tiny_data, "test"), 10, 0)
    noisy = noise_accuracy(model, test, [0.1], seed=0, batch_size=100)["accuracy"].item()
    assert rows["accuracy"].iloc[1] == pytest.approx(noisy)
    assert (rows["accuracy"].iloc[2:] <= rows["accuracy"].iloc[0]).all()
    table = (tmp_path / "attack-table1.md").read_text().split("\n\n")[1].splitlines()
    assert [c.strip() for c in table[0].strip("|").split("|")] == ["model", *rows["condition"]]
    # every accuracy with its Wilson interval over the n images, in the files and in the table's cells
    for row, cell in zip(rows.itertuples(), table[2].strip("|").split("|")[1:]):
        assert row.n == 10 and (row.low, row.high) == pytest.approx(stats.wilson_interval(round(row.accuracy * 10), 10))
        assert cell.strip() == f"{row.accuracy:.1%} [{row.low:.1%}, {row.high:.1%}]"


def test_table_paper_adaptive_puts_the_audits_worst_case_beside_autoattack(
    checkpoint: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wiring of --adaptive: one audit per norm at the paper's ε; its AutoAttack member fills the AutoAttack
    column and its worst case the column beside it (the audit itself: tests/test_audit.py)."""
    calls: list[tuple[str, list[float]]] = []

    def audit(model, data, *, norm, eps, **kw):
        calls.append((norm, eps))
        aa, worst = {"linf": (0.30, 0.10), "l2": (0.40, 0.20)}[norm]
        rows = pd.DataFrame({"attack": ["AutoAttack", "PGD", "worst case"], "robust_acc": [aa, aa + 0.05, worst]})
        rounds = [(4, 1), (3, 0)] if norm == "linf" else [(5, 2)]  # ℓ∞ converged, ℓ2 not
        # the audit's ModelAudit, as far as the table reads it: per image, AutoAttack's and the worst case's outcome
        index = np.arange(len(data))
        return SimpleNamespace(attacks=rows, rounds=rounds, members=(SimpleNamespace(effort=True),),
                               correct=np.ones(len(data), bool),
                               broken_by={"AutoAttack": (index >= round(aa * len(data)))[None]},
                               worst=(index < round(worst * len(data)))[None])

    monkeypatch.setattr(audit_module, "audit_model", audit)
    result = invoke(checkpoint, tiny_data, "--table", "paper", "--adaptive", "--images", "10", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "attack-table1.csv")
    assert rows["condition"].tolist() == [
        "Clean", "Noisy (σ = 0.1)", "Adv ℓ∞ (ε = 2/255)", "Worst case ℓ∞ (ε = 2/255)", "Adv ℓ2 (ε = 0.25)",
        "Worst case ℓ2 (ε = 0.25)",
    ]
    assert rows["accuracy"].iloc[2:].tolist() == pytest.approx([0.30, 0.10, 0.40, 0.20])
    assert calls == [("linf", [2 / 255]), ("l2", [0.25])]  # one audit per norm, reused by both columns
    assert '"adaptive"' in (tmp_path / "attack-table1.json").read_text()
    notes = json.loads((tmp_path / "attack-table1.json").read_text())["notes"]
    assert any("Worst ℓ∞ converged after 2 rounds; Worst ℓ2 not converged: the last round broke 2 of 5" in n
               for n in notes), notes
