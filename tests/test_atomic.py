"""Atomic writes leave files and folders that read like any other (mkstemp/mkdtemp make them private)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from finjust import atomic


def test_written_files_and_folders_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "a.json", "{}")
        atomic.write_folder(tmp_path / "export", _fill_like_safetensors)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "export" / "b.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "export" / "weights.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "export" / "private").stat().st_mode) == 0o755


def _fill_like_safetensors(folder: Path) -> None:
    """A file as most writers make it, one as safetensors does (0600), a folder made 0700."""
    (folder / "b.txt").write_text("b")
    (folder / "weights.safetensors").write_text("w")
    (folder / "weights.safetensors").chmod(0o600)
    (folder / "private").mkdir(mode=0o700)


def test_clean_up_takes_only_its_own_temps_and_moved_aside_folders(tmp_path):
    (tmp_path / ".run.ab12cd34.finjust-tmp").mkdir()  # a killed write's temp folder
    (tmp_path / ".run.json.x_9y8z7w.finjust-tmp").write_text("half")  # a killed write's temp file
    (tmp_path / ".run.old").mkdir()  # moved aside; nothing replaced it
    (tmp_path / ".run.mynotes1").write_text("a user's")  # eight letters and digits, but not ours
    atomic.recover(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.mynotes1", "run"]


@pytest.mark.parametrize("name", ["model", "m[1]"])
def test_clean_up_of_one_target_leaves_a_sibling_s_work_in_progress(tmp_path, name):
    (tmp_path / f".{name}.ab12cd34.finjust-tmp").mkdir()  # this target's killed export
    (tmp_path / f".{name}.old").mkdir()  # moved aside; nothing replaced it
    others = [f".{name}.int8.ef56gh78.finjust-tmp", ".m1.old", ".model1.zz99yy88.finjust-tmp"]
    for other in others:  # a live export to model.int8 beside it; names a glob pattern would match
        (tmp_path / other).mkdir()
    atomic.recover(tmp_path, name=name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, *others])


def test_the_temps_a_write_makes_are_what_clean_up_recognises(tmp_path, monkeypatch):
    with atomic.folder(tmp_path / "out") as folder:
        assert folder.parent == tmp_path and atomic.is_leftover(folder)
    renamed = []
    monkeypatch.setattr(os, "replace", lambda source, target: renamed.append(Path(source)))
    atomic.write_text(tmp_path / "a.json", "{}")
    assert len(renamed) == 1 and atomic.is_leftover(renamed[0])
    assert not atomic.is_leftover(tmp_path / ".a.json.x1y2z3w4")


def test_a_folder_that_refuses_the_temp_is_reported_naming_the_target(tmp_path, monkeypatch):
    import tempfile

    def refused(prefix, suffix, dir):
        raise PermissionError(13, "Permission denied", f"{dir}/{prefix}k3j9xq2{suffix}")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    (tmp_path / "old").mkdir()
    writes = {"a.json": lambda: atomic.write_text(tmp_path / "a.json", "{}"),
              "old": lambda: atomic.remove_folder(tmp_path / "old"),
              "adapter": lambda: atomic.write_folder(tmp_path / "adapter", lambda tmp: None)}  # fmt: skip
    for target, write in writes.items():
        with pytest.raises(PermissionError) as refusal:
            write()
        assert str(refusal.value).startswith("[Errno 13] Permission denied: ")
        assert refusal.value.filename == str(tmp_path / target)


def test_a_write_onto_a_folder_names_the_folder_and_leaves_no_temp(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder") as refused:
        atomic.write_json(tmp_path / "out", {"a": 1})
    assert refused.value.filename == str(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_file_in_the_way_of_a_folder_is_found(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert atomic.file_in_the_way(tmp_path / "afile") == tmp_path / "afile"
    assert atomic.file_in_the_way(tmp_path / "afile" / "sub" / "deeper") == tmp_path / "afile"
    assert atomic.file_in_the_way(tmp_path / "new" / "sub") is None
    assert atomic.file_in_the_way(tmp_path) is None


def test_a_write_that_fails_on_a_full_disk_says_so_and_names_its_target(tmp_path, monkeypatch):
    # torch.save reports a full disk as "RuntimeError: [enforce fail at inline_container.cc:672] .
    # unexpected pos", naming neither the disk nor the file
    def torch_save_on_a_full_disk(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 56448 vs 56340")

    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(OSError) as raised:
        atomic.write_folder(tmp_path / "checkpoints" / "step-000080", torch_save_on_a_full_disk)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "checkpoints" / "step-000080")
    assert "unexpected pos" in str(raised.value) and not list((tmp_path / "checkpoints").iterdir())


def test_a_failed_write_with_space_left_is_left_as_it_was(tmp_path):
    def broken(tmp):
        (tmp / "half.bin").write_bytes(b"written before the failure")
        raise RuntimeError("a bug")

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("the folder's content before")
    with pytest.raises(RuntimeError, match="a bug"):  # the error as it was, not a disk-full one
        atomic.write_folder(tmp_path / "out", broken)
    assert [path.name for path in tmp_path.iterdir()] == ["out"]  # no temp folder left
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["old.txt"]
    assert (tmp_path / "out" / "old.txt").read_text() == "the folder's content before"


def test_a_full_disk_s_nameless_error_names_the_file(tmp_path):
    with pytest.raises(OSError) as raised, atomic.naming_file(tmp_path / "metrics.jsonl"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(raised.value) == f"[Errno 28] No space left on device: '{tmp_path / 'metrics.jsonl'}'"


def test_an_unwritable_target_is_refused_before_the_work_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.os, "access", lambda path, mode: Path(path) != tmp_path)  # tmp_path read-only
    with pytest.raises(PermissionError, match=r"cannot write scorecard.json into .*; copy the run"):
        atomic.require_writable(tmp_path / "scorecard.json", "copy the run")
    with pytest.raises(PermissionError):  # a folder still to be made is checked at its first existing parent
        atomic.require_writable(tmp_path / "new" / "deeper" / "report.html", "elsewhere")
    (tmp_path / "sub").mkdir()
    atomic.require_writable(tmp_path / "sub" / "ok.json", "-")  # a writable folder passes


def test_a_report_into_a_read_only_run_is_refused_before_it_is_built(tmp_path, monkeypatch):
    from finjust.eval import report
    from finjust.train.run_folder import RunFolder

    run = RunFolder(tmp_path)
    run.recipe.write_text("model: {}\n")
    run.metrics.write_text("")  # a run folder as finjust train leaves it
    monkeypatch.setattr(atomic.os, "access", lambda path, mode: False)
    monkeypatch.setattr(report, "build_report", lambda *args: pytest.fail("built before the check"))
    with pytest.raises(PermissionError, match=r"finjust report --output PATH"):
        report.write_report(tmp_path)


def test_a_published_folder_has_its_folders_synced_deepest_first(tmp_path, monkeypatch):
    # the files were synced, but not the folder entries that name them
    from finjust import atomic

    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "weights.bin").write_bytes(b"w")
    synced = []
    monkeypatch.setattr(atomic, "_fsync_dir", synced.append)
    atomic.readable_and_synced(tmp_path / "tree")
    assert synced == [tmp_path / "tree" / "sub", tmp_path / "tree"]


def test_a_file_replaced_keeps_its_mode_and_a_symlink_its_link(tmp_path):
    real, link = tmp_path / "real.json", tmp_path / "latest.json"
    real.write_text("{}")
    real.chmod(0o600)  # the user's choice: private
    link.symlink_to(real)
    atomic.write_json(link, {"step": 2})
    assert link.is_symlink() and json.loads(real.read_text()) == {"step": 2}
    assert stat.S_IMODE(real.stat().st_mode) == 0o600


def test_a_file_name_that_is_not_utf8_is_written_as_json_that_reads_back_the_same(tmp_path):
    name = os.fsdecode(b"caf\xe9.jsonl")  # Latin-1 bytes: Python holds the \xe9 as the lone surrogate \udce9
    atomic.write_json(tmp_path / "report.json", {"file": name})
    assert json.loads((tmp_path / "report.json").read_text()) == {"file": name}


def test_the_umask_is_read_without_being_changed(monkeypatch):
    current = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda mask: pytest.fail("set to read it back: a moment at 0"))
        assert atomic._umask() == 0o027
    finally:
        monkeypatch.undo()
        os.umask(current)


def test_a_signal_between_a_folder_s_two_renames_lands_after_them():
    import signal
    import time

    seen = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append("handled"))
    try:
        with atomic._signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler would run here, were it not held
            seen.append("renamed")
    finally:
        signal.signal(signal.SIGTERM, before)
    assert seen == ["renamed", "handled"]
