"""Atomic writes: a reader sees the old content or the new, never a half-written file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file should read like any other
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@contextmanager
def folder(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder; on success it replaces ``path`` whole, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        if path.exists():
            # rename cannot replace a non-empty folder: move the old one aside first
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def recover_folders(parent: Path, pattern: str = "*") -> None:
    """Tidy what a process killed inside :func:`folder` left among ``parent``'s folders named
    ``pattern``: a folder moved aside as ``.NAME.old`` while its replacement was being renamed
    in is the last complete ``NAME``, and comes back where nothing replaced it; half-written
    temp folders ``.NAME.<random>`` are removed."""
    for entry in parent.glob(f".{pattern}"):
        name, _, suffix = entry.name[1:].rpartition(".")
        if suffix == "old" and not (parent / name).exists():
            os.replace(entry, parent / name)
        else:
            shutil.rmtree(entry, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for file in root.rglob("*"):
        if file.is_file():
            with file.open("rb") as handle:
                os.fsync(handle.fileno())


def write_folder(path: str | Path, fill: Callable[[Path], None]) -> None:
    """Call ``fill(tmp)`` then move the filled folder to ``path`` atomically."""
    with folder(path) as tmp:
        fill(tmp)
