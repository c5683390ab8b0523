"""Markdown for the overhead benchmark's results (renders dicts; runs nothing)."""

from __future__ import annotations

from typing import Any


def _ms(us: float | None) -> str:
    return "-" if us is None or us != us else f"{us / 1000:.2f}"


def _us(us: float | None) -> str:
    return "-" if us is None else f"{us:.0f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def overhead_markdown(result: dict[str, Any], *, threshold: float | None = None) -> str:
    """The overhead table: minimal app vs our target per framework x server x model x handler."""
    lines = [
        "# Target overhead: our targets vs a minimal app",
        "",
        f"Generator: {result['command']}; {result['rounds']} round(s) per side, interleaved; medians. "
        "Server CPU per request (user + system time of the server's processes / requests) is the figure "
        "least moved by other work on a shared machine.",
        "",
        "| framework | server | handler | model | minimal rps | target rps | ratio | minimal P50 / P99 ms "
        "| target P50 / P99 ms | P99 ratio | server CPU µs/request minimal / target | CPU ratio | errors |",
        "|---|---|---|---|---:|---:|---:|---|---|---:|---|---:|---:|",
    ]
    for r in result["rows"]:
        m, t = r["minimal"], r["target"]
        flag = ""
        if threshold is not None and (r["ratio_throughput"] or 0) < threshold:
            flag = " ⚠"
        lines.append(
            f"| {r['framework']} | {r['server']} | {r['handler'] or '-'} | {r['model']} "
            f"| {m['throughput_rps']:,.0f} | {t['throughput_rps']:,.0f} "
            f"| {_ratio(r['ratio_throughput'])}{flag} "
            f"| {_ms(m['p50_us'])} / {_ms(m['p99_us'])} | {_ms(t['p50_us'])} / {_ms(t['p99_us'])} "
            f"| {_ratio(r['ratio_p99'])} | {_us(m.get('server_cpu_us_per_request'))} / "
            f"{_us(t.get('server_cpu_us_per_request'))} | {_ratio(r.get('ratio_cpu_per_request'))} "
            f"| {m['errors']} / {t['errors']} |"
        )
    if threshold is not None:
        lines += ["", f"⚠: target throughput below {threshold:.2f} x the minimal app's."]
    return "\n".join(lines) + "\n"


def handler_styles_markdown(result: dict[str, Any]) -> str:
    """The handler-style table: inline vs threadpool per model."""
    lines = [
        "# FastAPI handler style: inline (event loop) vs threadpool",
        "",
        f"Closed-loop sweep over {result['sweep_connections']} connections ({result['generator']}, "
        f"{result['duration_s']:g} s each): the best throughput whose P99 meets the SLO. Then "
        f"{result['open_loop_generator']} at one common rate.",
        "",
        "| model | handler | SLO P99 ms | throughput under SLO rps (connections) | max throughput rps "
        "| common rate rps | P50 / P99 ms at that rate | errors at that rate |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in result["rows"]:
        at = r.get("at_common_rate") or {}
        best = f"{r['throughput_under_slo_rps']:,.0f} ({r['connections_at_best'] or '-'})"
        lines.append(
            f"| {r['model']} | {r['handler']} | {r['slo_p99_ms']:g} | {best} "
            f"| {r['max_throughput_rps']:,.0f} "
            f"| {r.get('common_rate_rps') or '-'} | {_ms(at.get('p50_us'))} / {_ms(at.get('p99_us'))} "
            f"| {at.get('errors', '-')} |"
        )
    return "\n".join(lines) + "\n"


def engines_markdown(result: dict[str, Any]) -> str:
    """The generator-cost table: per generator and load, the median over rounds (min-max in brackets) of the
    generator's CPU per request, its busy share of a core, the throughput and the corrected latency."""
    groups: dict[tuple[str, str, Any], list[dict[str, Any]]] = {}
    for row in result["rows"]:
        groups.setdefault((row["engine"], row["loop"], row["rate_rps"]), []).append(row)

    def med(rows: list[dict[str, Any]], key: str, fmt: str = "{:,.0f}", spread: bool = False) -> str:
        vals = sorted(float(r[key]) for r in rows if r.get(key) is not None)
        if not vals:
            return "-"
        mid = vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
        text = fmt.format(mid)
        return f"{text} ({fmt.format(vals[0])}-{fmt.format(vals[-1])})" if spread and len(vals) > 1 else text

    lines = [
        f"# Load generators' own cost ({result['target']}, generator on CPU {result['generator_cpus']})",
        "",
        f"{result['rounds']} interleaved rounds of {result['duration_s']:g} s (+{result['warmup_s']:g} s "
        f"warm-up); closed loop with {result['closed_users']} users/connections; medians (min-max).",
        "",
        "| generator | load | generator CPU µs/request | generator busy % of a core | throughput rps "
        "| P50 ms | P99 ms | late sends | warnings |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for (engine, _loop, rate), rows in groups.items():
        load = f"open {rate:,.0f} rps" if rate else "closed"
        warnings = sorted({w for r in rows for w in r.get("warnings") or []})
        lines.append(
            f"| {engine} | {load} | {med(rows, 'generator_cpu_us_per_request', spread=True)} "
            f"| {med(rows, 'generator_busy_percent')} | {med(rows, 'throughput_rps')} "
            f"| {_median_ms(rows, 'p50_us')} | {_median_ms(rows, 'p99_us')} "
            f"| {med(rows, 'late_sends_share', '{:.1%}')} | {', '.join(warnings) or '-'} |"
        )
    return "\n".join(lines) + "\n"


def _median_ms(rows: list[dict[str, Any]], key: str) -> str:
    vals = sorted(float(r[key]) / 1000 for r in rows if r.get(key) is not None)
    if not vals:
        return "-"
    return f"{vals[len(vals) // 2]:.2f}"
