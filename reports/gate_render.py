"""Render a gate or A/B result (``deploybench.verdicts.GateResult``): a terminal table, Markdown (e.g. for
``$GITHUB_STEP_SUMMARY``) and JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def _significance(row: Row) -> str:
    """p-values (one-sided, raw and Holm) and the change caught 9 times in 10 at this noise."""
    parts = []
    if row.p_value is not None:
        adj = "" if row.p_adjusted is None else f", Holm {_fmt_p(row.p_adjusted)}"
        parts.append(f"p {_fmt_p(row.p_value)}{adj}")
    if row.detectable is not None:
        parts.append(f"90% detects {_fmt_change(row.detectable, row)}")
    return "; ".join(parts)


def _tests(n: int) -> str:
    return f"{n} test" + ("" if n == 1 else "s")


def _fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else "<0.001"


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
        "; ".join(filter(None, [row.method, _significance(row), row.note])),
    ]


HEADERS = ["rule", "series", "baseline", "current", "change", "CI", "verdict", "method / notes"]


def summary_line(result: GateResult) -> str:
    counts = {v: sum(r.verdict == v for r in result.rows) for v in VERDICTS}
    parts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    status = result.outcome.upper()
    if result.family:
        level = (
            f"one-sided, family-wise {result.alpha:.3g} over {_tests(result.family)} (Holm: smallest p "
            f"vs {result.alpha / result.family:.3g})"
        )
    else:
        level = "no significance testable"
    return f"{result.title}: {status} ({parts}; {result.confidence:.0%} CI; {level})"


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
        "cannot tell": "❔ cannot tell",
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


def render_calibration(doc: dict[str, Any]) -> str:
    """The A/A calibration of ``deploybench.decisions.ab.calibrate``: noise floor and detectable change per
    rule."""
    gate_rounds = doc["gate_rounds"]
    headers = ["rule", "series", "A/A change", "noise (1 round, sd)", f"CI ± ({gate_rounds} rounds)",
               f"90% detects ({gate_rounds} rounds)", "rounds for 1.5x limit"]  # fmt: skip
    rows = [headers]
    for r in doc["rows"]:
        unit = _calib_unit(r)
        if "noise_sd" not in r:
            rows.append([r["rule"], r["series"], "—", "—", "—", "—", r.get("note", "")])
            continue
        need = r["rounds_for_1_5x_limit"]
        rows.append(
            [
                r["rule"],
                r["series"],
                unit(r["aa_change"]),
                unit(r["noise_one_round"]),
                unit(r["ci_half_width"]).lstrip("+"),
                "unreachable" if r["detectable"] is None else unit(r["detectable"]),
                str(need) if need is not None else f"> {100}",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    aa = doc["aa_gate"]
    out = [
        f"{doc['title']}",
        "",
        *lines,
        "",
        f"note: noise = spread between rounds of one round's A/A change; a gate of {gate_rounds} rounds "
        f"reports a regression when the change is beyond the limit and significant at Holm level "
        f"{doc['holm_first_level']:.3g} ({doc['family']} tests, family-wise {doc['alpha']:.3g}); "
        "'90% detects' is the true change it catches 9 times in 10 (at the limit itself: about half)",
        f"note: the A/A gate on these rounds: {aa['result']}"
        + (f" ({', '.join(aa['regressions'])})" if aa["regressions"] else ""),
        *(f"note: {n}" for n in doc.get("notes", [])),
    ]
    return "\n".join(out) + "\n"


def _calib_unit(row: dict[str, Any]) -> Any:
    rule = row["rule"]
    if row["metric"] == "error_ratio":
        return lambda v: f"{v * 100:+.2f}pp"
    if rule.endswith("%"):
        return lambda v: f"{v * 100:+.1f}%"
    suffix = "/s" if row["metric"] == "throughput" else " µs"
    return lambda v: f"{v:+.0f}{suffix}"
