"""The ``finjust`` command's entry point: starts the process again with a fast memory allocator
preloaded where one is installed (:mod:`finjust.allocator`), then runs the CLI.

Kept apart from :mod:`finjust.cli.main` so that nothing heavy is imported before the relaunch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from finjust import allocator
from finjust.errors import SettingError


def entry() -> int:
    """Console-script entry: relaunch with tcmalloc/jemalloc if wanted and found, else run."""
    if (problem := _unusable_surroundings()) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        environment = allocator.relaunch_environment()
    except SettingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if environment is not None:
        _relaunch(environment)  # returns only where starting again failed
    from finjust.cli.main import main  # light: it imports the subcommand it runs, and catches Ctrl-C there

    return main()


def _relaunch(environment: dict[str, str]) -> None:
    """Replace this process with the command in ``environment``; where the system refuses (an
    argument list over its limit, a sandbox that forbids exec), say so and go on in this one."""
    try:
        # -P: "-m" would put the current folder first on the import path (a json.py there would
        # run instead of the standard library's); the console script it replaces does not. The
        # interpreter's own flags (-u, -I, -X ...) go along: subprocess's helper writes them as
        # multiprocessing does for its children
        flags = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
        os.execve(sys.executable, [sys.executable, *flags, "-P", "-m", "finjust", *sys.argv[1:]], environment)
    except OSError as error:
        library = environment["LD_PRELOAD"].split()[0]
        os.environ[allocator.RELAUNCH_REFUSED] = library  # for the run log's allocator line
        print(f"note: starting again with {library} preloaded failed ({error.strerror or error}); going on in "
              f"this process's memory allocator ({allocator.SETTING}=glibc skips the attempt)", file=sys.stderr)


def _unusable_surroundings() -> str | None:
    """What torch would fail on at import, said plainly: a working folder deleted under the shell
    (oneMKL: "Cannot load libtorch_cpu.so") or no writable temporary folder (a traceback)."""
    try:
        os.getcwd()
    except FileNotFoundError:
        return "the current folder no longer exists (deleted or moved); cd into one that does"
    try:
        tempfile.gettempdir()
    except FileNotFoundError:
        return "no writable temporary folder (TMPDIR, /tmp, /var/tmp, the current folder); set TMPDIR to one"
    return None
