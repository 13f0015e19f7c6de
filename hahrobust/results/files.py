"""Writing a result's files (CSV, Markdown, JSON, PNG) into ``--out``, atomically and all together (:func:`write`)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hahrobust.errors import HahrobustError
from hahrobust.provenance import atomic_path, git_commit, sha256_file, versions

from hahrobust.results.model import SUFFIXES, Result, _is_file
from hahrobust.results.plots import draw
from hahrobust.results.render import markdown


def prepare_out_dir(out: str | Path) -> Path:
    """Create ``out`` (with parents) and check that files can be written there, or raise a one-line error."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise HahrobustError(f"--out {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".hahrobust-write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise HahrobustError(f"--out {out}: cannot write there ({reason})") from None
    return out


def check_out_dir(out: str | Path) -> Path:
    """:func:`prepare_out_dir`, then remove the folders it created: the check without its side effect.

    Commands call this before any computation so a bad ``--out`` costs nothing, and a run that then fails
    (a bad checkpoint, too many images asked for) leaves no empty folder behind.
    """
    out = Path(out).expanduser()
    created = [folder for folder in (out, *out.parents) if not folder.exists()]  # deepest first
    try:
        return prepare_out_dir(out)
    finally:
        for folder in created:
            with contextlib.suppress(OSError):  # not empty (another process wrote there): leave it
                folder.rmdir()


def output_paths(command: str, out_dir: str | Path) -> list[Path]:
    """The files :func:`write` may produce for ``command`` in ``out_dir`` (the PNG only with a figure)."""
    return [Path(out_dir) / f"{command}{suffix}" for suffix in SUFFIXES]


def write(result: Result, out_dir: str | Path) -> list[Path]:
    """Write ``<command>.csv/.md/.json`` and, when the result has a figure, ``.png`` into ``out_dir``; all appear
    together or none changes."""
    out_dir = prepare_out_dir(out_dir)
    paths = output_paths(result.command, out_dir)
    writers = (_write_csv, _write_markdown, _write_json, _write_png)
    if not result.layout.has_figure:  # no placeholder image: a result without a figure has no PNG
        paths, writers = paths[:3], writers[:3]
    try:
        with contextlib.ExitStack() as stack:
            # Every file goes to a temporary name first; the renames happen only when all were written.
            for path, writer in zip(paths, writers):
                writer(result, stack.enter_context(atomic_path(path)))
    except OSError as exc:
        raise HahrobustError(f"--out {out_dir}: cannot write results ({exc.strerror or type(exc).__name__})") from None
    return paths


def csv_text(result: Result) -> str:
    return result.rows.to_csv(index=False, lineterminator="\n", na_rep="nan")


def _write_csv(result: Result, path: Path) -> None:
    path.write_text(csv_text(result), encoding="utf-8")


def _write_markdown(result: Result, path: Path) -> None:
    path.write_text(markdown(result), encoding="utf-8")


def json_document(result: Result) -> dict[str, Any]:
    """Everything in ``<command>.json``: rows plus the provenance needed to reproduce them."""
    return jsonable(
        {
            "command": result.command,
            "title": result.layout.title,
            "started": result.started.isoformat(timespec="seconds"),
            "settings": result.settings,
            "seed": result.settings.get("seed"),
            "checkpoints": {
                label: {"path": str(Path(p).resolve()), "sha256": sha256_file(p)} if _is_file(p) else p.provenance()
                for label, p in result.checkpoints.items()
            },
            "versions": versions(),
            "git_commit": git_commit(),
            "notes": result.all_notes,
            "columns": list(result.rows.columns),
            "rows": result.rows.to_dict(orient="records"),
        }
    )


def _write_json(result: Result, path: Path) -> None:
    path.write_text(json.dumps(json_document(result), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars unwrapped, paths as strings, non-finite floats as strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _write_png(result: Result, path: Path) -> None:
    figure = draw(result)
    # format= because the temporary file's suffix is not .png; no Software/date metadata beyond matplotlib's own.
    figure.savefig(path, format="png", dpi=150, bbox_inches="tight")
