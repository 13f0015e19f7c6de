"""A per-batch journal, so a killed attack run continues where it stopped and ends with the same numbers.

Layout: ``<name>.jsonl``, JSON lines. The first line is the run's header (everything that determines the
numbers: attack, norm, ε, hyperparameters, seed, batch size, model and data fingerprints); every further
line is one finished batch (per-image indices, labels, predictions, distances, seconds). A line is appended
and fsync'ed only after its batch is complete and verified, and adversarial examples (when kept) are
written first, atomically, to ``<name>.adv/batch-NNNNN.safetensors``: a line on disk means its batch is
entirely done. A torn last line (a kill mid-write) is dropped when the journal is reopened.

Resuming with a different header is refused: the finished batches would belong to another experiment.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hahrobust import distributed
from hahrobust.data import ImageSet
from hahrobust.errors import HahrobustError
from hahrobust.provenance import write_atomically

FORMAT = "hahrobust.attack-journal/1"


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the model's state (names, dtypes, shapes, values): two runs resume each other only for
    the very same weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{list(t.shape)}\n".encode())
        digest.update(t.flatten().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def data_fingerprint(data: ImageSet) -> str:
    digest = hashlib.sha256()
    digest.update(data.images.contiguous().numpy().tobytes())
    digest.update(data.labels.contiguous().numpy().tobytes())
    return digest.hexdigest()


def rank_journal(path: str | Path, shard: distributed.Shard | None = None) -> Path:
    """``path`` itself in one process; ``<name>.rank<r>.jsonl`` for rank r under torchrun (each rank
    journals the batches it attacks)."""
    path, shard = Path(path), shard or distributed.current()
    if not shard.distributed:
        return path
    return path.with_name(f"{path.name.removesuffix('.jsonl')}.rank{shard.rank}.jsonl")


class Journal:
    """Finished batches of one run, read back on resume; see the module docstring."""

    def __init__(self, path: str | Path, header: dict[str, Any], *, resume: bool) -> None:
        self.path = Path(path)
        self.adv_dir = self.path.with_name(self.path.name.removesuffix(".jsonl") + ".adv")
        self.header = json.loads(json.dumps({"format": FORMAT, **header}, sort_keys=True))
        self.batches: dict[int, dict[str, Any]] = {}
        if self.path.exists():
            if not resume:
                raise HahrobustError(
                    f"{self.path}: a journal from an earlier run exists; pass --resume to continue it, or remove it"
                )
            self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rewrite([self.header])

    def _read(self) -> None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise HahrobustError(f"{self.path}: cannot read the journal ({exc})") from None
        records = []
        for number, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines) - 1:
                    break  # torn by a kill during the append: that batch simply runs again
                raise HahrobustError(f"{self.path}: line {number + 1} is corrupt; remove the journal to start over") from None
        if not records or records[0].get("format") != FORMAT:
            raise HahrobustError(f"{self.path}: not an attack journal; remove it to start over")
        if records[0] != self.header:
            changed = sorted(k for k in set(records[0]) | set(self.header) if records[0].get(k) != self.header.get(k))
            raise HahrobustError(
                f"{self.path}: journal is from a run with different settings ({', '.join(changed)}); "
                "rerun with the original settings, or remove it to start over"
            )
        for record in records[1:]:
            if record.get("adv") is not None and not (self.adv_dir / record["adv"]).is_file():
                continue  # its tensors are gone: redo the batch rather than report without them
            self.batches[int(record["batch"])] = record
        # Drop a torn tail now, so the next append starts on a fresh line.
        self._rewrite([records[0], *self.batches.values()])

    def _rewrite(self, records: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        write_atomically(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"), "the journal")

    def done(self, batch: int) -> dict[str, Any] | None:
        """The record of a finished batch, or None."""
        return self.batches.get(batch)

    def record(self, entry: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
        """Append one finished batch (after writing its tensors, if any)."""
        entry = dict(entry)
        entry["adv"] = None
        if tensors is not None:
            name = f"batch-{int(entry['batch']):05d}.safetensors"
            flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
            try:
                self.adv_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise HahrobustError(f"{self.adv_dir}: cannot create it ({exc.strerror or exc})") from None
            write_atomically(self.adv_dir / name, lambda tmp: save_file(flat, str(tmp)), "adversarial examples")
            entry["adv"] = name
        line = json.dumps(entry, sort_keys=True) + "\n"
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # a torn line is dropped when the journal is reopened: that batch runs again
            raise HahrobustError(f"{self.path}: cannot write the journal ({exc.strerror or exc})") from None
        self.batches[int(entry["batch"])] = json.loads(line)

    def tensors(self, batch: int) -> dict[str, torch.Tensor]:
        """The adversarial tensors stored with a finished batch."""
        record = self.batches[batch]
        try:
            return load_file(str(self.adv_dir / record["adv"]))
        except (SafetensorError, OSError, TypeError) as exc:
            raise HahrobustError(f"{self.adv_dir}: cannot read batch {batch}'s examples ({exc}); remove the journal") from None
