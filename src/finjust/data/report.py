"""The data-quality report: what ``finjust data check`` prints and the gate decides on."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from finjust.data.findings import FINDINGS

SPLITS = ("train", "validation", "test")


@dataclass
class Finding:
    """One kind of finding: how many records, and the first of them with where they are."""

    name: str
    count: int = 0
    items: list[str] = field(default_factory=list)
    #: set by the gate: fail, warn, ignored, or ok when nothing was found
    status: str = "ok"
    #: set when the check could not run (e.g. token checks without a tokenizer)
    skipped: str = ""

    @property
    def description(self) -> str:
        return FINDINGS[self.name]


@dataclass
class TokenStats:
    """Token lengths of one split under the model's tokenizer and chat template."""

    count: int
    mean: float
    p50: int
    p90: int
    p99: int
    max: int
    #: bin edges (len = bins + 1) and counts of the length histogram
    edges: list[int]
    counts: list[int]


@dataclass
class QualityReport:
    """Everything one check found; ``to_dict`` gives the JSON form."""

    files: list[dict[str, Any]]
    task: str
    sizes: dict[str, int]
    #: SHA-256 of each split's content in order, as the run manifest records it (weights not applied)
    sha256: dict[str, str]
    findings: dict[str, Finding]
    settings: dict[str, Any]
    tokens: dict[str, TokenStats] = field(default_factory=dict)
    tokenizer: str | None = None
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    pii: dict[str, int] = field(default_factory=dict)
    problems_by_kind: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    passed: bool = True

    def failed(self) -> list[Finding]:
        return [f for f in self.findings.values() if f.status == "fail"]

    def warnings(self) -> list[Finding]:
        return [f for f in self.findings.values() if f.status == "warn"]

    def to_dict(self) -> dict[str, Any]:
        result = dataclasses.asdict(self)
        for name, finding in self.findings.items():
            result["findings"][name]["description"] = finding.description
        result["gate"] = {"passed": self.passed, "failed": [f.name for f in self.failed()],
                          "warned": [f.name for f in self.warnings()]}  # fmt: skip
        return result
