"""Outputs of a run: the terminal summary, the JSON record and an HTML report with plots
(inline SVG drawn here, so the report is one self-contained file and needs no plotting
library)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.runtime.bench import render_table

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def svg_line_chart(
    title: str,
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    *,
    x_label: str = "simulated hour",
    y_label: str = "",
    width: int = 760,
    height: int = 260,
    log_y: bool = False,
) -> str:
    """A line chart as an SVG element; gaps (``None``) break the lines."""
    left, right, top, bottom = 60, 170, 28, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    all_y = [v for values in series.values() for v in _finite(values)]
    if log_y:
        all_y = [v for v in all_y if v > 0]
    if not x or not all_y:
        return f"<p><em>{html.escape(title)}: no data</em></p>"
    x_min, x_max = min(x), max(x)
    y_min = min(all_y) if log_y else min(0.0, *all_y)
    y_max = max(all_y)
    if y_max <= y_min:
        y_max = y_min + 1.0

    def tx(v: float) -> float:
        return left + (v - x_min) / ((x_max - x_min) or 1.0) * plot_w

    def ty(v: float) -> float:
        if log_y:
            lo, hi = math.log10(y_min), math.log10(y_max)
            f = (math.log10(max(v, y_min)) - lo) / ((hi - lo) or 1.0)
        else:
            f = (v - y_min) / (y_max - y_min)
        return top + plot_h - f * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#999"/>',
    ]
    for i in range(5):
        f = i / 4
        value = (
            10 ** (math.log10(y_min) + f * (math.log10(y_max) - math.log10(y_min)))
            if log_y
            else y_min + f * (y_max - y_min)
        )
        y = ty(value)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>'
        )
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{value:.3g}</text>')
    for i in range(7):
        value = x_min + i / 6 * (x_max - x_min)
        xx = tx(value)
        parts.append(
            f'<text x="{xx:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{value:.3g}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">'
        f"{html.escape(x_label)}</text>"
    )
    if y_label:
        parts.append(
            f'<text x="12" y="{top + plot_h / 2}" transform="rotate(-90 12 {top + plot_h / 2})" '
            f'text-anchor="middle">{html.escape(y_label)}</text>'
        )
    for i, (name, values) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        segments: list[list[str]] = [[]]
        for xv, yv in zip(x, values, strict=False):
            if yv is None or not math.isfinite(yv) or (log_y and yv <= 0):
                if segments[-1]:
                    segments.append([])
                continue
            segments[-1].append(f"{tx(xv):.1f},{ty(yv):.1f}")
        for seg in segments:
            if len(seg) > 1:
                parts.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
                    f'points="{" ".join(seg)}"/>'
                )
            elif len(seg) == 1:
                cx, cy = seg[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
        ly = top + 12 + i * 15
        parts.append(
            f'<line x1="{left + plot_w + 10}" y1="{ly - 4}" x2="{left + plot_w + 28}" '
            f'y2="{ly - 4}" stroke="{color}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{left + plot_w + 32}" y="{ly}">{html.escape(name[:24])}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c, '')))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


STYLE = """
body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}
th{background:#f3f3f3} h2{margin-top:1.6em} code{background:#f3f3f3;padding:1px 4px}
"""


def write_html(
    path: Path, title: str, record: Mapping[str, Any], sections: Sequence[tuple[str, str]]
) -> None:
    """One self-contained HTML file: the run record, then (heading, html) sections."""
    record_rows = [
        {"key": k, "value": json.dumps(v) if isinstance(v, dict) else v} for k, v in record.items()
    ]
    body = [f"<h1>{html.escape(title)}</h1>", html_table(record_rows, ["key", "value"])]
    for heading, content in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>\n{content}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n",
        encoding="utf-8",
    )


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n", encoding="utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """The terminal table (the runtime's renderer)."""
    return render_table([dict(r) for r in rows], columns)
