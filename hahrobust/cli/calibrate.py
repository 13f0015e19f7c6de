"""hahrobust calibrate: the audit's verdict on defences whose truth is known (library: hahrobust.evaluate.calibration).

A case is the unit of work kept on disk: once a case's audit and self-test finish, its audit files and
``<case>/calibration-case.json`` (the table's rows under the settings they ran with) are written and its journals
removed; ``--resume`` reuses finished cases and continues an unfinished one from its journals. Cases may therefore
run in separate processes into the same ``--out`` (disjoint case lists), and a last ``--resume`` with every case
assembles the table.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

import typer

from hahrobust import distributed
from hahrobust.cli._common import console, handle_errors, make_progress
from hahrobust.cli._eval import ATTACK_BATCH_SIZE, DATA, DEVICE, N, OUT, OVERWRITE, SEED, EvalOptions, finish, load_test_set, open_session
from hahrobust.errors import HahrobustError
from hahrobust.regression import unshared_later_settings
from hahrobust.evaluate.calibration import NAME, CaseResult, calibrate_case, calibration_settings, calibration_table
from hahrobust.provenance import write_atomically
from hahrobust.results import write
from hahrobust.studies.calibration import CASES, Case, case

RECORD = "calibration-case.json"


@handle_errors
def command(
    cases: Optional[list[str]] = typer.Argument(
        None, help=f"Cases to run: {', '.join(c.name for c in CASES)}.", show_default="all"),
    checkpoint_dir: Path = typer.Option(Path("checkpoints"), "--checkpoint-dir",
                                        help="Folder holding the cases' checkpoints (this repository's checkpoints/)."),
    norm: str = typer.Option("linf,l2", "--norm", help="linf | l2, or both comma-separated (the paper's ε)."),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="Convergence rounds at most.", show_default="the audit's 3"),
    self_test_images: int = typer.Option(50, "--self-test-images", help="Images per norm in the attack self-test."),
    n: Optional[int] = N,
    data: Optional[str] = DATA,
    batch_size: int = ATTACK_BATCH_SIZE,
    device: str = DEVICE,
    seed: int = SEED,
    out: Optional[Path] = OUT,
    overwrite: bool = OVERWRITE,
    resume: bool = typer.Option(False, "--resume", help="Reuse finished cases in --out and continue an unfinished one."),
) -> None:
    distributed.require_single_process("calibrate")
    try:
        chosen = [case(name) for name in cases] if cases else list(CASES)
    except KeyError as exc:
        raise HahrobustError(str(exc.args[0])) from None
    if len({c.name for c in chosen}) != len(chosen):
        raise HahrobustError("a case is named twice")
    norms = [p.strip() for p in norm.split(",") if p.strip()]
    if not norms or len(set(norms)) != len(norms) or set(norms) - {"linf", "l2"}:
        raise HahrobustError(f"--norm {norm!r}: give distinct norms from linf, l2")
    if rounds is not None and rounds < 1:
        raise HahrobustError(f"--rounds must be at least 1, got {rounds}")
    if self_test_images < 1:
        raise HahrobustError(f"--self-test-images must be at least 1, got {self_test_images}")
    if resume and out is None:
        raise HahrobustError("--resume needs --out DIR (the finished cases and journals live there)")
    transfers = {c.name: checkpoint_dir / c.transfer_from for c in chosen}
    for path in (*(checkpoint_dir / c.checkpoint for c in chosen), *transfers.values()):
        if not path.is_file():
            raise HahrobustError(f"{path}: checkpoint not found (--checkpoint-dir names the folder that holds the cases')")
    options = EvalOptions([checkpoint_dir / c.checkpoint for c in chosen], [c.name for c in chosen], n, data, batch_size,
                          device, seed, out, overwrite=overwrite, resume=resume, results=(NAME,))
    session = open_session(options)
    journal_dir = session.out_dir / "journal" if session.out_dir is not None else None
    if journal_dir is not None and not resume and any(_journals(journal_dir, c) for c in chosen):
        raise HahrobustError(f"{journal_dir}: journals from an earlier run exist; pass --resume to continue it, or remove them")
    with make_progress() as progress:
        test = load_test_set(options, progress)
        settings = calibration_settings(test, norms=norms, rounds=rounds, self_test_images=self_test_images, seed=seed,
                                        batch_size=batch_size, device=session.device)
        results = []
        for c, model in zip(chosen, session.models):
            if resume and session.out_dir is not None and (done := _finished(session.out_dir, c, settings)):
                results.append(done)
                continue
            result = calibrate_case(c, model, transfers[c.name], test, norms=norms, rounds=rounds,
                                    self_test_images=self_test_images, seed=seed, batch_size=batch_size,
                                    device=session.device, progress=progress, journal_dir=journal_dir, resume=resume)
            if session.out_dir is not None:
                _keep(session.out_dir, result, settings)
                for journal in _journals(journal_dir, c) if journal_dir is not None else []:
                    shutil.rmtree(journal) if journal.is_dir() else journal.unlink(missing_ok=True)
            results.append(result)
    finish(calibration_table(results, session.models, settings), session)
    if journal_dir is not None and journal_dir.is_dir() and not any(journal_dir.iterdir()):
        journal_dir.rmdir()


def _journals(journal_dir: Path, c: Case) -> list[Path]:
    return sorted(journal_dir.glob(f"audit-{c.name}-*")) if journal_dir.is_dir() else []


def _keep(out_dir: Path, result: CaseResult, settings: dict[str, Any]) -> None:
    """A finished case's audit files and its record, in ``out_dir/<case>/``."""
    folder = out_dir / result.case.name
    folder.mkdir(exist_ok=True)
    assert result.audit is not None
    paths = [*write(result.audit.attacks, folder), *write(result.audit.diagnostics, folder), folder / RECORD]
    text = json.dumps(result.to_record(settings), indent=1, ensure_ascii=False) + "\n"
    write_atomically(folder / RECORD, lambda tmp: tmp.write_text(text, encoding="utf-8"), "the case's record")
    console.print(f"{result.case.name}: wrote {', '.join(str(p) for p in paths)}", highlight=False, soft_wrap=True)


def _finished(out_dir: Path, c: Case, settings: dict[str, Any]) -> CaseResult | None:
    """The case finished in ``out_dir`` under the same settings, or None (run it)."""
    path = out_dir / c.name / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HahrobustError(f"{path}: unreadable case record ({exc}); remove it to run the case again") from None
    current = json.loads(json.dumps(settings))
    recorded = record.get("settings")
    if isinstance(recorded, dict):  # a record from before a setting existed (data_sha256) cannot be asked for it
        current = {k: v for k, v in current.items() if k not in unshared_later_settings(current, recorded)}
    if recorded != current:
        raise HahrobustError(f"{path}: the case ran under other settings; remove its folder or use another --out")
    return CaseResult.from_record(c, record)


__all__ = ["NAME", "command"]
