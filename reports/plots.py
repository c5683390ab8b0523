"""PNG plots (matplotlib, Agg backend: the one matplotlib set-up) drawn from records and compare documents.

Micro records: latency per format (P50 and P99 at the smallest batch), latency vs batch size, throughput
(items/s) vs batch size. Load records: latency percentiles per endpoint, achieved vs offered throughput,
and P50/P99 and the rate per 1 s block over time (warm-up shaded). Each of these returns [(title,
png_bytes)]. Compare documents: latency-throughput curves and percentile spectra (PNG bytes, or None when
there is nothing to draw), and per choice small multiples of its search probes over time, from the probes'
own load records (``probe_timelines`` prepares the data, ``probe_timelines_png`` draws it). Sweeps
(``deploybench.sweep``): the latency-throughput curve with its knee (``sweep_png``).

Importing this module imports matplotlib (~0.5 s): renderers import it only when images are wanted.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from deploybench.compare_doc import CompareRun
from deploybench.frames import block_rows, cpu_rows
from deploybench.record import PERCENTILES, RunRecord, Series, pct_key
from deploybench.stats import decode_histogram, value_at_percentile
from deploybench.sweep import Sweep

Plot = tuple[str, bytes]
_DPI = 90


def _png(fig: matplotlib.figure.Figure, dpi: int = _DPI, tight: bool = True) -> bytes:
    buf = io.BytesIO()
    if tight:
        fig.tight_layout()
    # No timestamp/software metadata: the same records give the same bytes.
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _predict_series(record: RunRecord) -> list[Series]:
    return [
        s
        for s in record.series
        if s.params.get("case", "predict") == "predict"
        and "batch_size" in s.params
        and s.latency_us.get("p50")
    ]


def _label(s: Series) -> str:
    return f"{s.params.get('format', '?')} t{s.params.get('threads', '?')}"


def _batch_axis(ax: matplotlib.axes.Axes, batches: list[int]) -> None:
    if len(batches) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()


def micro_plots(record: RunRecord) -> list[Plot]:
    series = _predict_series(record)
    if not series:
        return []
    model = record.config.get("model", record.run_id)
    plots: list[Plot] = []

    # 1. Latency per format at the smallest batch size.
    smallest = min(int(s.params["batch_size"]) for s in series)
    at = sorted(
        (s for s in series if int(s.params["batch_size"]) == smallest),
        key=lambda s: (str(s.params.get("format")), int(s.params.get("threads", 0))),
    )
    fig, ax = plt.subplots(figsize=(7, 3.6))
    xs = range(len(at))
    width = 0.4
    ax.bar([x - width / 2 for x in xs], [s.latency_us["p50"] / 1000 for s in at], width, label="P50")
    ax.bar(
        [x + width / 2 for x in xs], [(s.latency_us.get("p99") or 0) / 1000 for s in at], width, label="P99"
    )
    ax.set_xticks(list(xs), [_label(s) for s in at], rotation=20)
    values = [s.latency_us["p50"] for s in at] + [s.latency_us.get("p99") or 0 for s in at]
    if min(values) > 0 and max(values) / min(values) > 20:
        ax.set_yscale("log")  # formats can differ by orders of magnitude
    ax.set_ylabel("latency per call (ms)")
    ax.set_title(f"{model}: latency per format, batch {smallest}")
    ax.legend()
    plots.append((f"{model}: latency per format (batch {smallest})", _png(fig)))

    # 2 + 3. Latency and throughput vs batch size, one line per format x threads.
    lines: dict[str, list[Series]] = defaultdict(list)
    for s in series:
        lines[_label(s)].append(s)
    batches = sorted({int(s.params["batch_size"]) for s in series})
    if len(batches) > 1:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for label in sorted(lines):
            pts = sorted(lines[label], key=lambda s: int(s.params["batch_size"]))
            ax.plot([int(s.params["batch_size"]) for s in pts], [s.latency_us["p50"] / 1000 for s in pts],
                    marker="o", label=label)  # fmt: skip
        _batch_axis(ax, batches)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("P50 latency per call (ms)")
        ax.set_title(f"{model}: latency vs batch size")
        ax.legend(fontsize="small")
        plots.append((f"{model}: latency vs batch size", _png(fig)))

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label in sorted(lines):
        pts = sorted(lines[label], key=lambda s: int(s.params["batch_size"]))
        ax.plot([int(s.params["batch_size"]) for s in pts], [s.items_per_s or 0 for s in pts],
                marker="o", label=label)  # fmt: skip
    _batch_axis(ax, batches)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput (items/s)")
    ax.set_title(f"{model}: throughput")
    ax.legend(fontsize="small")
    plots.append((f"{model}: throughput (items/s)", _png(fig)))
    return plots


def load_plots(record: RunRecord) -> list[Plot]:
    series = [s for s in record.series if s.latency_us.get("p50") is not None]
    if not series:
        return []
    plots: list[Plot] = []
    keys = [pct_key(p) for p in PERCENTILES]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(series)
    for i, s in enumerate(series):
        xs = [k + (i - (len(series) - 1) / 2) * width for k in range(len(keys))]
        ax.bar(xs, [(s.latency_us.get(k) or 0) / 1000 for k in keys], width, label=s.name)
    ax.set_xticks(range(len(keys)), [k.upper() for k in keys])
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{record.run_id}: latency percentiles")
    ax.legend(fontsize="small")
    plots.append((f"{record.run_id}: latency percentiles", _png(fig)))

    if any(s.throughput_rps is not None for s in series):
        fig, ax = plt.subplots(figsize=(7, 3.0))
        names = [s.name for s in series]
        ax.barh(names, [s.throughput_rps or 0 for s in series], label="achieved")
        offered = [s.offered_rps for s in series]
        if any(o is not None for o in offered):
            ax.scatter([o or 0 for o in offered], names, color="black", marker="|", s=300, label="offered",
                       zorder=3)  # fmt: skip
        ax.set_xlabel("requests/s")
        ax.set_title(f"{record.run_id}: throughput")
        ax.legend(fontsize="small")
        plots.append((f"{record.run_id}: throughput", _png(fig)))
    timeline = timeline_png(record)
    if timeline is not None:
        plots.append((f"{record.run_id}: over time", timeline))
    return plots


class SeriesTimeline(NamedTuple):
    """One endpoint's per-block figures, as plotted (x: each block's midpoint, s into the measured window)."""

    name: str
    mid_s: list[float]
    p50_ms: list[float]  # NaN where the block has no successful request (no latency to show)
    p99_ms: list[float]
    rate_rps: list[float]  # successes / block duration: 0 in a block where nothing completed (a stall)
    errors_per_s: list[float]
    p99_uncorrected_ms: list[float] | None = None  # open loop: from the actual send (None: closed loop)
    offered_rps: list[float] | None = None  # open loop: the block's slots / its duration


class CpuTimeline(NamedTuple):
    """The record's ``cpu_blocks`` as plotted: per block, % of one core (NaN where not measured)."""

    mid_s: list[float]
    generator_percent: list[float]
    server_percent: list[float]


class Timeline(NamedTuple):
    """What ``timeline_png`` and the compare report's per-probe panels draw from one load record."""

    run_id: str
    warmup_s: float  # shaded before 0 (not measured, so no latency blocks there)
    series: list[SeriesTimeline]  # endpoints with two or more blocks that saw a request
    cpu: CpuTimeline | None  # None: the record has no ``cpu_blocks`` (or no CPU figure in them)


def _nan_ms(value_us: float | None) -> float:
    return value_us / 1000 if value_us is not None else float("nan")


def timeline(record: RunRecord) -> Timeline | None:
    """The per-block data of a load record (``deploybench.frames.block_rows`` and ``cpu_rows``). A series is
    kept when two or more of its blocks saw a request (success or error); then every block of it is kept, an
    empty one (a stall: nothing completed) as rate 0 with no latency. None when there is nothing to draw."""
    rows = block_rows([record])
    series = []
    for s in record.series:
        mine = [r for r in rows if r["series"] == s.name]
        if sum(1 for r in mine if r["count"] or r["error_count"]) < 2:
            continue
        series.append(
            SeriesTimeline(
                s.name,
                [r["start_s"] + r["duration_s"] / 2 for r in mine],
                [_nan_ms(r["p50_us"]) for r in mine],
                [_nan_ms(r["p99_us"]) for r in mine],
                [r["throughput_rps"] or 0.0 for r in mine],
                [r["error_count"] / r["duration_s"] if r["duration_s"] else 0.0 for r in mine],
                [_nan_ms(r["p99_uncorrected_us"]) for r in mine]
                if any(r["p99_uncorrected_us"] is not None for r in mine)
                else None,
                [r["offered_rps"] or 0.0 for r in mine] if any(r["offered_rps"] for r in mine) else None,
            )
        )
    cpu_data = cpu_rows([record])
    cpu = None
    if any(r["generator_cpu_percent"] is not None or r["server_cpu_percent"] is not None for r in cpu_data):
        nan = float("nan")
        cpu = CpuTimeline(
            [r["start_s"] + r["duration_s"] / 2 for r in cpu_data],
            [nan if r["generator_cpu_percent"] is None else r["generator_cpu_percent"] for r in cpu_data],
            [nan if r["server_cpu_percent"] is None else r["server_cpu_percent"] for r in cpu_data],
        )
    if not series:
        return None
    return Timeline(record.run_id, float(record.config.get("warmup_s") or 0.0), series, cpu)


def _shade_warmup(ax: matplotlib.axes.Axes, warmup_s: float) -> None:
    if warmup_s > 0:
        ax.axvspan(-warmup_s, 0, color="0.9", label="_warm-up")


def timeline_png(record: RunRecord) -> bytes | None:
    """Per 1 s block of the measured window, per endpoint: P50 and P99 (from each block's own histogram) and
    the achieved rate with the errors; open loop also the uncorrected P99 (from the actual send) and the
    offered rate; the warm-up before the window is shaded (not measured, so empty).
    When the record has ``cpu_blocks``, a third panel: the generator's and the server's CPU per block (100 %
    = one core; the warm-up's blocks too). None when no series has two or more blocks (``timeline``)."""
    tl = timeline(record)
    if tl is None:
        return None
    if tl.cpu is not None:
        fig, axes = plt.subplots(3, 1, figsize=(7, 6.4), sharex=True, height_ratios=(3, 2, 2))
        lat, rate, cpu_ax = axes
    else:
        fig, (lat, rate) = plt.subplots(2, 1, figsize=(7, 4.8), sharex=True)
        cpu_ax = None
    for i, st in enumerate(tl.series):
        colour = f"C{i}"
        lat.plot(st.mid_s, st.p50_ms, "--", color=colour, marker=".", label=f"{st.name} P50")
        lat.plot(st.mid_s, st.p99_ms, "-", color=colour, marker=".", label=f"{st.name} P99")
        if st.p99_uncorrected_ms is not None:
            lat.plot(st.mid_s, st.p99_uncorrected_ms, "-.", color=colour, alpha=0.6,
                     label=f"{st.name} P99 uncorrected")  # fmt: skip
        rate.plot(st.mid_s, st.rate_rps, color=colour, marker=".", label=f"{st.name} ok")
        if st.offered_rps is not None:
            rate.plot(st.mid_s, st.offered_rps, "--", color=colour, alpha=0.6, label=f"{st.name} offered")
        if any(st.errors_per_s):
            rate.plot(st.mid_s, st.errors_per_s, ":", color=colour, marker="x", label=f"{st.name} errors")
    for ax in (lat, rate, cpu_ax):
        if ax is not None:
            _shade_warmup(ax, tl.warmup_s)
    if tl.warmup_s > 0:
        lat.text(-tl.warmup_s / 2, 0.5, "warm-up\n(not measured)", transform=lat.get_xaxis_transform(),
                 ha="center", va="center", fontsize="small", color="0.4")  # fmt: skip
    lat.set_yscale("log")
    lat.set_ylabel("latency (ms)")
    lat.set_title(f"{record.run_id}: per 1 s block")
    lat.legend(fontsize="x-small", ncol=2)
    rate.set_ylabel("requests/s")
    rate.legend(fontsize="x-small", ncol=2)
    bottom = rate
    if cpu_ax is not None and tl.cpu is not None:
        cpu_ax.plot(tl.cpu.mid_s, tl.cpu.generator_percent, color="0.3", marker=".", label="load generator")
        cpu_ax.plot(tl.cpu.mid_s, tl.cpu.server_percent, color="C3", marker=".", label="server")
        cpu_ax.set_ylabel("CPU (% of a core)")
        cpu_ax.set_ylim(bottom=0)
        cpu_ax.legend(fontsize="x-small", ncol=2)
        bottom = cpu_ax
    bottom.set_xlabel("seconds into the measured window")
    return _png(fig)


# -- compare documents -------------------------------------------------------------------------------------
class CurvePoint(NamedTuple):
    """One measured rate of a choice on the latency-throughput chart (fields in sort order: x first)."""

    throughput_rps: float  # achieved: the x axis
    offered_rps: float  # the arrival rate asked for (0 when the record has none)
    p99_ms: float  # corrected P99: the y axis
    passed: bool  # the rate met the SLO (filled marker) or not (hollow)


def latency_throughput_curves(run: CompareRun) -> list[tuple[str, list[CurvePoint]]]:
    """Per choice (its label): every search probe (coarse and repeated) and the common rate, ordered by
    achieved throughput, the chart's x axis (ties: by offered rate). The line joins them in that order, never
    in the order they were run: repeated searches jump back and forth across the boundary, and past
    saturation a higher offered rate can achieve less. Choices with no point are left out."""
    curves = []
    for r in run.results:
        pts = []
        for p in (r.saturation or {}).get("points", []):
            if p.get("p99_us"):
                pts.append(CurvePoint(p.get("throughput_rps") or 0.0, p.get("offered_rps") or 0.0,
                                      p["p99_us"] / 1000, bool(p.get("passed"))))  # fmt: skip
        c = r.common or {}
        if c.get("latency_us", {}).get("p99"):
            p99 = c["latency_us"]["p99"]
            pts.append(CurvePoint(c.get("throughput_rps") or 0.0, c.get("offered_rps") or 0.0, p99 / 1000,
                                  p99 <= run.slo_p99_us))  # fmt: skip
        if pts:
            curves.append((r.choice.label, sorted(pts)))
    return curves


def latency_throughput_png(run: CompareRun) -> bytes | None:
    """P99 vs achieved throughput per choice (``latency_throughput_curves``); SLO as a dashed line."""
    curves = latency_throughput_curves(run)
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for label, pts in curves:
        (line,) = ax.plot([p.throughput_rps for p in pts], [p.p99_ms for p in pts], marker="", label=label)
        passed = [p for p in pts if p.passed]
        failed = [p for p in pts if not p.passed]
        ax.scatter([p.throughput_rps for p in passed], [p.p99_ms for p in passed], color=line.get_color(),
                   zorder=3)  # fmt: skip
        ax.scatter([p.throughput_rps for p in failed], [p.p99_ms for p in failed], facecolors="none",
                   edgecolors=line.get_color(), zorder=3)  # fmt: skip
    ax.axhline(run.slo_p99_us / 1000, color="red", linestyle="--", linewidth=1, label="P99 SLO")
    ax.set_yscale("log")
    ax.set_xlabel("achieved throughput (rps)")
    ax.set_ylabel("corrected P99 (ms)")
    ax.set_title("Latency-throughput (filled: rate passed, hollow: failed)")
    ax.legend(fontsize="small")
    return _png(fig)


SPECTRUM_PCTS = (0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99)


def spectrum_png(run: CompareRun) -> bytes | None:
    """Latency at each percentile (x: 1/(1-p), log) of the common-rate histogram, one line per choice."""
    lines = []
    for r in run.results:
        enc = (r.common or {}).get("histogram")
        if not enc:
            continue
        hist = decode_histogram(enc)
        n = hist.get_total_count()
        if n == 0:
            continue
        # only percentiles the sample count resolves (plus the max)
        pcts = [p for p in SPECTRUM_PCTS if p == 0.0 or n >= 1.0 / (1.0 - p / 100.0)]
        xs = [1.0 / (1.0 - p / 100.0) for p in pcts]
        ys = [value_at_percentile(hist, p) / 1000 for p in pcts]
        lines.append((r.choice.label, xs, ys))
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for label, xs, ys in lines:
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ticks = [(1, "P0"), (2, "P50"), (10, "P90"), (100, "P99"), (1000, "P99.9"), (10000, "P99.99")]
    ax.set_xscale("log")
    ax.set_xticks([t for t, _ in ticks], [s for _, s in ticks])
    ax.set_yscale("log")
    ax.set_xlabel("percentile")
    ax.set_ylabel("corrected latency (ms)")
    ax.set_title("Percentile spectrum at the common rate")
    ax.legend(fontsize="small")
    return _png(fig)


# -- compare: each probe over time -------------------------------------------------------------------------
PROBE_CAP = 8  # panels per choice: a compact figure; the probes nearest the boundary when there are more
_PROBE_DPI = 72


class ProbePanel(NamedTuple):
    """One probe of a choice's search, with its load record's per-block data."""

    offered_rps: float
    passed: bool
    phase: str  # "coarse", "repeat 2", ...
    timeline: Timeline


class ProbeFigure(NamedTuple):
    """One choice's small multiples: ``panels`` ordered by offered rate (then the order run)."""

    choice_id: str
    label: str
    panels: list[ProbePanel]
    probes: int  # probes of the choice's search (coarse and repeats)
    without_blocks: int  # of them, probes whose record is missing or has no per-block data


def _boundary_rps(saturation: dict[str, Any]) -> float | None:
    lo, hi = saturation.get("max_rps"), saturation.get("first_fail_rps")
    if lo and hi:
        return math.sqrt(lo * hi)
    return lo or hi or None


def select_probes(offered_rps: list[float], boundary_rps: float | None, cap: int = PROBE_CAP) -> list[int]:
    """Indices (into ``offered_rps``) of at most ``cap`` probes: all of them when they fit, else those
    nearest the boundary on a log scale (ties and no boundary: the earlier probe first); in run order."""
    idx = list(range(len(offered_rps)))
    if len(idx) <= cap:
        return idx
    if boundary_rps:
        idx.sort(key=lambda i: (abs(math.log(max(offered_rps[i], 1e-9) / boundary_rps)), i))
    return sorted(idx[:cap])


def probe_timelines(
    run: CompareRun, records: Mapping[str, RunRecord], cap: int = PROBE_CAP
) -> list[ProbeFigure]:
    """Per choice with at least one drawable probe: its search probes (``saturation.points``, coarse and
    repeats) whose load record (``records``, keyed by the point's ``extra.record`` path) has per-block data
    (``timeline``), capped at ``cap`` (``select_probes``)."""
    out = []
    for r in run.results:
        sat = r.saturation or {}
        points = sat.get("points", [])
        drawable = []
        for p in points:
            rec = records.get(str((p.get("extra") or {}).get("record") or ""))
            tl = timeline(rec) if rec is not None else None
            if tl is not None:
                extra = p.get("extra") or {}
                drawable.append(ProbePanel(float(p.get("offered_rps") or 0.0), bool(p.get("passed")),
                                           str(extra.get("phase") or ""), tl))  # fmt: skip
        if not drawable:
            continue
        # the boundary: the repeated searches' centre, else the coarse bracket's geometric midpoint
        boundary = r.max_rps if r.interval is not None else _boundary_rps(sat)
        keep = select_probes([d.offered_rps for d in drawable], boundary, cap)
        panels = sorted((drawable[i] for i in keep), key=lambda d: d.offered_rps)  # stable: run order
        out.append(ProbeFigure(r.choice.id, r.choice.label, panels, len(points), len(points) - len(drawable)))
    return out


def _rate_text(rps: float) -> str:
    return f"{rps:,.0f}" if rps >= 100 else f"{rps:.3g}"


def probe_timelines_png(figure: ProbeFigure, slo_p99_ms: float | None = None) -> bytes:
    """Small multiples, one panel per probe (title: the offered rate, pass/fail, phase): P50 (dashed) and
    P99 per 1 s block above, the achieved rate below (the offered rate dashed), the warm-up shaded. The
    latency axes share one log scale, the rate axes one linear scale, so the panels compare at a glance."""
    n = len(figure.panels)
    if n == 0:
        raise ValueError(f"{figure.choice_id}: no probe to draw")
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    # inches: panels 2.5 wide, 2.5 high; a header of 0.75 (title, then the legend's line), at least 6 wide
    width, height = max(2.5 * ncols + 0.7, 6.0), 2.5 * nrows + 0.8
    fig = plt.figure(figsize=(width, height))
    outer = fig.add_gridspec(nrows, ncols, left=0.5 / width, right=1 - 0.1 / width, bottom=0.5 / height,
                             top=1 - 0.85 / height, hspace=0.45, wspace=0.3)  # fmt: skip
    first_lat = first_rate = None
    for k, panel in enumerate(figure.panels):
        row, col = divmod(k, ncols)
        cell = outer[row, col].subgridspec(2, 1, height_ratios=(3, 2), hspace=0.08)
        lat = fig.add_subplot(cell[0], sharey=first_lat)
        rate = fig.add_subplot(cell[1], sharex=lat, sharey=first_rate)
        first_lat, first_rate = first_lat or lat, first_rate or rate
        tl = panel.timeline
        for i, st in enumerate(tl.series):
            colour = f"C{i}"
            lat.plot(st.mid_s, st.p50_ms, "--", color=colour, linewidth=1, label="P50")
            lat.plot(st.mid_s, st.p99_ms, "-", color=colour, marker=".", markersize=3, label="P99")
            rate.plot(st.mid_s, st.rate_rps, "-", color=colour, marker=".", markersize=3, label="achieved")
        rate.axhline(panel.offered_rps, color="0.3", linestyle="--", linewidth=0.8, label="offered")
        if slo_p99_ms:
            lat.axhline(slo_p99_ms, color="red", linestyle=":", linewidth=0.8, label="P99 SLO")
        for ax in (lat, rate):
            _shade_warmup(ax, tl.warmup_s)
            ax.tick_params(labelsize="x-small")
        lat.set_yscale("log")
        lat.tick_params(labelbottom=False)
        verdict = "pass" if panel.passed else "fail"
        lat.set_title(f"{_rate_text(panel.offered_rps)} rps, {verdict}" + (f" ({panel.phase})" if panel.phase
                      else ""), fontsize="small")  # fmt: skip
        rate.set_ylim(bottom=0)
        if col == 0:
            lat.set_ylabel("ms", fontsize="x-small")
            rate.set_ylabel("rps", fontsize="x-small")
        if row == nrows - 1:
            rate.set_xlabel("s into the window", fontsize="x-small")
    assert first_lat is not None and first_rate is not None
    handles = first_lat.get_legend_handles_labels()[0][:2] + first_rate.get_legend_handles_labels()[0][:1]
    handles += first_rate.get_legend_handles_labels()[0][-1:]
    if slo_p99_ms:
        handles += first_lat.get_legend_handles_labels()[0][-1:]
    fig.suptitle(f"{figure.label}: each probe, per 1 s block (warm-up shaded)", fontsize="small",
                 x=0.08 / width, y=1 - 0.08 / height, ha="left", va="top")  # fmt: skip
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.04 / width, 1 - 0.3 / height),
               fontsize="x-small", ncol=len(handles), frameon=False)  # fmt: skip
    return _png(fig, dpi=_PROBE_DPI, tight=False)  # the grid is laid out above


# -- sweeps ------------------------------------------------------------------------------------------------
def sweep_png(sweep: Sweep) -> bytes | None:
    """A sweep's latency-throughput curve: P50 and P99 (corrected, ms) vs achieved throughput, the points
    joined in sweep order (not sorted: past saturation more load can achieve less), each labelled with its
    value, the knee circled. Hollow markers: points that could not be the knee (errors, generator bound, run
    not complete). None when no point has a throughput and a P99."""
    pts = [
        (i, p) for i, p in enumerate(sweep.points) if p.throughput_rps is not None and p.latency_us.get("p99")
    ]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    xs = [p.throughput_rps or 0.0 for _, p in pts]
    for key, style in (("p50", "--"), ("p99", "-")):
        ys = [_nan_ms(p.latency_us.get(key)) for _, p in pts]
        (line,) = ax.plot(xs, ys, linestyle=style, label=f"P{key[1:]}")
        ok = [(x, y) for (_, p), x, y in zip(pts, xs, ys, strict=True) if p.eligible]
        bad = [(x, y) for (_, p), x, y in zip(pts, xs, ys, strict=True) if not p.eligible]
        if ok:
            ax.scatter(*zip(*ok, strict=True), color=line.get_color(), zorder=3)
        if bad:
            ax.scatter(*zip(*bad, strict=True), facecolors="none", edgecolors=line.get_color(), zorder=3)
    for (i, p), x in zip(pts, xs, strict=True):
        ax.annotate(
            sweep.label(i).split("=", 1)[1], (x, _nan_ms(p.latency_us.get("p99"))),
            textcoords="offset points", xytext=(4, 6), fontsize="small",
        )  # fmt: skip
    knee = sweep.knee
    if knee is not None:
        ax.scatter([knee.throughput_rps], [knee.p99_us / 1000], s=220, facecolors="none", edgecolors="red",
                   linewidths=2, zorder=4, label=f"knee ({sweep.label(knee.index)})")  # fmt: skip
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(plt.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(plt.FormatStrFormatter("%g"))
    ax.set_xlabel("achieved throughput (rps)")
    ax.set_ylabel("corrected latency (ms)")
    ax.set_title(f"Latency-throughput, {sweep.axis} sweep (hollow: cannot be the knee)")
    ax.legend(fontsize="small")
    return _png(fig)
