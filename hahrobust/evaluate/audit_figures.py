"""The audit's two figures, drawn for a reader who wants the answer at a glance.

``audit.png`` (:func:`draw_audit`): one panel per model, norm and ε, a horizontal waterfall. The top bar is clean
accuracy; each member below it is the drop it caused, labelled with the images it broke first (plain-gradient
members grey, gradient-changing ones red, transfer and black-box blue); a member that attacked every image also
shows its own robust accuracy as a tick; the last bar is the worst case, labelled with its value.
``audit-diagnostics.png`` (:func:`draw_diagnostics`): the indicators as a checklist per model and norm, a filled
mark where an indicator fired, with its measured value.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from hahrobust.results import Result
from hahrobust.studies.audit import all_members, plain_twin

GREY, RED, BLUE, DARK = "#7f7f7f", "#d62728", "#1f77b4", "#222222"


def _member_colours() -> dict[str, str]:
    """Each audit member's bar colour, by name. Red: its breaks are evidence of masking (Member.changes_gradient,
    the verdict's own rule); grey: plain gradients on the exact model, the plain twins included; blue: the rest
    (transfer, black-box)."""
    colours = {m.name: RED if m.changes_gradient else GREY if m.plain else BLUE for m in all_members()}
    return colours | {plain_twin(m).name: GREY for m in all_members() if m.changes_gradient}


def draw_audit(result: Result) -> Any:
    """The waterfall of verified breaks per model, norm and ε, ending at the worst case."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = result.rows
    panels = list(rows.groupby(["model", "norm_label", "eps_label"], sort=False))
    height = max(len(part) for _, part in panels) * 0.42 + 1.4
    columns = min(2, len(panels))
    lines = -(-len(panels) // columns)
    figure = Figure(figsize=(6.2 * columns, height * lines), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(lines, columns, squeeze=False).flatten()
    colours = _member_colours()
    for ax, ((model, norm, eps), part) in zip(axes, panels):
        n = int(part.loc[part["attack"] == "worst case", "n"].iloc[0])
        clean = float(part["clean_acc"].iloc[0])
        labels, level = ["clean"], clean
        ax.barh(0, clean, color="#bbbbbb")
        ax.text(clean, 0, f" {clean:.1%}", va="center", fontsize=8)
        for i, (_, row) in enumerate(part[part["attack"] != "worst case"].iterrows(), start=1):
            drop = int(row["first_breaks"]) / n
            ax.barh(i, drop, left=level - drop, color=colours.get(str(row["attack"]), GREY))
            text = f" −{int(row['first_breaks'])}" + (f" (on {int(row['n'])} left)" if pd.isna(row["robust_acc"]) else "")
            ax.text(level, i, text, va="center", fontsize=8)
            if not pd.isna(row["robust_acc"]):  # a member on every image: its own robust accuracy
                ax.plot([row["robust_acc"]] * 2, [i - 0.4, i + 0.4], color=DARK, linewidth=1.5)
            level -= drop
            labels.append(str(row["attack"]))
        worst = float(part.loc[part["attack"] == "worst case", "robust_acc"].iloc[0])
        ax.barh(len(labels), worst, color=DARK)
        ax.text(worst, len(labels), f" {worst:.1%}", va="center", fontsize=9, fontweight="bold")
        labels.append("worst case")
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, max(clean, 1e-3) * 1.25)
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
        ax.set_title(f"{model} · {norm} ε = {eps} · n = {n}", fontsize=9)
        ax.set_xlabel("accuracy (bars below clean: images each member broke first)", fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    figure.legend(handles=[Patch(color=GREY, label="plain gradient"),
                           Patch(color=RED, label="gradient-changing (BPDA, EOT, twin, SPSA)"),
                           Patch(color=BLUE, label="transfer / black-box"), Patch(color=DARK, label="worst case")],
                  loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    return figure


def draw_diagnostics(result: Result) -> Any:
    """The indicators of attack failure as a checklist: rows are indicators, columns model × norm; a red mark
    where one fired, a grey one where it did not, each with its measured value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result.rows
    columns = list(dict.fromkeys(zip(rows["model"], rows["norm_label"])))
    indicators = list(dict.fromkeys(rows["indicator"]))
    figure = Figure(figsize=(2.6 + 2.8 * len(columns), 0.42 * len(indicators) + 1.0), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for x, (model, norm) in enumerate(columns):
        part = rows[(rows["model"] == model) & (rows["norm_label"] == norm)].set_index("indicator")
        for y, indicator in enumerate(indicators):
            if indicator not in part.index:
                continue
            fired = bool(part.loc[indicator, "fired"])
            ax.scatter(x, y, s=90, marker="X" if fired else "o", color=RED if fired else "#cccccc", zorder=3)
            ax.text(x + 0.08, y, str(part.loc[indicator, "value"])[:44], va="center", fontsize=7)
    ax.set_xticks(range(len(columns)), [f"{m}\n{n}" for m, n in columns], fontsize=8)
    ax.set_yticks(range(len(indicators)), indicators, fontsize=8)
    ax.set_xlim(-0.4, len(columns) - 0.1)
    ax.invert_yaxis()
    ax.grid(axis="y", color="#eeeeee")
    ax.set_title("Indicators of attack failure (✕ fired)", fontsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return figure
