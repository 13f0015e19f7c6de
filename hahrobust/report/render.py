"""The report's files: ``report.md`` and a self-contained ``report.html`` (laid out by :mod:`.page`),
``report.json`` (every number; ``command``/``settings``/``rows`` as ``hahrobust check`` reads them) and one PNG per
figure. Nothing in them depends on the clock, so a resumed run writes the same files."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from hahrobust.attacks.norms import SYMBOLS
from hahrobust.provenance import write_atomically
from hahrobust.report.page import TITLES, html_page, markdown
from hahrobust.results import PALETTE
from hahrobust.results.files import jsonable

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


def json_document(report: Any) -> dict[str, Any]:
    """``rows``: one per figure value (section, model, item; metrics named as ``hahrobust check`` knows them) and one
    per claim (its verdict a key: a changed verdict is a missing row there)."""
    frames = [t.assign(verdict="") for t in report.tables.values()]
    frames.append(pd.DataFrame([{"section": "claims", "model": "A vs B", "item": j.claim.key, "verdict": j.final,
                                 "p_value": j.claim.comparison.p_value, "p_holm": j.p_adjusted, "n": j.claim.comparison.n}
                                for j in report.judged]))
    rows = pd.concat(frames, ignore_index=True).reindex(columns=ROW_COLUMNS)
    return jsonable({
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
