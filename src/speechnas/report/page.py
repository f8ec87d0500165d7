"""The report's HTML page: sections of figures, tables and notes in one self-contained file
(plotly's JavaScript inlined once, so the page opens without a network)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
nav a{margin-right:1em}table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}th{background:#f4f4f4}
td.diff{background:#ffe3a8;font-weight:600}td.l,th.l{text-align:left}
.note{color:#555;font-size:.9em}.graphs{display:flex;flex-wrap:wrap;gap:1.5em}
.graphs figure{margin:0}code{background:#f4f4f4;padding:1px 4px}
"""


@dataclass
class Section:
    """One part of the page: an id (its anchor), a title, and blocks of HTML in order."""

    id: str
    title: str
    blocks: list[str] = field(default_factory=list)

    def figure(self, fig: go.Figure, name: str = "") -> None:
        div = f"plot-{self.id}{'-' + name if name else ''}"
        html = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div,
                           config={"displaylogo": False})  # fmt: skip
        self.blocks.append(html)

    def note(self, text: str) -> None:
        self.blocks.append(f'<p class="note">{escape(text)}</p>')

    def html(self, raw: str) -> None:
        self.blocks.append(raw)


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    marked: Sequence[Sequence[bool]] | None = None,
    left: int = 1,
) -> str:
    """An HTML table; cells are escaped unless given as ``Raw``; ``marked[i][j]`` highlights a
    cell; the first ``left`` columns are left-aligned."""

    def cell(tag: str, j: int, v: Any, mark: bool = False) -> str:
        cls = " ".join(c for c in ("l" if j < left else "", "diff" if mark else "") if c)
        text = v.text if isinstance(v, Raw) else escape(str(v))
        return f"<{tag}{f' class={chr(34)}{cls}{chr(34)}' if cls else ''}>{text}</{tag}>"

    head = "".join(cell("th", j, h) for j, h in enumerate(header))
    body = "".join(
        "<tr>"
        + "".join(cell("td", j, v, bool(marked and marked[i][j])) for j, v in enumerate(row))
        + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass(frozen=True, slots=True)
class Raw:
    """Trusted HTML for a table cell (a link, an SVG)."""

    text: str


def render(title: str, subtitle: str, sections: Sequence[Section],
           meta: Mapping[str, str] | None = None) -> str:  # fmt: skip
    """The whole page as one string."""
    nav = "".join(f'<a href="#{s.id}">{escape(s.title)}</a>' for s in sections)
    parts = [
        f'<section id="{s.id}"><h2>{escape(s.title)}</h2>'
        f'<div class="section-body" id="body-{s.id}">{"".join(s.blocks)}</div></section>'
        for s in sections
    ]
    metas = "".join(
        f'<meta name="{escape(k)}" content="{escape(v)}">' for k, v in (meta or {}).items()
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{metas}'
        f"<title>{escape(title)}</title><style>{STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f'<h1>{escape(title)}</h1><p class="note">{escape(subtitle)}</p><nav>{nav}</nav>'
        f"{''.join(parts)}</body></html>"
    )


__all__ = ["Raw", "Section", "render", "table"]
