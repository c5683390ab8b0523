"""Render a gate or A/B result (``deploybench.verdicts.GateResult``): a terminal table, Markdown (e.g. for
``$GITHUB_STEP_SUMMARY``) and JSON."""

from __future__ import annotations

from pathlib import Path

from deploybench.io import write_json_atomic
from deploybench.verdicts import VERDICTS, GateResult, Row


def _fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "us":
        return f"{value:.0f} µs" if abs(value) < 1000 else f"{value / 1000:.3g} ms"
    if unit == "ratio":
        return f"{value * 100:.2f}%"
    return f"{value:,.0f}/s" if abs(value) >= 100 else f"{value:.3g}/s"


def _fmt_change(value: float | None, row: Row) -> str:
    if value is None:
        return "—"
    if row.rule.endswith("%") and row.metric != "error_ratio":
        return f"{value * 100:+.1f}%"
    if row.unit == "ratio":
        return f"{value * 100:+.2f}pp"
    text = _fmt_value(abs(value), row.unit)
    return ("+" if value >= 0 else "-") + text


def _cells(row: Row) -> list[str]:
    ci = "—" if row.ci is None else f"[{_fmt_change(row.ci[0], row)}, {_fmt_change(row.ci[1], row)}]"
    return [
        row.rule,
        row.series,
        _fmt_value(row.baseline, row.unit),
        _fmt_value(row.current, row.unit),
        _fmt_change(row.change, row),
        ci,
        row.verdict,
        "; ".join(filter(None, [row.method, row.note])),
    ]


HEADERS = ["rule", "series", "baseline", "current", "change", "CI", "verdict", "method / notes"]


def summary_line(result: GateResult) -> str:
    counts = {v: sum(r.verdict == v for r in result.rows) for v in VERDICTS}
    parts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    status = "REGRESSION" if result.regressions else "PASS"
    return f"{result.title}: {status} ({parts}; {result.confidence:.0%} CI)"


def render_table(result: GateResult) -> str:
    rows = [HEADERS, *(_cells(r) for r in result.rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = [summary_line(result), "", *lines]
    if result.notes:
        out += ["", *(f"note: {n}" for n in result.notes)]
    return "\n".join(out) + "\n"


def render_markdown(result: GateResult) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    icon = {
        "regression": "❌ regression",
        "improvement": "✅ improvement",
        "not significant": "⚪ not significant",
    }
    out = [f"### {esc(summary_line(result))}", "", "| " + " | ".join(HEADERS) + " |"]
    out.append("|" + "---|" * len(HEADERS))
    for row in result.rows:
        cells = _cells(row)
        cells[6] = icon.get(row.verdict, row.verdict)
        out.append("| " + " | ".join(esc(c) for c in cells) + " |")
    if result.notes:
        out += ["", *(f"- {esc(n)}" for n in result.notes)]
    return "\n".join(out) + "\n"


def write_outputs(result: GateResult, markdown: str | None, json_path: str | None) -> None:
    if markdown:
        Path(markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown).write_text(render_markdown(result))
    if json_path:
        write_json_atomic(json_path, result.to_dict())
