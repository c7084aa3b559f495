"""The HTML report of ``shoptwin capacity validate``: per service, measured against predicted
p50/p95/p99 and throughput over the offered rate, and the table behind the plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_report(path: Path, payload: dict[str, Any]) -> None:
    """One self-contained HTML file with inline SVG plots."""
    from simulator.capacity.validate import (
        COLUMNS,
        calibration_sentence,
        chance_sentence,
        knee_note,
    )
    from simulator.report import html_table, svg_line_chart, write_html

    sections = []
    for name, result in payload["services"].items():
        rows = result["rows"]
        rates = [r["rate"] for r in rows]
        chance = " ".join(x for x in (chance_sentence(result), calibration_sentence(result)) if x)
        verdict = (
            f"<p>Knee (highest achieved throughput): measured "
            f"<b>{result['measured_knee_per_s']}/s</b>, predicted "
            f"<b>{result['predicted_knee_per_s']}/s</b> ({result['knee_error']:+.1%}, "
            f"{'within' if result['knee_ok'] else 'OFF'} ±"
            f"{payload['bounds']['knee_tolerance']:.0%}{knee_note(result)}). "
            "p95 (median over the passes) at the "
            f"{result['judged_rates']} "
            f"rates up to {payload['bounds']['below_knee']:.0%} of the measured knee: "
            f"{'within' if result['p95_ok'] else 'OFF'} ±"
            f"{payload['bounds']['p95_tolerance']:.0%}. Analytic model capacity "
            f"{result['analytic_capacity_per_s']}/s.{' ' + chance if chance else ''}</p>"
        )
        latency = svg_line_chart(
            f"{name}.{result['rpc']}: latency vs offered rate",
            rates,
            {
                "measured p50": [r["m_p50_ms"] for r in rows],
                "predicted p50": [r["p_p50_ms"] for r in rows],
                # The judged p95: the median over passes of each pass's p95.
                "measured p95 (median of passes)": [r["m_p95_med_ms"] for r in rows],
                "predicted p95 (median of passes)": [r["p_p95_med_ms"] for r in rows],
                "measured p99": [r["m_p99_ms"] for r in rows],
                "predicted p99": [r["p_p99_ms"] for r in rows],
            },
            x_label="offered rate (calls/s)",
            y_label="ms",
            log_y=True,
        )
        throughput = svg_line_chart(
            f"{name}.{result['rpc']}: throughput vs offered rate",
            rates,
            {
                "offered": rates,
                "measured": [r["m_throughput"] for r in rows],
                "predicted": [r["p_throughput"] for r in rows],
            },
            x_label="offered rate (calls/s)",
            y_label="calls/s",
        )
        sections.append(
            (
                f"{name} ({'PASS' if result['passed'] else 'FAIL'})",
                verdict + latency + throughput + html_table(rows, COLUMNS),
            )
        )
    provenance = payload["calibration"]["provenance"]
    record = {
        "verdict": "PASS" if payload["passed"] else "FAIL",
        "calibration": payload["calibration"]["source"],
        "calibration measured": provenance.get("measured"),
        "calibration command": provenance.get("command"),
        "commit": payload["meta"]["commit"],
        "host": payload["meta"]["host"],
        "time": payload["meta"]["time"],
        "knee": payload["bounds"]["knee"],
    }
    write_html(path, "ShopTwin capacity validate: model vs real services", record, sections)
