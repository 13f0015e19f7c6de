"""What every command shares: error handling, the console, progress bars, data and device options."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hahrobust import distributed
from hahrobust.data import ImageSet, load_cifar10
from hahrobust.errors import HahrobustError

console = Console()
error_console = Console(stderr=True, soft_wrap=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])

DATA_HELP = (
    "CIFAR-10: an image-folder directory or .tar.gz (train/<class>/*.jpg, test/<class>/*.jpg), "
    "or a torchvision CIFAR-10 root (with --download to fetch it). Default: $HAHROBUST_DATA."
)


def handle_errors(fn: F) -> F:
    """User errors become one line on stderr and exit status 2; Ctrl-C exits 130. No traceback.

    Under torchrun the process joins the group first; only rank 0 prints results and progress.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        clean = False
        try:
            shard = distributed.init_from_env()
            console.quiet = not shard.is_main
            result = fn(*args, **kwargs)
            clean = True
            return result
        except HahrobustError as exc:
            error_console.print(f"error: {exc}", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            error_console.print("interrupted: finished work is saved; rerun with --resume to continue", markup=False)
            raise typer.Exit(130) from None
        finally:
            distributed.shutdown(clean=clean)

    return wrapper  # type: ignore[return-value]


def make_progress() -> Progress:
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
    path = data_path(data)
    task = progress.add_task(f"loading {split} images", total=None) if progress else None

    def report(done: int, total: int) -> None:
        if progress is not None and task is not None:
            progress.update(task, completed=done, total=total)

    images = load_cifar10(Path(path), split, download=download, progress=report)  # type: ignore[arg-type]
    if progress is not None and task is not None:
        progress.remove_task(task)
    return images
