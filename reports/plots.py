"""PNG plots (matplotlib, Agg backend) drawn from records only. Each function returns [(title, png_bytes)].

Micro records: latency per format (P50 and P99 at the smallest batch), latency vs batch size, throughput
(items/s) vs batch size. Load records: latency percentiles per endpoint, achieved vs offered throughput.
"""

from __future__ import annotations

import io
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from reports.record import PERCENTILES, RunRecord, Series, pct_key

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
    return plots
