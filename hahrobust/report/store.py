"""The report's step journal: each finished step's per-image arrays and facts on disk, so a killed report resumes
at the next unfinished step and renders the same report as an uninterrupted run.

Layout under ``OUT/steps/``: ``header.json`` (every setting that changes a number: budget, seed, the models'
and images' fingerprints); per step ``<step>.npz`` (numpy arrays, read with ``allow_pickle=False``: nothing is
unpickled) and then ``<step>.json`` (the step's facts and the npz file's SHA-256). Both are written atomically, the
JSON last, so a step whose JSON exists is complete; a resume under another header is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hahrobust.errors import HahrobustError
from hahrobust.provenance import sha256_file, write_atomically

FORMAT = "hahrobust.report-steps/1"


class StepStore:
    """Finished steps of one report (see the module docstring)."""

    def __init__(self, out: Path, header: dict[str, Any], *, resume: bool) -> None:
        self.folder = Path(out) / "steps"
        self.header = json.loads(json.dumps({"format": FORMAT, **header}, sort_keys=True))
        path = self.folder / "header.json"
        if path.exists():
            if not resume:
                raise HahrobustError(f"{path}: a report was started in {out}; pass --resume to continue it, or "
                                     "choose another --out")
            try:
                found = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise HahrobustError(f"{path}: unreadable ({type(exc).__name__}); remove {self.folder} to start over") from None
            if found != self.header:
                changed = sorted(k for k in set(found) | set(self.header) if found.get(k) != self.header.get(k))
                raise HahrobustError(f"{path}: the report was started with other settings ({', '.join(changed)}); "
                                     "rerun with the original settings, or choose another --out")
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            text = json.dumps(self.header, sort_keys=True, indent=1)
            write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), "the report's header")

    def get(self, step: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """A finished step's arrays and facts, or None (not run, or its arrays do not match their record)."""
        meta_path, data_path = self.folder / f"{step}.json", self.folder / f"{step}.npz"
        if not meta_path.is_file() or not data_path.is_file():
            return None
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("sha256") != sha256_file(data_path):
            return None  # the arrays were replaced after their record: run the step again
        with np.load(data_path, allow_pickle=False) as arrays:
            return {k: arrays[k] for k in arrays.files}, meta["facts"]

    def put(self, step: str, arrays: dict[str, np.ndarray], facts: dict[str, Any]) -> None:
        data_path = self.folder / f"{step}.npz"
        write_atomically(data_path, lambda tmp: _savez(tmp, arrays), f"step {step}'s arrays")
        text = json.dumps({"step": step, "sha256": sha256_file(data_path), "facts": facts}, sort_keys=True, indent=1)
        write_atomically(self.folder / f"{step}.json", lambda tmp: tmp.write_text(text, encoding="utf-8"),
                         f"step {step}'s record")


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to the temporary name
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
