"""Render run records (micro-benchmarks, load runs, anything with series) as Markdown, HTML, CSV and JSON.

Renderers read records only and are deterministic: the same records give the same bytes (no "now").
Both Markdown and HTML are emitted from one small document model (headings, paragraphs, tables, lists,
images), so the two formats always show the same figures. Noise warnings are rendered in a ``notes``
column on the row they concern, with their message and hint listed right under the table.

CLI: ``deploybench report RECORDS... --out DIR --format md,html,csv,json`` (``deploybench.commands.report``).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploybench.errors import UsageError
from deploybench.frames import LATENCY_KEYS, RUN_COLUMNS, series_rows
from deploybench.io import write_atomic, write_json_atomic
from deploybench.record import SWEEP_FILE, RecordWarning, RunRecord, Series
from deploybench.vocabulary import REPORT_FORMATS as FORMATS

# Files the report command writes; skipped when a folder of records is given back to it.
OUTPUT_NAMES = {"md": "report.md", "html": "report.html", "csv": "summary.csv", "json": "summary.json"}
MICRO_PCTS = ("p50", "p95", "p99")
LOAD_PCTS = LATENCY_KEYS
# Micro config keys shown once in the method paragraph (or in the heading) rather than per record.
MICRO_METHOD_KEYS = ("warmup", "calibration", "timer")
MICRO_META_SKIP = {"model", "task", "title", "suite", "scenario", "iterations_per_round", *MICRO_METHOD_KEYS}


# -- document model --------------------------------------------------------------------------------------
@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    align: str = ""  # one char per column: "l" or "r" (default "l")


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Image:
    title: str
    png: bytes = field(repr=False)


Block = Heading | Para | Table | Bullets | Image


# -- formatting helpers ----------------------------------------------------------------------------------
def fmt_ms(value_us: int | float | None) -> str:
    """Microseconds shown as milliseconds with 3 decimals (1 µs resolution): one unit per column."""
    return "-" if value_us is None else f"{value_us / 1000:.3f}"


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def fmt_bytes(size_bytes: int | None) -> str:
    if size_bytes is None:
        return "-"
    size = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size_bytes} B"  # pragma: no cover


def fmt_ratio(ratio: float) -> str:
    return "0" if ratio == 0 else f"{ratio * 100:.2f}%"


def _scalar(v: Any) -> bool:
    return isinstance(v, str | int | float | bool) and v != ""


def _text(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def config_items(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Scalar config values in record order; nested dicts flattened one level (``target.workers``)."""
    out: list[tuple[str, str]] = []
    for k, v in config.items():
        if isinstance(v, dict):
            out.extend((f"{k}.{k2}", _text(v2)) for k2, v2 in v.items() if _scalar(v2))
        elif _scalar(v):
            out.append((k, _text(v)))
        elif isinstance(v, list | tuple) and 0 < len(v) <= 8 and all(_scalar(x) for x in v):
            out.append((k, ",".join(_text(x) for x in v)))
    return out


def env_line(env: dict[str, Any]) -> str:
    git = env.get("git") or {}
    commit = git.get("commit")
    commit_s = f"{commit[:10]}{' (dirty)' if git.get('dirty') else ''}" if commit else "unknown"
    parts = [
        f"CPU {env.get('cpu_model', '?')} x {env.get('cpu_count', '?')}",
        f"affinity {_cpus(env.get('affinity'))}",
        f"Python {env.get('python', '?')}",
        f"torch {env.get('torch', '?')}",
        f"onnxruntime {env.get('onnxruntime', '?')}",
        f"scikit-learn {env.get('scikit-learn', '?')}",
        f"git {commit_s}",
    ]
    return " · ".join(parts)


def _cpus(affinity: Any) -> str:
    if not isinstance(affinity, list) or not affinity:
        return "?"
    return ",".join(str(c) for c in affinity)


def series_warnings(record: RunRecord, name: str) -> list[RecordWarning]:
    return [w for w in record.warnings if w.series == name]


def _notes(record: RunRecord, name: str) -> str:
    return ", ".join(w.code for w in series_warnings(record, name))


def _warning_items(warnings: Iterable[RecordWarning]) -> list[str]:
    """Run-level warnings one per bullet; series warnings one bullet per code (their rows carry the code in
    the notes column), each series with its own message, so a long table does not repeat the hint."""
    items: list[str] = []
    by_code: dict[str, list[RecordWarning]] = {}
    for w in warnings:
        if w.series is None:
            hint = f" — {w.hint}" if w.hint else ""
            items.append(f"**{w.code}**: {w.message}{hint}")
        else:
            by_code.setdefault(w.code, []).append(w)
    for code, ws in by_code.items():
        hints = list(dict.fromkeys(w.hint for w in ws if w.hint))
        rows = "; ".join(f"`{w.series}` {w.message}" for w in ws)
        hint = f" — {' / '.join(hints)}" if hints else ""
        items.append(f"**{code}** ({len(ws)}): {rows}{hint}")
    return items


def _status_para(record: RunRecord) -> list[Block]:
    if record.status == "complete":
        return []
    why = f": {record.error}" if record.error else ""
    return [Para(f"**status {record.status}**{why} (figures cover what was measured before it ended)")]


# -- micro-benchmark records -----------------------------------------------------------------------------
def _case(s: Series) -> str:
    return str(s.params.get("case", "predict" if "batch_size" in s.params else "other"))


def _predict_sort_key(s: Series) -> tuple[str, int, int]:
    return (
        str(s.params.get("format", "")),
        int(s.params.get("batch_size", 0)),
        int(s.params.get("threads", 0)),
    )


def micro_blocks(record: RunRecord) -> list[Block]:
    cfg = record.config
    title = cfg.get("model") or cfg.get("title") or cfg.get("scenario") or record.run_id
    task = f" ({cfg['task']})" if cfg.get("task") else ""
    blocks: list[Block] = [Heading(3, f"{title}{task}")]
    meta = [f"run `{record.run_id}`", f"status {record.status}"]
    meta += [f"{k} {v}" for k, v in config_items(cfg) if k not in MICRO_META_SKIP]
    blocks.append(Para(" · ".join(meta)))
    blocks.extend(_status_para(record))

    predict = sorted((s for s in record.series if _case(s) == "predict"), key=_predict_sort_key)
    if predict:
        rows = []
        for s in predict:
            lat = s.latency_us
            rows.append(
                [
                    str(s.params.get("format", "?")),
                    str(s.params.get("batch_size", "?")),
                    str(s.params.get("threads", "?")),
                    *(fmt_ms(lat.get(k)) for k in MICRO_PCTS),
                    fmt_rate(s.items_per_s),
                    fmt_ms(s.extra.get("load_time_us")),
                    fmt_bytes(s.extra.get("size_bytes")),
                    str(s.count),
                    _notes(record, s.name),
                ]
            )
        headers = ["format", "batch", "threads", "P50 (ms)", "P95 (ms)", "P99 (ms)", "items/s"]
        headers += ["load (ms)", "size", "n", "notes"]
        blocks.append(Table(headers, rows, "lrrrrrrrrrl"))

    others = [s for s in record.series if _case(s) not in ("predict", "load")]
    loads = [s for s in record.series if _case(s) == "load"]
    # Load series whose figure already sits in the predict table (as load time) are not repeated.
    shown_formats = {s.params.get("format") for s in predict}
    others += [s for s in loads if s.params.get("format") not in shown_formats]
    if others:
        rows = [
            [
                s.name,
                str(s.count),
                *(fmt_ms(s.latency_us.get(k)) for k in MICRO_PCTS),
                fmt_ms(s.latency_us.get("max")),
                fmt_rate(s.items_per_s),
                _notes(record, s.name),
            ]
            for s in others
        ]
        headers = ["case", "n", "P50 (ms)", "P95 (ms)", "P99 (ms)", "max (ms)", "items/s", "notes"]
        blocks.append(Table(headers, rows, "lrrrrrrl"))
    if record.warnings:
        blocks.append(Bullets(_warning_items(record.warnings)))
    return blocks


# -- load records ----------------------------------------------------------------------------------------
def _errors_cell(s: Series) -> str:
    if not s.errors:
        return "0"
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(s.errors.items()))
    return f"{fmt_ratio(s.error_ratio)} ({kinds})"


def load_blocks(record: RunRecord) -> list[Block]:
    cfg = record.config
    blocks: list[Block] = [Heading(3, record.run_id)]
    meta = [f"status {record.status}"] + [f"{k} {v}" for k, v in config_items(cfg)]
    blocks.append(Para(" · ".join(meta)))
    blocks.extend(_status_para(record))
    rows = []
    for s in record.series:
        lat = s.latency_us
        rows.append(
            [
                s.name,
                str(s.count),
                *(fmt_ms(lat.get(k)) for k in LOAD_PCTS),
                fmt_ms(lat.get("max")),
                fmt_rate(s.throughput_rps),
                fmt_rate(s.offered_rps),
                "" if s.scheduled is None else str(s.scheduled),
                _errors_cell(s),
                _notes(record, s.name),
            ]
        )
        if s.uncorrected_latency_us:
            un = s.uncorrected_latency_us
            rows.append(
                [
                    f"↳ {s.name} (uncorrected)",
                    "",
                    *(fmt_ms(un.get(k)) for k in LOAD_PCTS),
                    fmt_ms(un.get("max")),
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
    pct_headers = [f"{k.upper()} (ms)" for k in LOAD_PCTS]
    headers = [
        "endpoint",
        "n",
        *pct_headers,
        "max (ms)",
        "throughput (rps)",
        "offered (rps)",
        "scheduled",
        "errors",
        "notes",
    ]
    blocks.append(Table(headers, rows, "lr" + "r" * len(LOAD_PCTS) + "rrrrll"))
    if any(s.uncorrected_latency_us for s in record.series):
        blocks.append(
            Para(
                "Open loop: latency measured from the intended send time (coordinated-omission corrected); "
                "the ↳ rows are measured from the actual send time. scheduled = the arrival slots of the "
                "window; every one is a success (n) or an error (dropped: taken more than max-lag late; "
                "not-sent: still pending at the window's end; unfinished: no answer by the end)."
            )
        )

    timing_rows = []
    for s in record.series:
        for stage, pcts in (s.server_timing_us or {}).items():
            timing_rows.append(
                [
                    s.name,
                    stage,
                    *(fmt_ms(pcts.get(k)) for k in ("p50", "p90", "p99")),
                    fmt_ms(pcts.get("max")),
                ]
            )
    if timing_rows:
        blocks.append(Para("Server-Timing breakdown (time spent inside the server, per stage):"))
        headers = ["endpoint", "stage", "P50 (ms)", "P90 (ms)", "P99 (ms)", "max (ms)"]
        blocks.append(Table(headers, timing_rows, "llrrrr"))
    if record.warnings:
        blocks.append(Bullets(_warning_items(record.warnings)))
    return blocks


def generic_blocks(record: RunRecord) -> list[Block]:
    """Any other kind of record: one row per series with the common figures."""
    blocks: list[Block] = [Heading(3, record.run_id)]
    meta = [f"kind {record.kind}", f"status {record.status}"] + [
        f"{k} {v}" for k, v in config_items(record.config)
    ]
    blocks.append(Para(" · ".join(meta)))
    blocks.extend(_status_para(record))
    rows = [
        [
            s.name,
            str(s.count),
            *(fmt_ms(s.latency_us.get(k)) for k in ("p50", "p99")),
            fmt_rate(s.throughput_rps),
            _errors_cell(s),
            _notes(record, s.name),
        ]
        for s in record.series
    ]
    if rows:
        headers = ["series", "n", "P50 (ms)", "P99 (ms)", "throughput (rps)", "errors", "notes"]
        blocks.append(Table(headers, rows, "lrrrrll"))
    if record.warnings:
        blocks.append(Bullets(_warning_items(record.warnings)))
    return blocks


# -- whole document --------------------------------------------------------------------------------------
def build_document(
    records: Sequence[RunRecord], *, title: str = "deploybench report", plots: bool = False
) -> list[Block]:
    if plots:
        from deploybench.reports import (
            plots as plotting,  # import cost: matplotlib, only when images are wanted
        )

    blocks: list[Block] = [Heading(1, title)]
    blocks.append(Para(f"{len(records)} record(s): " + ", ".join(f"`{r.run_id}`" for r in records)))
    envs = {json.dumps(r.env, sort_keys=True) for r in records}
    if len(envs) == 1 and records:
        blocks.append(Para("Environment: " + env_line(records[0].env)))
    else:
        blocks.append(Para("Environments differ between these records:"))
        blocks.append(Bullets([f"`{r.run_id}`: {env_line(r.env)}" for r in records]))

    micro = [r for r in records if r.kind == "micro"]
    load = [r for r in records if r.kind == "load"]
    other = [r for r in records if r.kind not in ("micro", "load")]
    if micro:
        blocks.append(Heading(2, "Micro-benchmarks (in-process)"))
        blocks.append(
            Para(
                "Latency per call of `predict(batch)` from raw samples (exact percentiles); "
                "items/s = batch size / "
                "mean call time; load = median time to deserialize the artifact; n = measured rounds "
                "(warm-up excluded)."
            )
        )
        method = [f"{k}: {micro[0].config[k]}" for k in MICRO_METHOD_KEYS if micro[0].config.get(k)]
        if method:
            blocks.append(Para("Method — " + "; ".join(method) + "."))
        for r in micro:
            blocks.extend(micro_blocks(r))
            if plots:
                blocks.extend(Image(t, png) for t, png in plotting.micro_plots(r))
    if load:
        blocks.append(Heading(2, "Load tests (over HTTP)"))
        for r in load:
            blocks.extend(load_blocks(r))
            if plots:
                blocks.extend(Image(t, png) for t, png in plotting.load_plots(r))
    if other:
        blocks.append(Heading(2, "Other records"))
        for r in other:
            blocks.extend(generic_blocks(r))
    return blocks


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def blocks_to_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            align = b.align.ljust(len(b.headers), "l")
            lines = ["| " + " | ".join(_md_cell(h) for h in b.headers) + " |"]
            lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Image):
            out.append(f"*(plot: {b.title} — see report.html)*")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    """Escape, then turn the few Markdown inline marks we use (`code`, **bold**) into HTML."""
    parts = html.escape(text, quote=False).split("`")
    for i in range(1, len(parts), 2):
        parts[i] = f"<code>{parts[i]}</code>"
    s = "".join(parts)
    bold = s.split("**")
    for i in range(1, len(bold), 2):
        bold[i] = f"<strong>{bold[i]}</strong>"
    return "".join(bold)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px}th{background:#f0f0f0}
td.r{text-align:right;font-variant-numeric:tabular-nums}
code{background:#f4f4f4;padding:0 3px}figure{margin:1em 0}figcaption{font-size:0.85em;color:#555}
img{max-width:100%}
""".strip()


def blocks_to_html(blocks: Sequence[Block], title: str) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            align = b.align.ljust(len(b.headers), "l")
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.headers)
            body = []
            for row in b.rows:
                cells = "".join(
                    f'<td class="{a}">{_inline_html(c)}</td>' for a, c in zip(align, row, strict=False)
                )
                body.append(f"<tr>{cells}</tr>")
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode(b.png).decode("ascii")
            alt = html.escape(b.title)
            out.append(
                f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
                f"<figcaption>{alt}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def render_markdown(records: Sequence[RunRecord], *, title: str = "deploybench report") -> str:
    return blocks_to_markdown(build_document(records, title=title, plots=False))


def render_html(
    records: Sequence[RunRecord], *, title: str = "deploybench report", plots: bool = True
) -> str:
    """One self-contained HTML file: inline CSS, PNG plots embedded as base64 data URIs."""
    return blocks_to_html(build_document(records, title=title, plots=plots), title)


# -- flat exports ----------------------------------------------------------------------------------------
CSV_COLUMNS = RUN_COLUMNS


def summary_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One flat row per series (the CSV/JSON export; ``deploybench.frames`` builds its ``runs`` frame from the
    same rows): units in the column names, None where not measured."""
    return series_rows(records)


def write_csv(records: Sequence[RunRecord], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in summary_rows(records):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    write_atomic(path, buf.getvalue())
    return path


def write_json(records: Sequence[RunRecord], path: str | Path) -> Path:
    data = {
        "export": "deploybench-summary",
        "runs": [r.run_id for r in records],
        "rows": summary_rows(records),
    }
    return write_json_atomic(path, data)


def write_report(
    records: Sequence[RunRecord],
    out_dir: str | Path,
    formats: Sequence[str] = ("md", "html"),
    *,
    title: str = "deploybench report",
) -> dict[str, Path]:
    """Write the report files asked for into ``out_dir``; returns format -> path."""
    if not records:
        raise UsageError("no records to report")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsageError(f"unknown report format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    for fmt in formats:
        path = out_dir / OUTPUT_NAMES[fmt]
        if fmt == "md":
            write_atomic(path, render_markdown(records, title=title))
        elif fmt == "html":
            write_atomic(path, render_html(records, title=title))
        elif fmt == "csv":
            write_csv(records, path)
        else:
            write_json(records, path)
        written[fmt] = path
    return written


def parse_formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    if not formats:
        raise UsageError("--format needs at least one of " + ", ".join(FORMATS))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsageError(f"unknown report format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(formats))


def expand_record_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders -> their ``*.json`` files, minus this command's own exports."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(
                f
                for f in p.glob("*.json")
                if not f.name.startswith(".")
                and f.name not in OUTPUT_NAMES.values()
                and f.name != SWEEP_FILE  # a sweep's summary, not a record
            )
            if not files:
                raise UsageError(f"{p}: no *.json records in this folder")
            out.extend(files)
        else:
            out.append(p)
    return out
