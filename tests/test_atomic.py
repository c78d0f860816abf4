"""Atomic writes leave files and folders that read like any other (mkstemp/mkdtemp make them private)."""

from __future__ import annotations

import os
import stat

from finjust import atomic


def test_written_files_and_folders_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "a.json", "{}")
        atomic.write_folder(tmp_path / "export", lambda folder: (folder / "b.txt").write_text("b"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == 0o755
