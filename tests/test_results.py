"""The results module: pivoted tables, Markdown/CSV determinism, strict JSON, the figure, atomic writes."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from rich.console import Console

from hahrobust import results
from hahrobust.errors import HahrobustError
from hahrobust.provenance import sha256_file
from hahrobust.results import (
    Figure, Layout, Result, check_out_dir, display_frame, format_value, markdown, prepare_out_dir, write,
)
from hahrobust.results.render import narrow


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights")
    return path


def sweep(checkpoint: Path, **layout_overrides: object) -> Result:
    """A noise-sweep-shaped result: models z-model then a-model (not alphabetical), σ = 0 with an inf column."""
    rows = pd.DataFrame(
        {
            "model": ["z-model", "z-model", "a-model", "a-model"],
            "sigma": [0.0, 0.1, 0.0, 0.1],
            "accuracy": [0.9, 0.6, 0.925, 0.266],
            "accuracy_std": [0.0, 0.0125, 0.0, float("nan")],
            "snr_db": [math.inf, 12.5, math.inf, -math.inf],
        }
    )
    layout = Layout(
        title="Sweep",
        index=("sigma",),
        columns=("model",),
        values=("accuracy",),
        formats={"accuracy": "{:.2%}", "sigma": "{:g}"},
        errors={"accuracy": "accuracy_std"},
        labels={"sigma": "σ"},
        notes=("fixed note",),
        figure=Figure(kind="line", x="sigma", y=("accuracy",), err={"accuracy": "accuracy_std"}, percent=("accuracy",)),
    )
    layout = dataclasses.replace(layout, **layout_overrides)
    return Result("sweep", rows, {"seed": 3, "sigmas": [0.0, 0.1]}, {"z-model": checkpoint, "a-model": checkpoint},
                  layout, notes=["dynamic note"])


@pytest.mark.parametrize(
    ("value", "template", "text"),
    [
        (0.5, "{:.1%}", "50.0%"),
        (0.12345, "{:.3f}", "0.123"),
        (12.5, "{:.1f} dB", "12.5 dB"),
        (3, "{:d}", "3"),
        (math.inf, "{:.2f}", "∞"),
        (-math.inf, "{:.2f}", "−∞"),
        (math.nan, "{:.2f}", "—"),
        (None, "{:.2f}", "—"),
        ("linf", "{:.2f}", "linf"),
    ],
)
def test_format_value(value: object, template: str, text: str) -> None:
    assert format_value(value, template) == text


def test_pivot_keeps_first_appearance_order_and_formats_errors(checkpoint: Path) -> None:
    frame = display_frame(sweep(checkpoint))
    assert list(frame.columns) == ["σ", "z-model", "a-model"]  # rows' order, not alphabetical
    assert frame.values.tolist() == [
        ["0", "90.00%", "92.50%"],  # std 0: no "± 0.00%"
        ["0.1", "60.00% ± 1.25%", "26.60%"],  # NaN std (one repeat): no ±
    ]


def test_several_values_and_a_header_template(checkpoint: Path) -> None:
    result = sweep(checkpoint, values=("accuracy", "snr_db"), header="{value} of {model}",
                   formats={"accuracy": "{:.1%}", "snr_db": "{:.1f} dB"})
    frame = display_frame(result)
    assert list(frame.columns) == ["σ", "accuracy of z-model", "accuracy of a-model", "snr_db of z-model",
                                   "snr_db of a-model"]
    assert frame.iloc[0, 3:].tolist() == ["∞", "∞"] and frame.iloc[1, 3:].tolist() == ["12.5 dB", "−∞"]


def test_intervals_beside_their_value_and_rows_without_them(checkpoint: Path) -> None:
    """``value [low, high]`` where the row has an interval; the value alone where it has none (an older file)."""
    result = sweep(checkpoint, errors={}, intervals={"accuracy": ("low", "high")}, formats={"accuracy": "{:.1%}"})
    result.rows["low"], result.rows["high"] = [0.85, 0.5, math.nan, 0.2], [0.94, 0.7, math.nan, 0.33]
    frame = display_frame(result)
    assert frame.iloc[:, 1].tolist() == ["90.0% [85.0%, 94.0%]", "60.0% [50.0%, 70.0%]"]
    assert frame.iloc[:, 2].tolist() == ["92.5%", "26.6% [20.0%, 33.0%]"]
    assert display_frame(sweep(checkpoint, intervals={"accuracy": ("low", "high")})).iloc[0, 1] == "90.00%"


def test_per_value_headers_and_dropping_empty_columns(checkpoint: Path) -> None:
    """A value defined only for some column keys (snr_db only at σ = 0.1 here) gets no all-dash column."""
    result = sweep(checkpoint, index=("model",), columns=("sigma",), values=("accuracy", "snr_db"),
                   header={"accuracy": "{sigma}", "snr_db": "SNR"}, drop_empty_columns=True)
    result.rows["snr_db"] = [math.nan, 12.5, math.nan, 3.0]
    frame = display_frame(result)
    assert list(frame.columns) == ["model", "0", "0.1", "SNR"]
    assert frame["SNR"].tolist() == ["12.5", "3"]
    kept = display_frame(dataclasses.replace(result, layout=dataclasses.replace(result.layout, drop_empty_columns=False)))
    assert list(kept.columns) == ["model", "0", "0.1", "SNR", "SNR"] and kept.iloc[:, 3].tolist() == ["—", "—"]


def test_heatmap_has_a_panel_per_facet_and_a_labelled_cell_per_value(checkpoint: Path) -> None:
    figure = results.draw(sweep(checkpoint, figure=Figure(kind="heatmap", x="sigma", y=("accuracy",), facet="model",
                                                          index="model", percent=("accuracy",))))
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["z-model", "a-model"]
    assert [t.get_text() for t in panels[0].texts] == ["90%", "60%"] and len(figure.axes) == 3  # + colour bar


def test_missing_cells_show_a_dash(checkpoint: Path) -> None:
    """Models with different block counts (VGG-11 vs VGG-16) share one table."""
    rows = pd.DataFrame({"model": ["a", "a", "b"], "block": [1, 2, 1], "hoyer": [0.1, 0.2, 0.3]})
    layout = Layout(title="t", index=("block",), columns=("model",), values=("hoyer",))
    frame = display_frame(Result("s", rows, {}, {}, layout))
    assert frame.values.tolist() == [["1", "0.1", "0.3"], ["2", "0.2", "—"]]


def test_table_without_columns(checkpoint: Path) -> None:
    rows = pd.DataFrame({"model": ["a", "b"], "accuracy": [0.5, 0.25]})
    layout = Layout(title="t", index=("model",), values=("accuracy",), formats={"accuracy": "{:.0%}"},
                    labels={"accuracy": "clean"})
    frame = display_frame(Result("s", rows, {}, {}, layout))
    assert list(frame.columns) == ["model", "clean"] and frame.values.tolist() == [["a", "50%"], ["b", "25%"]]


def test_layout_must_name_existing_columns(checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="missing from rows: nope"):
        sweep(checkpoint, values=("nope",))


def test_markdown_is_pandas_tables_and_has_no_clock(checkpoint: Path) -> None:
    result = sweep(checkpoint)
    text = markdown(result)
    assert text.startswith("# Sweep\n\n| σ ")
    assert "- fixed note\n- dynamic note" in text
    assert "| seed " in text and sha256_file(checkpoint)[:16] in text
    later = sweep(checkpoint)
    later.started = datetime(2000, 1, 1, tzinfo=timezone.utc)
    assert markdown(later) == text


def test_write_produces_four_files_deterministically(checkpoint: Path, tmp_path: Path) -> None:
    first = write(sweep(checkpoint), tmp_path / "a" / "nested")
    second = write(sweep(checkpoint), tmp_path / "b")
    assert [p.name for p in first] == ["sweep.csv", "sweep.md", "sweep.json", "sweep.png"]
    for one, two in zip(first[:2], second[:2]):
        assert one.read_bytes() == two.read_bytes()
    csv = first[0].read_text()
    assert csv.splitlines()[0] == "model,sigma,accuracy,accuracy_std,snr_db"
    assert csv.splitlines()[1] == "z-model,0.0,0.9,0.0,inf"
    assert pd.read_csv(first[0]).shape == (4, 5)
    with Image.open(first[3]) as image:
        assert image.format == "PNG" and image.width > 300
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(p.name for p in second)  # no temp files


def test_json_is_strict_and_complete(checkpoint: Path, tmp_path: Path) -> None:
    path = write(sweep(checkpoint), tmp_path)[2]

    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    doc = json.loads(path.read_text(), parse_constant=reject)
    assert doc["command"] == "sweep" and doc["seed"] == 3 and doc["settings"]["sigmas"] == [0.0, 0.1]
    assert doc["checkpoints"]["a-model"]["sha256"] == sha256_file(checkpoint)
    assert {"python", "torch", "numpy"} <= set(doc["versions"]) and "git_commit" in doc
    assert datetime.fromisoformat(doc["started"]).tzinfo is not None
    assert doc["rows"][0] == {"model": "z-model", "sigma": 0.0, "accuracy": 0.9, "accuracy_std": 0.0, "snr_db": "inf"}
    assert doc["rows"][3]["accuracy_std"] == "nan" and doc["rows"][3]["snr_db"] == "-inf"
    assert doc["notes"] == ["fixed note", "dynamic note"] and doc["columns"][0] == "model"


@pytest.mark.parametrize(
    "figure",
    [
        Figure(kind="bar", x="sigma", y=("accuracy", "snr_db")),
        Figure(kind="line", x="sigma", y=("accuracy",), facet="model"),
    ],
)
def test_figure_panels(figure: Figure, checkpoint: Path) -> None:
    figure_ = results.draw(sweep(checkpoint, figure=figure))
    assert len(figure_.axes) == 2
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in figure_.axes)


def test_show_prints_the_table(checkpoint: Path) -> None:
    console = Console(record=True, width=120)
    results.show(sweep(checkpoint), console)
    text = console.export_text()
    assert "60.00% ± 1.25%" in text and "dynamic note" in text


def test_failed_write_leaves_old_files_untouched(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sweep.csv").write_text("old")

    def broken_png(result: Result, path: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.files, "_write_png", broken_png)
    with pytest.raises(HahrobustError, match="No space left on device"):
        write(sweep(checkpoint), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "sweep.csv"]
    assert (tmp_path / "sweep.csv").read_text() == "old"


def test_prepare_out_dir_rejects_unwritable_places(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(HahrobustError, match="not a directory"):
        prepare_out_dir(a_file)
    with pytest.raises(HahrobustError, match="cannot write there"):
        prepare_out_dir(a_file / "sub")
    assert prepare_out_dir(tmp_path / "new" / "dir").is_dir()
    assert list((tmp_path / "new" / "dir").iterdir()) == []  # the write probe is cleaned up


def test_check_out_dir_checks_without_creating(tmp_path: Path) -> None:
    """The same checks as prepare_out_dir, but the folders it had to make are gone again (a run that fails
    later leaves no empty --out behind); existing folders stay."""
    assert check_out_dir(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
    assert list(tmp_path.iterdir()) == []
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(HahrobustError, match="cannot write there"):
        check_out_dir(a_file / "sub")
    (tmp_path / "kept").mkdir()
    check_out_dir(tmp_path / "kept")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "kept"]


def test_long_cells_become_numbered_notes_so_an_80_column_table_stays_short(checkpoint: Path) -> None:
    # An audit's diagnostics table piped to a file (80 columns, no TTY) wrapped its reason column into one word per
    # line, forty lines tall; long cells are notes under the table now, a repeated text sharing its number.
    reason = ("the attack's loss did not converge within its steps: a longer run broke images the default did not, "
              "so the worst case may still fall")
    rows = pd.DataFrame({"model": ["HaH", "HaH", "base"], "indicator": ["non-converging", "transfer", "silent"],
                         "fired": ["yes", "no", "no"], "reason": [reason, "short", reason]})
    layout = Layout(title="Diagnostics", index=("model", "indicator"), values=("fired", "reason"))
    console = Console(record=True, width=80, force_terminal=False)
    results.show(Result("diagnostics", rows, {"seed": 0}, {"HaH": checkpoint}, layout), console)
    text = console.export_text()
    assert len(text.splitlines()) <= 12 and max(len(line) for line in text.splitlines()) <= 80
    assert text.count("[1]") == 3 and "short" in text  # two cells point to note 1, which is printed once
    assert " ".join(text.split()).endswith(f"[1] {reason}")
    assert narrow(display_frame(Result("d", rows, {}, {}, layout)), keep=2)[1] == [f"[1] {reason}"]


def test_settings_are_one_per_row_with_nested_ones_opened(checkpoint: Path) -> None:
    result = sweep(checkpoint)
    result = dataclasses.replace(result, settings={"seed": 3, "config": {"pgd": {"steps": 100, "restarts": 5}},
                                                  "eps": {"linf": [0.1, 0.2]}})
    settings = markdown(result).split("## Settings")[1].split("## Checkpoints")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in settings.strip().splitlines()[2:]]
    assert rows == [["seed", "3"], ["config.pgd.steps", "100"], ["config.pgd.restarts", "5"], ["eps.linf", "0.1, 0.2"]]
