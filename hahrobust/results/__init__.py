"""One way to emit a command's result: a rich table on the terminal, and CSV, Markdown, JSON and PNG files.

Every evaluation command builds a :class:`Result` (tidy rows plus how to lay them out) and hands it to
:func:`show` and, with ``--out DIR``, to :func:`write`::

    result = Result(
        command="noise-sweep",
        rows=df,                                  # one row per model × σ; accuracies as fractions in [0, 1]
        settings={"sigmas": [0.0, 0.1], "seed": 0, ...},
        checkpoints={"HaH": Path("hah.safetensors"), "base": Path("base.safetensors")},
        layout=Layout(
            title="Accuracy under Gaussian noise (Fig. 4)",
            index=("sigma",), columns=("model",), values=("accuracy",),
            formats={"accuracy": "{:.2%}"}, errors={"accuracy": "accuracy_std"},
            labels={"sigma": "σ"},
            figure=Figure(kind="line", x="sigma", y=("accuracy",), err={"accuracy": "accuracy_std"}),
        ),
    )
    show(result, console)
    paths = write(result, out_dir)   # <out>/noise-sweep.csv, .md, .json, .png

Files:

- ``<command>.csv``: ``rows`` as they are (tidy, all columns, ``inf``/``nan`` spelled so), deterministic.
- ``<command>.md``: the title, the rows pivoted by ``layout`` (``index`` down, ``columns`` × ``values``
  across, numbers formatted by ``layout.formats``, ±std from ``layout.errors``, ∞ for infinities), the notes,
  a settings table and a checkpoints table (label, file name, SHA-256; for a model spec the spec and its
  weights file, the weights' SHA-256 and the factory's source file and SHA-256). Rendered by pandas ``to_markdown``;
  nothing in it depends on the clock, so the same command twice gives the same file.
- ``<command>.json``: command, title, start time, settings, seed, checkpoints (path + SHA-256; for a model
  spec :meth:`hahrobust.models.foreign.ForeignSource.provenance`), package
  versions, git commit, notes, columns and rows (records). Non-finite floats are written as the strings
  ``"inf"``, ``"-inf"`` and ``"nan"`` so the file is strict JSON.
- ``<command>.png``: the figure described by ``layout.figure`` (matplotlib's Agg canvas, no pyplot, so no
  global backend state changes): one panel per value column or per facet value, models side by side
  (grouped bars) or as lines, labelled axes, legend. Non-finite values are left out of the plot.

All files are written through :func:`hahrobust.provenance.atomic_path` and replaced together at the end, so a
failure leaves none of them half-written. Call :func:`check_out_dir` before computing anything so an
unwritable ``--out`` fails fast; :func:`write` creates the folder when there is something to write.

The package: :mod:`.model` (Result, Layout, Figure), :mod:`.render` (tables, Markdown, terminal), :mod:`.files`
(writing the files) and :mod:`.plots` (the figure); this face re-exports them.
"""

from hahrobust.results.files import (
    check_out_dir, csv_text, json_document, output_paths, prepare_out_dir, write,
)
from hahrobust.results.model import SUFFIXES, Figure, Layout, ModelSource, Result, Source
from hahrobust.results.plots import PALETTE, draw
from hahrobust.results.render import display_frame, format_value, markdown, show

__all__ = [
    "PALETTE", "SUFFIXES", "Figure", "Layout", "ModelSource", "Result", "Source", "check_out_dir", "csv_text",
    "display_frame", "draw", "format_value", "json_document", "markdown", "output_paths", "prepare_out_dir", "show",
    "write",
]
