"""Replacing a run folder (``output.overwrite``) without losing the old run to a new one that fails.

The old run is moved aside as ``.NAME.replaced`` and deleted when a run in ``NAME`` finishes.
(Not :mod:`finjust.atomic`'s ``.NAME.old``: clean-up deletes that one wherever ``NAME`` exists,
which here is while the new run is still in progress.) A new run that fails before it
saved a checkpoint (a data file the gate refuses, a model that does not load) is removed and
the old run comes back; one interrupted later stays, resumable, and the old run waits aside
until it finishes.
"""

from __future__ import annotations

import os
from pathlib import Path

from finjust import atomic
from finjust.train.checkpoint import has_checkpoint


def aside(root: Path) -> Path:
    return root.with_name(f".{root.name}.replaced")


def recover(root: Path) -> None:
    """Bring back an old run set aside by a process killed before it made ``root`` again,
    and remove temps a killed deletion left beside ``root``."""
    if not root.parent.is_dir():
        return
    atomic.recover(root.parent, name=root.name)
    if aside(root).exists() and not root.exists():
        os.replace(aside(root), root)


def set_aside(root: Path, finished: bool) -> None:
    """Move the run at ``root`` aside. A run already aside stays there when ``root`` holds an
    unfinished one (which goes): the one aside is the last run that finished."""
    old = aside(root)
    if old.exists() and not finished:
        atomic.remove_folder(root)
        return
    if old.exists():
        atomic.remove_folder(old)
    os.replace(root, old)


def roll_back(root: Path, checkpoints: Path) -> bool:
    """After a new run failed: bring the old run back unless the new one saved a checkpoint
    (it is resumable then). True if the old run is back."""
    old = aside(root)
    if not old.exists() or has_checkpoint(checkpoints):
        return False
    if root.exists():
        atomic.remove_folder(root)
    os.replace(old, root)
    return True


def discard_old(root: Path) -> None:
    """A run in ``root`` finished: the run it replaced goes."""
    old = aside(root)
    if old.exists():
        atomic.remove_folder(old)
