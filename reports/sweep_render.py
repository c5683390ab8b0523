"""A sweep's report (``deploybench report SWEEP_FOLDER`` or ``.../sweep.json``): what was swept, one table row
per point (achieved throughput, corrected P50/P90/P99/P99.9, errors, the generator's cost, whether the point
could be the knee), the knee and how it was found, and the latency-throughput chart with the knee marked
(HTML; ``deploybench.reports.plots.sweep_png``). Formats: md, html, csv (the table's rows), json (the
summary).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deploybench.errors import UsageError
from deploybench.io import write_atomic, write_json_atomic
from deploybench.reports.render import (
    OUTPUT_NAMES,
    Block,
    Bullets,
    Heading,
    Image,
    Para,
    Table,
    blocks_to_html,
    blocks_to_markdown,
    fmt_ms,
    fmt_rate,
    fmt_ratio,
)
from deploybench.sweep import KNEE_RULE, POINT_PCTS, Sweep
from deploybench.vocabulary import REPORT_FORMATS

POINT_HEADERS = ["#", "point", "status", "achieved rps", "offered rps", "P50 ms", "P90 ms", "P99 ms",
                 "P99.9 ms", "errors", "gen µs/req", "gen busy", "power", "knee"]  # fmt: skip
POINT_ALIGN = "rllrrrrrrrrrrl"
CSV_COLUMNS = ["index", "axis", "value", "record", "status", "throughput_rps", "offered_rps",
               "p50_us", "p90_us", "p99_us", "p99.9_us", "error_ratio", "cpu_us_per_request",
               "busy_percent_max", "generator_bound", "power", "eligible", "why_not", "knee"]  # fmt: skip


def _knee_cell(sweep: Sweep, index: int) -> str:
    if sweep.knee is not None and sweep.knee.index == index:
        return "**knee**"
    return sweep.points[index].why_not or ""


def point_rows(sweep: Sweep) -> list[list[str]]:
    """The table's rows, one per point in sweep order."""
    rows = []
    for i, p in enumerate(sweep.points):
        lat = p.latency_us
        rows.append([
            str(i + 1), sweep.label(i), p.status, fmt_rate(p.throughput_rps), fmt_rate(p.offered_rps),
            *(fmt_ms(lat.get(k)) for k in POINT_PCTS), fmt_ratio(p.error_ratio),
            "-" if p.cpu_us_per_request is None else f"{p.cpu_us_per_request:,.0f}",
            "-" if p.busy_percent_max is None else f"{p.busy_percent_max:.0f}%",
            "-" if p.power is None else f"{p.power:.3g}", _knee_cell(sweep, i),
        ])  # fmt: skip
    return rows


def knee_para(sweep: Sweep) -> str:
    k = sweep.knee
    if k is None:
        return f"**Knee:** none: {sweep.knee_note.removeprefix('no knee: ')}."
    return (
        f"**Knee:** {sweep.label(k.index)}, {fmt_rate(k.throughput_rps)} rps achieved at P99 "
        f"{fmt_ms(k.p99_us)} ms: {sweep.knee_note}."
    )


def _what(sweep: Sweep) -> str:
    c = sweep.config
    target = c.get("target") or {}
    where = target.get("url") or " ".join(
        str(c[k]) for k in ("framework", "server", "model", "format") if c.get(k)
    )
    axis = "concurrency (closed loop: users)" if sweep.axis == "users" else "arrival rate (open loop, rps)"
    extra = f", {c['users']} senders" if sweep.axis == "rate" and c.get("users") else ""
    return (
        f"A {axis} sweep of `{where or target.get('kind', '?')}`, scenario `{c.get('scenario')}`, load model "
        f"`{sweep.load_model}`{extra}, engine `{c.get('engine', '?')}`: {len(sweep.points)} point(s) run in "
        f"order, each {c.get('duration_s', '?')} s measured after {c.get('warmup_s', 0)} s of warm-up, on "
        f"one target start."
        + (
            " Latency is corrected for coordinated omission (from intended send times)."
            if extra or sweep.axis == "rate"
            else ""
        )
        + f" Status: **{sweep.status}**"
        + (f" ({sweep.error})" if sweep.error else "")
        + "."
    )


def sweep_blocks(sweep: Sweep, *, plots: bool = False, title: str = "deploybench sweep") -> list[Block]:
    """The document of one sweep (``plots``: with the chart, which imports matplotlib)."""
    blocks: list[Block] = [Heading(1, title), Para(_what(sweep))]
    blocks.append(Heading(2, "Points"))
    blocks.append(Table(POINT_HEADERS, point_rows(sweep), POINT_ALIGN))
    blocks.append(Para(knee_para(sweep)))
    blocks.append(
        Bullets([
            f"Rule: {KNEE_RULE}.",
            "Power = achieved rps / P99 in ms (Kleinrock): it rises while more load buys throughput at "
            "little latency and falls once P99 grows faster than throughput; its maximum is the knee.",
            "gen µs/req, gen busy: the load generator's CPU per request and its busiest process's share of a "
            "core (its headroom); a generator-bound point's figures are the generator's.",
            "Each point's full record is in the sweep folder: "
            + ", ".join(f"`{p.record}`" for p in sweep.points),
        ])
    )  # fmt: skip
    if plots:
        from deploybench.reports import plots as plotting  # import cost: matplotlib, only for images

        png = plotting.sweep_png(sweep)
        if png is not None:
            blocks.append(Heading(2, "Latency-throughput curve"))
            blocks.append(Image("latency-throughput curve (P50, P99 vs achieved rps; knee circled)", png))
    return blocks


def csv_rows(sweep: Sweep) -> list[dict[str, Any]]:
    rows = []
    for i, p in enumerate(sweep.points):
        rows.append({
            "index": i + 1, "axis": sweep.axis, "value": p.value, "record": p.record, "status": p.status,
            "throughput_rps": p.throughput_rps, "offered_rps": p.offered_rps,
            **{f"{k}_us": p.latency_us.get(k) for k in POINT_PCTS}, "error_ratio": p.error_ratio,
            "cpu_us_per_request": p.cpu_us_per_request, "busy_percent_max": p.busy_percent_max,
            "generator_bound": p.generator_bound, "power": p.power, "eligible": p.eligible,
            "why_not": p.why_not, "knee": sweep.knee is not None and sweep.knee.index == i,
        })  # fmt: skip
    return rows


def write_sweep_report(
    sweep: Sweep,
    out_dir: str | Path,
    formats: Sequence[str] = ("md", "html"),
    *,
    title: str = "deploybench sweep",
) -> dict[str, Path]:
    """Write the sweep's report files into ``out_dir`` (the file names of ``deploybench report``); returns
    format -> path."""
    unknown = [f for f in formats if f not in REPORT_FORMATS]
    if unknown:
        raise UsageError(
            f"unknown report format(s) {', '.join(unknown)}; choose from {', '.join(REPORT_FORMATS)}"
        )
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    for fmt in formats:
        path = out_dir / OUTPUT_NAMES[fmt]
        if fmt == "md":
            write_atomic(path, blocks_to_markdown(sweep_blocks(sweep, plots=False, title=title)))
        elif fmt == "html":
            write_atomic(path, blocks_to_html(sweep_blocks(sweep, plots=True, title=title), title))
        elif fmt == "csv":
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for row in csv_rows(sweep):
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
            write_atomic(path, buf.getvalue())
        else:
            write_json_atomic(path, sweep.to_dict())
        written[fmt] = path
    return written
