"""What every command shares: error handling, the console, progress bars, data and device options."""

from __future__ import annotations

import functools
import inspect
import os
import tempfile
import traceback
from datetime import datetime
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hahrobust.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_VERIFICATION, HahrobustError
from hahrobust.torchrun import launched_by_torchrun

if TYPE_CHECKING:
    from hahrobust.data import ImageSet

# hahrobust.distributed and hahrobust.data import torch: they are imported where a command needs them, so that
# `hahrobust check` and every --help start without it (benchmarks/startup.py).

console = Console()
error_console = Console(stderr=True, soft_wrap=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])

#: ``--overwrite``, with one meaning in every command that takes it.
OVERWRITE = typer.Option(
    False, "--overwrite", help="Replace what an earlier run wrote at --out (results, checkpoints) instead of refusing.",
)

DATA_HELP = (
    "CIFAR-10: an image-folder directory or .tar.gz (train/<class>/*.jpg, test/<class>/*.jpg), "
    "or a torchvision CIFAR-10 root (with --download to fetch it)."
)
#: ``--data`` of the training commands (both splits); the evaluation commands' reads the test split (cli/_eval.py).
TRAIN_DATA = typer.Option(None, "--data", help=DATA_HELP, show_default="$HAHROBUST_DATA")
#: ``--device``, the same in every command.
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N (under torchrun: cuda = this rank's GPU).")


def save_traceback(exc: BaseException) -> Path:
    """Write ``exc``'s traceback to ``$TMPDIR/hahrobust-crash-<UTC time>-<pid>.txt`` and return the path: an internal
    error shows one line on the terminal, and the file holds what a bug report needs."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(tempfile.gettempdir()) / f"hahrobust-crash-{stamp}-{os.getpid()}.txt"
    path.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    return path


def handle_errors(fn: F) -> F:
    """Every failure becomes one line on stderr and an exit status of its own (see :data:`EXIT_STATUSES`), never a
    traceback: bad input 2, a failed verification 3, any other exception 4 (its traceback saved to a file the line
    names), Ctrl-C 130. Typer's own exits (``typer.Exit``, usage errors) pass through.

    Under torchrun the process joins the group first; only rank 0 prints results and progress.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        clean = False
        torchrun = launched_by_torchrun()
        try:
            if torchrun:
                from hahrobust import distributed

                console.quiet = not distributed.init_from_env().is_main
            result = fn(*args, **kwargs)
            clean = True
            return result
        except HahrobustError as exc:
            prefix = "verification failed (a hahrobust defect, please report it)" if exc.exit_code == EXIT_VERIFICATION else "error"
            error_console.print(f"{prefix}: {exc}", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            error_console.print("interrupted: finished work is saved; rerun with --resume to continue", markup=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise  # check's verdict, and what typer reports itself
        except Exception as exc:  # noqa: BLE001 - anything else is a bug: one line, the traceback in a file
            try:
                where = f"traceback in {save_traceback(exc)}"
            except OSError as write_error:
                where = f"could not save the traceback: {write_error}"
            error_console.print(
                f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} ({where}); "
                "please report it", markup=False,
            )
            raise typer.Exit(EXIT_INTERNAL) from None
        finally:
            if torchrun:
                from hahrobust import distributed

                distributed.shutdown(clean=clean)

    return wrapper  # type: ignore[return-value]


def refuse_to_replace(out: str | Path | None, results: tuple[str, ...], *, overwrite: bool, resume: bool = False,
                      resumable: bool = False, overwritable: bool = True) -> None:
    """Refuse (one line, exit 2) when ``out`` already holds any of the result files of ``results`` (command names,
    :func:`hahrobust.results.output_paths`) and neither ``--overwrite`` nor ``--resume`` says to replace them:
    a rerun never silently replaces an earlier run's numbers."""
    if out is None or overwrite or resume:
        return
    from hahrobust.results.files import output_paths  # the results package brings in matplotlib: only when needed

    found = [path for name in results for path in output_paths(name, Path(out).expanduser()) if path.exists()]
    if found:
        ways = [w for w, offered in (("--overwrite to replace them", overwritable), ("--resume to continue", resumable)) if offered]
        raise HahrobustError(f"{found[0]} holds an earlier run's results; pass {' or '.join(ways)}")


def takes_option(command: Callable[..., Any], option: Any) -> bool:
    """Whether a command's signature uses the shared option declaration ``option``."""
    return any(p.default is option for p in inspect.signature(command).parameters.values())


def make_progress() -> Progress:
    from hahrobust import distributed

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not distributed.current().is_main,
    )


def data_path(data: str | None) -> str:
    path = data or os.environ.get("HAHROBUST_DATA")
    if not path:
        raise HahrobustError("no dataset given: pass --data PATH or set HAHROBUST_DATA")
    return path


def load_split(data: str | None, split: str, *, download: bool = False, progress: Progress | None = None) -> ImageSet:
    """Load one CIFAR-10 split with a progress bar for the (first, uncached) decode."""
    from hahrobust.data import load_cifar10

    path = data_path(data)
    task = progress.add_task(f"loading {split} images", total=None) if progress else None

    def report(done: int, total: int) -> None:
        if progress is not None and task is not None:
            progress.update(task, completed=done, total=total)

    images = load_cifar10(Path(path), split, download=download, progress=report)  # type: ignore[arg-type]
    if progress is not None and task is not None:
        progress.remove_task(task)
    return images
