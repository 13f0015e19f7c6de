"""Where a number came from: package versions, git commit, file hashes, and atomic file writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from safetensors import SafetensorError

from hahrobust.errors import HahrobustError

_PACKAGES = ("hahrobust", "torch", "torchvision", "numpy", "safetensors", "pyautoattack", "foolbox")


def versions() -> dict[str, str]:
    """Versions of Python and the packages that can change a result (those installed)."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the hahrobust source tree in use (``-dirty`` when tracked files differ from it), or None
    outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if not commit:
        return None
    try:
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return commit
    return f"{commit}-dirty" if status.stdout.strip() else commit


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    A crash or exception leaves ``path`` as it was (old content or absent), never truncated.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes 0600 files: give the result the permissions a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(path: str | Path, write: Callable[[Path], object], what: str) -> None:
    """``write(tmp)`` through :func:`atomic_path`: ``path`` gets the whole new file or stays as it was.

    A failure of the file system (a full disk, no permission, a folder gone) becomes one
    :class:`HahrobustError` line naming ``path``, ``what`` it was and the cause, instead of a traceback.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except OSError as exc:
        raise HahrobustError(f"{path}: cannot write {what} ({exc.strerror or exc})") from None
    except SafetensorError as exc:
        # safetensors reports the OS error inside its own: "Error while serializing: I/O error: No space
        # left on device (os error 28)". Anything else it raises is not about the file system.
        cause = re.search(r"I/O error: (.*?)(?: \(os error \d+\))?$", str(exc).strip().splitlines()[0])
        if cause is None:
            raise
        raise HahrobustError(f"{path}: cannot write {what} ({cause.group(1)})") from None


def slug(label: str) -> str:
    """A model label as a file-name part (journals, adversarial-example files)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "model"
