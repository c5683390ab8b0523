"""One lean-engine run of the ``api`` scenario (POST /predict with a fixed body) as a measurement row: the
generator on CPU 0 (its CPU per request and busiest second from the record's ``generator_headroom``), both
cores' busy share from /proc/stat, throughput, corrected P50/P99, errors and late sends. Shared by
``engine_ceiling`` and ``paced_floor``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploybench.loadtests.runner import run_load
from tests.measurements.cpu import busy_since, cpu_ticks

GENERATOR_CPU = 0


def lean_api_row(
    url: str, tmp: str, body: bytes, duration_s: float, *, rate: float | None, users: int | None,
    warmup_s: float = 1.0,
) -> dict[str, Any]:  # fmt: skip
    """Open loop at ``rate`` (constant arrivals, ``users`` connections at most) or, without a rate, closed
    loop with ``users`` connections."""
    payload = Path(tmp, "payload.json")
    payload.write_bytes(body)
    options = {"path": "/predict", "method": "POST", "payload": str(payload)}
    before = cpu_ticks()
    rec = run_load(url, "api", duration_s=duration_s, warmup_s=warmup_s, rate_rps=rate, users=users,
                   load_model="constant" if rate else "closed", generator_cpus=[GENERATOR_CPU],
                   results_dir=tmp, scenario_options=options)  # fmt: skip
    busy = busy_since(before)
    s = rec.series[0]
    head = rec.config["generator_headroom"] or {}
    pacing = rec.config.get("pacing") or {}
    sent = pacing.get("sent") or 0
    return {
        "offered_rps": rate, "answered": s.count, "throughput_rps": s.throughput_rps,
        "cpu_us_per_request": head.get("cpu_us_per_request"),
        "busy_percent_max": head.get("busy_percent_max"), **busy,
        "p50_us": s.latency_us["p50"], "p99_us": s.latency_us["p99"], "errors": sum(s.errors.values()),
        "late_share": round(pacing.get("late_sends", 0) / sent, 4) if sent else None,
        "warnings": [w.code for w in rec.warnings],
    }  # fmt: skip
