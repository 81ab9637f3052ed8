"""The HTML of ``sedi report``: inline CSS and the few fragments the page is built from (no template engine).

Everything is self-contained: no external stylesheet, font or script, so the page opens anywhere offline.
Callers pass text already escaped where it came from a run (labels, paths); the fragments here add markup only.
"""

from __future__ import annotations

import base64
import html

CSS = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.7rem;margin-bottom:.2rem}h1+p{margin-top:0;color:#555}
.lead{font-size:1.05rem;background:#f4f6f8;padding:.6rem 1rem;border-radius:6px}.lead ul{margin:.2rem 0;
padding-left:1.2rem}.lead p{margin:.4rem 0}small{color:#666;font-weight:normal}
.swatch{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.35em;vertical-align:baseline}
table{border-collapse:collapse;margin:1rem 0 2rem}table:has(+.note){margin-bottom:.4rem}
th,td{border-bottom:1px solid #ddd;padding:.35rem .8rem;text-align:right}
th[scope=row]{text-align:left;font-weight:normal}thead th{text-align:center;vertical-align:bottom}
td.best{font-weight:bold;background:#e6f4ea}p.note{color:#555;font-size:.9rem;margin:0 0 2rem}
figure{margin:0 0 2.2rem}figure img{display:block;max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#444;font-size:.95rem;margin-top:.3rem}.nodata{color:#666;font-style:italic}"""


def swatch(colour: str) -> str:
    """A small square in a run's plot colour, put before its name so the text and the plots line up."""
    return f'<span class="swatch" style="background:{colour}"></span>'


def lead(runs: list[str], comparison: str | None, note: str | None = None) -> str:
    """The box at the top: one line per run, the comparison sentence, then a note (all HTML)."""
    items = "".join(f"<li>{run}</li>" for run in runs)
    paragraphs = "".join(f"<p>{text}</p>" for text in (comparison, note) if text)
    return f'<div class="lead"><ul>{items}</ul>{paragraphs}</div>'


def table(heads: list[str], rows: list[tuple[str, str, list[str], set[int]]], compared: bool) -> str:
    """The summary table: ``heads`` (HTML) name the runs; each row is its key (a ``data-metric`` hook for tests and
    scripts), its heading (HTML), one plain-text cell per run, and which cells hold the better value."""

    def td(i: int, text: str, best: set[int]) -> str:
        return f'<td class="best">{html.escape(text)}</td>' if i in best else f"<td>{html.escape(text)}</td>"

    body = "".join(
        f'<tr data-metric="{key}"><th scope="row">{heading}</th>'
        + "".join(td(i, cell, best) for i, cell in enumerate(cells))
        + "</tr>"
        for key, heading, cells, best in rows
    )
    note = (
        '<p class="note">Green and bold: the better run on that row (rows that say which way is better; not marked '
        "on a tie or when the runs stopped at different rounds). Calls, tokens and cost per kept task are marked "
        "only where the 95% interval of the ratio to the first run excludes 1 (clearly fewer, or clearly more for "
        "every other run).</p>"
        if compared
        else ""
    )
    head = "".join(f"<th>{h}</th>" for h in heads)
    return f'<table class="summary"><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>{note}'


def shapes(names: list[str], summaries: list[dict[str, object]]) -> str:
    """Request shapes (generation.shaping): per run (``names`` HTML), each shape's generation requests, kept tasks,
    kept per call and per USD, the chosen one in bold green; empty when no run recorded a shape."""
    columns = (("requests", ","), ("kept", ","), ("kept_per_call", ".3f"), ("kept_per_usd", ",.1f"))
    parts = []
    for name, summary in zip(names, summaries, strict=True):
        by_shape = summary.get("shapes") or {}
        assert isinstance(by_shape, dict)
        rows = []
        for shape, numbers in by_shape.items():
            mark = ' class="best"' if shape == summary.get("shape_chosen") else ""
            cells = "".join(
                f"<td{mark}>{'n/a' if numbers[k] is None else html.escape(format(numbers[k], f))}</td>"
                for k, f in columns
            )
            rows.append(f'<tr data-shape="{html.escape(shape)}"><th scope="row">{html.escape(shape)}</th>{cells}</tr>')
        if rows:
            head = "<th>Shape</th><th>Requests</th><th>Kept</th><th>Kept per call</th><th>Kept per USD</th>"
            grid = f'<table class="shapes"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            parts.append(f"<p>{name}</p>{grid}")
    note = (
        '<p class="note">Green and bold: the shape chosen (best posterior kept tasks per dollar, per call without '
        "prices). A kept task counts for the generation request that wrote its instruction.</p>"
    )
    return f"<h2>Request shapes</h2>{''.join(parts)}{note}" if parts else ""


def figure(name: str, png: bytes, caption: str, empty: bool) -> str:
    """One plot: the PNG embedded as a data URI, and a caption saying how to read it (and if it is empty)."""
    data = base64.b64encode(png).decode("ascii")
    note = ' <span class="nodata">No data yet: it appears once the run gets this far.</span>' if empty else ""
    return (
        f'<figure id="{name}"><img src="data:image/png;base64,{data}" alt="{name} plot">'
        f"<figcaption>{html.escape(caption)}{note}</figcaption></figure>"
    )


def page(title: str, subtitle: str, lead: str, table: str, figures: list[str]) -> str:
    """The whole document; ``subtitle``, ``lead`` and ``table`` are HTML, ``title`` plain text."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>'
        f"<h1>sedi report</h1><p>{subtitle}</p>{lead}<h2>Summary</h2>{table}<h2>Plots</h2>"
        + "\n".join(figures)
        + "</body></html>\n"
    )
