"""Reading back the JSON objects finjust writes into a run folder, with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finjust.errors import CheckpointError


def read_saved_object(path: Path, advice: str) -> dict[str, Any] | None:
    """A JSON object finjust wrote into a run folder, None where the file is absent.

    Raises:
        CheckpointError: the file is not UTF-8 JSON or holds something else than an object,
            naming it, with ``advice`` (what its reader needs it for and what to do).
    """
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, or not JSON
        raise CheckpointError(f"{path} is unreadable ({exc}): {advice}") from exc
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} holds {type(saved).__name__}, not the JSON object finjust writes there: "
                              f"{advice}")  # fmt: skip
    return saved
