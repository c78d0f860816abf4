"""The allocator the finjust command preloads: which library, the relaunch, and that it takes."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finjust import allocator
from finjust.cli import launch
from finjust.errors import SettingError


@pytest.fixture
def nothing_installed(monkeypatch, tmp_path):
    monkeypatch.setattr(allocator, "BUNDLED", tmp_path / "none")
    monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: None)


def test_auto_takes_the_library_make_put_in_the_venv_first(monkeypatch, tmp_path):
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(b"")
    monkeypatch.setattr(allocator, "BUNDLED", tmp_path)
    monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: f"lib{name}.so.2")
    assert allocator.find({}) == tmp_path / "libtcmalloc_minimal.so.4"


def test_auto_falls_back_to_the_system_s_libraries_in_order(monkeypatch, tmp_path):
    monkeypatch.setattr(allocator, "BUNDLED", tmp_path)
    only_jemalloc = {"jemalloc": "libjemalloc.so.2"}
    monkeypatch.setattr(allocator.ctypes.util, "find_library", only_jemalloc.get)
    assert str(allocator.find({"FINJUST_ALLOCATOR": "auto"})) == "libjemalloc.so.2"


def test_glibc_or_nothing_found_means_no_relaunch(nothing_installed):
    assert allocator.find({"FINJUST_ALLOCATOR": "glibc"}) is None
    assert allocator.preload_environment({}) is None


def test_a_kind_asked_for_by_name_and_not_installed_is_refused(nothing_installed):
    # it ran in glibc's malloc, recommending tcmalloc, without a word about the request
    with pytest.raises(SettingError, match=r"FINJUST_ALLOCATOR=jemalloc: no jemalloc library .*libjemalloc2"):
        allocator.find({"FINJUST_ALLOCATOR": "jemalloc"})
    assert allocator.find({"FINJUST_ALLOCATOR": "auto"}) is None  # auto takes what there is, nothing too


def test_a_path_that_is_not_a_file_is_refused_with_the_variable_named(tmp_path):
    with pytest.raises(SettingError, match=r"FINJUST_ALLOCATOR=.*missing\.so: no such file.*'glibc'"):
        allocator.find({"FINJUST_ALLOCATOR": str(tmp_path / "missing.so")})


def test_a_library_this_account_cannot_read_is_refused_not_a_traceback(tmp_path, monkeypatch):
    unreadable = tmp_path / "libtcmalloc.so.4"
    unreadable.write_bytes(b"\x7fELF")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(allocator.Path, "open", denied)
    with pytest.raises(SettingError, match=r"libtcmalloc.so.4: cannot be read \(Permission denied\)"):
        allocator.find({"FINJUST_ALLOCATOR": str(unreadable)})


def test_a_file_that_is_no_library_or_holds_a_separator_is_refused(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(SettingError, match="notes.txt: not a shared library"):
        allocator.find({"FINJUST_ALLOCATOR": str(text)})
    spaced = tmp_path / "my libs" / "libtcmalloc.so.4"
    spaced.parent.mkdir()
    spaced.write_bytes(b"\x7fELF")
    with pytest.raises(SettingError, match="LD_PRELOAD splits paths at spaces and colons"):
        allocator.find({"FINJUST_ALLOCATOR": str(spaced)})


def test_a_venv_library_ld_preload_cannot_hold_is_passed_over_and_the_log_says_why(monkeypatch, tmp_path):
    venv = tmp_path / "my venv"
    venv.mkdir()
    (venv / "libtcmalloc_minimal.so.4").write_bytes(b"\x7fELF")
    monkeypatch.setattr(allocator, "BUNDLED", venv)
    monkeypatch.setattr(allocator.ctypes.util, "find_library", {"jemalloc": "libjemalloc.so.2"}.get)
    assert str(allocator.find({})) == "libjemalloc.so.2"  # the system's, by its soname
    monkeypatch.setattr(allocator, "active", lambda: None)
    assert "libtcmalloc_minimal.so.4 cannot be preloaded from a path with a space" in allocator.describe({})


@pytest.mark.parametrize(("setting", "expected"), [
    ("", "libtcmalloc_minimal.so.4"), (" Auto ", "libtcmalloc_minimal.so.4"), ("jemalloc", "libjemalloc.so.2"),
    ("GLIBC", None)])  # fmt: skip
def test_the_setting_s_words_are_read_as_written_by_people(monkeypatch, setting, expected):
    monkeypatch.setattr(allocator, "BUNDLED", Path("/nonexistent"))
    monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: f"lib{name}.so.{4 if 'tc' in name else 2}")
    found = allocator.find({"FINJUST_ALLOCATOR": setting})
    assert (found and str(found)) == expected


def test_the_relaunch_environment_preloads_the_library_once(tmp_path):
    library = tmp_path / "libtcmalloc.so.4"
    library.write_bytes(b"\x7fELF")
    environment = allocator.relaunch_environment({"FINJUST_ALLOCATOR": str(library), "LD_PRELOAD": "libother.so"})
    if allocator.active() is not None:
        pytest.skip("this test process already runs a fast allocator")
    assert environment["LD_PRELOAD"] == f"{library} libother.so"
    assert allocator.relaunch_environment(environment) is None  # relaunched: never again


def test_the_command_restarts_itself_in_the_relaunch_environment(monkeypatch):
    calls = []
    monkeypatch.setattr(launch.allocator, "relaunch_environment", lambda: {"LD_PRELOAD": "lib.so"})
    monkeypatch.setattr(launch.os, "execve", lambda *args: calls.append(args))
    monkeypatch.setattr("finjust.cli.main.main", lambda: 0)
    monkeypatch.setattr(sys, "argv", ["finjust", "demo", "--quick"])
    # the interpreter's own flags go along (python -u -X utf8 -m finjust ... lost them)
    monkeypatch.setattr(launch.subprocess, "_args_from_interpreter_flags", lambda: ["-u", "-X", "utf8"])
    launch.entry()
    relaunch = [sys.executable, "-u", "-X", "utf8", "-P", "-m", "finjust", "demo", "--quick"]
    assert calls == [(sys.executable, relaunch, {"LD_PRELOAD": "lib.so"})]


def test_a_relaunch_the_system_refuses_is_one_note_and_the_command_runs_here(monkeypatch, capsys):
    def refused(*args):
        raise OSError(errno.E2BIG, "Argument list too long")

    monkeypatch.setattr(launch.allocator, "relaunch_environment", lambda: {"LD_PRELOAD": "/lib/tc.so other.so"})
    monkeypatch.setattr(launch.os, "execve", refused)
    monkeypatch.setenv(allocator.RELAUNCH_REFUSED, "")  # set first: a delenv of an absent name restores nothing,
    monkeypatch.delenv(allocator.RELAUNCH_REFUSED)  # and the relaunch's failure sets it for the whole session
    monkeypatch.setattr("finjust.cli.main.main", lambda: 7)
    monkeypatch.setattr(allocator, "active", lambda: None)  # the process the relaunch failed in: glibc's malloc
    assert launch.entry() == 7
    assert capsys.readouterr().err == ("note: starting again with /lib/tc.so preloaded failed (Argument list too "
                                       "long); going on in this process's memory allocator (FINJUST_ALLOCATOR=glibc "
                                       "skips the attempt)\n")  # fmt: skip
    # the run log's line says what happened, not how to install what is installed
    assert "the system refused to start the command again with /lib/tc.so" in allocator.describe()


def test_without_a_relaunch_the_command_runs_its_main(monkeypatch):
    monkeypatch.setattr(launch.allocator, "relaunch_environment", lambda: None)
    monkeypatch.setattr("finjust.cli.main.main", lambda: 7)
    assert launch.entry() == 7


def test_a_bad_setting_is_one_line_and_status_2(monkeypatch, capsys):
    monkeypatch.setenv("FINJUST_ALLOCATOR", "/nonexistent/lib.so")
    monkeypatch.setattr(allocator, "active", lambda: None)  # as in glibc's malloc, should pytest run in tcmalloc
    monkeypatch.delenv(allocator.RELAUNCHED, raising=False)
    assert launch.entry() == 2
    assert capsys.readouterr().err.startswith("error: FINJUST_ALLOCATOR=/nonexistent/lib.so: no such file")


def test_a_preloaded_library_is_the_allocator_the_process_runs_with():
    environment = allocator.preload_environment({"PATH": "/usr/bin:/bin"})
    if environment is None:
        pytest.skip("no tcmalloc or jemalloc installed (make puts tcmalloc into .venv where apt works)")
    script = "from finjust import allocator; print(allocator.active(), allocator.describe())"
    out = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True)
    name = out.stdout.split()[0]
    assert name in ("tcmalloc", "jemalloc") and f"memory allocator: {name}" in out.stdout


def test_the_relaunched_command_ignores_modules_in_the_current_folder(tmp_path):
    # python -m puts the current folder first on the import path; -P (the relaunch's) does not
    environment = allocator.preload_environment({**os.environ, "FINJUST_ALLOCATOR": "auto"})
    if environment is None:
        pytest.skip("no tcmalloc or jemalloc installed (make puts tcmalloc into .venv where apt works)")
    (tmp_path / "json.py").write_text("raise SystemExit('the json.py of the current folder ran')")
    script = "import sys; from finjust.cli.launch import entry; sys.exit(entry())"
    out = subprocess.run([sys.executable, "-c", script, "--help"], cwd=tmp_path, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "usage: finjust" in out.stdout


def test_glibc_s_log_line_says_how_to_get_the_faster_one(monkeypatch):
    monkeypatch.setattr(allocator, "active", lambda: None)
    assert "make" in allocator.describe({}) and "libtcmalloc-minimal4" in allocator.describe({})
    chosen = allocator.describe({"FINJUST_ALLOCATOR": "glibc"})
    assert chosen == "memory allocator: glibc malloc (FINJUST_ALLOCATOR=glibc)"


def test_importing_finjust_loads_no_torch_until_the_api_is_used():
    script = "import sys, finjust; print('torch' in sys.modules); finjust.load_recipe; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


def test_a_deleted_working_folder_is_one_line_not_onemkl_s_fatal_error(monkeypatch, capsys):
    def deleted():
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(launch.os, "getcwd", deleted)
    assert launch.entry() == 2
    assert capsys.readouterr().err == "error: the current folder no longer exists (deleted or moved); cd into one that does\n"


def test_no_writable_temporary_folder_is_one_line(monkeypatch, capsys):
    def nowhere():
        raise FileNotFoundError(2, "No usable temporary directory found")

    monkeypatch.setattr(launch.tempfile, "gettempdir", nowhere)
    assert launch.entry() == 2
    assert "no writable temporary folder" in capsys.readouterr().err
