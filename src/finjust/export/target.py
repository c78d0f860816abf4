"""Where an export may write: its own earlier output, or a new folder outside the trained artifact."""

from __future__ import annotations

import os
from pathlib import Path

from finjust import atomic
from finjust.errors import ExportError
from finjust.export.registry import RESULT_FILE, recorded_result


def refuse_file_in_the_way(target: Path) -> None:
    """The output folder, and the folders above it where they exist, must be folders."""
    if (blocker := atomic.file_in_the_way(target)) is not None:
        raise ExportError(f"--out {target}: {blocker} is a file, not a folder; choose another --out")


def refuse_foreign_folder(target: Path, run: Path) -> None:
    """An export replaces its own earlier output, never a folder that holds something else, nor,
    outside ``run``'s folder, another run's export (inside it, an export of the run before it
    was moved)."""
    if not target.exists() or not any(target.iterdir()):
        return
    if not (target / RESULT_FILE).is_file():
        raise ExportError(f"{target} exists and is not a finjust export (no {RESULT_FILE}); choose another --out")
    run = Path(os.path.abspath(run))
    if run in Path(os.path.abspath(target)).parents:
        return
    other = (recorded_result(target) or {}).get("run")  # a damaged export.json names none: replaced
    if isinstance(other, str) and Path(other) != run:
        raise ExportError(f"{target} holds an export of another run ({other}); choose another --out, or delete "
                          "that export first")  # fmt: skip


def refuse_artifact_folder(target: Path, artifact: Path) -> None:
    """An export never goes into the trained artifact it is made from (an adapter export there
    copied its own temp folder into itself), nor around it."""
    target, artifact = Path(os.path.abspath(target)), Path(os.path.abspath(artifact))
    if target == artifact or artifact in target.parents or target in artifact.parents:
        raise ExportError(f"--out {target} would hold or sit inside the run's trained artifact {artifact}; "
                          "choose a folder outside it")
