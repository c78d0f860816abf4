"""The quality report as one self-contained HTML page (inline CSS and SVG, no scripts, no fetches)."""

from __future__ import annotations

from collections.abc import Collection
from html import escape

from finjust.data.report import SPLITS, QualityReport, TokenStats
from finjust.data.report_text import short_path, shorten_paths

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#1d1d1f;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.3rem .7rem;border-bottom:1px solid #ddd;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.fail{color:#fff;background:#c62828}.warn{background:#ffe082}.ok{background:#c8e6c9}.ignored{background:#eee}
.badge{padding:.1rem .5rem;border-radius:.3rem;font-size:.85rem}
.verdict{font-size:1.2rem;padding:.6rem 1rem;border-radius:.4rem;display:inline-block}
details{margin:.2rem 0 .6rem 1rem}code{font-size:.85rem}svg text{font:11px system-ui,sans-serif}
"""


def render_html(report: QualityReport) -> str:
    """The whole page as a string."""
    verdict = "passed" if report.passed else "FAILED: " + ", ".join(f.name for f in report.failed())
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>finjust data check</title><style>", _STYLE, "</style></head><body>",
        "<h1>finjust data check</h1>",
        f'<p class="verdict {"ok" if report.passed else "fail"}">Quality gate {escape(verdict)}</p>',
        f"<p>{sum(f['records'] for f in report.files)} {escape(report.task)} records, checked in "
        f"{report.seconds:g} s; seed {report.settings.get('seed')}, max_length {report.settings.get('max_length')}.</p>",
        _files(report), _splits(report), _histograms(report), _labels(report), _findings(report),
        "</body></html>",
    ]  # fmt: skip
    return "\n".join(parts)


def _table(head: list[str], rows: list[list[str]], numeric: Collection[int] = ()) -> str:
    cells = "".join(f'<th class="{"n" if i in numeric else ""}">{escape(h)}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="{"n" if i in numeric else ""}">{c}</td>' for i, c in enumerate(row))
                   + "</tr>" for row in rows)  # fmt: skip
    return f"<table><tr>{cells}</tr>{body}</table>"


def _files(report: QualityReport) -> str:
    rows = [[escape(f["role"]), f"<code>{escape(short_path(f['path']))}</code>", str(f["records"]), str(f["bad"]),
             f"{f.get('weight', 1):g}"] for f in report.files]  # fmt: skip
    return "<h2>Files</h2>" + _table(["role", "path", "records", "bad", "weight"], rows, {2, 3, 4})


def _splits(report: QualityReport) -> str:
    rows = []
    for split in SPLITS:
        stats = report.tokens.get(split)
        numbers = [f"{stats.mean:.1f}", str(stats.p50), str(stats.p90), str(stats.p99), str(stats.max)] if stats else [""] * 5
        rows.append([split, str(report.sizes.get(split, 0)), *numbers, f"<code>{report.sha256.get(split, '')[:16]}</code>"])
    note = "" if report.tokens else "<p>Token statistics skipped: no tokenizer (give a recipe, or --model).</p>"
    head = ["split", "records", "mean tokens", "p50", "p90", "p99", "max", "content sha256"]
    return "<h2>Splits</h2>" + _table(head, rows, {1, 2, 3, 4, 5, 6}) + note


def _histogram_svg(stats: TokenStats, limit: int) -> str:
    width, height, pad = 560, 160, 30
    top = max(stats.counts) or 1
    bar = (width - pad) / len(stats.counts)
    shapes = []
    for i, count in enumerate(stats.counts):
        h = (height - pad) * count / top
        x, y = pad + i * bar, height - pad - h
        shapes.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" fill="#5c6bc0">'
                      f"<title>{stats.edges[i]}-{stats.edges[i + 1]} tokens: {count}</title></rect>")  # fmt: skip
        shapes.append(f'<text x="{x:.1f}" y="{height - pad + 14}">{stats.edges[i]}</text>')
    if stats.edges[-1] >= limit:
        x = pad + (width - pad) * limit / max(stats.edges[-1], 1)
        shapes.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height - pad}" stroke="#c62828"/>'
                      f'<text x="{x + 3:.1f}" y="12" fill="#c62828">max_length</text>')  # fmt: skip
    return f'<svg width="{width}" height="{height}" role="img">{"".join(shapes)}</svg>'


def _histograms(report: QualityReport) -> str:
    if not report.tokens:
        return ""
    limit = int(report.settings.get("max_length", 0))
    blocks = [f"<h3>{escape(split)}</h3>{_histogram_svg(stats, limit)}" for split, stats in report.tokens.items()]
    return f"<h2>Token lengths ({escape(report.tokenizer or '')})</h2>" + "".join(blocks)


def _labels(report: QualityReport) -> str:
    if not report.labels:
        return ""
    names = sorted({label for counts in report.labels.values() for label in counts})
    rows = [[escape(n), *[str(report.labels.get(s, {}).get(n, 0)) for s in SPLITS]] for n in names]
    return "<h2>Labels</h2>" + _table(["label", *SPLITS], rows, {1, 2, 3})


def _findings(report: QualityReport) -> str:
    rows, details = [], []
    paths = sorted({f["path"] for f in report.files}, key=len, reverse=True)
    for finding in report.findings.values():
        badge = f'<span class="badge {finding.status}">{finding.status}</span>'
        skipped = f" (skipped: {escape(finding.skipped)})" if finding.skipped else ""
        rows.append([escape(finding.name), str(finding.count), badge, escape(finding.description) + skipped])
        if finding.items:
            listed = "".join(f"<li><code>{escape(shorten_paths(item, paths))}</code></li>" for item in finding.items)
            more = f"<p>{finding.count - len(finding.items)} more not listed.</p>" if finding.count > len(finding.items) else ""
            details.append(f"<details><summary>{escape(finding.name)}: {finding.count}</summary><ul>{listed}</ul>"
                           f"{more}</details>")  # fmt: skip
    pii = ", ".join(f"{n} {escape(kind)}" for kind, n in sorted(report.pii.items()))
    pii_line = f"<p>PII matches: {pii}.</p>" if pii else ""
    head = ["finding", "count", "status", "what"]
    return "<h2>Findings</h2>" + _table(head, rows, {1}) + pii_line + "".join(details)
