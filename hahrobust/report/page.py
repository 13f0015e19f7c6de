"""The report as a reader meets it: ``report.md`` and the self-contained ``report.html``, leading with the answer.

Order (the same in both): the headline claims (:data:`hahrobust.report.headline.HEADLINE`) and one sentence per
verdict word the report uses; the audit's masking verdict per model; then each figure with its table and the claims
it carries (grouped by figure: Table 1's accuracy claims under Table 1); the rules, the masking evidence and the
provenance last. In the HTML the long columns (test, why) and the rules are folded (``<details>``), so the headline
and the first figure are on the first screen (checked in headless Chromium at 1200 px: ``docs/results/``).
"""

from __future__ import annotations

import base64
import html
import json
import math
from typing import Any

import numpy as np
import pandas as pd

from hahrobust.report.claims import PLAIN_ONLY, RULE_PLAIN_ONLY, Judged
from hahrobust.report.rules import BELOW_INTEREST
from hahrobust.report.headline import HEADER, HEADLINE, headline_rows
from hahrobust.report.tables import PAPER_SAYS

TITLES = {"table1": "Table 1: clean, noisy and adversarial accuracy", "sparsity": "Fig. 2: sparsity (Hoyer, lower = sparser)",
          "snr": "Fig. 3: SNR at each block's input (σ = 0.1)", "noise": "Fig. 4: accuracy under Gaussian noise",
          "distances": "Fig. 5: mean minimum-norm distance", "corruptions": "Common corruptions (CIFAR-10-C)"}


def _number(value: Any, column: str) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if column in ("accuracy", "low", "high", "a") and abs(value) <= 1:
            return f"{100 * value:.1f} %"
        if column in ("p_value", "p_holm"):
            return f"{value:.2g}"
        return f"{value:.4g}"
    return str(value)


#: What each verdict word means, one sentence each, in the order the answer lists them.
MEANING = {
    "holds": "the claim is supported: Holm-adjusted p ≤ 0.05 in the claimed direction.",
    BELOW_INTEREST: "a real effect in the claimed direction, but the simultaneous interval lies below the smallest "
                    "effect of interest (2 accuracy points, 0.01 Hoyer, 0.5 dB).",
    PLAIN_ONLY: "holds under plain-gradient attacks and is refuted by the adaptive ones on the same images.",
    "reverses": "significant in the opposite direction: B is better than A.",
    "does not hold": "the simultaneous interval rules out an effect as large as the smallest effect of interest.",
    "not resolved": "these images cannot tell; the claim's row says about how many would.",
}
#: The figure each claim is shown under (by its key's prefix).
SECTION_OF = {"sparser": "sparsity", "snr": "snr", "noise": "noise", "corruptions": "corruptions",
              "clean-cost": "table1", "autoattack": "table1", "worst": "table1", "distance": "distances"}
ORDER = ("table1", "sparsity", "snr", "noise", "corruptions", "distances")


def _section(judged: Judged) -> str:
    return next(v for k, v in SECTION_OF.items() if judged.claim.key.startswith(k))


def _display(name: str, table: pd.DataFrame) -> pd.DataFrame:
    if name == "table1":
        frame = table.assign(accuracy=_accuracy_cells(table),
                             paper=[f"{p:.1f} %" if np.isfinite(p) else "—" for p in table["paper"]])
        return frame[["model", "item", "accuracy", "paper"]].rename(columns={"item": "condition", "paper": "paper's"})
    if name == "corruptions":  # pooled counts, intervals over the images (hahrobust.stats.clustered_interval)
        frame = table.assign(accuracy=[f"{cell[:-1]}; {images} images)" for cell, images in
                                       zip(_accuracy_cells(table), table["images"])])
        return frame[["model", "item", "accuracy"]].rename(columns={"item": "corruption"})
    columns = {"sparsity": ["model", "item", "hoyer", "hoyer_std", "n"], "snr": ["model", "item", "snr_db", "n"],
               "noise": ["model", "item", "accuracy", "accuracy_std", "n"],
               "distances": ["model", "item", "mean_distance", "median_distance", "unfound", "n"]}[name]
    return table[columns].rename(columns={"item": ""})


def _accuracy_cells(table: pd.DataFrame) -> list[str]:
    """Each row's accuracy as shown: percent [Wilson interval] (count/n)."""
    return [f"{100 * r.accuracy:.1f} % [{100 * r.low:.1f}, {100 * r.high:.1f}] ({r.k}/{r.n})" for r in table.itertuples()]


def _claims_frame(judged: list[Judged], details: bool) -> pd.DataFrame:
    """The claims as rows; ``details`` adds the test and the reason (folded in the HTML)."""
    rows = []
    for r in (j.row() for j in judged):
        accuracy = "a" if r["measure"] == "accuracy" else ""
        row = {"claim": r["text"], "verdict": r["verdict"], "A": _number(r["a"], accuracy),
               "B": _number(r["b"], accuracy),
               "effect [95 % CI]": f"{_number(r['effect'], '')} [{_number(r['low'], '')}, {_number(r['high'], '')}]",
               "simultaneous CI": f"[{_number(r['joint_low'], '')}, {_number(r['joint_high'], '')}]",
               "n": r["n"], "p": _number(r["p_value"], "p_value"), "p (Holm)": _number(r["p_holm"], "p_holm")}
        rows.append(row | ({"test": r["test"], "why": r["reason"]} if details else {}))
    return pd.DataFrame(rows)


def rules(report: Any) -> list[str]:
    groups = list(dict.fromkeys(j.verdict.rule for j in report.judged))
    m = len(report.judged)
    return [*groups, RULE_PLAIN_ONLY, f"Multiple comparisons: Holm over the {m} claims of this report (family-wise "
            f"error ≤ α = 0.05). Each claim shows its own 95 % interval and the simultaneous one (Bonferroni, "
            f"{100 * (1 - 0.05 / max(m, 1)):.3g} % each: all {m} cover their effects at once with probability ≥ 95 %); "
            "verdicts that rest on an interval use the simultaneous one."]


def masking_word(report: Any, side: str) -> str:
    """The audit's verdict word for one model ("masked", "no sign of masking", …), without its evidence."""
    return report.masking[side].split(" — ", 1)[0].removeprefix(f"{report.labels[side]}: ")


def answer(report: Any) -> tuple[list[tuple[str, ...]], list[tuple[str, str]]]:
    """The headline rows, and per verdict word used: the word and "(k of m claims): what it means"."""
    counts = pd.Series([j.final for j in report.judged]).value_counts()
    words = [(word, f"({counts[word]} of {len(report.judged)} claims): {MEANING[word]}")
             for word in MEANING if word in counts]
    return headline_rows([j.row() for j in report.judged], HEADLINE), words


def _sections(report: Any) -> list[tuple[str, str, pd.DataFrame, list[Judged], str]]:
    """(title, paper's statement, table, its claims, figure name) in the report's order."""
    return [(TITLES[name], PAPER_SAYS[name], _display(name, report.tables[name]),
             [j for j in report.judged if _section(j) == name], name) for name in ORDER if name in report.tables]


def md_table(frame: pd.DataFrame) -> str:
    text = frame.map(lambda v: _number(v, "")) if not frame.empty else frame
    return text.to_markdown(index=False)


def markdown(report: Any, figures: dict[str, str]) -> str:
    headline, words = answer(report)
    parts = [f"# hahrobust report: {report.labels['a']} vs {report.labels['b']}", "",
             f"Budget **{report.settings['budget']['name']}**; A = {report.labels['a']}, B = {report.labels['b']}. "
             "Every accuracy: percent [95 % Wilson interval] (count/n).", "", "## The answer", "",
             md_table(pd.DataFrame(headline, columns=list(HEADER))), "",
             *[f"- **{word}** {meaning}" for word, meaning in words],
             *[f"- Masking, {report.labels[s]}: **{masking_word(report, s)}**" for s in report.masking], ""]
    for title, says, frame, judged, fig in _sections(report):
        parts += [f"## {title}", ""] + ([f"Paper: {says}", ""] if says else [])
        parts += [f"![{title}]({figures[fig]})", "", md_table(frame), ""]
        if judged:
            parts += ["Claims:", "", md_table(_claims_frame(judged, details=True)), ""]
    parts += ["## Rules", "", *[f"- {r}" for r in rules(report)], "",
              "## Masking (the audit's verdict per model)", "", *[f"- {v}" for v in report.masking.values()], "",
              "## Provenance", "", "```json", json.dumps(report.provenance, indent=1, sort_keys=True, default=str), "```", ""]
    return "\n".join(parts)


CSS = ("body{font-family:sans-serif;max-width:75em;margin:1.5em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;font-size:.85em;margin:.6em 0}td,th{border:1px solid #ccc;padding:.2em .45em;"
       "text-align:left;vertical-align:top}th{background:#f3f3f3}img{max-width:100%}pre{background:#f7f7f7;padding:1em;"
       "overflow:auto;font-size:.8em}.paper{color:#555;font-style:italic}ul.answer{margin:.3em 0;font-size:.9em}"
       "details{margin:.4em 0}summary{cursor:pointer;color:#035}h2{margin:1.2em 0 .3em}")


def html_table(frame: pd.DataFrame, bold_last: bool = False) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = [html.escape(_number(v, str(c))) for c, v in zip(frame.columns, row)]
        if bold_last:
            cells[-1] = f"<b>{cells[-1]}</b>"
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def html_page(report: Any, pngs: dict[str, bytes]) -> str:
    title = f"hahrobust report: {report.labels['a']} vs {report.labels['b']}"
    headline, words = answer(report)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>Budget <b>{html.escape(report.settings['budget']['name'])}</b>; A = "
             f"{html.escape(report.labels['a'])}, B = {html.escape(report.labels['b'])}. Every accuracy: percent "
             "[95 % Wilson interval] (count/n).</p><h2>The answer</h2>",
             html_table(pd.DataFrame(headline, columns=list(HEADER)), bold_last=True), "<ul class='answer'>",
             *[f"<li><b>{html.escape(word)}</b> {html.escape(meaning)}</li>" for word, meaning in words],
             *[f"<li>Masking, {html.escape(report.labels[s])}: <b>{html.escape(masking_word(report, s))}</b></li>"
               for s in report.masking], "</ul>"]
    for head, says, frame, judged, fig in _sections(report):
        parts.append(f"<h2>{html.escape(head)}</h2>")
        if says:
            parts.append(f"<p class='paper'>Paper: {html.escape(says)}</p>")
        data = base64.b64encode(pngs[fig]).decode("ascii")
        parts.append(f"<img alt='{html.escape(head)}' src='data:image/png;base64,{data}'>")
        parts.append(html_table(frame))
        if judged:
            parts.append(html_table(_claims_frame(judged, details=False)))
            parts.append("<details><summary>each claim's test and reason</summary>"
                         + html_table(_claims_frame(judged, details=True)[["claim", "test", "why"]]) + "</details>")
    parts.append("<h2>Rules, masking evidence, provenance</h2>")
    parts.append("<details><summary>the rules the verdicts follow</summary><ul>"
                 + "".join(f"<li>{html.escape(r)}</li>" for r in rules(report)) + "</ul></details>")
    parts.append("<details><summary>the audit's verdict per model, in full</summary><ul>"
                 + "".join(f"<li>{html.escape(v)}</li>" for v in report.masking.values()) + "</ul></details>")
    parts.append("<details><summary>provenance</summary><pre>" + html.escape(json.dumps(
        report.provenance, indent=1, sort_keys=True, default=str)) + "</pre></details></body></html>")
    return "".join(parts)
