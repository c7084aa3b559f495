"""Summary tables and report sections of model-mode, live-mode and validation results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from simulator.report import html_table, svg_line_chart, table

LATENCY_COLUMNS = ["rpc", "calls", "failed_network", "p50_ms", "p95_ms", "p99_ms", "p999_ms"]


def _hours(window_starts: Sequence[float]) -> list[float]:
    return [t / 3600.0 for t in window_starts]


def latency_rows(latencies: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"rpc": name, **values} for name, values in latencies.items()]


def model_summary(result: Mapping[str, Any]) -> str:
    """The terminal summary of a model-mode result (``ModelResult.as_dict()``)."""
    lines = [
        f"scenario {result['scenario']} (seed {result['seed']}): {result['shoppers']:,} shoppers, "
        f"{result['simulated_s'] / 3600:.1f} simulated hours in {result['wall_s']:.1f} s wall, "
        f"{result['events']:,} events ({result['events_per_s']:,.0f}/s)",
        "",
        table(latency_rows(result["rpc_latencies"]), LATENCY_COLUMNS),
        "",
        table(
            [
                {"service": name, **values, **result["saturation"]["services"].get(name, {})}
                for name, values in result["utilisation"].items()
            ],
            [
                "service",
                "workers",
                "mean",
                "peak_window",
                "mean_queue_length_peak_window",
                "load_multiplier_at_saturation",
            ],
        ),
    ]
    saturation = result["saturation"]
    if "bottleneck" in saturation:
        lines.append(
            f"saturation: {saturation['bottleneck']} first, at {saturation['load_multiplier']}x "
            "this scenario's load (shoppers and fleet scaled together: "
            f"~{saturation['shoppers_per_day_at_saturation']:,} shoppers/day)"
        )
    d = result["deliveries"]
    lines.append(
        f"orders: {d['placed']} placed, {d['delivered_on_time']} on time, "
        f"{d['delivered_late']} late, {d['failed']} failed"
    )
    for reason, count in sorted(d["reasons"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {count:>7}  {reason}")
    r = result["recommendations"]
    lines.append(
        f"recommendations: {r['shown']:,} shown, {r['clicked']:,} clicked, click-through "
        f"{r['click_through']:.2%} (simulated recommender, quality "
        f"{r['simulated_recommender_quality']})"
    )
    n = result["network"]
    lines.append(f"network: {n['calls']:,} calls, dropped by the 5G model: {n['dropped'] or 0}")
    t = result["telemetry"]
    lines.append(
        f"telemetry: {t['readings']:,} readings in {t['batches']:,} batches, "
        f"{t['readings_resent']:,} resent"
    )
    c = result["cold_chain"]
    lines.append(
        f"cold chain: {c['vans_with_box']} vans with a box, hottest {c['max_box_temperature_c']} "
        f"C, {c['van_minutes_above_limit']} van-minutes above {c['limit_c']} C"
    )
    return "\n".join(lines)


def model_sections(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Report sections (heading, html) of a model-mode result."""
    s = result["series"]
    x = _hours(s["window_start_s"])
    deliveries = s["deliveries"]
    sections = [
        ("Latency per RPC", html_table(latency_rows(result["rpc_latencies"]), LATENCY_COLUMNS)),
        (
            "Latency percentiles over time",
            svg_line_chart("p50 latency (ms)", x, s["latency_p50_ms"], log_y=True)
            + svg_line_chart("p99 latency (ms)", x, s["latency_p99_ms"], log_y=True),
        ),
        ("Throughput", svg_line_chart("calls per second", x, s["throughput_rps"])),
        (
            "Utilisation and queues",
            svg_line_chart("utilisation (busy workers / workers)", x, s["utilisation"])
            + svg_line_chart("mean queue length", x, s["queue_length"])
            + html_table(
                [{"service": k, **v} for k, v in result["saturation"]["services"].items()],
                ["service", "peak_utilisation", "load_multiplier_at_saturation"],
            ),
        ),
        (
            "Deliveries",
            svg_line_chart(
                "deliveries per window",
                x,
                {
                    "on time": [w[0] for w in deliveries],
                    "late": [w[1] for w in deliveries],
                    "failed": [w[2] for w in deliveries],
                },
            )
            + html_table(
                [{"reason": k, "orders": v} for k, v in result["deliveries"]["reasons"].items()],
                ["reason", "orders"],
            ),
        ),
        (
            "Recommendation click-through",
            svg_line_chart("click-through rate", x, {"CTR": s["click_through"]}),
        ),
        (
            "Intent accuracy",
            "<p>Model mode has no classifier; live mode measures intent accuracy against the "
            "simulator's ground truth.</p>",
        ),
    ]
    return sections


def validation_summary(results: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        {
            "case": r["name"],
            "rho": r["rho"],
            "theory_ms": r["theory_s"] * 1000,
            "simulated_ms": r["simulated_s"] * 1000,
            "ci95_ms": f"{r['ci_low_s'] * 1000:.2f}..{r['ci_high_s'] * 1000:.2f}",
            "error": f"{r['relative_error']:+.2%}",
            "result": "pass" if r["passed"] else "FAIL",
        }
        for r in results
    ]
    return table(rows, ["case", "rho", "theory_ms", "simulated_ms", "ci95_ms", "error", "result"])


def validation_sections(results: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    rows = [
        {
            "case": r["name"],
            "kind": r["kind"],
            "rho": r["rho"],
            "theory W (ms)": r["theory_s"] * 1000,
            "simulated W (ms)": r["simulated_s"] * 1000,
            "95% CI low": r["ci_low_s"] * 1000,
            "95% CI high": r["ci_high_s"] * 1000,
            "relative error": r["relative_error"],
            "replications": r["replications"],
            "passed": r["passed"],
        }
        for r in results
    ]
    return [("Queueing-theory validation (mean time in system W)", html_table(rows, list(rows[0])))]


def live_summary(result: Mapping[str, Any]) -> str:
    """The terminal summary of a live-mode result (``LiveResult.as_dict()``)."""
    calls = result["calls"]
    rows = [{"rpc": rpc, **counts} for rpc, counts in sorted(calls["by_rpc"].items())]
    statuses = sorted({k for c in calls["by_rpc"].values() for k in c if k.isupper()})
    lines = [
        f"scenario {result['scenario']} (seed {result['seed']}) live at {result['speed']}x: "
        f"{result['shoppers']} shoppers, {result['simulated_s'] / 3600:.2f} simulated hours in "
        f"{result['wall_s']:.1f} s",
        "",
        table(rows, ["rpc", *statuses, "network_dropped", "p50_ms", "p99_ms"]),
        "",
        f"failed calls: {calls['failed_by_network']} caused by the 5G model, "
        f"{calls['failed_other']} other",
    ]
    d = result["orders"]
    lines.append(
        f"orders: {d['placed']} placed, {d['delivered_on_time']} on time, "
        f"{d['delivered_late']} late, {d['failed']} failed, {d['not_accepted']} not accepted"
    )
    for reason, count in sorted(d["reasons"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {count:>7}  {reason}")
    t = result["telemetry"]
    verdict = "equal" if t["stored"] == t["acknowledged"] else "DIFFERENT"
    lines.append(
        f"telemetry: {t['generated']} readings generated, {t['acknowledged']} acknowledged, "
        f"{t['stored']} stored ({verdict}), {t['duplicates']} duplicates, "
        f"{t['batches_dropped_by_network']} batches dropped by the 5G model and resent, "
        f"{t['batches_reordered_by_network']} acknowledged out of order"
    )
    r = result["recommendations"]
    lines.append(
        f"recommendations: {r['shown']} shown, {r['clicked']} clicked, click-through "
        f"{r['click_through']:.2%}, mean taste affinity of shown items {r['mean_affinity']:.2f}"
    )
    i = result["intent"]
    lines.append(
        f"intent: {i['classified']} classified, accuracy against ground truth {i['accuracy']:.2%}"
        if i["classified"]
        else "intent: nothing classified"
    )
    return "\n".join(lines)


def live_sections(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    calls = result["calls"]
    rows = [{"rpc": rpc, **counts} for rpc, counts in sorted(calls["by_rpc"].items())]
    columns = sorted({k for r in rows for k in r if k != "rpc"})
    s = result["series"]
    x = [t / 3600.0 for t in s["window_start_s"]]
    return [
        ("Calls by status", html_table(rows, ["rpc", *columns])),
        (
            "Latency over time",
            svg_line_chart("p50 latency (ms)", x, s["latency_p50_ms"], log_y=True)
            + svg_line_chart("p99 latency (ms)", x, s["latency_p99_ms"], log_y=True),
        ),
        ("Throughput", svg_line_chart("calls per simulated second", x, s["throughput"])),
        (
            "Orders",
            html_table(
                [{"reason": k, "orders": v} for k, v in result["orders"]["reasons"].items()],
                ["reason", "orders"],
            ),
        ),
        (
            "Recommendations and intent",
            svg_line_chart("click-through", x, {"CTR": s["click_through"]})
            + svg_line_chart("intent accuracy", x, {"accuracy": s["intent_accuracy"]}),
        ),
    ]
