"""Atomic writes: a reader sees the old content or the new, never a half-written file."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

#: every temp file and folder's name ends so (``.NAME.<random>.finjust-tmp``): clean-up then
#: never takes a user's own dot-name beside an artifact (``.adapter.mynotes1``) for a temp
TEMP_SUFFIX = ".finjust-tmp"


def write_text(path: str | Path, text: str, errors: str = "strict") -> None:
    """Write ``text`` to a temp file beside ``path``, fsync it, then rename it over ``path``.

    A file replaced keeps its permissions, and a symlink its link: the file it points to is
    what is replaced. ``errors``: as ``str.encode`` takes it, for text that UTF-8 cannot encode."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.is_dir():  # else the rename's error would name the temp file, not this path
        raise IsADirectoryError(errno.EISDIR, "is a folder; give a file path", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o666 & ~_umask()
    fd, tmp = _beside(path, tempfile.mkstemp)
    try:
        os.chmod(tmp, mode)  # mkstemp makes 0600; the file should read like any other
        with naming_file(path), os.fdopen(fd, "w", encoding="utf-8", errors=errors) as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def naming_file(path: str | Path) -> Iterator[None]:
    """An OSError inside that names no file names ``path``: a full disk's failed write says only
    "[Errno 28] No space left on device"."""
    try:
        yield
    except OSError as error:
        if error.filename is not None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error


def require_writable(path: str | Path, fix: str) -> None:
    """Refuse before the work that ends in writing ``path``, not after: its folder must take the
    temp file and the rename (the file's own mode does not matter to them).

    Raises:
        PermissionError: the folder cannot be written (its mode, a read-only filesystem); ``fix`` says what to do.
    """
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:  # a folder still to be made: its first existing parent
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"cannot write {Path(path).name} into {folder}; {fix}", str(path))


def file_in_the_way(folder: Path) -> Path | None:
    """The first of ``folder`` and the folders above it that exists as something other than a
    folder (a file where the folder or one of its parents should go), or None."""
    for path in (folder, *folder.parents):
        if path.exists() or path.is_symlink():
            return None if path.is_dir() else path
    return None


def _beside(path: Path, make: Callable[..., Any]) -> Any:
    """A temp file or folder (``make``: mkstemp or mkdtemp) beside ``path``. A folder that refuses
    it (read-only, full) is reported naming ``path``: the temp's random name means nothing to a user."""
    try:
        return make(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc


def _umask() -> int:
    """The process's umask, read where Linux shows it: setting it to read it back leaves a moment
    in which another thread's files, or a signal handler's, would be made world-writable."""
    with suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    current = os.umask(0)
    os.umask(current)
    return current


def write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented JSON. A file name that is not UTF-8 (Python holds its bytes as lone
    surrogates) is written as the JSON escape ``\\udce9``, which reads back as the same string."""
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", errors="backslashreplace")


@contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP wait until the block is done, then land as they would have:
    between two renames one would leave neither the old folder nor the new one in place.
    (Python runs signal handlers in the main thread only; masking the signal there would not
    do: the kernel hands it to another thread, torch's OpenMP workers among them.)"""
    numbers = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    saved = {n: handler for n in numbers if (handler := signal.getsignal(n)) is not None}  # None: set outside Python
    for number in saved:
        signal.signal(number, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
        for signum in caught:
            signal.raise_signal(signum)


@contextmanager
def folder(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder; on success it replaces ``path`` whole, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(_beside(path, tempfile.mkdtemp))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the folder should read like any other
        try:
            yield tmp
        except Exception as error:
            raise _out_of_space(error, path, tmp) or error
        readable_and_synced(tmp)
        if path.exists():
            # rename cannot replace a non-empty folder: move the old one aside first
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            with _signals_held():
                os.replace(path, old)
                os.replace(tmp, path)
            _fsync_dir(path.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
            _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: free bytes under which a failed write is put down to a full disk
FULL_DISK_BYTES = 1 << 20


def _out_of_space(error: Exception, path: Path, tmp: Path) -> OSError | None:
    """A failed write into a temp folder as the full disk it was, naming the target: torch.save
    and safetensors report one as ``RuntimeError: [enforce fail at inline_container.cc] unexpected
    pos`` and ``SafetensorError: ... I/O error``, which name neither the disk nor the file."""
    if isinstance(error, OSError) and error.filename is not None:
        return None
    try:
        free = shutil.disk_usage(tmp).free
    except OSError:
        return None
    if free >= FULL_DISK_BYTES:
        return None
    found = OSError(errno.ENOSPC, f"no space left on the device ({type(error).__name__}: {error})", str(path))
    found.__cause__ = error
    return found


def is_leftover(entry: Path) -> bool:
    """True for what a killed :func:`write_text`, :func:`folder` or :func:`remove_folder` leaves:
    ``.NAME.old`` (a folder moved aside) or ``.NAME.<random>.finjust-tmp`` (a temp)."""
    return leftover_of(entry) is not None


def moved_aside(entry: Path) -> str | None:
    """``NAME`` for a ``.NAME.old`` entry (a complete ``NAME`` that :func:`recover` brings back), else None."""
    name = entry.name
    return name[1 : -len(".old")] if name.startswith(".") and name.endswith(".old") and len(name) > 5 else None


def leftover_of(entry: Path) -> str | None:
    """``NAME`` for what a killed write of ``NAME`` left (``.NAME.old``, ``.NAME.<random>.finjust-tmp``), else None."""
    if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
        owner, dot, _ = entry.name[1 : -len(TEMP_SUFFIX)].rpartition(".")  # tempfile's random part has no dot
        return owner if dot else None
    return moved_aside(entry)


def recover(parent: Path, name: str | None = None, prefix: str = "") -> None:
    """Tidy what a process killed while writing left in ``parent`` for the entry ``name`` (None:
    every entry whose name starts with ``prefix``): a folder moved aside as ``.NAME.old`` while its
    replacement was being renamed in is the last complete ``NAME``, and comes back where nothing
    replaced it; temp files and folders go. Names are compared whole, not as glob patterns: the
    leftovers of ``model`` are not those of ``model.int8``, another export's work in progress.
    Other dot-names (a user's ``.gitignore``) are left alone."""
    for entry in list(parent.iterdir()) if parent.is_dir() else []:
        owner = leftover_of(entry)
        if owner is None or not owner.startswith(prefix) or name is not None and owner != name:
            continue
        if entry.name == f".{owner}.old" and not (parent / owner).exists():
            os.replace(entry, parent / owner)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def remove_folder(path: str | Path) -> None:
    """Delete the folder ``path``; a deletion killed midway leaves a temp beside it (which
    :func:`recover` removes), never a half-deleted ``path``."""
    path = Path(path)
    doomed = _beside(path, tempfile.mkdtemp)
    os.replace(path, doomed)  # a folder may replace an empty one
    shutil.rmtree(doomed, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable across a power loss, where the platform allows it."""
    with suppress(OSError):  # some platforms cannot open a folder
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def readable_and_synced(root: Path) -> None:
    """fsync everything under ``root``, it and them readable as the umask allows: some writers make private
    files (safetensors writes 0600), which another account serving the artifact could not read. Folders
    are synced too, deepest first: their entries are what makes the files' names survive a power loss."""
    umask = _umask()
    folders = []
    for entry in [root, *root.rglob("*")]:
        if entry.is_symlink():
            continue
        mode = entry.stat().st_mode
        wanted = (0o555 if entry.is_dir() else 0o444) & ~umask  # folders: read and search
        if mode & wanted != wanted:
            os.chmod(entry, stat.S_IMODE(mode) | wanted)
        if entry.is_dir():
            folders.append(entry)
        elif entry.is_file():
            with entry.open("rb") as handle:
                os.fsync(handle.fileno())
    for directory in sorted(folders, key=lambda entry: len(entry.parts), reverse=True):
        _fsync_dir(directory)


def write_folder(path: str | Path, fill: Callable[[Path], None]) -> None:
    """Call ``fill(tmp)`` then move the filled folder to ``path`` atomically."""
    with folder(path) as tmp:
        fill(tmp)
