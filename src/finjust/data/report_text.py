"""The quality report as a terminal table (the CLI prints it; the library only formats)."""

from __future__ import annotations

import os

from finjust.data.example import TASK_CHAT
from finjust.data.report import SPLITS, QualityReport

#: lines of each finding shown in the terminal; JSON and HTML carry all that were kept
SHOWN = 5
_BAR = 40


def short_path(path: str) -> str:
    """``path`` relative to the current folder when it lies below it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


def shorten_paths(text: str, paths: list[str]) -> str:
    """``text`` with each of ``paths`` written as :func:`short_path` writes it."""
    for path in paths:
        text = text.replace(path, short_path(path))
    return text


#: how the summary's first line calls a task's records: instruction, chat and completion records
#: all read as conversations (the "chat" task), which "chat records" miscounted as one format
_TASK_NOUNS = {TASK_CHAT: "conversation"}


def format_report(report: QualityReport) -> str:
    """A readable summary: files, splits with token statistics, histogram, findings and the gate."""
    paths = sorted({f["path"] for f in report.files}, key=len, reverse=True)
    total = sum(f["records"] for f in report.files)
    kind = f"{_TASK_NOUNS.get(report.task, report.task)} " if report.task not in (None, "none") else ""  # none: unreadable
    lines = [f"Data check: {total} {kind}records in {len(report.files)} file(s), {report.seconds:g} s", ""]
    for file in report.files:
        weight = f"  weight {file['weight']:g}" if file.get("weight", 1) != 1 else ""
        lines.append(f"  {file['role']:<11}{short_path(file['path'])}  {file['records']} records, "
                     f"{file['bad']} bad{weight}")  # fmt: skip
    lines += ["", _split_table(report), ""]
    if report.tokens.get("train"):
        lines += [*_histogram(report), ""]
    for split, counts in report.labels.items():
        shown = ", ".join(f"{label} {n}" for label, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        lines.append(f"labels {split}: {shown}")
    if report.labels:
        lines.append("")
    lines += _findings(report, paths)
    lines.append(_verdict(report))
    return "\n".join(lines)


def _split_table(report: QualityReport) -> str:
    head = f"{'split':<12}{'records':>8}"
    if report.tokens:
        head += f"{'tokens: mean':>14}{'p50':>7}{'p90':>7}{'p99':>7}{'max':>7}"
    rows = [head]
    for split in SPLITS:
        row = f"{split:<12}{report.sizes.get(split, 0):>8}"
        stats = report.tokens.get(split)
        if stats:
            row += f"{stats.mean:>14.1f}{stats.p50:>7}{stats.p90:>7}{stats.p99:>7}{stats.max:>7}"
        rows.append(row)
    if report.problems_by_kind.get("unsplittable"):
        rows.append("(the pool could not be split, see the invalid finding: all of it is counted as train here)")
    if not report.tokens:
        rows.append("(token statistics skipped: no tokenizer; give a recipe, or --model)")
    return "\n".join(rows)


def _histogram(report: QualityReport) -> list[str]:
    stats = report.tokens["train"]
    top = max(stats.counts) or 1
    lines = [f"token lengths, train (tokenizer {report.tokenizer}; max_length {report.settings['max_length']}):"]
    for low, high, count in zip(stats.edges, stats.edges[1:], stats.counts):
        lines.append(f"  {low:>6}-{high:<6}{'#' * round(_BAR * count / top):<{_BAR}} {count}")
    return lines


def _findings(report: QualityReport, paths: list[str]) -> list[str]:
    lines = [f"{'finding':<21}{'count':>7}  {'status':<8}what"]
    for finding in report.findings.values():
        note = f" [skipped: {finding.skipped}]" if finding.skipped else ""
        lines.append(f"{finding.name:<21}{finding.count:>7}  {finding.status:<8}{finding.description}{note}")
        if finding.status in ("fail", "warn"):
            lines += [f"    {shorten_paths(item, paths)}" for item in finding.items[:SHOWN]]
            if finding.count > SHOWN:
                hidden = finding.count - min(SHOWN, len(finding.items))
                lines.append(f"    ... {hidden} more (--json and --html list up to data.quality.max_listed)")
    return lines + [""]


def _verdict(report: QualityReport) -> str:
    warned = ", ".join(f.name for f in report.warnings())
    warn_text = f" (warnings: {warned})" if warned else ""
    if report.passed:
        return f"quality gate: passed{warn_text}"
    failed = ", ".join(f.name for f in report.failed())
    return f"quality gate: FAILED on {failed}{warn_text}"
