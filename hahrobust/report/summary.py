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
import math
import re
import sys
from pathlib import Path
from typing import Any

#: The claims of the headline, in order: the paper's sparsity, noise, clean-cost and AutoAttack claims, and the one
#: the audit adds (the worst case under adaptive attack), at ℓ∞ (ℓ2 and the rest are in the report).
HEADLINE = ("sparser", "noise", "clean-cost", "autoattack-linf", "worst-linf")


def _value(value: Any, accuracy: bool) -> str:
    v = float(value)
    if math.isnan(v):
        return "—"
    return f"{100 * v:.1f} %" if accuracy else f"{v:.3g}"


def _p(value: Any) -> str:
    v = float(value)
    return "—" if math.isnan(v) else f"{v:.2g}"


def summary_markdown(document: dict[str, Any], link: str | None = None, keys: tuple[str, ...] = HEADLINE) -> str:
    """The Markdown table of ``keys``' claims from a report's JSON: claim, A, B, effect with its 95 % interval, n,
    Holm-adjusted p and the verdict (with a link to the whole report when given)."""
    claims = {c["claim"]: c for c in document["claims"]}
    missing = [k for k in keys if k not in claims]
    if missing:
        raise KeyError(f"the report has no claim {', '.join(missing)}")
    lines = ["| claim (A vs B) | A | B | effect in the claimed direction [95 % CI] | n | p (Holm) | verdict |", "|---|---|---|---|---|---|---|"]
    for key in keys:
        c = claims[key]
        accuracy = c["measure"] == "accuracy"
        scale = 100 if accuracy else 1
        unit = " points" if accuracy else ""
        effect = f"{scale * float(c['effect']):+.3g} [{scale * float(c['low']):+.3g}, {scale * float(c['high']):+.3g}]{unit}"
        lines.append(f"| {c['text']} | {_value(c['a'], accuracy)} | {_value(c['b'], accuracy)} | {effect} | {c['n']} | "
                     f"{_p(c['p_holm'])} | **{c['verdict']}** |")
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
