"""The registry of export formats: what each writes, how its own runtime loads it, what parity it must reach.

A format writes an artifact into an empty folder (a temp folder that :func:`finjust.export.run.export_run`
renames into place only once the parity check passed) and opens that artifact again in the
runtime a user would run it in (transformers, peft, llama.cpp, onnxruntime), so the check
measures what the user gets, not what we meant to write.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from finjust.registry import Registry

#: written beside every export: format, paths, size and the parity report
RESULT_FILE = "export.json"


def read_result(folder: str | Path) -> dict[str, Any]:
    """The export.json of an export folder."""
    return json.loads((Path(folder) / RESULT_FILE).read_text())


def recorded_result(folder: Path) -> dict[str, Any] | None:
    """``folder``'s export.json where it has a readable one (a mapping), else None: for checks
    that only look at what an export records, leaving a damaged one to whoever loads it."""
    if not (folder / RESULT_FILE).is_file():
        return None
    try:
        result = read_result(folder)
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None

if TYPE_CHECKING:
    from finjust.export.runtimes import Runtime
    from finjust.export.source import ExportSource


@dataclass(frozen=True)
class ParityThresholds:
    """What an exported artifact must reach against the trained model to count as exported.

    Attributes:
        min_agreement: the least mean fraction of answer tokens equal to the trained model's,
            counted up to the first divergence (1.0: every answer identical).
        min_exact: the least fraction of answers identical token for token.
        max_logit_diff: the largest absolute logit difference allowed where both runtimes
            saw the same context; ``None`` where it is reported but not checked (quantised
            formats, whose logits move by design).
    """

    min_agreement: float
    min_exact: float = 0.0
    max_logit_diff: float | None = None


class ExportFormat(ABC):
    """One way of shipping a trained run: a folder the format's own runtime loads."""

    name: ClassVar[str]
    #: one line for ``--help`` and the README
    summary: ClassVar[str]
    #: True when the format needs the trained change merged into the base weights
    needs_merge: ClassVar[bool] = True
    #: quantisation types ``--quant`` accepts (empty: the option does not apply) and the default
    quant_choices: ClassVar[tuple[str, ...]] = ()
    default_quant: ClassVar[str | None] = None

    @abstractmethod
    def write(self, source: ExportSource, folder: Path, quant: str | None) -> None:
        """Write the artifact for ``source`` into the empty ``folder``."""

    @abstractmethod
    def open(self, folder: Path, source: ExportSource) -> Runtime:
        """Load the artifact in ``folder`` in the runtime a user would run it in."""

    @abstractmethod
    def thresholds(self, quant: str | None) -> ParityThresholds:
        """The parity this format must reach (at ``quant``) to count as a successful export."""

    def notes(self, folder: Path, quant: str | None) -> dict[str, object]:
        """Facts worth recording in export.json beside the parity (e.g. how to load the artifact)."""
        return {}


FORMATS: Registry[ExportFormat] = Registry("export format")


def get_format(name: str) -> ExportFormat:
    """The registered export format called ``name`` (importing the built-in ones first)."""
    import finjust.export  # noqa: F401  (registers the built-in formats)

    return FORMATS.get(name)
