"""Small HTML building blocks for the report page: escaped text, tables, notes and sections.

Why apart: every section writes tables and notes, and every one of them must escape what it reads
from the run (predictor names, reasons, paths) the same way.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass


def esc(value: object) -> str:
    """Text for HTML (quotes escaped too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def note(text: str) -> str:
    """A short note that stands in for a figure or a table the run cannot supply (text is escaped)."""
    return f'<p class="note">{esc(text)}</p>'


def caption(text: str) -> str:
    """The explanation under a figure: what is drawn and from which file (text is escaped)."""
    return f'<p class="caption">{esc(text)}</p>'


def para(text: str) -> str:
    """A paragraph of plain (escaped) text."""
    return f"<p>{esc(text)}</p>"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], *, numeric_from: int = 1,
          row_classes: Sequence[str] | None = None, caption: str = "") -> str:
    """An HTML table; cells from column ``numeric_from`` on are right-aligned. Cells are escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(f'<td class="num">{esc(v)}</td>' if j >= numeric_from else f"<td>{esc(v)}</td>"
                        for j, v in enumerate(row))
        cls = f' class="{esc(row_classes[i])}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def key_values(pairs: Sequence[tuple[str, object]]) -> str:
    """A two-column table of labels and values (provenance, the choice)."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


@dataclass
class Section:
    """One section of the page: an anchor id, a heading and its (already escaped) HTML body."""

    id: str
    title: str
    body: str

    def html(self) -> str:
        return f'<section id="{esc(self.id)}"><h2>{esc(self.title)}</h2>\n{self.body}\n</section>'
