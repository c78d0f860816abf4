"""Progress events: how library code says what it does without printing.

Long operations (``run_recipe``, ``export_run``, ``compare_run``, ``evaluate_run``) take an
``on_event(kind, payload)`` handler; the command line prints what it receives, a caller of the
Python API decides for itself. The kinds and payloads are listed in the README's "From Python".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

EventHandler = Callable[[str, dict[str, Any]], None]


def ignore_events(kind: str, payload: dict[str, Any]) -> None:
    """The handler where the caller gives none: the events go nowhere."""
    return None
