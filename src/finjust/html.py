"""Small builders for self-contained HTML pages: every text escaped, images inline as base64 PNG."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem;
       border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.note { color: #555; font-size: 0.92rem; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.55rem; vertical-align: top; text-align: left; }
th { background: #f4f4f4; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.better td.verdict { color: #1a7f37; font-weight: 600; } tr.worse td.verdict { color: #c62828; font-weight: 600; }
table.answers td { width: 25%; } img { max-width: 100%; height: auto; display: block; margin: 0.6rem 0; }
"""


@dataclass(frozen=True)
class Markup:
    """HTML that is already safe (built here); every other value is escaped."""

    html: str


@dataclass(frozen=True)
class Cell:
    """A table cell with a class (``num`` right-aligns numbers)."""

    value: object
    css: str = ""


def escape(value: object) -> str:
    """``value`` as HTML text; :class:`Markup` passes through."""
    return value.html if isinstance(value, Markup) else html.escape(str(value), quote=True)


def numeric(value: object) -> Cell:
    """A cell, or a header, of a column of numbers: right-aligned."""
    return Cell(value, "num")


def number(value: object, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; anything else as text, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def table(
    headers: Sequence[object], rows: Sequence[Sequence[object]], row_classes: Sequence[str] = (), css: str = ""
) -> Markup:
    """A table; a header or cell may be a :class:`Cell`, :class:`Markup` or any value (escaped)."""
    head = "".join(_cell(h, "th") for h in headers)
    body = []
    for index, row in enumerate(rows):
        css_row = row_classes[index] if index < len(row_classes) else ""
        cells = "".join(_cell(c) for c in row)
        body.append(f'<tr class="{escape(css_row)}">{cells}</tr>' if css_row else f"<tr>{cells}</tr>")
    attribute = f' class="{escape(css)}"' if css else ""
    return Markup(f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _cell(cell: object, tag: str = "td") -> str:
    if isinstance(cell, Cell):
        return f'<{tag} class="{escape(cell.css)}">{escape(cell.value)}</{tag}>'
    return f"<{tag}>{escape(cell)}</{tag}>"


def image(png: bytes, alt: str) -> Markup:
    """An ``<img>`` holding the PNG itself, so the page needs no other file."""
    data = base64.b64encode(png).decode("ascii")
    return Markup(f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">')


def paragraph(text: object, css: str = "") -> Markup:
    attribute = f' class="{escape(css)}"' if css else ""
    return Markup(f"<p{attribute}>{escape(text)}</p>")


def section(title: str, *parts: Markup) -> Markup:
    return Markup(f"<section><h2>{escape(title)}</h2>{''.join(p.html for p in parts)}</section>")


def page(title: str, subtitle: object, sections: Sequence[Markup], style: str = "") -> str:
    """A whole HTML document with inline CSS (``style`` added to the common rules) and no external references."""
    body = "".join(s.html for s in sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}{style}</style></head>"
        f'<body><h1>{escape(title)}</h1><p class="note">{escape(subtitle)}</p>{body}</body></html>\n'
    )
