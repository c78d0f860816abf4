"""The metrics log: one JSON line per optimizer step and per evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finjust import atomic
from finjust.errors import CheckpointError


class MetricsLog:
    """Appends records to ``metrics.jsonl``; on resume, forgets what came after the checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        with atomic.naming_file(self.path), self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"{self.path} is not UTF-8 ({exc}): it is damaged; restore it, or delete it "
                                  "(the run's training history goes with it)") from exc  # fmt: skip
        # a run killed mid-write can leave a partial last line: it is dropped
        return [self._parsed(line, number) for number, line in enumerate(lines, 1)
                if line.strip() and (line.rstrip().endswith("}") or number < len(lines))]  # fmt: skip

    def _parsed(self, line: str, number: int) -> dict[str, Any]:
        try:
            record = json.loads(line)
        except ValueError as exc:
            record = exc
        if not isinstance(record, dict):
            raise CheckpointError(f"{self.path} line {number} is not a metrics record ({record}): repair or delete "
                                  "that line (a resume writes the lines after its checkpoint again)")  # fmt: skip
        return record

    def truncate_after(self, step: int) -> None:
        """Keep only records up to ``step`` (those the resumed checkpoint had already seen)."""
        kept = [r for r in self.records() if r.get("step", 0) <= step]
        atomic.write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
