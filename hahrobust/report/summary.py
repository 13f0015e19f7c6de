"""A report's headline: five of its claims as one Markdown table, generated from ``report.json`` so that the README
and the documentation quote the rule's verdicts instead of retyping them.

A page holds a generated table between two markers, the report's path (relative to the page) in the first::

    <!-- summary: docs/results/small-standard/report.json link: docs/results/small-standard.md -->
    ...
    <!-- /summary -->

``python -m hahrobust.report.summary --update README.md docs/results/*.md`` rewrites every such block from its report;
a test fails when a page differs from what this would write (a retyped or stale figure).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from hahrobust.report.headline import HEADER, HEADLINE, headline_rows

def summary_markdown(document: dict[str, Any], link: str | None = None, keys: tuple[str, ...] = HEADLINE) -> str:
    """The Markdown table of ``keys``' claims from a report's JSON (:func:`headline_rows`, the verdict in bold),
    with a link to the whole report when given."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join((*row[:-1], f"**{row[-1]}**")) + " |" for row in headline_rows(document["claims"], keys)]
    if link is not None:
        lines += ["", f"Generated from [the report]({link}) (`python -m hahrobust.report.summary`)."]
    return "\n".join(lines)


BLOCK = re.compile(r"<!-- summary: (?P<report>\S+)(?: link: (?P<link>\S+))? -->\n.*?<!-- /summary -->", re.S)


def update_text(text: str, folder: Path) -> str:
    """``text`` with every marked block regenerated from its report (paths relative to ``folder``)."""
    def block(match: re.Match[str]) -> str:
        document = json.loads((folder / match["report"]).read_text(encoding="utf-8"))
        return f"{match.group(0).splitlines()[0]}\n{summary_markdown(document, match['link'])}\n<!-- /summary -->"
    return BLOCK.sub(block, text)


def main() -> None:
    parser = argparse.ArgumentParser(description="Print a report's headline claims as a Markdown table, or "
                                     "regenerate the marked tables of pages.")
    parser.add_argument("report", type=Path, nargs="?", help="a report.json written by hahrobust report")
    parser.add_argument("--link", default=None, help="where the table links to for the whole report")
    parser.add_argument("--update", type=Path, nargs="+", default=[], metavar="PAGE",
                        help="rewrite the <!-- summary: … --> blocks of these pages from their reports")
    args = parser.parse_args()
    try:
        _run(args)
    except (OSError, KeyError, ValueError) as error:  # a missing or malformed report: one line, exit 2 (bad input)
        why = f"not a report written by hahrobust report (no {error})" if isinstance(error, KeyError) else str(error)
        print(f"error: {why}", file=sys.stderr)
        raise SystemExit(2) from None


def _run(args: argparse.Namespace) -> None:
    if args.report is not None:
        print(summary_markdown(json.loads(args.report.read_text(encoding="utf-8")), args.link))
    for page in args.update:
        text = page.read_text(encoding="utf-8")
        new = update_text(text, page.parent)
        if new != text:
            page.write_text(new, encoding="utf-8")
            print(f"updated {page}")


if __name__ == "__main__":
    main()
