"""Render a compare document (``compare.json``) as Markdown + one self-contained HTML file (embedded PNGs).

Reads the document only (never re-measures). Reuses the report engineer's document model and formatting
(``reports.render``) so compare reports look like every other deploybench report. The Markdown links the
PNG files written under ``plots/``; the HTML embeds them.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reports.compare import ChoiceResult, CompareRun, best_sentence, rank
from reports.record import RecordWarning
from reports.render import (
    Block,
    Bullets,
    Heading,
    Image,
    Para,
    Table,
    blocks_to_html,
    blocks_to_markdown,
    env_line,
    fmt_ms,
    fmt_rate,
)
from reports.stats import decode_histogram

RANK_HEADERS = [
    "#",
    "choice",
    "max rps under SLO",
    "bracket (rps)",
    "P50 (ms)",
    "P95 (ms)",
    "P99 (ms)",
    "errors",
    "server CPU",
    "stable",
    "status / warnings",
]
RANK_ALIGN = "llrrrrrrrll"


def _rel_tol(run: CompareRun) -> float:
    return float(run.config.get("search", {}).get("rel_tolerance", 0.10))


def _common_rate(run: CompareRun) -> float:
    return float(run.config.get("measure", {}).get("common_rate_rps", 0.0))


def _bracket(r: ChoiceResult) -> str:
    sat = r.saturation or {}
    lo, hi = sat.get("max_rps"), sat.get("first_fail_rps")
    if lo is None and hi is None:
        return "-"
    if hi is None:
        return f"≥ {fmt_rate(lo)}"
    if lo is None:
        return f"< {fmt_rate(hi)}"
    return f"{fmt_rate(lo)}-{fmt_rate(hi)}"


def _errors(r: ChoiceResult) -> str:
    c = r.common or {}
    if not c:
        return "-"
    n = int(c.get("error_count") or 0)
    return "0" if n == 0 else f"{n} ({float(c.get('error_ratio') or 0):.2%})"


def _cpu(r: ChoiceResult) -> str:
    v = (r.common or {}).get("server_cpu_percent")
    return "-" if v is None else f"{v:.0f}%"


def _stable(r: ChoiceResult) -> str:
    if not r.stability:
        return "-"
    n = len(r.stability.get("windows", []))
    return f"yes ({n} w)" if r.stability.get("stable") else f"no ({n} w)"


def _status(r: ChoiceResult) -> str:
    codes = sorted({w.code for w in r.warnings})
    if r.status != "complete":
        return r.status + (f": {', '.join(codes)}" if codes else "")
    return ", ".join(codes) if codes else "ok"


def ranked_rows(run: CompareRun) -> list[list[str]]:
    rows = []
    pos = 0
    for r in rank(run.results):
        if r.status == "complete":
            pos += 1
            place = str(pos)
        else:
            place = "-"
        max_rps = "-" if r.max_rps is None else fmt_rate(r.max_rps)
        if r.status == "complete" and r.max_rps is None:
            max_rps = "none"
        rows.append(
            [
                place,
                f"`{r.choice.label}`",
                max_rps,
                _bracket(r),
                fmt_ms(r.common_pct("p50")),
                fmt_ms(r.common_pct("p95")),
                fmt_ms(r.common_pct("p99")),
                _errors(r),
                _cpu(r),
                _stable(r),
                _status(r),
            ]
        )
    return rows


def ranked_table_markdown(run: CompareRun) -> str:
    """The ranked table alone (plus the best-choice sentence), as printed by the CLI."""
    blocks: list[Block] = [
        Para(_headline(run)),
        Table(RANK_HEADERS, ranked_rows(run), RANK_ALIGN),
        Para(best_sentence(rank(run.results), run.slo_p99_us, _rel_tol(run))),
    ]
    return blocks_to_markdown(blocks)


def _headline(run: CompareRun) -> str:
    cfg = run.config
    wall = f"{run.wall_s / 60:.1f} min" if run.wall_s is not None else "?"
    done = sum(r.status == "complete" for r in run.results)
    return (
        f"Matrix **{cfg.get('name', '?')}** ({run.scenario} scenario): {done}/{len(run.results)} choice(s) "
        f"complete, status {run.status}, wall time {wall}. P99 SLO {run.slo_p99_us / 1000:g} ms; "
        f"latencies, errors and server CPU at the common rate of {_common_rate(run):g} rps "
        f"({cfg.get('measure', {}).get('load_model', '?')} arrivals)."
    )


def _method(run: CompareRun) -> list[str]:
    c = run.config
    slo, ms, se = c.get("slo", {}), c.get("measure", {}), c.get("search", {})
    pin = "server on CPU 1, generator on CPU 0" if ms.get("pin") else "not pinned"
    return [
        f"Warm-up {ms.get('warmup_s')} s, then closed-loop windows of {ms.get('window_s')} s with "
        f"{ms.get('users')} users until {ms.get('stability_windows')} consecutive windows are within "
        f"{float(ms.get('stability_tolerance', 0)):.0%} (max/min of throughput and P50), at most "
        f"{ms.get('max_windows')} windows / {ms.get('max_stability_s')} s.",
        f"Common rate: {ms.get('common_rate_rps')} rps open loop for {ms.get('common_duration_s')} s; "
        "server CPU = CPU seconds of the server's process tree / wall seconds (100% = one core).",
        f"Saturation search: open-loop steps of {se.get('step_s')} s (+{se.get('step_warmup_s')} s warm-up), "
        f"geometric bisection between {se.get('lo_factor')}x and {se.get('hi_factor')}x the closed-loop "
        f"throughput (unless lo_rps/hi_rps are set), at most {se.get('max_probes')} probes, stop at "
        f"{float(se.get('rel_tolerance', 0)):.0%} resolution. A rate passes when corrected P99 ≤ "
        f"{slo.get('p99_ms')} ms, errors ≤ {float(slo.get('max_error_ratio', 0)):.0%} and achieved ≥ "
        f"{float(slo.get('min_throughput_ratio', 0)):.0%} of offered. `max rps` is the highest rate that "
        "passed; the bracket's upper end is the lowest rate above it that failed.",
        f"CPU pinning: {pin}.",
    ]


def _search_rows(run: CompareRun) -> list[list[str]]:
    rows = []
    for r in run.results:
        for p in (r.saturation or {}).get("points", []):
            rows.append(
                [
                    f"`{r.choice.id}`",
                    fmt_rate(p.get("offered_rps")),
                    fmt_rate(p.get("throughput_rps")),
                    fmt_ms(p.get("p99_us")),
                    f"{float(p.get('error_ratio') or 0):.2%}",
                    "pass" if p.get("passed") else "fail: " + "; ".join(p.get("reasons", [])),
                ]
            )
    return rows


def _warning_items(run: CompareRun) -> list[str]:
    items = []
    for r in run.results:
        # group the same code+message across phases, listing the phases
        grouped: dict[tuple[str, str, str], list[str]] = {}
        for w in r.warnings:
            grouped.setdefault((w.code, _strip_numbers(w.message), w.hint), []).append(w.series or "run")
        for (code, _msg, hint), phases in grouped.items():
            first = next(w for w in r.warnings if w.code == code and (w.series or "run") == phases[0])
            where = ", ".join(phases[:4]) + (f" (+{len(phases) - 4} more)" if len(phases) > 4 else "")
            tail = f" — {hint}" if hint else ""
            items.append(f"`{r.choice.id}` **{code}** [{where}]: {first.message}{tail}")
    return items


def _strip_numbers(text: str) -> str:
    return re.sub(r"[0-9.]+", "#", text)


def _env_rows(env: dict[str, Any]) -> list[list[str]]:
    keys = ("cpu_model", "cpu_count", "affinity", "python", "platform", "torch", "onnxruntime",
            "scikit-learn", "numpy", "flask", "fastapi", "uvicorn", "gunicorn", "locust")  # fmt: skip
    rows = [[k, str(env.get(k))] for k in keys if k in env]
    git = env.get("git") or {}
    if git:
        rows.append(["git", f"{git.get('commit')}{' (dirty)' if git.get('dirty') else ''}"])
    return rows


def build_blocks(run: CompareRun, *, plots: bool = True) -> list[Block]:
    cfg = run.config
    blocks: list[Block] = [Heading(1, f"deploybench compare: {cfg.get('name', '?')}")]
    if cfg.get("description"):
        blocks.append(Para(str(cfg["description"])))
    blocks.append(Para(_headline(run)))
    blocks.append(Para(best_sentence(rank(run.results), run.slo_p99_us, _rel_tol(run))))
    blocks.append(Heading(2, "Ranking"))
    blocks.append(Table(RANK_HEADERS, ranked_rows(run), RANK_ALIGN))
    blocks.append(
        Para(
            "Ranked by max throughput under the SLO (higher is better), then P99 at the common rate. "
            "P50/P95/P99 (corrected for coordinated omission), errors and server CPU are at the common rate. "
            "Choices that failed or were interrupted are listed unranked."
        )
    )
    not_done = [r for r in run.results if r.status != "complete"]
    if not_done:
        blocks.append(Heading(2, "Choices that did not complete"))
        blocks.append(
            Bullets([f"`{r.choice.id}`: {r.status}: {(r.error or '').strip()[:800]}" for r in not_done])
        )
    if run.skipped:
        blocks.append(Heading(2, "Skipped combinations"))
        blocks.append(Bullets([f"`{s.combo}`: {s.reason}" for s in run.skipped]))

    blocks.append(Heading(2, "Latency-throughput"))
    if plots:
        png = latency_throughput_png(run)
        if png:
            blocks.append(Image("Latency-throughput: P99 vs achieved throughput per choice", png))
    rows = _search_rows(run)
    if rows:
        headers = ["choice", "offered (rps)", "achieved (rps)", "P99 (ms)", "errors", "verdict"]
        blocks.append(Table(headers, rows, "lrrrrl"))
    if plots:
        png = spectrum_png(run)
        if png:
            blocks.append(Heading(2, "Percentile spectrum"))
            blocks.append(Image(f"Latency by percentile at the common rate ({_common_rate(run):g} rps)", png))

    blocks.append(Heading(2, "Warnings"))
    items = _warning_items(run)
    blocks.append(Bullets(items) if items else Para("None."))
    blocks.append(Heading(2, "Environment"))
    blocks.append(Para(env_line(run.env)))
    blocks.append(Table(["field", "value"], _env_rows(run.env), "ll"))
    blocks.append(Heading(2, "Method"))
    blocks.append(Bullets(_method(run)))
    return blocks


# -- plots -------------------------------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def latency_throughput_png(run: CompareRun) -> bytes | None:
    """P99 vs achieved throughput per choice (search probes + common rate); SLO as a dashed line."""
    curves = []
    for r in run.results:
        pts = []
        for p in (r.saturation or {}).get("points", []):
            if p.get("p99_us"):
                pts.append((p["offered_rps"], p["throughput_rps"], p["p99_us"] / 1000, bool(p["passed"])))
        c = r.common or {}
        if c.get("latency_us", {}).get("p99"):
            p99 = c["latency_us"]["p99"]
            pts.append(
                (c.get("offered_rps") or 0, c.get("throughput_rps") or 0, p99 / 1000, p99 <= run.slo_p99_us)
            )
        if pts:
            curves.append((r.choice.label, sorted(pts)))
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for label, pts in curves:
        (line,) = ax.plot([p[1] for p in pts], [p[2] for p in pts], marker="", label=label)
        ax.scatter([p[1] for p in pts if p[3]], [p[2] for p in pts if p[3]], color=line.get_color(), zorder=3)
        ax.scatter([p[1] for p in pts if not p[3]], [p[2] for p in pts if not p[3]], facecolors="none",
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
        ys = [hist.get_value_at_percentile(p) / 1000 for p in pcts]
        lines.append((r.choice.label, xs, ys))
    if not lines:
        return None
    plt = _plt()
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


# -- files -------------------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "plot"


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_report(run: CompareRun, out_dir: Path, *, plots: bool = True) -> list[Path]:
    """``report.md`` (PNG files under plots/), ``report.html`` (self-contained); returns the paths."""
    blocks = build_blocks(run, plots=plots)
    md_blocks: list[Block] = []
    written: list[Path] = []
    for b in blocks:
        if isinstance(b, Image):
            path = out_dir / "plots" / f"{_slug(b.title)[:60]}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b.png)
            written.append(path)
            md_blocks.append(Para(f"![{b.title}](plots/{path.name})"))
        else:
            md_blocks.append(b)
    title = f"deploybench compare: {run.config.get('name', '?')}"
    md, html_path = out_dir / "report.md", out_dir / "report.html"
    _write_text(md, blocks_to_markdown(md_blocks))
    _write_text(html_path, blocks_to_html(blocks, title))
    return [md, html_path, *written]


def warnings_of(results: Sequence[ChoiceResult]) -> list[RecordWarning]:
    return [w for r in results for w in r.warnings]
