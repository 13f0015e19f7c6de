"""The report's files: ``report.md``, a self-contained ``report.html`` (figures as base64 PNG data URIs, no
external resource), ``report.json`` (every number; ``command``/``settings``/``rows`` as ``hahrobust check`` reads
them) and one PNG per figure. Nothing in them depends on the clock, so a resumed run writes the same files."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from hahrobust.attacks.norms import SYMBOLS
from hahrobust.provenance import write_atomically
from hahrobust.report.claims import RULE_PLAIN_ONLY, Judged
from hahrobust.report.tables import PAPER_SAYS
from hahrobust.results import PALETTE

TITLES = {"table1": "Table 1: clean, noisy and adversarial accuracy", "sparsity": "Fig. 2: sparsity (Hoyer, lower = sparser)",
          "snr": "Fig. 3: SNR at each block's input (σ = 0.1)", "noise": "Fig. 4: accuracy under Gaussian noise",
          "distances": "Fig. 5: mean minimum-norm distance", "corruptions": "Common corruptions (CIFAR-10-C)"}
VALUE = {"table1": "accuracy", "sparsity": "hoyer", "snr": "snr_db", "noise": "accuracy", "distances": "mean_distance",
         "corruptions": "accuracy"}
WITH_INTERVALS = ("table1", "corruptions")  # accuracies drawn with their Wilson intervals, in percent
ROW_COLUMNS = ["section", "model", "item", "verdict", "accuracy", "hoyer", "snr_db", "mean_distance",
               "median_distance", "low", "high", "k", "n", "p_value", "p_holm"]


def figure_png(name: str, table: pd.DataFrame) -> bytes:
    """One figure as PNG bytes: lines for the noise curve, grouped bars otherwise (facets per norm in Fig. 5)."""
    facets = sorted(table["gradient"].unique(), reverse=True) if name == "distances" else [None]
    fig = MplFigure(figsize=(7.5 if name not in ("distances", "corruptions") else 9, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    for f, facet in enumerate(facets):
        ax = fig.add_subplot(1, len(facets), f + 1)
        part = table if facet is None else table[table["gradient"] == facet]
        models = list(dict.fromkeys(part["model"]))
        items = list(dict.fromkeys(part["item"] if name != "distances" else part["norm"]))
        for m, model in enumerate(models):
            rows = part[part["model"] == model]
            values = rows[VALUE[name]].to_numpy(dtype=float)
            if name == "noise":
                ax.plot(rows["sigma"], 100 * values, marker="o", color=PALETTE[m], label=model)
                continue
            scale = 100 if name in WITH_INTERVALS else 1
            x = np.arange(len(values)) + (m - (len(models) - 1) / 2) * 0.8 / len(models)
            err = None
            if name in WITH_INTERVALS:
                err = [100 * (rows["accuracy"] - rows["low"]).to_numpy(), 100 * (rows["high"] - rows["accuracy"]).to_numpy()]
            ax.bar(x, scale * np.where(np.isfinite(values), values, 0), 0.8 / len(models), yerr=err, capsize=2,
                   color=PALETTE[m], label=model)
            if name == "table1":
                paper = rows["paper"].to_numpy(dtype=float)
                ax.scatter(x[np.isfinite(paper)], paper[np.isfinite(paper)], marker="_", s=200, color="black",
                           zorder=3, label="paper" if m == 0 else None)
        if name != "noise":
            ticks = [SYMBOLS.get(str(i), str(i)).replace("AutoAttack ", "AA ").replace("worst case ", "worst ")
                     .replace("block ", "").replace(" input", "") for i in items]
            ax.set_xticks(np.arange(len(items)), ticks, rotation=30 if name in WITH_INTERVALS else 0, fontsize=7,
                          ha="right" if name in WITH_INTERVALS else "center")
            if name in ("sparsity", "snr"):
                ax.set_xlabel("block" + (" (input)" if name == "snr" else ""))
        ax.set_ylabel({"table1": "accuracy (%)", "noise": "accuracy (%)", "corruptions": "accuracy (%)", "sparsity": "Hoyer",
                       "snr": "SNR (dB)", "distances": "distance"}[name])
        if name == "distances":
            ax.set_yscale("log")
            ax.set_title("plain gradients" if facet == "plain" else "any attack (BPDA; ℓ∞, ℓ2: the audit's breaks at ε)", fontsize=9)
        if name == "noise":
            ax.set_xlabel("σ")
        ax.legend(fontsize=7)
    fig.suptitle(TITLES[name], fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})  # no version stamp: same bytes each run
    return buffer.getvalue()


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


def _accuracy_cells(table: pd.DataFrame) -> list[str]:
    """Each row's accuracy as shown: percent [Wilson interval] (count/n)."""
    return [f"{100 * r.accuracy:.1f} % [{100 * r.low:.1f}, {100 * r.high:.1f}] ({r.k}/{r.n})" for r in table.itertuples()]


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


def _claims_frame(judged: list[Judged]) -> pd.DataFrame:
    rows = [j.row() for j in judged]
    return pd.DataFrame([{
        "claim": r["text"], "verdict": r["verdict"], **{k.upper(): _number(r[k], "a" if r["measure"] == "accuracy" else "")
                                                         for k in "ab"},
        "effect [95 % CI]": f"{_number(r['effect'], '')} [{_number(r['low'], '')}, {_number(r['high'], '')}]",
        "n": r["n"], "p": _number(r["p_value"], "p_value"), "p (Holm)": _number(r["p_holm"], "p_holm"),
        "test": r["test"], "why": r["reason"]} for r in rows])


def _md_table(frame: pd.DataFrame) -> str:
    text = frame.map(lambda v: _number(v, "")) if not frame.empty else frame
    return text.to_markdown(index=False)


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_number(v, str(c)))}</td>" for c, v in zip(frame.columns, row))
                   + "</tr>" for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _sections(report: Any) -> list[tuple[str, str, pd.DataFrame, str | None]]:
    """(title, paper's statement, table, figure name) in the report's order."""
    out = [("Claims and verdicts", "", _claims_frame(report.judged), None)]
    for name in ("table1", "sparsity", "snr", "noise", "corruptions", "distances"):
        if name not in report.tables:
            continue
        out.append((TITLES[name], PAPER_SAYS[name], _display(name, report.tables[name]), name))
    return out


def rules(report: Any) -> list[str]:
    groups = list(dict.fromkeys(j.verdict.rule for j in report.judged))
    return [*groups, RULE_PLAIN_ONLY, f"Multiple comparisons: Holm over the {len(report.judged)} claims of this report "
            "(family-wise error ≤ α = 0.05); intervals are each comparison's own 95 % interval, not adjusted."]


def markdown(report: Any, figures: dict[str, str]) -> str:
    parts = [f"# hahrobust report: {report.labels['a']} vs {report.labels['b']}", "",
             f"Budget **{report.settings['budget']['name']}**; A = {report.labels['a']}, B = {report.labels['b']}. "
             "Every accuracy: percent [95 % Wilson interval] (count/n).", ""]
    for title, says, frame, fig in _sections(report):
        parts += [f"## {title}", ""] + ([f"Paper: {says}", ""] if says else []) + [_md_table(frame), ""]
        if fig is not None:
            parts += [f"![{title}]({figures[fig]})", ""]
        if title.startswith("Claims"):
            parts += ["Rules:", "", *[f"- {r}" for r in rules(report)], ""]
    parts += ["## Masking (the audit's verdict per model)", "", *[f"- {v}" for v in report.masking.values()], "",
              "## Provenance", "", "```json", json.dumps(report.provenance, indent=1, sort_keys=True, default=str), "```", ""]
    return "\n".join(parts)


CSS = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;font-size:.85em;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .5em;"
       "text-align:left;vertical-align:top}th{background:#f3f3f3}img{max-width:100%}pre{background:#f7f7f7;padding:1em;"
       "overflow:auto;font-size:.8em}.paper{color:#555;font-style:italic}")


def html_page(report: Any, pngs: dict[str, bytes]) -> str:
    title = f"hahrobust report: {report.labels['a']} vs {report.labels['b']}"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>Budget <b>{html.escape(report.settings['budget']['name'])}</b>. Every accuracy: percent "
             "[95 % Wilson interval] (count/n).</p>"]
    for head, says, frame, fig in _sections(report):
        parts.append(f"<h2>{html.escape(head)}</h2>")
        if says:
            parts.append(f"<p class='paper'>Paper: {html.escape(says)}</p>")
        if fig is not None:
            data = base64.b64encode(pngs[fig]).decode("ascii")
            parts.append(f"<img alt='{html.escape(head)}' src='data:image/png;base64,{data}'>")
        parts.append(_html_table(frame))
        if head.startswith("Claims"):
            parts.append("<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in rules(report)) + "</ul>")
    parts.append("<h2>Masking (the audit's verdict per model)</h2><ul>"
                 + "".join(f"<li>{html.escape(v)}</li>" for v in report.masking.values()) + "</ul>")
    parts.append("<h2>Provenance</h2><pre>" + html.escape(json.dumps(report.provenance, indent=1, sort_keys=True,
                                                                       default=str)) + "</pre></body></html>")
    return "".join(parts)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    return value


def json_document(report: Any) -> dict[str, Any]:
    """``rows``: one per figure value (section, model, item; metrics named as ``hahrobust check`` knows them) and one
    per claim (its verdict a key: a changed verdict is a missing row there)."""
    frames = [t.assign(verdict="") for t in report.tables.values()]
    frames.append(pd.DataFrame([{"section": "claims", "model": "A vs B", "item": j.claim.key, "verdict": j.final,
                                 "p_value": j.claim.comparison.p_value, "p_holm": j.p_adjusted, "n": j.claim.comparison.n}
                                for j in report.judged]))
    rows = pd.concat(frames, ignore_index=True).reindex(columns=ROW_COLUMNS)
    return _jsonable({
        "command": "report", "settings": report.settings, "columns": ROW_COLUMNS,
        "rows": rows.to_dict(orient="records"), "claims": [j.row() for j in report.judged],
        "tables": {k: t.to_dict(orient="records") for k, t in report.tables.items()},
        "masking": report.masking, "masking_evidence": report.masking_evidence, "provenance": report.provenance,
    })


def write_report(report: Any, out: Path) -> list[Path]:
    """Every file of the report, each written atomically; the figures first, the JSON last."""
    pngs = {name: figure_png(name, table) for name, table in report.tables.items()}
    paths = []
    for name, data in pngs.items():
        path = out / f"{name}.png"
        write_atomically(path, lambda tmp, d=data: tmp.write_bytes(d), f"the {name} figure")
        paths.append(path)
    texts = {"report.md": markdown(report, {n: f"{n}.png" for n in pngs}), "report.html": html_page(report, pngs),
             "report.json": json.dumps(json_document(report), indent=1, sort_keys=True, ensure_ascii=False) + "\n"}
    for name, text in texts.items():
        write_atomically(out / name, lambda tmp, t=text: tmp.write_text(t, encoding="utf-8"), name)
        paths.append(out / name)
    return paths
