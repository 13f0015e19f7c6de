"""Dependencies a user can live with: torch and torchvision uncapped, the CIFAR-10-C generator's heavy libraries an
optional extra whose absence is one line naming it, and the `test` extra (what CI installs) pulling in that extra
and the documentation's requirements."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hahrobust.cli import app
from hahrobust.data.corruptions import GENERATOR_LIBRARIES

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement(name: str, requirements: list[str]) -> str:
    (found,) = [r for r in requirements if re.match(rf"{re.escape(name)}\b(?![-_])", r)]
    return found


@pytest.mark.parametrize("name", ["torch", "torchvision"])
def test_torch_has_a_floor_and_no_cap(name: str) -> None:
    spec = requirement(name, PROJECT["dependencies"])
    assert ">=" in spec and "<" not in spec and "==" not in spec


def test_the_generator_libraries_are_the_corruptions_extra() -> None:
    extra = PROJECT["optional-dependencies"]["corruptions"]
    for distribution in GENERATOR_LIBRARIES.values():
        requirement(distribution, extra)
        assert not any(r.startswith(distribution) for r in PROJECT["dependencies"])


def test_ci_installs_the_corruptions_and_docs_extras() -> None:
    assert "hahrobust[corruptions,docs]" in PROJECT["optional-dependencies"]["test"]
    assert 'pip install -e ".[test]"' in (ROOT / ".ci" / "run").read_text()


def test_a_missing_generator_library_names_the_extra(make_checkpoint, tiny_data: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cv2" else real(name, *a))
    result = CliRunner().invoke(app, ["corruption-sweep", str(make_checkpoint("vgg11")), "--data", str(tiny_data),
                                      "--images", "10", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "needs opencv-python" in line and 'pip install "hahrobust[corruptions]"' in line
    assert not (tmp_path / "out").exists()
