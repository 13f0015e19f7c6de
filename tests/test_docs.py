"""The documentation builds with warnings as errors (a renamed option, a broken link or a malformed docstring fails
CI), its command reference documents every command from the same declarations as --help, and the README stays a
front page."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hahrobust.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
HAVE_SPHINX = all(importlib.util.find_spec(m) is not None for m in ("sphinx", "myst_parser", "furo"))


@pytest.mark.skipif(not HAVE_SPHINX, reason='needs the docs extra: pip install -e ".[docs]"')
def test_docs_build_without_warnings(tmp_path: Path) -> None:
    out = tmp_path / "html"
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(ROOT / "docs"),
                           str(out), "-d", str(tmp_path / "doctrees")], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = (out / "cli.html").read_text()
    for name in COMMANDS:
        assert f'id="hahrobust-{name}"' in reference, name
    assert "--block-norm" in reference and "[default: (2/255)]" in reference
    assert "hahrobust.evaluate" in (out / "api.html").read_text()


def test_readme_is_a_front_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci.split("&& ", 1)[1].replace('"', "") in readme.replace('"', "")  # CI runs the README's test command
    for name in COMMANDS:
        assert f"`hahrobust {name}" in readme, f"the commands table lacks {name}"
    linked = set(re.findall(r"\(docs/([\w/-]+\.md)\)", readme))
    assert linked and all((ROOT / "docs" / page).is_file() for page in linked)
