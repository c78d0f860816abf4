"""The lock beside a run or export folder."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from finjust import folder_lock as lock_module
from finjust.folder_lock import folder_lock


def test_a_folder_whose_parent_cannot_be_written_is_refused_naming_the_parent(tmp_path, monkeypatch):
    # a writable volume mounted in a read-only tree: the message named only the lock file
    def read_only(path, flags, mode=0o777):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(lock_module.os, "open", read_only)
    with pytest.raises(OSError) as raised, folder_lock(tmp_path / "out"):
        pass
    message = str(raised.value)
    assert raised.value.errno == errno.EROFS and f"in {tmp_path} (its lock file .out.lock" in message
    assert f"e.g. {tmp_path / 'out' / 'run1'}" in message


def test_the_lock_file_is_open_for_writing_where_it_can_be(tmp_path):
    # NFS refuses an exclusive lock on a file open for reading only, and the run went on unlocked
    import fcntl

    seen = []
    real_flock = fcntl.flock

    def flock(handle, operation):
        seen.append(fcntl.fcntl(handle, fcntl.F_GETFL) & os.O_ACCMODE)
        real_flock(handle, operation)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lock_module.fcntl, "flock", flock)
        with folder_lock(tmp_path / "out"):
            pass
    assert seen == [os.O_RDWR]


@pytest.mark.parametrize("spelling", ["alias", "runs/sub/..", "./runs"])
def test_one_folder_is_one_lock_however_its_path_is_spelt(tmp_path, monkeypatch, spelling):
    from finjust.errors import FolderBusyError

    (tmp_path / "runs" / "sub").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    with folder_lock(tmp_path / "runs"), pytest.raises(FolderBusyError), folder_lock(Path(spelling)):
        pass
