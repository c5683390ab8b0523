"""Results as tidy pandas DataFrames, for notebooks: ``load_frames("results/")``.

Four frames, one row per observation, units in the column names:

- ``runs``: one row per run x series (an endpoint under load, a micro-benchmark case): the figures of the
  record's summary (also what ``deploybench report --format csv`` writes: both come from ``series_rows``);
- ``blocks``: one row per run x series x time block (1 s blocks of a load run's measured window): requests,
  errors, throughput and latency percentiles of that block, from its own histogram;
- ``probes``: one row per compare choice x probe of its saturation search: offered and achieved rate, P99,
  errors, pass or fail;
- ``cpu``: one row per run x CPU block (a record's ``cpu_blocks``): the load generator's and the server's CPU
  (100 = one core). A separate frame, not columns of ``blocks``: CPU is per run, not per endpoint, and its
  blocks cover the warm-up too (negative ``start_s``); ``start_s`` is on the blocks' clock, so
  ``blocks.merge(cpu, on=["run_id", "start_s"], how="left")`` puts them side by side.

A path is a record file, a compare document (``compare.json``) or a folder; folders are searched recursively
(a compare folder holds its choices' load records as well). pandas is imported only when a frame is built.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploybench.compare_doc import CompareRun, compare_from_json
from deploybench.errors import UsageError
from deploybench.record import PERCENTILES, RunRecord, pct_key, record_from_json
from deploybench.stats import decode_histogram, summarize_histogram

if TYPE_CHECKING:
    import pandas as pd

LATENCY_KEYS = tuple(pct_key(p) for p in PERCENTILES)
RUN_COLUMNS = (
    "run_id", "kind", "status", "model", "format", "series", "case", "batch_size", "threads", "count",
    *(f"{k}_us" for k in LATENCY_KEYS), "min_us", "max_us", "mean_us", "throughput_rps", "offered_rps",
    "scheduled", "items_per_s", "error_count", "error_ratio", "load_time_us", "size_bytes",
    "uncorrected_p99_us", "warnings",
)  # fmt: skip
CONTEXT_COLUMNS = ("started_utc", "framework", "server", "workers", "scenario", "load_model", "engine")
BLOCK_COLUMNS = (
    "run_id", "series", "block", "start_s", "duration_s", "count", "error_count", "throughput_rps",
    "p50_us", "p90_us", "p99_us", "max_us", "offered_rps", "p50_uncorrected_us", "p99_uncorrected_us",
    "error_kinds",
)  # fmt: skip
CPU_COLUMNS = ("run_id", "block", "start_s", "duration_s", "generator_cpu_percent", "server_cpu_percent")
PROBE_COLUMNS = (
    "choice", "framework", "server", "model", "format", "workers", "phase", "probe", "offered_rps",
    "throughput_rps", "p99_us", "error_ratio", "passed", "reasons",
)  # fmt: skip


def series_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One flat row per run x series (``RUN_COLUMNS``): None where a figure was not measured."""
    rows = []
    for r in records:
        for s in r.series:
            lat = s.latency_us
            rows.append(
                {
                    "run_id": r.run_id,
                    "kind": r.kind,
                    "status": r.status,
                    "model": s.params.get("model", r.config.get("model")),
                    "format": s.params.get("format", r.config.get("format")),
                    "series": s.name,
                    "case": s.params.get("case"),
                    "batch_size": s.params.get("batch_size"),
                    "threads": s.params.get("threads"),
                    "count": s.count,
                    **{f"{k}_us": lat.get(k) for k in LATENCY_KEYS},
                    "min_us": lat.get("min"),
                    "max_us": lat.get("max"),
                    "mean_us": lat.get("mean"),
                    "throughput_rps": s.throughput_rps,
                    "offered_rps": s.offered_rps,
                    "scheduled": s.scheduled,
                    "items_per_s": s.items_per_s,
                    "error_count": s.error_count,
                    "error_ratio": s.error_ratio,
                    "load_time_us": s.extra.get("load_time_us"),
                    "size_bytes": s.extra.get("size_bytes"),
                    "uncorrected_p99_us": (s.uncorrected_latency_us or {}).get("p99"),
                    "warnings": ";".join(w.code for w in r.warnings if w.series == s.name),
                }
            )
    return rows


def block_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per run x series x time block (``BLOCK_COLUMNS``); series without blocks give none."""
    rows = []
    for r in records:
        for s in r.series:
            for i, b in enumerate(s.blocks or ()):
                lat = summarize_histogram(decode_histogram(b["histogram"])) if b.get("histogram") else {}
                duration = float(b.get("duration_s") or 0.0)
                count = int(b.get("count") or 0)
                errors = int(b.get("errors") or 0)
                unc = b.get("uncorrected_histogram")  # open loop only
                raw = summarize_histogram(decode_histogram(unc)) if unc and count else {}
                open_loop = s.scheduled is not None or unc is not None
                rows.append(
                    {
                        "run_id": r.run_id,
                        "series": s.name,
                        "block": i,
                        "start_s": float(b.get("start_s") or 0.0),
                        "duration_s": duration,
                        "count": count,
                        "error_count": errors,
                        "throughput_rps": count / duration if duration > 0 else None,
                        **{f"{k}_us": lat.get(k) for k in ("p50", "p90", "p99", "max")},
                        # open loop, every slot of a block ends as a success or an error: what it offered
                        "offered_rps": (count + errors) / duration if open_loop and duration > 0 else None,
                        "p50_uncorrected_us": raw.get("p50"),
                        "p99_uncorrected_us": raw.get("p99"),
                        "error_kinds": dict(b.get("error_kinds") or {}),
                    }
                )
    return rows


def _percent(value: Any) -> float | None:
    return None if value is None else float(value)


def cpu_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per run x CPU block (``CPU_COLUMNS``) of each record's optional ``cpu_blocks``; records
    without them give none."""
    rows = []
    for r in records:
        for i, b in enumerate(getattr(r, "cpu_blocks", None) or ()):
            rows.append(
                {
                    "run_id": r.run_id,
                    "block": i,
                    "start_s": float(b.get("start_s") or 0.0),
                    "duration_s": float(b.get("duration_s") or 0.0),
                    "generator_cpu_percent": _percent(b.get("generator_cpu_percent")),
                    "server_cpu_percent": _percent(b.get("server_cpu_percent")),
                }
            )
    return rows


def probe_rows(runs: Sequence[CompareRun]) -> list[dict[str, Any]]:
    """One row per compare choice x probe of its saturation search (``PROBE_COLUMNS``), in the order run."""
    rows = []
    for run in runs:
        for res in run.results:
            c = res.choice
            for i, p in enumerate((res.saturation or {}).get("points", [])):
                extra = p.get("extra") or {}
                rows.append(
                    {
                        "choice": c.id,
                        "framework": c.framework,
                        "server": c.server,
                        "model": c.model,
                        "format": c.format,
                        "workers": c.workers,
                        "phase": extra.get("phase"),
                        "probe": i,
                        "offered_rps": p.get("offered_rps"),
                        "throughput_rps": p.get("throughput_rps"),
                        "p99_us": p.get("p99_us"),
                        "error_ratio": p.get("error_ratio"),
                        "passed": bool(p.get("passed")),
                        "reasons": "; ".join(p.get("reasons") or ()),
                    }
                )
    return rows


def _empty_cpu() -> pd.DataFrame:
    import pandas as pd  # import cost: pandas, only when a frame is built

    return pd.DataFrame([], columns=list(CPU_COLUMNS))


@dataclass
class Frames:
    runs: pd.DataFrame
    blocks: pd.DataFrame
    probes: pd.DataFrame
    cpu: pd.DataFrame = field(default_factory=_empty_cpu)


def _context(record: RunRecord) -> dict[str, Any]:
    c = record.config
    return {
        "started_utc": record.started_utc,
        "framework": c.get("framework"),
        "server": c.get("server"),
        "workers": c.get("workers"),
        "scenario": c.get("scenario"),
        "load_model": c.get("load_model"),
        "engine": c.get("engine"),
    }


def frames(records: Sequence[RunRecord], compares: Sequence[CompareRun] = ()) -> Frames:
    """The frames of these records and compare documents (empty frames keep their columns)."""
    import pandas as pd  # import cost: pandas takes ~0.5 s; only notebooks and this API need it

    context = {r.run_id: _context(r) for r in records}
    runs = [{**row, **context[row["run_id"]]} for row in series_rows(records)]
    return Frames(
        runs=pd.DataFrame(runs, columns=[*RUN_COLUMNS, *CONTEXT_COLUMNS]),
        blocks=pd.DataFrame(block_rows(records), columns=list(BLOCK_COLUMNS)),
        probes=pd.DataFrame(probe_rows(compares), columns=list(PROBE_COLUMNS)),
        cpu=pd.DataFrame(cpu_rows(records), columns=list(CPU_COLUMNS)),
    )


def _kind(data: dict[str, Any]) -> str | None:
    """ "record", "compare" or None (a JSON object of another kind: reports' summaries, manifests, ...)."""
    if data.get("kind") == "compare" and "results" in data:
        return "compare"
    if "series" in data and "kind" in data and "config" in data:
        return "record"
    return None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def collect(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[RunRecord], list[CompareRun]]:
    """Every run record and compare document in these files and folders (folders recursively); each file is
    read once."""
    records: list[RunRecord] = []
    compares: list[CompareRun] = []
    for given in paths:
        p = Path(given)
        if not p.exists():
            raise UsageError(f"{p}: no such file or folder")
        files = sorted(f for f in p.rglob("*.json") if not f.name.startswith(".")) if p.is_dir() else [p]
        for f in files:
            data = _read(f)
            kind = _kind(data) if data is not None else None
            if kind == "record":
                records.append(record_from_json(data, f))
            elif kind == "compare":
                compares.append(compare_from_json(data, f))
            elif not p.is_dir():
                raise UsageError(f"{f}: neither a run record nor a compare document")
    return records, compares


def load_frames(*paths: str | os.PathLike[str]) -> Frames:
    """``load_frames("results/compare/20261204T104404Z-quick")`` -> ``Frames(runs, blocks, probes, cpu)``."""
    records, compares = collect(paths or (".",))
    return frames(records, compares)
