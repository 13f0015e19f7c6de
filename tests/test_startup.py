"""Start-up: `hahrobust --help` imports no command module, `hahrobust check` never imports torch, a command's
module (and torch) loads when it runs; `benchmarks/startup.py` runs and reports (its timings are not tested)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hahrobust

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def imported_after(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; which heavy modules it imported, and its exit status."""
    probe = (
        "import sys\nfrom hahrobust.cli import app\ncode = 0\n"
        f"try:\n    app({code})\nexcept SystemExit as exit:\n    code = exit.code\n"
        "print('imported', code, *[name for name in ('torch', 'pandas', 'hahrobust.cli.attack') if name in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         check=True, timeout=120).stdout.splitlines()[-1].split()
    assert out[0] == "imported"
    return {"code": int(out[1]), "modules": set(out[2:])}


def test_help_imports_neither_torch_nor_pandas_nor_a_command() -> None:
    assert imported_after("['--help']") == {"code": 0, "modules": set()}


def test_check_runs_without_torch(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.csv").write_text("model,accuracy\nx,0.5\n")
    found = imported_after(f"['check', '{tmp_path}/a.csv', '--expected', '{tmp_path}/b.csv']")
    assert found == {"code": 0, "modules": {"pandas"}}


def test_a_command_loads_its_module_when_asked() -> None:
    found = imported_after("['attack', '--help']")
    assert found["code"] == 0 and {"torch", "hahrobust.cli.attack"} <= found["modules"]  # type: ignore[operator]


def test_import_hahrobust_is_light_and_its_names_still_resolve() -> None:
    out = subprocess.run([sys.executable, "-c", "import sys, hahrobust; print('torch' in sys.modules)"], cwd=ROOT,
                         env=ENV, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    from hahrobust.checkpoint import load_checkpoint, save_checkpoint
    from hahrobust.evaluate.opening import open_models
    from hahrobust.models import build

    assert (hahrobust.load_checkpoint, hahrobust.save_checkpoint, hahrobust.build, hahrobust.open_models) == (
        load_checkpoint, save_checkpoint, build, open_models)
    assert set(hahrobust.__all__) <= set(dir(hahrobust))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        hahrobust.nothing  # noqa: B018


SCRIPT = ROOT / "benchmarks" / "startup.py"


def test_startup_benchmark_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "1", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert set(report["median_s"]) == {"python -c pass", "hahrobust --help", "hahrobust check --help"}
    assert report["ratio_to_python"]["python -c pass"] == pytest.approx(1.0)
    assert all(len(times) == 1 and times[0] > 0 for times in report["seconds"].values())
    assert report["check_imports_torch"] is False
    assert "×" in proc.stdout


def test_startup_benchmark_rejects_bad_options(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "0", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and not out.exists()
