"""Render a compare document (``compare.json``) as Markdown + one self-contained HTML file (embedded PNGs).

Reads the document only (never re-measures). Reuses the document model and formatting of
``deploybench.reports.render`` (plots: ``deploybench.reports.plots``) so compare reports look like every other
deploybench report. The Markdown links the PNG files written under ``plots/``; the HTML embeds them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from deploybench.compare_doc import (
    ChoiceResult,
    CompareRun,
    ScalingRow,
    describe_split,
    places,
    rank,
    scaling_rows,
    verdict,
)
from deploybench.errors import UsageError
from deploybench.io import write_atomic
from deploybench.record import RunRecord, load_record
from deploybench.reports.render import (
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
from deploybench.reports.sweep_render import POINT_ALIGN, POINT_HEADERS, knee_para, point_rows
from deploybench.sweep import KNEE_RULE, Sweep

RANK_HEADERS = [
    "#",
    "choice",
    "max rps under SLO",
    "95% CI (rps)",
    "repeats (rps)",
    "P50 (ms)",
    "P95 (ms)",
    "P99 (ms)",
    "errors",
    "server CPU",
    "stable",
    "status / warnings",
]
RANK_ALIGN = "llrrrrrrrrll"


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


def _ci(r: ChoiceResult) -> str:
    """The 95% interval of the repeated searches; a single search's bracket (marked) otherwise."""
    iv = r.interval
    if iv is None:
        return "-" if r.saturation is None else f"bracket {_bracket(r)}"
    return f"{fmt_rate(iv.lo_rps)}-{fmt_rate(iv.hi_rps)}"


def _repeats(r: ChoiceResult) -> str:
    iv = r.interval
    if iv is None:
        return "-"
    return ", ".join(fmt_rate(e) for e in iv.estimates_rps)


def _errors(r: ChoiceResult) -> str:
    c = r.common or {}
    if not c:
        return "-"
    n = int(c.get("error_count") or 0)
    if n == 0:
        return "0"
    kinds = ", ".join(f"{k} {v}" for k, v in sorted((c.get("errors") or {}).items()))
    return f"{n} ({float(c.get('error_ratio') or 0):.2%}{': ' + kinds if kinds else ''})"


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


def _handler_varies(run: CompareRun) -> bool:
    return len({r.choice.handler for r in run.results if not r.choice.external}) > 1


def rank_headers(run: CompareRun) -> tuple[list[str], str]:
    """The ranking's columns: a handler column when the matrix varies the FastAPI handler style."""
    if _handler_varies(run):
        return [*RANK_HEADERS[:2], "handler", *RANK_HEADERS[2:]], RANK_ALIGN[:2] + "l" + RANK_ALIGN[2:]
    return list(RANK_HEADERS), RANK_ALIGN


def ranked_rows(run: CompareRun) -> list[list[str]]:
    rows = []
    ranked = rank(run.results)
    labels = places(ranked, _rel_tol(run))
    handler = _handler_varies(run)
    for r, place in zip(ranked, labels, strict=True):
        max_rps = "-" if r.max_rps is None else fmt_rate(r.max_rps)
        if r.status == "complete" and r.max_rps is None:
            max_rps = "none"
        elif r.max_rps is not None and r.generator_bound:
            max_rps = f"≥ {max_rps} (generator-bound)"
        rows.append(
            [
                place,
                f"`{r.choice.label}`",
                *([r.choice.handler] if handler else []),
                max_rps,
                _ci(r),
                _repeats(r),
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
    """The ranked table alone (plus the verdict), as printed by the CLI."""
    headers, align = rank_headers(run)
    blocks: list[Block] = [
        Para(_headline(run)),
        Table(headers, ranked_rows(run), align),
        Para(_verdict(run)),
    ]
    return blocks_to_markdown(blocks)


def _verdict(run: CompareRun) -> str:
    """The document's verdict; computed for a run that has none yet (running, or version 1)."""
    return run.verdict or verdict(rank(run.results), run.slo_p99_us, _rel_tol(run))


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


def _core_split(run: CompareRun) -> str:
    """The CPUs of a pinned run: one split, or one per split with the choices that had it."""
    splits: dict[str, list[str]] = {}
    for r in run.results:
        if r.generator_cpus:
            splits.setdefault(describe_split(r.server_affinity, r.generator_cpus), []).append(r.choice.label)
    if not splits:  # documents from before the split was recorded: the 2-CPU split
        return "server on CPU 1, generator on CPU 0, one process"
    if len(splits) == 1:
        return next(iter(splits))
    return "; ".join(f"{split} ({', '.join(labels)})" for split, labels in splits.items())


def _method(run: CompareRun) -> list[str]:
    c = run.config
    slo, ms, se = c.get("slo", {}), c.get("measure", {}), c.get("search", {})
    pin = _core_split(run) if ms.get("pin") is True else "not pinned"
    pin += f"; load generator: {ms.get('engine', 'locust')} engine"
    if ms.get("expect_workers"):
        pin += f", {ms['expect_workers']} remote workers (master on {ms.get('master_bind')})"
    users = ms.get("open_loop_users") or 0
    senders = (
        f"{users} senders"
        if users
        else "senders for twice the SLO's worth of requests at the rate (at least 16)"
    )
    items = [
        f"Warm-up {ms.get('warmup_s')} s, then closed-loop windows of {ms.get('window_s')} s with "
        f"{ms.get('users')} users until {ms.get('stability_windows')} consecutive windows are within "
        f"{float(ms.get('stability_tolerance', 0)):.0%} (max/min of throughput and P50), at most "
        f"{ms.get('max_windows')} windows / {ms.get('max_stability_s')} s.",
        f"Common rate: {ms.get('common_rate_rps')} rps open loop for {ms.get('common_duration_s')} s (longer "
        "when needed for the minimum request count below); server CPU = CPU seconds of the server's process "
        "tree / wall seconds (100% = one core).",
        f"Open-loop runs ({ms.get('load_model')} arrivals): {senders}; each step lasts {se.get('step_s')} s "
        f"(+{se.get('step_warmup_s')} s warm-up), longer at low rates so that it holds at least "
        f"{se.get('min_step_requests', 0)} requests (at most {se.get('max_step_s', se.get('step_s'))} s).",
        f"Pass rule: corrected P99 ≤ {slo.get('p99_ms')} ms, errors ≤ "
        f"{float(slo.get('max_error_ratio', 0)):.0%} (slots dropped or never sent count as errors) and "
        f"successes ≥ {float(slo.get('min_throughput_ratio', 0)):.0%} of the arrival slots scheduled in the "
        "window (exact count; records without it: achieved vs offered rate with edge allowances, marked "
        "approximate).",
        f"Coarse search: geometric bisection between {se.get('lo_factor')}x and {se.get('hi_factor')}x the "
        f"closed-loop throughput (unless lo_rps/hi_rps are set), at most {se.get('max_probes')} probes, stop "
        f"at a {float(se.get('rel_tolerance', 0)):.0%} bracket.",
    ]
    if se.get("repeats"):
        items.append(
            f"Uncertainty: {se.get('repeats')} repeated searches, each {se.get('repeat_probes')} fresh "
            f"probes bisecting the coarse bracket widened by {float(se.get('repeat_margin', 0)):.0%} on both "
            "sides (up to 2 more when that bracket is wide; shifted by a seeded random fraction of a final "
            f"cell: no shared bisection grid; up to {se.get('repeat_extra_probes', 0)} steps outwards when "
            "the boundary lies outside it); "
            + (
                "every repeat after the first runs on a freshly started target (external services are not "
                "restarted), so the interval covers the start-to-start variation of a process's speed, and "
                "the repeats are interleaved in time across the choices (repeat 2 of every choice, then "
                "repeat 3 of every choice, alternating the order), so a slow spell of the machine lowers "
                "one repeat of several choices rather than every repeat of one; "
                if se.get("repeat_restart")
                else "all on the target process of the coarse search; "
            )
            + "each gives one estimate, the geometric midpoint of its final bracket. `max rps` is the "
            "geometric mean of the estimates; the interval is a 95% t interval on the log scale (at least "
            "± half a final cell). Two choices tie when the 95% Welch t interval of their ratio includes 1; "
            "`2=` marks the choices that tie with the first of their group."
        )
    else:
        items.append(
            "A single search per choice: `max rps` is the highest rate that passed, with its bracket; two "
            "choices within the search resolution are reported as a tie."
        )
    items.append(f"CPU pinning: {pin}.")
    return items


def _external_items(run: CompareRun) -> list[str]:
    """External choices: what was measured, as their /health described it."""
    items = []
    for r in run.results:
        if not r.choice.external:
            continue
        h = r.target_health or {}
        what = ", ".join(
            f"{k} {h[k]}" for k in ("framework", "server", "model", "format", "task") if h.get(k)
        )
        items.append(
            f"`{r.choice.id}`: {r.choice.url} — already running, not started or stopped by compare; "
            f"server CPU and affinity not measured. Its /health: {what or 'no details'}."
        )
    return items


def sweep_blocks_of(run: CompareRun, plots: bool) -> list[Block]:
    """``[measure] sweep_users`` / ``sweep_rates``: one table per choice and axis, the knee and (``plots``)
    the curve's chart."""
    blocks: list[Block] = []
    for r in run.results:
        for axis, doc in sorted(r.sweeps.items()):
            sweep = Sweep.from_dict(doc, f"{r.choice.id} sweep")
            if not blocks:
                blocks.append(Heading(2, "Sweeps"))
                blocks.append(Para(
                    "One run per point on the choice's first target start, in order (users: closed loop; "
                    f"rate: open loop, corrected latency). {KNEE_RULE[0].upper()}{KNEE_RULE[1:]}."
                ))  # fmt: skip
            what = "concurrency (users)" if axis == "users" else "rate (rps)"
            blocks.append(Heading(3, f"{r.choice.label}: {what}"))
            blocks.append(Table(POINT_HEADERS, point_rows(sweep), POINT_ALIGN))
            blocks.append(Para(knee_para(sweep)))
            if plots:
                from deploybench.reports import plots as plotting  # import cost: matplotlib, for images only

                png = plotting.sweep_png(sweep)
                if png is not None:
                    alt = f"{r.choice.id}: latency-throughput ({axis} sweep; knee circled)"
                    blocks.append(Image(alt, png))
    return blocks


def _model_server_items(run: CompareRun) -> list[str]:
    """Third-party model servers: each ran from its own virtualenv; the versions that served it."""
    items = []
    for r in run.results:
        if not r.choice.model_server:
            continue
        versions = (r.target_health or {}).get("versions") or {}
        listed = ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "not recorded"
        items.append(f"`{r.choice.id}`: started from its own virtualenv; versions: {listed}.")
    return items


def _model_file_items(run: CompareRun) -> list[str]:
    """The user's model files in the matrix ([[models]] / --model-file)."""
    items = []
    for m in run.config.get("models") or []:
        files = ", ".join(f"{fmt} `{path}`" for fmt, path in (m.get("files") or {}).items())
        shape = m.get("input_shape")
        trust = "; pickle trusted by sha256 " + str(m["trust_pickle"]) if m.get("trust_pickle") else ""
        items.append(f"**{m.get('name')}**: {files}" + (f"; input shape {shape}" if shape else "") + trust)
    return items


def _search_rows(run: CompareRun) -> list[list[str]]:
    rows = []
    for r in run.results:
        for p in (r.saturation or {}).get("points", []):
            extra = p.get("extra") or {}
            scheduled = extra.get("scheduled")
            count = extra.get("count")
            achieved = fmt_rate(p.get("throughput_rps"))
            if scheduled:
                achieved += f" ({count}/{scheduled})"
            rows.append(
                [
                    f"`{r.choice.id}`",
                    str(extra.get("phase") or "-"),
                    fmt_rate(p.get("offered_rps")),
                    achieved,
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


def probe_records(run: CompareRun, folder: Path) -> dict[str, RunRecord]:
    """The load record of every search probe (``extra.record``, relative to the compare folder), keyed by
    that path; a missing or unreadable file is left out (its probe gets no panel)."""
    out: dict[str, RunRecord] = {}
    for r in run.results:
        for p in (r.saturation or {}).get("points", []):
            rel = (p.get("extra") or {}).get("record")
            if not rel or rel in out:
                continue
            try:
                out[rel] = load_record(folder / rel)
            except (UsageError, OSError, ValueError):
                continue
    return out


def _probe_blocks(run: CompareRun, records_dir: Path) -> list[Block]:
    from deploybench.reports import plots as plotting  # import cost: matplotlib, only when images are wanted

    figures = plotting.probe_timelines(run, probe_records(run, records_dir))
    if not figures:
        return []
    blocks: list[Block] = [
        Heading(2, "Probes over time"),
        Para(
            "Per choice, one panel per probe of its search (coarse and repeats), by offered rate: P99 "
            "(solid) and P50 (dashed) of each 1 s block of the measured window, from the block's own "
            "histogram, with the P99 SLO dotted; below, the achieved rate per block against the offered rate "
            "(dashed). The warm-up before the window is shaded (not measured). A stall shows as one block "
            "with a high P99 and a rate near 0; sustained overload, as every block high. At most "
            f"{plotting.PROBE_CAP} panels per choice: the probes nearest its boundary when it ran more."
        ),
    ]
    for f in figures:
        blocks.append(
            Image(f"{f.label}: each probe over time", plotting.probe_timelines_png(f, run.slo_p99_us / 1000))
        )
        notes = []
        if len(f.panels) < f.probes - f.without_blocks:
            notes.append(f"{len(f.panels)} of {f.probes} probes shown (the nearest the boundary)")
        if f.without_blocks:
            notes.append(f"{f.without_blocks} of {f.probes} probes without per-block data (record missing or "
                         "from before blocks were recorded)")  # fmt: skip
        if notes:
            blocks.append(Para(f"`{f.choice_id}`: " + "; ".join(notes) + "."))
    return blocks


def _span(value: Any, rng: Any, fmt: str = "{:,.0f}") -> str:
    text = fmt.format(value)
    if rng and rng[0] != rng[1]:
        text += f" ({fmt.format(rng[0])}-{fmt.format(rng[1])})"
    return text


SCALING_HEADERS = ["deployment", "workers", "server cores", "max rps (95% CI)", "rps per core",
                   "speed-up (95% CI)", "efficiency"]  # fmt: skip


def scaling_cells(rows: list[ScalingRow]) -> list[list[str]]:
    """The scaling table's cells (``SCALING_HEADERS``), shared by the report and ``deploybench plan``."""
    out = []
    for r in rows:
        iv = f" ({r.lo_rps:,.0f}-{r.hi_rps:,.0f})" if r.lo_rps is not None and r.hi_rps is not None else ""
        sp = "1 (base)"
        if r.speedup_lo is not None and r.speedup_hi is not None:
            sp = f"{r.speedup:.2f}x ({r.speedup_lo:.2f}-{r.speedup_hi:.2f})"
        eff = "—" if r.efficiency is None else f"{r.efficiency:.0%}"
        rate = f"{r.rps:,.0f}{iv}"
        out.append([r.group, str(r.workers), str(r.cores), rate, f"{r.rps_per_core:,.0f}", sp, eff])
    return out


def scaling_blocks(run: CompareRun) -> list[Block]:
    """The same deployment at several worker counts (``compare_doc.scaling_rows``): rate, rate per server
    core, speed-up over the fewest workers with its 95% interval, efficiency (speed-up / ratio of cores)."""
    rows = scaling_rows(run)
    if not rows:
        return []
    return [
        Heading(2, "Scaling"),
        Table(SCALING_HEADERS, scaling_cells(rows), "lrrrrrr"),
        Para(
            "The same deployment at several worker counts: speed-up = max rate over that of the fewest "
            "workers (95% interval from both sets of repeats), efficiency = speed-up / the ratio of server "
            "cores. Server cores are those the server ran on: on a machine that keeps one core for the load "
            "generator they may not grow with the workers."
        ),
    ]


def _capacity_method(doc: dict[str, Any]) -> str:
    price = doc.get("core_hour_price")
    cost = f", cost = cores x {price:g} per core-hour x {doc['hours_per_month']:g} h a month" if price else ""
    return (
        f"Replicas = ceil(traffic / (capacity x (1 - headroom {doc['headroom']:.0%}))), cores = replicas x "
        f"cores per replica{cost}. In brackets: the range from the ends of each capacity's 95% interval. "
        "Capacity is the max rate under the SLO measured on the cores the server ran on (`deploybench plan`)."
    )


def capacity_blocks(run: CompareRun) -> list[Block]:
    """The capacity section (``[plan]`` traffic given): per ranked choice, cheapest first, the replicas,
    cores and cost at the traffic, with the ranges of the measured intervals (``deploybench plan``)."""
    doc = run.capacity
    if not doc:
        return []
    price = doc.get("core_hour_price")
    headers = ["choice", "capacity/replica (rps)", "cores/replica", "replicas", "cores"]
    align = "lrrrr"
    if price:
        headers += ["cost/month", "per 1M requests"]
        align += "rr"
    rows = []
    for r in doc.get("rows") or []:
        cells = [
            f"`{r['label']}`",
            _span(r["capacity_rps"], [r["capacity_lo_rps"], r["capacity_hi_rps"]]
                  if r.get("capacity_lo_rps") is not None else None),
            str(r["cores_per_replica"]) + (" (extrapolated)" if r.get("extrapolated") else ""),
            _span(r["replicas"], r.get("replicas_range")),
            _span(r["cores"], r.get("cores_range")),
        ]  # fmt: skip
        if price:
            cells += [_span(r["cost_per_month"], r.get("cost_per_month_range"), "{:,.2f}"),
                      f"{r['cost_per_million']:.4f}"]  # fmt: skip
        rows.append(cells)
    blocks: list[Block] = [
        Heading(2, f"Capacity at {doc['traffic_rps']:,.0f} rps"),
        Table(headers, rows, align),
        Para(_capacity_method(doc)),
    ]
    notes = [f"`{r['label']}`: {n}" for r in doc.get("rows") or [] for n in r.get("notes") or []]
    notes += [f"left out: {line}" for line in doc.get("left_out") or []]
    if notes:
        blocks.append(Bullets(notes))
    return blocks


def build_blocks(run: CompareRun, *, plots: bool = True, records_dir: Path | None = None) -> list[Block]:
    """The report's document; ``records_dir`` (the compare folder) is where the probes' load records are
    read from for their over-time panels (none without it, or without ``plots``)."""
    if plots:
        from deploybench.reports import (
            plots as plotting,  # import cost: matplotlib, only when images are wanted
        )

    cfg = run.config
    blocks: list[Block] = [Heading(1, f"deploybench compare: {cfg.get('name', '?')}")]
    if cfg.get("description"):
        blocks.append(Para(str(cfg["description"])))
    blocks.append(Para(_verdict(run)))
    blocks.append(Para(_headline(run)))
    blocks.append(Heading(2, "Ranking"))
    headers, align = rank_headers(run)
    blocks.append(Table(headers, ranked_rows(run), align))
    blocks.append(
        Para(
            "Ranked by max throughput under the SLO (higher is better; with repeated searches the geometric "
            "mean of their estimates, its 95% interval and each estimate), then P99 at the common rate. "
            "`1=`, `2=`, ... mark choices that cannot be told apart (their ratio's 95% interval includes 1). "
            "P50/P95/P99 (corrected for coordinated omission), errors and server CPU are at the common rate. "
            "Choices that failed or were interrupted are listed unranked."
        )
    )
    blocks.extend(scaling_blocks(run))
    blocks.extend(capacity_blocks(run))
    not_done = [r for r in run.results if r.status != "complete"]
    if not_done:
        blocks.append(Heading(2, "Choices that did not complete"))
        blocks.append(
            Bullets([f"`{r.choice.id}`: {r.status}: {(r.error or '').strip()[:800]}" for r in not_done])
        )
    if run.skipped:
        blocks.append(Heading(2, "Skipped combinations"))
        blocks.append(Bullets([f"`{s.combo}`: {s.reason}" for s in run.skipped]))
    files = _model_file_items(run)
    if files:
        blocks.append(Heading(2, "Your model files"))
        blocks.append(Bullets(files))
    blocks.extend(sweep_blocks_of(run, plots))
    servers = _model_server_items(run)
    if servers:
        blocks.append(Heading(2, "Model servers"))
        blocks.append(Bullets(servers))
    external = _external_items(run)
    if external:
        blocks.append(Heading(2, "External choices"))
        blocks.append(Bullets(external))

    blocks.append(Heading(2, "Latency-throughput"))
    if plots:
        png = plotting.latency_throughput_png(run)
        if png:
            blocks.append(Image("Latency-throughput: P99 vs achieved throughput per choice", png))
    rows = _search_rows(run)
    if rows:
        headers = ["choice", "phase", "offered (rps)", "achieved (rps; ok/scheduled)", "P99 (ms)", "errors",
                   "verdict"]  # fmt: skip
        blocks.append(Table(headers, rows, "llrrrrl"))
    if plots and records_dir is not None:
        blocks.extend(_probe_blocks(run, records_dir))
    if plots:
        png = plotting.spectrum_png(run)
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


# -- files -------------------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "plot"


def write_report(
    run: CompareRun, out_dir: Path, *, plots: bool = True, records_dir: Path | None = None
) -> list[Path]:
    """``report.md`` (PNG files under plots/), ``report.html`` (self-contained); returns the paths. The
    probes' load records are read from ``records_dir`` (default: ``out_dir``, the compare folder)."""
    blocks = build_blocks(run, plots=plots, records_dir=out_dir if records_dir is None else records_dir)
    md_blocks: list[Block] = []
    written: list[Path] = []
    names: set[str] = set()
    for b in blocks:
        if isinstance(b, Image):
            stem = _slug(b.title)[:60]
            name, k = f"{stem}.png", 1
            while name in names:  # long choice labels can share their first 60 characters
                k += 1
                name = f"{stem}-{k}.png"
            names.add(name)
            path = out_dir / "plots" / name
            write_atomic(path, b.png)
            written.append(path)
            md_blocks.append(Para(f"![{b.title}](plots/{path.name})"))
        else:
            md_blocks.append(b)
    title = f"deploybench compare: {run.config.get('name', '?')}"
    md, html_path = out_dir / "report.md", out_dir / "report.html"
    write_atomic(md, blocks_to_markdown(md_blocks))
    write_atomic(html_path, blocks_to_html(blocks, title))
    return [md, html_path, *written]
