"""The leaderboard's files: ``leaderboard.md`` and a self-contained ``leaderboard.html`` (the ranked table first, then
the paired tests, where the rankings disagree, each audit's verdict in full, provenance), ``leaderboard.json`` (every
number; ``command``/``settings``/``rows`` as ``hahrobust check`` reads them, the audit verdict a key on the worst-case
rows so a changed verdict fails a check), ``leaderboard.csv`` (the rows) and ``leaderboard.png`` (AutoAttack beside the
worst case, per model, with intervals). Nothing in them depends on the clock: a resumed run writes the same files."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from hahrobust.leaderboard.table import MEASURES, ROW_COLUMNS, verdict_word
from hahrobust.provenance import write_atomically
from hahrobust.report.page import CSS, html_table, md_table
from hahrobust.results import PALETTE
from hahrobust.results.files import jsonable

LABELS = {m.key: m.label for m in MEASURES}
MARKS = {"higher": " ▲", "lower": " ▼", "not resolved": " ≈", "": ""}
READING = ("Every accuracy: percent [95 % Wilson interval] on n images (CIFAR-10-C: clustered by image). ▲/▼: above/"
           "below the baseline on the same images, resolved by a paired test after Holm over the whole table; ≈: the "
           "difference is inside the noise (not resolved). Worst case: per image, broken by any of the audit's attacks or "
           "by AutoAttack. Ranked by the worst case (ℓ∞, then ℓ2; equal ones share a rank), "
           "not by AutoAttack, whose rank stands beside it: a worst case is an upper bound a stronger attack may lower, "
           "and AutoAttack's is a looser one.")


def board_frame(board: Any) -> pd.DataFrame:
    """The ranked table: one row per model, one cell per measure (with its mark against the baseline)."""
    rows = board.rows.set_index(["model", "measure"])
    keys = [m.key for m in MEASURES if m.key in set(board.rows["measure"])]
    records = []
    for rank in board.ranking.itertuples(index=False):
        record: dict[str, str] = {"rank": str(rank.rank), "model": rank.model + (" (baseline)" if rank.model == board.baseline else "")}
        for key in keys:
            row = rows.loc[(rank.model, key)]
            record[LABELS[key]] = (f"{100 * row['accuracy']:.1f} [{100 * row['low']:.1f}, {100 * row['high']:.1f}]"
                                   + MARKS[row["resolved"] if isinstance(row["resolved"], str) else ""])
        facts = board.audits[rank.model]
        record["audit verdict"] = verdict_word(facts)  # its reasons: in the verdicts below the table
        record["converged ℓ∞ / ℓ2"] = " / ".join("yes" if facts["converged"][n] else "no" for n in ("linf", "l2"))
        record["AutoAttack rank"] = str(rank.autoattack_rank)
        records.append(record)
    return pd.DataFrame(records)


def tests_frame(board: Any) -> pd.DataFrame:
    """Each paired test against the baseline: the difference in points with its interval, p and Holm's p."""
    tested = board.rows[board.rows["p_value"].notna()]
    return pd.DataFrame({
        "model": tested["model"], "measure": [LABELS[k] for k in tested["measure"]], "n": tested["n"],
        "difference (points)": [f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]" for d, lo, hi in
                                zip(tested["difference"], tested["difference_low"], tested["difference_high"])],
        "p": [f"{p:.2g}" for p in tested["p_value"]], "p (Holm)": [f"{p:.2g}" for p in tested["p_holm"]],
        "resolved": tested["resolved"]})


def disagreements(board: Any) -> list[str]:
    """One line per model whose AutoAttack rank differs from its worst-case rank."""
    accuracy = board.rows.set_index(["model", "measure"])["accuracy"]
    lines = []
    for r in board.ranking.itertuples(index=False):
        if r.rank == r.autoattack_rank or (r.model, "autoattack-linf") not in accuracy.index:
            continue
        aa, worst = accuracy[(r.model, "autoattack-linf")], accuracy[(r.model, "worst-linf")]
        lines.append(f"{r.model}: rank {r.rank} by worst case, {r.autoattack_rank} by AutoAttack (ℓ∞: AutoAttack "
                     f"{100 * aa:.1f} %, worst case {100 * worst:.1f} %, {100 * (aa - worst):.1f} points that only the "
                     f"audit's other attacks found)")
    return lines


def markdown(board: Any, figure: str) -> str:
    s = board.settings
    parts = [f"# hahrobust leaderboard: {len(board.labels)} models against {board.baseline}", "",
             f"Budget **{s['budget']['name']}**, seed {s['seed']}; {s['images']['stats']} images for clean and noise, "
             f"{s['images']['attack']} for attacks and certificates.", "", READING, "", md_table(board_frame(board)), "",
             f"![AutoAttack and worst case]({figure})", "", "## Where AutoAttack's ranking and the worst case's disagree", ""]
    parts += [f"- {line}" for line in disagreements(board)] or ["- Nowhere: the two rankings agree."]
    parts += ["", "## Paired tests against the baseline (Holm over the table)", "", md_table(tests_frame(board)), "",
              "## The audit's verdict per model, in full", "",
              *[f"- {facts['verdict']}" for facts in board.audits.values()], "",
              "## Provenance", "", "```json", json.dumps(board.provenance, indent=1, sort_keys=True, default=str), "```", ""]
    return "\n".join(parts)


def html_page(board: Any, png: bytes) -> str:
    title = f"hahrobust leaderboard: {len(board.labels)} models against {board.baseline}"
    s = board.settings
    data = base64.b64encode(png).decode("ascii")
    listing = disagreements(board) or ["Nowhere: the two rankings agree."]
    return "".join([
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>Budget <b>{html.escape(s['budget']['name'])}</b>, seed {s['seed']}; {s['images']['stats']} images for clean "
        f"and noise, {s['images']['attack']} for attacks and certificates.</p><p>{html.escape(READING)}</p>",
        html_table(board_frame(board)), f"<img alt='AutoAttack and worst case' src='data:image/png;base64,{data}'>",
        "<h2>Where AutoAttack's ranking and the worst case's disagree</h2><ul>",
        *[f"<li>{html.escape(line)}</li>" for line in listing], "</ul>",
        "<h2>Paired tests against the baseline (Holm over the table)</h2>", html_table(tests_frame(board)),
        "<details><summary>the audit's verdict per model, in full</summary><ul>",
        *[f"<li>{html.escape(f['verdict'])}</li>" for f in board.audits.values()], "</ul></details>",
        "<details><summary>provenance</summary><pre>",
        html.escape(json.dumps(board.provenance, indent=1, sort_keys=True, default=str)), "</pre></details></body></html>"])


def figure_png(board: Any) -> bytes:
    """Per model (ranked order): AutoAttack and the worst case at each norm, with Wilson intervals."""
    rows = board.rows.set_index(["model", "measure"])
    models = list(board.ranking["model"])
    pairs = [("autoattack-linf", "worst-linf"), ("autoattack-l2", "worst-l2")]
    fig = MplFigure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    for p, keys in enumerate(pairs):
        ax = fig.add_subplot(1, 2, p + 1)
        for k, key in enumerate(keys):
            part = rows.xs(key, level="measure").reindex(models)
            x = np.arange(len(models)) + (k - 0.5) * 0.4
            err = [100 * (part["accuracy"] - part["low"]).to_numpy(), 100 * (part["high"] - part["accuracy"]).to_numpy()]
            ax.bar(x, 100 * part["accuracy"].to_numpy(), 0.4, yerr=err, capsize=2, color=PALETTE[k],
                   label=LABELS[key].split(" ℓ")[0])
        ax.set_xticks(np.arange(len(models)), models, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("robust accuracy (%)")
        ax.set_title(LABELS[keys[1]].removeprefix("worst case "), fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("AutoAttack vs the audit's worst case (ranked by worst case)", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})  # no version stamp: same bytes each run
    return buffer.getvalue()


def json_document(board: Any) -> dict[str, Any]:
    return jsonable({
        "command": "leaderboard", "settings": board.settings, "columns": ROW_COLUMNS,
        "rows": board.rows.reindex(columns=ROW_COLUMNS).to_dict(orient="records"),
        "ranking": board.ranking.to_dict(orient="records"), "audits": board.audits, "provenance": board.provenance,
    })


def write_leaderboard(board: Any, out: Path) -> list[Path]:
    """Every file, each written atomically; the JSON last."""
    png = figure_png(board)
    texts = {"leaderboard.csv": board.rows.reindex(columns=ROW_COLUMNS).to_csv(index=False),
             "leaderboard.md": markdown(board, "leaderboard.png"), "leaderboard.html": html_page(board, png),
             "leaderboard.json": json.dumps(json_document(board), indent=1, sort_keys=True, ensure_ascii=False) + "\n"}
    paths = [out / "leaderboard.png"]
    write_atomically(paths[0], lambda tmp: tmp.write_bytes(png), "the leaderboard figure")
    for name, text in texts.items():
        write_atomically(out / name, lambda tmp, t=text: tmp.write_text(t, encoding="utf-8"), name)
        paths.append(out / name)
    return paths
