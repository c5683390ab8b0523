"""deploybench's exact figures in Locust's web UI: three extra tabs and a JSON URL.

Locust's own charts and statistics table are rounded (1 ms / 10 ms buckets) and, in an open loop, uncorrected.
This module adds deploybench's own figures, live while a test runs, from the plugin's ``Measurement`` (a local
runner) or the workers' latest snapshots (the master: its merged view, histograms added):

- ``GET <web-base-path>/deploybench/stats``: JSON, the figures of the test (see :meth:`LiveStats.payload`);
- three tabs in Locust's React UI, through its extension points (as in Locust's
  ``examples/extend_web_ui.py``: ``template_args`` ``extended_tabs`` / ``extended_tables`` /
  ``extended_csv_files``, and the ``extended_stats`` key of the ``/stats/requests`` answer that the UI polls
  every 2 s while a test runs):

  * **deploybench** (``?tab=deploybench``): per endpoint, count, errors, in flight, achieved rate and the
    corrected and uncorrected P50 / P90 / P99 / P99.9 / max in ms (µs resolution);
  * **Pacing** (``?tab=deploybench-pacing``): open loop, offered (configured) vs scheduled vs achieved
    rate, sends, late and dropped sends, not-sent and unfinished slots, the largest send lag;
  * **Generator CPU** (``?tab=deploybench-cpu``): each Locust process's CPU (now, mean and max of the
    sampled %, busy share = CPU time over wall time, CPU µs per request).

Reading the figures never changes the measurement (no window is closed, nothing is sealed or reset).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from flask import Blueprint, Response, jsonify, request
from hdrh.histogram import HdrHistogram

from deploybench.loadtests.core import busy_percent
from deploybench.measure import DROPPED, NOT_SENT, UNFINISHED, UNSENT_KINDS, EndpointStats
from deploybench.stats import merge_histograms, new_histogram, summarize_histogram

STATS_PATH = "/deploybench/stats"
TAB_LATENCY = "deploybench"
TAB_PACING = "deploybench-pacing"
TAB_CPU = "deploybench-cpu"
CACHE_S = 1.0  # several browsers polling share one computation per second (the master decodes histograms)
LATENCY_KEYS = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p999"), ("max", "max"))
LATENCY_TITLES = {"p50": "P50", "p90": "P90", "p99": "P99", "p999": "P99.9", "max": "Max"}

# Column keys are plain lower-case words: Locust's UI camel-cases the keys of what it reads, and these stay.
_LATENCY_COLUMNS = [
    {"key": "name", "title": "Endpoint"},
    {"key": "count", "title": "Count"},
    {"key": "errors", "title": "Errors"},
    {"key": "inflight", "title": "In flight"},
    {"key": "rps", "title": "Achieved req/s"},
    *({"key": k, "title": f"{title} ms"} for k, title in LATENCY_TITLES.items()),
    *({"key": "u" + k, "title": f"Uncorr. {title} ms"} for k, title in LATENCY_TITLES.items()),
]
_PACING_COLUMNS = [
    {"key": "name", "title": "Generator"},
    {"key": "offered", "title": "Offered req/s"},
    {"key": "scheduled", "title": "Scheduled req/s"},
    {"key": "achieved", "title": "Achieved req/s"},
    {"key": "sent", "title": "Sent"},
    {"key": "late", "title": "Late sends"},
    {"key": "dropped", "title": "Dropped"},
    {"key": "notsent", "title": "Not sent"},
    {"key": "unfinished", "title": "Unfinished"},
    {"key": "maxlag", "title": "Max send lag ms"},
]
_CPU_COLUMNS = [
    {"key": "name", "title": "Process"},
    {"key": "pid", "title": "PID"},
    {"key": "cpunow", "title": "CPU % now"},
    {"key": "cpumean", "title": "CPU % mean"},
    {"key": "cpumax", "title": "CPU % max"},
    {"key": "busy", "title": "Busy % of a core"},
    {"key": "requests", "title": "Requests"},
    {"key": "cpuperreq", "title": "CPU µs / request"},
]


def _ms(us: int | float | None) -> float | None:
    return None if us is None else round(us / 1000.0, 3)


def _rate(n: float, window_s: float) -> float | None:
    return round(n / window_s, 3) if window_s > 0 else None


class _Endpoint:
    """One endpoint's live figures, pooled over generators (histograms added, never averaged)."""

    def __init__(self, open_loop: bool) -> None:
        # the first generator's histograms are used as they are (read only): one process merges nothing
        self.latency: HdrHistogram | None = None
        self.uncorrected: HdrHistogram | None = None
        self.open_loop = open_loop
        self.parts = 0
        self.count = 0
        self.errors: Counter[str] = Counter()
        self.in_flight = 0
        self.answered = 0  # requests that had Locust's request event (Locust's own count includes them)
        self.rps = 0.0  # sum over generators of count / that generator's window

    def add(self, ep: EndpointStats, in_flight: int, window_s: float) -> None:
        first = self.parts == 0
        self.parts += 1
        self.latency = (
            ep.latency if first else merge_histograms([self.latency or new_histogram(), ep.latency])
        )
        if ep.uncorrected is not None:
            unc = self.uncorrected
            self.uncorrected = ep.uncorrected if unc is None else merge_histograms([unc, ep.uncorrected])
        self.count += ep.count
        self.errors.update(ep.errors)
        self.in_flight += in_flight
        sent_errors = sum(v for k, v in ep.errors.items() if k not in UNSENT_KINDS)
        self.answered += ep.count + sent_errors + ep.warmup_count + ep.after_window_count
        if window_s > 0:
            self.rps += ep.count / window_s

    def to_json(self, name: str, offered_rps: float | None) -> dict[str, Any]:
        unc = self.uncorrected if self.open_loop else None
        if self.open_loop and unc is None:
            unc = new_histogram()
        return {
            "name": name,
            "count": self.count,
            "errors": sum(self.errors.values()),
            "errors_by_kind": dict(sorted(self.errors.items())),
            "in_flight": self.in_flight,
            "scheduled": self.count + sum(self.errors.values()) + self.in_flight if unc is not None else None,
            "answered": self.answered,
            "throughput_rps": round(self.rps, 3),
            "offered_rps": offered_rps,
            "latency_us": summarize_histogram(self.latency or new_histogram()),
            "uncorrected_latency_us": summarize_histogram(unc) if unc is not None else None,
        }


class LiveStats:
    """The figures the tabs and the JSON URL show, computed from a :class:`Plugin` (at most once a
    ``CACHE_S``)."""

    def __init__(self, plugin: Any) -> None:
        self.plugin = plugin
        self._cached: tuple[float, dict[str, Any]] | None = None

    # -- the JSON ------------------------------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < CACHE_S:
            return self._cached[1]
        data = self._compute()
        self._cached = (now, data)
        return data

    def _compute(self) -> dict[str, Any]:
        p = self.plugin
        runner = p.runner
        o = p.options
        role = "master" if p.is_master else "local"
        out: dict[str, Any] = {
            "source": "deploybench",
            "role": role,
            "state": getattr(runner, "state", None),
            "load_model": o.load_model,
            "open_loop": o.open_loop,
            "rate_rps": o.rate_rps if o.open_loop else None,
            "record": str(p.record_path) if p.record_path is not None else None,
            "window_s": 0.0,
            "window_closed": False,
            "sealed": False,
            "endpoints": [],
            "pacing": None,
            "generators": [],
            "locust": _locust_counts(runner),
        }
        m = p.measurement
        if m is None:
            return out  # no test started yet
        # one entry per generator: (label, generator info, pacing counters, window_s, endpoints, in flight)
        parts: list[tuple[str, dict[str, Any], dict[str, int], float, dict[str, EndpointStats], Counter]] = []
        if p.is_master:
            for _cid, snap in sorted(p.worker_states.items(), key=lambda kv: _worker_index(kv[1], kv[0])):
                gen = dict(snap.get("generator") or {})
                eps = {n: EndpointStats.from_wire(_without_blocks(w)) for n, w in snap["endpoints"].items()}
                flight = Counter({n: int(w.get("in_flight", 0)) for n, w in snap["endpoints"].items()})
                label = f"worker {gen.get('worker_index', '?')}"
                parts.append(
                    (label, gen, dict(snap.get("pacing") or {}), float(snap["window_s"]), eps, flight)
                )
            out["window_closed"] = bool(parts) and all(s.get("closed") for s in p.worker_states.values())
            out["sealed"] = bool(parts) and all(s.get("sealed") for s in p.worker_states.values())
        else:
            now_ns = time.perf_counter_ns()
            gen = p.generator_info()
            pacing = p.schedule.counters() if p.schedule is not None else {}
            flight = _pending(m)
            parts.append(("local", gen, pacing, m.window_s(now_ns), dict(m.endpoints), flight))
            out["window_closed"] = m.window_end_ns is not None
            out["sealed"] = m.sealed
        out["window_s"] = round(max((part[3] for part in parts), default=0.0), 3)

        endpoints: dict[str, _Endpoint] = {}
        for _label, _gen, _pacing, window_s, eps, flight in parts:
            for name, ep in eps.items():
                acc = endpoints.get(name)
                if acc is None:
                    acc = endpoints[name] = _Endpoint(m.open_loop)
                acc.add(ep, flight.get(name, 0), window_s)
        offered = _offered(parts, endpoints, o.open_loop)
        out["endpoints"] = [endpoints[n].to_json(n, offered.get(n)) for n in sorted(endpoints)]
        if o.open_loop:
            rows = [_pacing_row(*part) for part in parts]
            out["pacing"] = {"total": _pacing_total(rows), "generators": rows if len(rows) > 1 else []}
        gens = []
        if p.is_master:  # the master's own process: it sends nothing, but its CPU is the UI's and the merge's
            gens.append(_cpu_row("master", {**p.generator_info(), "worker_index": None}))
        gens += [_cpu_row(label, gen) for label, gen, *_ in parts]
        out["generators"] = gens
        return out

    # -- the rows of the tabs -------------------------------------------------------------------------------
    def extended_stats(self) -> list[dict[str, Any]]:
        data = self.payload()
        latency = []
        for ep in data["endpoints"]:
            row: dict[str, Any] = {
                "name": ep["name"],
                "count": ep["count"],
                "errors": ep["errors"],
                "inflight": ep["in_flight"],
                "rps": round(ep["throughput_rps"], 1),
            }
            for src, key in LATENCY_KEYS:
                row[key] = _ms(ep["latency_us"].get(src))
                unc = ep["uncorrected_latency_us"]
                row["u" + key] = _ms(unc.get(src)) if unc is not None else None
            latency.append(row)
        pacing = []
        if data["pacing"] is not None:
            for r in [data["pacing"]["total"], *data["pacing"]["generators"]]:
                pacing.append({
                    "name": r["name"],
                    "offered": r["offered_rps"],
                    "scheduled": r["scheduled_rps"],
                    "achieved": r["achieved_rps"],
                    "sent": r["sent"],
                    "late": r["late_sends"],
                    "dropped": r["dropped"],
                    "notsent": r["not_sent"],
                    "unfinished": r["unfinished"],
                    "maxlag": _ms(r["max_send_lag_us"]),
                })  # fmt: skip
        cpu = [
            {
                "name": g["name"],
                "pid": g["pid"],
                "cpunow": g["cpu_percent_now"],
                "cpumean": g["cpu_percent_mean"],
                "cpumax": g["cpu_percent_max"],
                "busy": g["busy_percent"],
                "requests": g["requests"],
                "cpuperreq": g["cpu_us_per_request"],
            }
            for g in data["generators"]
        ]
        return [
            {"key": TAB_LATENCY, "data": latency},
            {"key": TAB_PACING, "data": pacing},
            {"key": TAB_CPU, "data": cpu},
        ]


def _locust_counts(runner: Any) -> dict[str, Any] | None:
    """Locust's own request counts now (its stats table's, unrounded counts), for a cross-check."""
    stats = getattr(runner, "stats", None)
    if stats is None:
        return None
    return {
        "num_requests": stats.total.num_requests,
        "num_failures": stats.total.num_failures,
        "endpoints": {f"{m} {n}": e.num_requests for (n, m), e in stats.entries.items()},
    }


def _worker_index(snap: dict[str, Any], cid: str) -> tuple[int, str]:
    idx = (snap.get("generator") or {}).get("worker_index")
    return (int(idx) if isinstance(idx, int) else 1 << 30, cid)


def _without_blocks(wire: dict[str, Any]) -> dict[str, Any]:
    """An endpoint's wire form without its time blocks (the live view needs the totals only, and decoding
    every block's histogram on each poll would cost the master time)."""
    return {**wire, "blocks": {}, "server_timing": {}}


def _pending(m: Any) -> Counter:
    """Open-loop slots of the window taken and not yet answered, per endpoint (as ``to_wire`` counts them)."""
    end = m.window_end_ns
    return Counter(
        n for n, t in list(m.pending.values()) if t >= m.window_start_ns and (end is None or t < end)
    )


def _offered(parts: list[Any], endpoints: dict[str, _Endpoint], open_loop: bool) -> dict[str, float]:
    """Open loop: the offered rate (the generators' rate shares) split among the endpoints by their slots."""
    if not open_loop:
        return {}
    total_rate = sum(float(g.get("rate_rps") or 0.0) for _l, g, *_ in parts if not g.get("refused"))
    slots = {n: e.count + sum(e.errors.values()) + e.in_flight for n, e in endpoints.items()}
    total = sum(slots.values())
    if not total or not total_rate:
        return {}
    return {n: round(total_rate * k / total, 3) for n, k in slots.items()}


def _pacing_row(
    label: str,
    gen: dict[str, Any],
    pacing: dict[str, int],
    window_s: float,
    eps: dict[str, EndpointStats],
    flight: Counter,
) -> dict[str, Any]:
    count = sum(e.count for e in eps.values())
    errors: Counter[str] = Counter()
    for e in eps.values():
        errors.update(e.errors)
    in_flight = sum(flight.values())
    scheduled = count + sum(errors.values()) + in_flight
    return {
        "name": label,
        "offered_rps": None if gen.get("refused") else gen.get("rate_rps"),
        "scheduled_rps": _rate(scheduled, window_s),
        "achieved_rps": _rate(count, window_s),
        "window_s": round(window_s, 3),
        "scheduled_in_window": scheduled,
        "answered_in_window": count,
        "scheduled": pacing.get("scheduled", 0),
        "sent": pacing.get("sent", 0),
        "late_sends": pacing.get("late_sends", 0),
        "dropped_sends": pacing.get("dropped_sends", 0),
        "dropped": errors[DROPPED],
        "not_sent": errors[NOT_SENT],
        "unfinished": errors[UNFINISHED],
        "max_send_lag_us": pacing.get("max_send_lag_us", 0),
    }


def _pacing_total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if len(rows) == 1:
        return {**rows[0], "name": "all"}
    window_s = max((r["window_s"] for r in rows), default=0.0)
    total: dict[str, Any] = {"name": "all", "window_s": window_s}
    offered = [r["offered_rps"] for r in rows if r["offered_rps"] is not None]
    total["offered_rps"] = round(sum(offered), 3) if offered else None
    for k in ("scheduled_rps", "achieved_rps"):  # a sum of rates, each over its generator's own window
        vals = [r[k] for r in rows if r[k] is not None]
        total[k] = round(sum(vals), 3) if vals else None
    for k in ("scheduled_in_window", "answered_in_window", "scheduled", "sent", "late_sends",
              "dropped_sends", "dropped", "not_sent", "unfinished"):  # fmt: skip
        total[k] = sum(int(r[k] or 0) for r in rows)
    total["max_send_lag_us"] = max((int(r["max_send_lag_us"] or 0) for r in rows), default=0)
    return total


def _cpu_row(label: str, gen: dict[str, Any]) -> dict[str, Any]:
    busy = busy_percent(gen)
    return {
        "name": label,
        "role": gen.get("role"),
        "pid": gen.get("pid"),
        "worker_index": gen.get("worker_index"),
        "cpu_percent_now": gen.get("cpu_percent_last"),  # CpuSampler's latest sample (1 s)
        "cpu_percent_mean": gen.get("cpu_percent_mean"),
        "cpu_percent_max": gen.get("cpu_percent_max"),
        "busy_percent": round(busy, 1) if busy is not None else None,
        "cpu_s": gen.get("cpu_s"),
        "wall_s": gen.get("wall_s"),
        "requests": gen.get("requests"),
        "cpu_us_per_request": gen.get("cpu_us_per_request"),
    }


def install(environment: Any, plugin: Any) -> LiveStats | None:
    """Add the JSON URL and the tabs to Locust's web UI (no-op without a web UI, e.g. headless or a worker;
    idempotent). Call from the ``init`` event, before Locust starts serving."""
    web_ui = getattr(environment, "web_ui", None)
    if web_ui is None or "deploybench" in web_ui.app.blueprints:
        return None
    live = LiveStats(plugin)
    base = getattr(environment.parsed_options, "web_base_path", "") or ""
    blueprint = Blueprint("deploybench", __name__, url_prefix=base or None)

    @blueprint.route(STATS_PATH)
    @web_ui.auth_required_if_enabled
    def deploybench_stats() -> Response:
        return jsonify(live.payload())

    web_ui.app.register_blueprint(blueprint)

    @web_ui.app.after_request
    def add_extended_stats(response: Response) -> Response:
        # Locust's UI polls /stats/requests; its rows for our tabs ride along as ``extended_stats``
        if request.path != f"{base}/stats/requests" or not response.is_json:
            return response
        body = response.get_json(silent=True)
        if isinstance(body, dict):
            body["extended_stats"] = live.extended_stats()
            response.set_data(json.dumps(body))
        return response

    web_ui.template_args.update(
        extended_tabs=[
            {"key": TAB_LATENCY, "title": "deploybench"},
            {"key": TAB_PACING, "title": "Pacing"},
            {"key": TAB_CPU, "title": "Generator CPU"},
        ],
        extended_tables=[
            {"key": TAB_LATENCY, "structure": _LATENCY_COLUMNS},
            {"key": TAB_PACING, "structure": _PACING_COLUMNS},
            {"key": TAB_CPU, "structure": _CPU_COLUMNS},
        ],
        extended_csv_files=[{"href": f".{STATS_PATH}", "title": "deploybench exact figures (JSON)"}],
    )
    return live


__all__ = ["STATS_PATH", "TAB_CPU", "TAB_LATENCY", "TAB_PACING", "LiveStats", "install"]
