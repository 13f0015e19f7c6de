"""One progress-bar task for a library loop: optional, removed when the loop ends (even on error)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import Progress


@contextlib.contextmanager
def progress_task(progress: Progress | None, description: str, total: int) -> Iterator[Callable[[], None]]:
    """Yield ``advance()``: one step of a task on ``progress`` (a no-op when ``progress`` is None)."""
    if progress is None:
        yield lambda: None
        return
    task = progress.add_task(description, total=total)
    try:
        yield lambda: progress.advance(task)
    finally:
        progress.remove_task(task)
