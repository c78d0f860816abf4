"""The lock beside a run or export folder."""

from __future__ import annotations

import errno

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
