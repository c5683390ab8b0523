"""PNG plots (matplotlib, Agg backend: the one matplotlib set-up) drawn from records and compare documents.

Micro records: latency per format (P50 and P99 at the smallest batch), latency vs batch size, throughput
(items/s) vs batch size. Load records: latency percentiles per endpoint, achieved vs offered throughput,
and P50/P99 and the rate per 1 s block over time (warm-up shaded). Each of these returns [(title,
png_bytes)]. Compare documents: latency-throughput curves and percentile spectra (PNG bytes, or None when
there is nothing to draw).

Importing this module imports matplotlib (~0.5 s): renderers import it only when images are wanted.
"""

from __future__ import annotations

import io
from collections import defaultdict
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from deploybench.compare_doc import CompareRun
from deploybench.frames import block_rows
from deploybench.record import PERCENTILES, RunRecord, Series, pct_key
from deploybench.stats import decode_histogram, value_at_percentile

Plot = tuple[str, bytes]
_DPI = 90


def _png(fig: matplotlib.figure.Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    # No timestamp/software metadata: the same records give the same bytes.
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
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


def timeline_png(record: RunRecord) -> bytes | None:
    """Per 1 s block of the measured window, per endpoint: P50 and P99 (from each block's own histogram) and
    the achieved rate with the errors; the warm-up before the window is shaded (not measured, so empty).
    None when no series has two or more blocks."""
    rows = [r for r in block_rows([record]) if r["count"] or r["error_count"]]
    names = [s.name for s in record.series if sum(1 for r in rows if r["series"] == s.name) >= 2]
    if not names:
        return None
    fig, (lat, rate) = plt.subplots(2, 1, figsize=(7, 4.8), sharex=True)
    warmup_s = float(record.config.get("warmup_s") or 0.0)
    for i, name in enumerate(names):
        mine = [r for r in rows if r["series"] == name]
        mid = [r["start_s"] + r["duration_s"] / 2 for r in mine]
        colour = f"C{i}"
        for key, style in (("p50_us", "--"), ("p99_us", "-")):
            ys = [r[key] / 1000 if r[key] is not None else float("nan") for r in mine]
            lat.plot(mid, ys, style, color=colour, marker=".", label=f"{name} {key[:-3].upper()}")
        rate.plot(mid, [r["throughput_rps"] or 0 for r in mine], color=colour, marker=".", label=f"{name} ok")
        errors = [r["error_count"] / r["duration_s"] if r["duration_s"] else 0 for r in mine]
        if any(errors):
            rate.plot(mid, errors, ":", color=colour, marker="x", label=f"{name} errors")
    for ax in (lat, rate):
        if warmup_s > 0:
            ax.axvspan(-warmup_s, 0, color="0.9", label="_warm-up")
    if warmup_s > 0:
        lat.text(-warmup_s / 2, 0.5, "warm-up\n(not measured)", transform=lat.get_xaxis_transform(),
                 ha="center", va="center", fontsize="small", color="0.4")  # fmt: skip
    lat.set_yscale("log")
    lat.set_ylabel("latency (ms)")
    lat.set_title(f"{record.run_id}: per 1 s block")
    lat.legend(fontsize="x-small", ncol=2)
    rate.set_ylabel("requests/s")
    rate.set_xlabel("seconds into the measured window")
    rate.legend(fontsize="x-small", ncol=2)
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
