"""The quality gate: which findings of a report stop a run (``data.quality.fail_on``).

Defaults, and why: ``leakage`` fails, because a test question seen in training makes the
scorecard a lie, and the scorecard is what finjust promises; ``no_trainable_tokens`` fails,
because such an example trains on nothing (a loss of 0 that looks like progress). Invalid
records always fail, as they do in OpenAI's fine-tuning file checks. Everything else
(duplicates, near-duplicates, conflicting answers, PII, long examples, label imbalance)
warns: each is sometimes deliberate (paraphrase augmentation, a support line's phone number
in answers, a rare class), so the user decides which of them to list in ``fail_on``.
"""

from __future__ import annotations

from typing import Any

from finjust.data.findings import ALWAYS_FAIL
from finjust.data.report import QualityReport
from finjust.errors import DataError


def apply_gate(report: QualityReport, quality: Any, too_long: str = "truncate") -> QualityReport:
    """Set each finding's status (fail, warn, ignored, ok) and ``report.passed``; returns ``report``.

    Args:
        report: the check's report.
        quality: the recipe's ``QualitySection`` (``fail_on``, ``ignore``, ``redact_pii``).
        too_long: ``data.too_long``; with ``error``, examples over the limit fail the gate.
    """
    fail_on = set(quality.fail_on) | set(ALWAYS_FAIL)
    if too_long == "error":
        fail_on.add("too_long")
    if quality.redact_pii:  # redacted before training: what was found no longer reaches the model
        fail_on.discard("pii")
    for finding in report.findings.values():
        if finding.count == 0:
            finding.status = "ok"
        elif finding.name in quality.ignore and finding.name not in ALWAYS_FAIL:  # ignore overrides fail_on
            finding.status = "ignored"
        elif finding.name in fail_on:
            finding.status = "fail"
        else:
            finding.status = "warn"
    report.passed = not report.failed()
    return report


def gate_error(report: QualityReport, target: str = "RECIPE") -> DataError:
    """The error that stops training when the gate failed: each failing finding, with examples."""
    lines = []
    for finding in report.failed():
        shown = "; ".join(finding.items[:3])
        lines.append(f"  {finding.name}: {finding.count} ({finding.description}); e.g. {shown}")
    movable = [finding.name for finding in report.failed() if finding.name not in ALWAYS_FAIL]
    advice = f", or move {', '.join(movable)} out of data.quality.fail_on to only warn" if movable else ""
    return DataError(
        "the data quality gate failed:\n" + "\n".join(lines) + f"\nsee the full report with `finjust data check "
        f"{target}`; fix the data{advice}"
    )


def enforce_gate(report: QualityReport, target: str = "RECIPE") -> None:
    """Raise :func:`gate_error` unless the report passed (run :func:`apply_gate` first).

    Raises:
        DataError: listing each failing finding.
    """
    if not report.passed:
        raise gate_error(report, target)
