"""Atomic file writes: the one way the toolkit replaces a file a reader may be looking at.

Every writer here puts the content into a temporary file in the destination folder (``.<name>.<random>.tmp``),
flushes and fsyncs it, then moves it over the destination with ``os.replace`` and fsyncs the folder (best
effort: not every filesystem lets a directory be opened). A reader sees either the previous complete file
or the new one, never a partial file, even if the process dies during the write; a leftover ``.tmp`` file
is garbage from an interrupted write.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_copy",
    "atomic_torch_save",
    "atomic_write_text",
    "fsync_directory",
    "write_json_atomic",
]


def fsync_directory(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(handle)`` on a temporary file next to ``path``, then move it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name per write (concurrent writers never share a temporary file); "x" mode creates it with
    # the permissions any new file gets (umask), which mkstemp's 0600 would not.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    return _atomic_write(path, lambda handle: handle.write(text.encode(encoding)))


def write_json_atomic(path: str | Path, payload: Any, newline: bool = False) -> Path:
    """``json.dumps(payload, indent=1)`` (plus a final newline when ``newline``) written atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=1) + ("\n" if newline else ""))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch  # here, so that importing this module stays cheap for the torch-free writers

    return _atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_copy(source: str | Path, destination: str | Path) -> Path:
    """Copy the file ``source`` to ``destination`` atomically."""

    def copy(handle: IO[bytes]) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, handle)

    return _atomic_write(destination, copy)
