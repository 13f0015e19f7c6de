"""Sphinx configuration of the hahrobust documentation: Markdown pages (MyST), the library API (autodoc) and the
command reference (sphinx-click over the Typer app, from the same text as ``--help``).

Build: ``sphinx-build -W -b html docs docs/_build/html`` (``pip install -e ".[docs]"``); tests/test_docs.py does.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent / "_ext"))

import hahrobust  # noqa: E402

project = "hahrobust"
author = "hahrobust contributors"
release = hahrobust.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "hahrobust_cli"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
# Result folders hold generated files (report.md, certify.md, …), linked from the result pages, not pages themselves.
exclude_patterns = ["_build", "results/*/**"]
html_theme = "furo"
html_title = "hahrobust"
myst_heading_anchors = 3
autodoc_typehints = "description"
autodoc_member_order = "bysource"

