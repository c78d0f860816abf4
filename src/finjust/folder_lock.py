"""One process at a time in an output folder (a run, an export).

A second ``finjust train --resume`` of a run that is still training would tidy away the live
run's temp files as a killed run's leftovers, append a second copy of each metrics line and
race it for every checkpoint; a second export to the same folder deleted the first one's
temp folder the same way, and the first then moved a folder holding only its
``export.json`` into place, as a passed export. So the folder is locked with ``flock``, which
goes with the process however it ends, on a file beside it (``.NAME.lock``, empty, left in
place): not on the folder itself, which an overwrite moves aside and a clean-up may bring
back, so a lock on it would move too and let a second process's clean-up restore an old run
while the first was replacing it. Where the filesystem cannot lock at all, work goes on
unlocked, as it did before there was a lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from finjust.errors import FolderBusyError


def lock_file(root: Path) -> Path:
    """The file whose lock holds the folder ``root``."""
    # one folder, one lock however its path is spelt (``.``, ``runs/x/..``, a symlink to it)
    root = root.resolve()
    return root.with_name(f".{root.name}.lock")


def _open_lock(lock: Path) -> int:
    """The lock file opened for writing where it can be (NFS takes an exclusive lock only on a
    file open for writing, and refused it on one open for reading, leaving the run unlocked), else
    for reading (a lock file another user made: locks work on it where they work locally)."""
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
    return os.open(lock, os.O_RDONLY | os.O_CREAT, 0o666)


@contextmanager
def folder_lock(root: Path) -> Iterator[None]:
    """Hold the folder ``root`` (its parent made if missing) for this process while inside.

    Raises:
        FolderBusyError: another process holds it.
    """
    lock = lock_file(root)
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = _open_lock(lock)
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        # a writable volume mounted in a read-only tree (/out in a container): the folder itself
        # could be written, the one holding it cannot
        raise OSError(error.errno, f"{error.strerror}: finjust writes beside {root.name}, in {lock.parent} (its "
                      f"lock file {lock.name}; an overwrite sets the old folder aside there too); give a folder "
                      f"inside one you can write, e.g. {root / 'run1'}", str(lock)) from error  # fmt: skip
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusyError(f"another finjust process is running in {root}; wait for it to end (or stop it), "
                                  "then try again") from None  # fmt: skip
        except OSError:
            pass  # a filesystem without locks (Lustre without -o flock, some NFS): work goes on unlocked
        yield
    finally:
        os.close(handle)  # closing releases the lock
