"""The documentation builds with warnings as errors (a renamed option, a broken link or a malformed docstring fails
CI), its command reference documents every command from the same declarations as --help, and the README stays a
front page, every `hahrobust …` command line shown in it or the documentation parses (options exist, values
convert), and its headline of claims is the committed report's (generated, not retyped)."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

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


def _documented_command_lines() -> list[tuple[Path, list[str]]]:
    """Every ``hahrobust …`` (or ``-m hahrobust …``) line of a bash block in the README and docs/, continuation
    lines joined, comments and what follows ``&&`` or ``|`` cut; generated results pages are not documentation."""
    pages = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts
                                        and not (p.parent.parent.name == "results"))]
    found = []
    for page in pages:
        for block in re.findall(r"```(?:bash|console|sh)\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                match = re.search(r"(?:^|&& |-m )hahrobust (.*)$", line.split(" # ")[0].strip())
                if match:
                    found.append((page, shlex.split(re.split(r" && | \| ", match.group(1))[0])))
    return found


def test_every_documented_command_line_parses() -> None:
    from typer.main import get_command
    from typer._click.core import Exit
    from typer._click.exceptions import ClickException

    from hahrobust.cli import app

    group = get_command(app)
    lines = _documented_command_lines()
    assert len(lines) >= 40, "the README and guides show the commands"
    failures = []
    for page, words in lines:
        try:
            context = group.make_context("hahrobust", list(words))
            command = group.get_command(context, words[0])
            assert command is not None, f"no command {words[0]}"
            command.make_context(words[0], words[1:], parent=context)
        except Exit:
            pass
        except (ClickException, AssertionError) as error:
            failures.append(f"{page.relative_to(ROOT)}: hahrobust {' '.join(words)[:100]} → {error}")
    assert not failures, "\n".join(failures)


def test_generated_claim_tables_are_the_reports_own() -> None:
    """The README's and the results pages' claim tables are what their committed reports say: regenerating them
    (``python -m hahrobust.report.summary --update``) changes nothing."""
    from hahrobust.report.summary import BLOCK, update_text

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    marked = [p for p in pages if BLOCK.search(p.read_text(encoding="utf-8"))]
    assert ROOT / "README.md" in marked, "the README's headline comes from a report"
    for page in marked:
        text = page.read_text(encoding="utf-8")
        assert update_text(text, page.parent) == text, f"{page.relative_to(ROOT)}: run python -m hahrobust.report.summary --update {page.relative_to(ROOT)}"


def test_the_committed_leaderboards_ranked_table_is_the_runs_own() -> None:
    """docs/results/leaderboard.md quotes the ranked table of the committed board verbatim, and that table is what
    the page module renders from the board's JSON today (no retyped or stale figure)."""
    import pandas as pd

    from hahrobust.leaderboard.page import board_frame
    from hahrobust.report.page import md_table

    folder = ROOT / "docs" / "results" / "leaderboard"
    document = json.loads((folder / "leaderboard.json").read_text(encoding="utf-8"))
    board = SimpleNamespace(rows=pd.DataFrame(document["rows"]), ranking=pd.DataFrame(document["ranking"]),
                            baseline=document["settings"]["baseline"], audits=document["audits"])
    table = md_table(board_frame(board))
    assert table in (folder / "leaderboard.md").read_text(encoding="utf-8")
    assert table in (ROOT / "docs" / "results" / "leaderboard.md").read_text(encoding="utf-8")
