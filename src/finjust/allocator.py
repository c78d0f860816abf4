"""The memory allocator finjust's processes run with: tcmalloc or jemalloc where one is installed.

A training step allocates and frees hundreds of activation-sized tensors. glibc's malloc hands
large freed blocks back to the kernel and faults them in again on the next step; tcmalloc and
jemalloc keep them. Measured on the training benchmark (SmolLM2-135M, LoRA r=16, 8 demo
answers a step, 2-core Sapphire Rapids; ``benchmarks/train_speed.py``, alternating runs):
finjust's eager steps 576 -> 665 tokens/s and peak RSS 1.55 -> 1.40 GB with tcmalloc 2.10,
compiled steps 731 -> 837 tokens/s, the Trainer's bf16 baseline 288 -> 341.

An allocator can only be chosen before a process starts (``LD_PRELOAD``), so the CLI starts
itself once more with the library preloaded (:func:`relaunch_environment`, called before
torch is imported). ``FINJUST_ALLOCATOR`` chooses: ``auto`` (default) the first library
found, ``tcmalloc`` or ``jemalloc`` the first of that kind, ``glibc`` none, or a library's path.

Where the library comes from: ``make`` puts Debian's ``libtcmalloc-minimal4`` into the
virtual environment (``scripts/fetch-tcmalloc.sh``) where apt can download it; otherwise the
system's tcmalloc or jemalloc (``apt install libtcmalloc-minimal4``, ``libjemalloc2``), found
by the dynamic linker's cache.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from finjust.errors import SettingError

SETTING = "FINJUST_ALLOCATOR"
#: set in the relaunched process: relaunch once at most, whatever happened
RELAUNCHED = "FINJUST_ALLOCATOR_RELAUNCHED"
#: set where the system refused the relaunch: the library it was to preload
RELAUNCH_REFUSED = "FINJUST_ALLOCATOR_RELAUNCH_REFUSED"
#: libraries in order of preference (tcmalloc measured; jemalloc does the same job)
LIBRARIES = ("tcmalloc_minimal", "tcmalloc", "jemalloc")
#: where ``make`` puts the library inside the virtual environment
BUNDLED = Path(sys.prefix) / "lib" / "finjust-malloc"


def active() -> str | None:
    """The fast allocator this process runs with ("tcmalloc", "jemalloc"), None for glibc's."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    return next((name for name in ("tcmalloc", "jemalloc") if f"lib{name}" in maps), None)


def find(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The library ``FINJUST_ALLOCATOR`` asks for: a path, none ("glibc"), or ("auto", the
    default; or "tcmalloc", "jemalloc") the first of :data:`LIBRARIES` of that kind in the
    virtual environment or the system that ``LD_PRELOAD`` can hold."""
    setting = environ.get(SETTING, "").strip() or "auto"
    word = setting.lower()
    if word == "glibc":
        return None
    if word == "auto":
        return _first_library(list(LIBRARIES))
    if word in ("tcmalloc", "jemalloc"):
        if (found := _first_library([name for name in LIBRARIES if name.startswith(word)])) is None:
            package = {"tcmalloc": "libtcmalloc-minimal4", "jemalloc": "libjemalloc2"}[word]
            raise SettingError(f"{SETTING}={setting}: no {word} library in the virtual environment or the system; "
                               f"apt install {package}, or set 'auto' (the first one found) or 'glibc'")  # fmt: skip
        return found
    path = Path(setting)
    problem = "no such file" if not path.is_file() else _not_a_library(path)
    if problem:
        raise SettingError(f"{SETTING}={setting}: {problem}; give a tcmalloc or jemalloc library's path, 'auto', "
                           "'tcmalloc', 'jemalloc' or 'glibc'")  # fmt: skip
    if not preloadable(path):
        raise SettingError(f"{SETTING}={setting}: LD_PRELOAD splits paths at spaces and colons, so this one "
                           "cannot be preloaded; link the library from a path without them")  # fmt: skip
    return path


def _not_a_library(path: Path) -> str | None:
    """Why ``path`` is no library to preload, or None where it is an ELF file."""
    try:
        with path.open("rb") as file:
            return None if file.read(4) == b"\x7fELF" else "not a shared library"
    except OSError as error:  # read before main() catches OSError: a traceback otherwise
        return f"cannot be read ({error.strerror or error})"


def preloadable(path: Path) -> bool:
    """``LD_PRELOAD`` separates its libraries by spaces and colons: a path holding one is cut apart."""
    return not any(separator in str(path) for separator in " :")


def _first_library(names: list[str]) -> Path | None:
    for name in names:
        bundled = sorted(BUNDLED.glob(f"lib{name}.so*"))
        if bundled and preloadable(bundled[0]):
            return bundled[0]
    for name in names:
        if found := ctypes.util.find_library(name):  # a bare soname the dynamic linker finds itself
            return Path(found)
    return None


def relaunch_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """The environment to start this command again in with a fast allocator preloaded, or
    None where it runs as it is (one already active, relaunched once already, none found or
    wanted, not Linux)."""
    if not sys.platform.startswith("linux") or RELAUNCHED in environ or active() is not None:
        return None
    return preload_environment(environ)


def preload_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """``environ`` with the library :func:`find` picks preloaded (None: no library)."""
    library = find(environ)
    if library is None:
        return None
    preload = " ".join(filter(None, [str(library), environ.get("LD_PRELOAD", "")]))
    # tcmalloc reports every allocation over 1 GiB on stderr (loading a model makes some)
    quiet = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(2**40)}
    return {**quiet, **environ, "LD_PRELOAD": preload, RELAUNCHED: "1"}


def describe(environ: Mapping[str, str] = os.environ) -> str:
    """One line for a run's log: which allocator runs, and what to do about glibc's."""
    name = active()
    if name is not None:
        return f"memory allocator: {name}"
    if environ.get(SETTING, "").strip().lower() == "glibc":
        return f"memory allocator: glibc malloc ({SETTING}=glibc)"
    if refused := environ.get(RELAUNCH_REFUSED):
        return (f"memory allocator: glibc malloc (the system refused to start the command again with {refused} "
                f"preloaded; {SETTING}=glibc silences this)")  # fmt: skip
    unusable = [path for path in sorted(BUNDLED.glob("lib*malloc*.so*")) if not preloadable(path)]
    if unusable:
        return (f"memory allocator: glibc malloc (the virtual environment's {unusable[0].name} cannot be preloaded "
                "from a path with a space or colon: move the environment, or apt install libtcmalloc-minimal4; "
                f"{SETTING}=glibc silences this)")  # fmt: skip
    return ("memory allocator: glibc malloc (tcmalloc trained ~15% faster here: `make` installs it, "
            f"or apt install libtcmalloc-minimal4; {SETTING}=glibc silences this)")  # fmt: skip
