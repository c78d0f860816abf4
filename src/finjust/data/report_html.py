"""The quality report as one self-contained HTML page (inline CSS and SVG, no scripts, no fetches)."""

from __future__ import annotations

from finjust.data.report import SPLITS, QualityReport, TokenStats
from finjust.data.report_text import short_path, shorten_paths
from finjust.html import Markup, escape, numeric, page, paragraph, section, table

#: the gate's verdict and each finding's status as coloured badges; the histograms' labels
_STYLE = """
.fail { color: #fff; background: #c62828; } .warn { background: #ffe082; } .ok { background: #c8e6c9; }
.ignored { background: #eee; } .badge { padding: 0.1rem 0.5rem; border-radius: 0.3rem; font-size: 0.85rem; }
.verdict { font-size: 1.2rem; padding: 0.6rem 1rem; border-radius: 0.4rem; display: inline-block; }
details { margin: 0.2rem 0 0.6rem 1rem; } code { font-size: 0.85rem; } svg text { font: 11px system-ui, sans-serif; }
"""


def render_html(report: QualityReport) -> str:
    """The whole page as a string."""
    verdict = "passed" if report.passed else "FAILED: " + ", ".join(f.name for f in report.failed())
    summary = (f"{sum(f['records'] for f in report.files)} {report.task} records, checked in {report.seconds:g} s; "
               f"seed {report.settings.get('seed')}, max_length {report.settings.get('max_length')}.")  # fmt: skip
    parts = [paragraph(f"Quality gate {verdict}", "verdict " + ("ok" if report.passed else "fail")), _files(report),
             _splits(report), _histograms(report), _labels(report), _findings(report)]  # fmt: skip
    return page("finjust data check", summary, [part for part in parts if part.html], _STYLE)


def _code(text: str) -> Markup:
    return Markup(f"<code>{escape(text)}</code>")


def _files(report: QualityReport) -> Markup:
    rows = [[f["role"], _code(short_path(f["path"])), numeric(f["records"]), numeric(f["bad"]),
             numeric(f"{f.get('weight', 1):g}")] for f in report.files]  # fmt: skip
    return section("Files", table(["role", "path", *map(numeric, ("records", "bad", "weight"))], rows))


def _splits(report: QualityReport) -> Markup:
    rows = []
    for split in SPLITS:
        stats = report.tokens.get(split)
        numbers = [f"{stats.mean:.1f}", stats.p50, stats.p90, stats.p99, stats.max] if stats else [""] * 5
        rows.append([split, numeric(report.sizes.get(split, 0)), *map(numeric, numbers),
                     _code(report.sha256.get(split, "")[:16])])  # fmt: skip
    head = ["split", *map(numeric, ("records", "mean tokens", "p50", "p90", "p99", "max")), "content sha256"]
    note = [] if report.tokens else [paragraph("Token statistics skipped: no tokenizer (give a recipe, or --model).")]
    return section("Splits", table(head, rows), *note)


def _histogram_svg(stats: TokenStats, limit: int) -> Markup:
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
    return Markup(f'<svg width="{width}" height="{height}" role="img">{"".join(shapes)}</svg>')


def _histograms(report: QualityReport) -> Markup:
    if not report.tokens:
        return Markup("")
    limit = int(report.settings.get("max_length", 0))
    blocks = [Markup(f"<h3>{escape(split)}</h3>{_histogram_svg(stats, limit).html}")
              for split, stats in report.tokens.items()]  # fmt: skip
    return section(f"Token lengths ({report.tokenizer or ''})", *blocks)


def _labels(report: QualityReport) -> Markup:
    if not report.labels:
        return Markup("")
    names = sorted({label for counts in report.labels.values() for label in counts})
    rows = [[n, *[numeric(report.labels.get(s, {}).get(n, 0)) for s in SPLITS]] for n in names]
    return section("Labels", table(["label", *map(numeric, SPLITS)], rows))


def _findings(report: QualityReport) -> Markup:
    rows, details = [], []
    paths = sorted({f["path"] for f in report.files}, key=len, reverse=True)
    for finding in report.findings.values():
        badge = Markup(f'<span class="badge {escape(finding.status)}">{escape(finding.status)}</span>')
        skipped = f" (skipped: {finding.skipped})" if finding.skipped else ""
        rows.append([finding.name, numeric(finding.count), badge, finding.description + skipped])
        if finding.items:
            listed = "".join(f"<li>{_code(shorten_paths(item, paths)).html}</li>" for item in finding.items)
            unlisted = finding.count - len(finding.items)
            more = paragraph(f"{unlisted} more not listed.").html if unlisted > 0 else ""
            details.append(Markup(f"<details><summary>{escape(finding.name)}: {finding.count}</summary>"
                                  f"<ul>{listed}</ul>{more}</details>"))  # fmt: skip
    pii = ", ".join(f"{n} {kind}" for kind, n in sorted(report.pii.items()))
    pii_line = [paragraph(f"PII matches: {pii}.")] if pii else []
    return section("Findings", table(["finding", numeric("count"), "status", "what"], rows), *pii_line, *details)
