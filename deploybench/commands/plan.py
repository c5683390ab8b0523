"""`deploybench plan RESULTS --traffic 2000rps`: replicas, cores and cost per deployment choice to carry a
traffic under the SLO it was measured under, from a compare folder or load records
(``deploybench.decisions.plan``)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

from deploybench.compare_doc import CompareRun, ScalingRow, scaling_rows
from deploybench.decisions.plan import (
    HOURS_PER_MONTH,
    PlanRequest,
    PlanRow,
    load_capacities,
    parse_headroom,
    parse_price,
    parse_slo_p99_ms,
    parse_traffic,
    plan,
)
from deploybench.errors import UsageError
from deploybench.io import write_json_atomic
from deploybench.reports.compare_render import SCALING_HEADERS, scaling_cells


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results",
        nargs="+",
        metavar="RESULTS",
        help="compare folders or compare.json, load records, folders",
    )
    parser.add_argument(
        "--traffic", required=True, help="the peak traffic to carry, with its unit: 2000rps, 2k/s, 7.2M/h"
    )
    parser.add_argument(
        "--slo",
        default=None,
        help="the P99 SLO, e.g. p99<50ms: a compare's own (checked), needed for load records",
    )
    parser.add_argument(
        "--headroom", default="0%", help="share of each replica's capacity kept free, e.g. 30%% (default 0%%)"
    )
    parser.add_argument(
        "--core-hour-price", default=None, help="price of one core for one hour (e.g. 0.04): adds the costs"
    )
    parser.add_argument(
        "--cores-per-replica",
        type=int,
        default=None,
        help="cores per replica (default: as measured); other than measured is extrapolated (said so)",
    )
    parser.add_argument("--json", dest="json_out", metavar="FILE", help="also write the plan as JSON")


def _range(r: tuple[float, float] | None, fmt: str = "{:,.0f}") -> str:
    if r is None:
        return "—"
    a, b = r
    return fmt.format(a) if a == b else f"{fmt.format(a)}-{fmt.format(b)}"


def _text_table(table: list[list[str]]) -> list[str]:
    """Aligned columns, a rule under the header row."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def render(rows: list[PlanRow], left: list[str], req: PlanRequest, slo_ms: float) -> str:
    price = req.core_hour_price
    head = f"Plan: {req.traffic_rps:,.0f} rps under P99 < {slo_ms:g} ms, {req.headroom:.0%} headroom" + (
        f", {price:g} per core-hour ({HOURS_PER_MONTH:g} h a month)" if price is not None else ""
    )
    headers = ["choice", "capacity/replica (rps)", "95% interval", "cores/replica", "replicas", "cores"]
    if price is not None:
        headers += ["cost/month", "cost/month range", "cost per 1M requests"]
    table = [headers]
    for r in rows:
        cells = [
            r.label,
            f"{r.capacity_rps:,.0f}",
            _range(None if r.capacity_lo_rps is None else (r.capacity_lo_rps, r.capacity_hi_rps or 0.0)),
            str(r.cores_per_replica) + (" (extrapolated)" if r.extrapolated else ""),
            f"{r.replicas} ({_range(r.replicas_range)})" if r.replicas_range else str(r.replicas),
            f"{r.cores} ({_range(r.cores_range)})" if r.cores_range else str(r.cores),
        ]
        if price is not None:
            cells += [
                f"{r.cost_per_month:,.2f}",
                _range(r.cost_per_month_range, "{:,.2f}"),
                f"{r.cost_per_million:.4f}",
            ]
        table.append(cells)
    out = [head, "", *_text_table(table), ""]
    for r in rows:
        out += [f"note: {r.label}: {n}" for n in r.notes]
    out += [f"left out: {line}" for line in left]
    out.append(
        "note: replicas = ceil(traffic / (capacity x (1 - headroom))); the range comes from the ends of the "
        "measured interval (its high end: the fewest replicas)"
    )
    return "\n".join(out) + "\n"


def render_scaling(rows: list[ScalingRow]) -> str:
    """The same deployment at several worker counts (the compare report's scaling table, as text)."""
    lines = _text_table([SCALING_HEADERS, *scaling_cells(rows)])
    return "Scaling (measured, same deployment at several worker counts)\n\n" + "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    req = PlanRequest(
        traffic_rps=parse_traffic(args.traffic),
        headroom=parse_headroom(args.headroom),
        core_hour_price=None if args.core_hour_price is None else parse_price(args.core_hour_price),
        cores_per_replica=args.cores_per_replica,
    )
    if req.cores_per_replica is not None and req.cores_per_replica < 1:
        raise UsageError(f"--cores-per-replica must be >= 1, got {req.cores_per_replica}")
    slo = parse_slo_p99_ms(args.slo) if args.slo else None
    runs: list[CompareRun] = []
    caps, left, slo_ms = load_capacities(args.results, slo, runs)
    rows = plan(caps, req)
    scaling = [row for run in runs for row in scaling_rows(run)]
    sys.stdout.write(render(rows, left, req, slo_ms))
    if scaling:
        sys.stdout.write("\n" + render_scaling(scaling))
    if args.json_out:
        doc: dict[str, Any] = {
            "traffic_rps": req.traffic_rps,
            "headroom": req.headroom,
            "core_hour_price": req.core_hour_price,
            "hours_per_month": HOURS_PER_MONTH,
            "slo_p99_ms": slo_ms,
            "rows": [r.to_dict() for r in rows],
            "left_out": left,
            "scaling": [asdict(r) for r in scaling],
        }
        write_json_atomic(args.json_out, doc)
    return 0
