"""Smoke test of benchmarks/train_step.py: it runs and reports (timings themselves are never tested)."""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "train_step.py"
HAVE_HAHTORCH = importlib.util.find_spec("hahtorch") is not None


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def test_train_step_benchmark_runs_and_reports(tmp_path: Path) -> None:
    models = ["vgg16", "hah-vgg16"] + (["hahtorch"] if HAVE_HAHTORCH else [])
    out = tmp_path / "bench.json"
    proc = run("--width", "0.0625", "--batch-size", "4", "--rounds", "1", "--warmup", "0", "--threads", "1",
               "--models", *models, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    for name in models:
        assert name in proc.stdout
    record = json.loads(out.read_text())
    assert record["threads"] == 1 and record["settings"]["batch_size"] == 4
    (result,) = record["results"]
    assert result["width"] == 0.0625
    assert set(result["seconds"]) == set(models)
    assert all(len(times) == 1 and times[0] > 0 for times in result["seconds"].values())
    assert all(rate > 0 for rate in result["images_per_s"].values())
    assert result["ratio_to_baseline"]["vgg16"] == pytest.approx(1.0)
    assert result["ratio_to_baseline"]["hah-vgg16"] == pytest.approx(
        result["seconds"]["hah-vgg16"][0] / result["seconds"]["vgg16"][0]
    )


@pytest.mark.parametrize("args", [["--rounds", "0"], ["--width", "-1"], ["--models", "resnet"]])
def test_train_step_benchmark_rejects_bad_options(args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = run(*args, "--json", str(out))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert not out.exists()


EVAL_SCRIPT = ROOT / "benchmarks" / "eval_throughput.py"


def test_eval_throughput_benchmark_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    proc = subprocess.run(
        [sys.executable, str(EVAL_SCRIPT), "--model", "vgg11", "--width", "0.0625", "--images", "4", "--rounds", "1",
         "--aa-version", "paper", "--pgd-steps", "2", "--norms", "linf", "--threads", "1", "--device", "cpu",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    runs = {r["run"]: r for r in record["results"]}
    assert set(runs) == {"pgd linf", "autoattack linf hahrobust", "autoattack linf reference"}
    assert all(r["images_per_s"] > 0 and len(r["seconds"]) == 1 for r in runs.values())
    ratio = runs["autoattack linf hahrobust"]["seconds"][0] / runs["autoattack linf reference"]["seconds"][0]
    assert record["autoattack_overhead"]["linf"] == pytest.approx(ratio)
    assert "hahrobust / reference" in proc.stdout


def test_attack_throughput_benchmark_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "attacks.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "attack_throughput.py"), "--width", "0.0625", "--batch-size", "4",
         "--steps", "2", "--rounds", "1", "--attacks", "pgd", "fmn", "--norms", "linf", "l0", "--threads", "1",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results = {(r["attack"], r["norm"]): r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {("pgd", "linf"), ("pgd", "l0"), ("fmn", "linf"), ("fmn", "l0")}
    assert all(r["image_steps_per_s"] == pytest.approx(4 * 2 / r["median_s"]) for r in results.values())


def test_audit_cost_benchmark_runs_both_lanes_and_reports(shared_cifar: Path, tmp_path: Path) -> None:
    """Both reference models, both norms, in two lanes (one per norm); a tiny ensemble so it takes seconds."""
    out = tmp_path / "audit-cost.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "audit_cost.py"), "--data", str(shared_cifar), "--images", "10",
         "--audit-args", "--steps 1 --restarts 1 --skip AutoAttack,APGD·BPDA,Square,'more effort'",
         "--out", str(tmp_path / "audits"), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert set(record["lane_s"]) == {"linf", "l2"}
    runs = {(r["lane"], r["model"]): r for r in record["results"]}
    assert set(runs) == {(norm, model) for norm in ("linf", "l2") for model in ("HaH", "baseline")}
    for (norm, _), run in runs.items():
        members = {m["attack"] for m in run["members"]}
        assert {m["norm"] for m in run["members"]} == {norm} and {"PGD", "transfer", "worst case"} <= members
        assert "AutoAttack" not in members and run["wall_s"] >= run["attack_s"] >= 0
    assert record["wall_s"] >= max(record["lane_s"].values())
    assert "audit cost" in proc.stdout


@pytest.mark.slow  # AutoAttack standard and the default audit on 4 images of the HaH model: minutes
def test_audit_passes_benchmark_compares_with_autoattack_and_resumes(shared_cifar: Path, tmp_path: Path) -> None:
    out = tmp_path / "passes.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "audit_passes.py"), "--data", str(shared_cifar), "--images",
               "4", "--norm", "linf", "--models", "HaH", "--json", str(out)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    (row,) = record["rows"]
    assert row["autoattack_passes"] > 0 and row["audit_passes"] > 0 and row["threads"] == 1
    assert row["ratio"] == pytest.approx(row["audit_passes"] / row["autoattack_passes"])
    audit = record["measured"]["HaH linf audit threads=1"]
    assert audit["passes"] == sum(audit["members"].values())
    assert row["convergence"] == audit["convergence"] and row["worst_case"] == audit["robust"]
    # a rerun finds every measurement in the JSON: nothing is attacked again, the same rows come back
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0 and json.loads(out.read_text())["measured"] == record["measured"]
    assert "passes," not in again.stdout  # no measurement line: nothing ran


def test_certify_throughput_benchmark_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "certify.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "certify_throughput.py"), "--width", "0.0625", "--batch-size", "4",
         "--samples", "8", "--rounds", "2", "--threads", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    seconds = record["seconds"]
    assert set(seconds) == {"forward", "certify"} and all(len(t) == 2 and min(t) > 0 for t in seconds.values())
    assert record["samples_per_s"]["certify"] == pytest.approx(8 / statistics.median(seconds["certify"]))
    assert record["ratio"] == pytest.approx(statistics.median(f / c for f, c in zip(seconds["forward"], seconds["certify"])))
    assert "certify / forward throughput" in proc.stdout


def test_certify_throughput_benchmark_rejects_a_partial_batch(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "certify_throughput.py"), "--batch-size", "3", "--samples", "8"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2 and "multiple of --batch-size" in proc.stderr


def test_sparse_code_benchmark_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "sparse_code.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sparse_code.py"), "--batch-size", "2", "--rounds", "2",
         "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr  # 1 would mean the two implementations disagree
    record = json.loads(out.read_text())
    assert record["same"] == {"logits": True, "gradients": True}
    assert set(record["seconds"]) == {"conv", "matmul"} and all(len(t) == 2 for t in record["seconds"].values())
    assert record["ratio"] == pytest.approx(statistics.median(
        c / m for c, m in zip(record["seconds"]["conv"], record["seconds"]["matmul"])))
    assert "conv / matmul" in proc.stdout


def test_hard_survivors_probe_runs_and_records_each_run(tmp_path: Path) -> None:
    out = tmp_path / "hard.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "hard_survivors.py"), "linf", "1,3", "--plan", "smoke",
         "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    recorded = json.loads(out.read_text())
    assert recorded["pick"] == [1, 3] and len(recorded["labels"]) == 2
    assert [r["kind"] for r in recorded["runs"]] == ["t1", "ce"]
    assert all(len(r["broke_at"]) == 2 and all(-1 <= b <= 3 for b in r["broke_at"]) for r in recorded["runs"])
