"""RunRecord: the one versioned JSON document every measurement produces and every report reads.

Format history (``schema_version``):

- 1: the first draft: series under ``endpoints``, float milliseconds under ``latency_ms``, no ``kind`` or
  ``status``.
- 2: series under ``series`` with integer microseconds under ``latency_us``; ``kind`` ("load" | "micro")
  and ``status``; encoded HdrHistograms (load) or raw samples (micro) beside the percentiles.
- 3: micro samples at full timer resolution, integer nanoseconds under ``samples_ns`` (v2's ``samples_us``
  was rounded to whole µs: one step is 14 % of a 7 µs call); load series may carry ``blocks`` (per-time-block
  histograms and counts, the independent units a gate bootstraps over) and ``scheduled`` (open loop: the
  exact number of arrival slots scheduled in the measured window).
  Additive within 3 (no migration: absent in older records, read as None, and left out when None): a load
  record's optional top-level ``cpu_blocks``, the load generator's and the server's CPU per time block.

A change of a field bumps ``SCHEMA_VERSION`` and adds a migration from the previous version to
``_MIGRATIONS``; records are migrated on load, so every reader sees the current version.

Layout (schema_version 3)::

    {
      "schema_version": 3,
      "kind": "load" | "micro",
      "run_id": "20261128T015011Z-load-fastapi-iris-rf-onnx",
      "status": "running" | "complete" | "interrupted" | "failed",
      "started_utc": "...", "ended_utc": "..." | null,
      "config": {...},            # target, framework, server, workers, model, format, scenario, load model
      "env": {...},               # deploybench.env.capture_env()
      "series": [Series, ...],    # one per endpoint (load) or per benchmark case (micro)
      "warnings": [RecordWarning, ...],
      "error": null | "message",  # why a failed/interrupted run ended
      "cpu_blocks": [CpuBlock, ...]   # optional (load): absent when not sampled
    }

A CpuBlock is ``{"start_s": float, "duration_s": float, "generator_cpu_percent": float | None,
"server_cpu_percent": float | None}``: the CPU time of the load generator's process tree and of the server's
(100 = one core busy) over that interval, sampled by the parent process (psutil, every ~0.5 s, interpolated at
the block edges). ``start_s`` is on the series blocks' clock (seconds since the measured window's start: the
same edges as the first series' ``blocks``); warm-up intervals come first with a negative ``start_s``.
``server_cpu_percent`` is None when deploybench did not start the server (``--url``), a figure None when it
could not be read.

A Series carries exact percentiles in integer microseconds, counts, errors by kind, throughput and,
when available, the encoded HdrHistogram (load) or raw samples (micro) they were computed from.

Older versions are migrated on load (see ``_MIGRATIONS``); comparisons use ``env_key`` to refuse records
from different environments.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploybench.errors import UsageError
from deploybench.io import read_json_object, utc_now, utc_stamp, write_json_atomic

SCHEMA_VERSION = 3
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0, 99.9)
# A sweep's summary (``deploybench.sweep``) beside its points' records in the sweep folder: not a record, so
# folder readers skip it.
SWEEP_FILE = "sweep.json"


def pct_key(p: float) -> str:
    """50.0 -> 'p50', 99.9 -> 'p99.9' (the keys of ``latency_us`` dicts and of gate rules)."""
    return "p" + (f"{p:g}")


@dataclass(frozen=True)
class RecordWarning:
    """A measurement warning, stored in the record and rendered by reporters (never printed)."""

    code: str  # e.g. "generator-bound", "few-samples", "high-spread", "unstable", "slow-first-round"
    message: str
    hint: str = ""
    series: str | None = None  # the series it concerns, or None for the whole run

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecordWarning:
        return cls(code=d["code"], message=d["message"], hint=d.get("hint", ""), series=d.get("series"))


@dataclass
class Series:
    """One measured thing: an endpoint under load, or one micro-benchmark case."""

    name: str
    count: int = 0  # successful measurements in the window
    latency_us: dict[str, int | None] = field(default_factory=dict)  # p50 ... p99.9, min, max, mean
    errors: dict[str, int] = field(default_factory=dict)  # kind -> count
    duration_s: float | None = None  # measured window
    throughput_rps: float | None = None  # achieved (successes / window)
    offered_rps: float | None = None  # open loop: intended arrival rate
    items_per_s: float | None = None  # micro: batch_size * calls/s
    uncorrected_latency_us: dict[str, int | None] | None = None  # open loop: from actual send
    server_timing_us: dict[str, dict[str, int | None]] | None = None  # decode/preprocess/infer -> pcts
    histogram: str | None = None  # base64 HdrHistogram (µs) of latency_us (corrected, for open loop)
    uncorrected_histogram: str | None = None
    samples_ns: list[int] | None = None  # raw samples (micro-benchmarks), integer ns as timed
    # Consecutive time blocks of the measured window (load): [{"start_s", "duration_s", "count", "errors",
    # "histogram"}, ...]; successive requests are correlated (queueing), blocks of ~1 s far less so.
    blocks: list[dict[str, Any]] | None = None
    scheduled: int | None = None  # open loop: arrival slots scheduled in the measured window (exact)
    params: dict[str, Any] = field(default_factory=dict)  # batch_size, threads, format, ...
    extra: dict[str, Any] = field(default_factory=dict)  # anything else (load_time_us, size_bytes, ...)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def error_ratio(self) -> float:
        total = self.count + self.error_count
        return self.error_count / total if total else 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Series:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class RunRecord:
    kind: str
    config: dict[str, Any]
    env: dict[str, Any]
    run_id: str = ""
    status: str = "running"
    started_utc: str = ""
    ended_utc: str | None = None
    series: list[Series] = field(default_factory=list)
    warnings: list[RecordWarning] = field(default_factory=list)
    error: str | None = None
    schema_version: int = SCHEMA_VERSION
    # load: generator and server CPU per time block (see the module docstring); None: not sampled
    cpu_blocks: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not self.started_utc:
            self.started_utc = utc_now()
        if not self.run_id:
            self.run_id = make_run_id(self.kind, self.config, self.started_utc)

    # -- convenience -------------------------------------------------------------------------------
    def get_series(self, name: str) -> Series | None:
        return next((s for s in self.series if s.name == name), None)

    def add_warning(self, code: str, message: str, hint: str = "", series: str | None = None) -> None:
        w = RecordWarning(code, message, hint, series)
        if w not in self.warnings:
            self.warnings.append(w)

    def finish(self, status: str = "complete", error: str | None = None) -> None:
        self.status = status
        self.error = error
        self.ended_utc = utc_now()

    # -- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d.get("cpu_blocks") is None:
            d.pop("cpu_blocks", None)  # optional: records without it stay as they were
        # schema_version first for humans reading the file
        return {"schema_version": d.pop("schema_version"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        d = migrate(d)
        for key in ("config", "env"):
            if not isinstance(d.get(key, {}), dict):
                raise UsageError(f"malformed run record ({key!r} is not an object)")
        for key in ("series", "warnings", "cpu_blocks"):
            items = d.get(key, [])
            if key == "cpu_blocks" and items is None:
                continue
            if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
                raise UsageError(f"malformed run record ({key!r} is not a list of objects)")
        return cls(
            kind=d["kind"],
            config=d.get("config", {}),
            env=d.get("env", {}),
            run_id=d.get("run_id", ""),
            status=d.get("status", "complete"),
            started_utc=d.get("started_utc", ""),
            ended_utc=d.get("ended_utc"),
            series=[Series.from_dict(s) for s in d.get("series", [])],
            warnings=[RecordWarning.from_dict(w) for w in d.get("warnings", [])],
            error=d.get("error"),
            schema_version=SCHEMA_VERSION,
            cpu_blocks=d.get("cpu_blocks"),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file + rename): a reader never sees half a record."""
        return write_json_atomic(path, self.to_dict())


def make_run_id(kind: str, config: dict[str, Any], started_utc: str) -> str:
    stamp = utc_stamp(started_utc)
    parts = [kind] + [
        str(config[k]) for k in ("framework", "server", "model", "format", "scenario") if config.get(k)
    ]
    slug = "-".join(parts).replace("/", "_").replace(" ", "_")
    return f"{stamp}-{slug}"


# -- migrations --------------------------------------------------------------------------------------
def _migrate_v1(d: dict[str, Any]) -> dict[str, Any]:
    """v1 (the first draft format) stored float milliseconds under ``latency_ms`` and called series
    ``endpoints``; v2 stores integer microseconds under ``latency_us`` and adds ``kind``/``status``."""
    out = {k: v for k, v in d.items() if k not in ("endpoints", "latency_ms")}
    out["kind"] = d.get("kind", "load")
    out["status"] = d.get("status", "complete")
    series = []
    for s in d.get("endpoints", []):
        s = dict(s)
        ms = s.pop("latency_ms", {}) or {}
        s["latency_us"] = {k: (None if v is None else round(v * 1000)) for k, v in ms.items()}
        series.append(s)
    out["series"] = series
    out["schema_version"] = 2
    return out


def _migrate_v2(d: dict[str, Any]) -> dict[str, Any]:
    """v2 stored micro samples as whole µs under ``samples_us``; v3 stores integer ns under ``samples_ns``
    (the v2 values become multiples of 1000: the lost resolution does not come back)."""
    out = dict(d)
    series = []
    for s in d.get("series", []):
        s = dict(s) if isinstance(s, dict) else s
        if isinstance(s, dict) and "samples_us" in s:
            us = s.pop("samples_us")
            s["samples_ns"] = None if us is None else [int(v) * 1000 for v in us]
        series.append(s)
    out["series"] = series
    out["schema_version"] = 3
    return out


_MIGRATIONS = {1: _migrate_v1, 2: _migrate_v2}


def migrate(d: dict[str, Any]) -> dict[str, Any]:
    version = d.get("schema_version")
    if not isinstance(version, int):
        raise UsageError("not a deploybench run record (no integer schema_version)")
    if version > SCHEMA_VERSION:
        raise UsageError(
            f"record schema_version {version} is newer than this deploybench understands ({SCHEMA_VERSION})"
        )
    while version < SCHEMA_VERSION:
        d = _MIGRATIONS[version](d)
        version = d["schema_version"]
    return d


def load_record(path: str | os.PathLike[str]) -> RunRecord:
    return record_from_json(read_json_object(path), path)


def record_from_json(data: dict[str, Any], source: str | os.PathLike[str]) -> RunRecord:
    """A record from its parsed JSON (migrated to this schema); a UsageError names ``source`` and the
    problem."""
    try:
        return RunRecord.from_dict(data)
    except UsageError as exc:
        raise UsageError(f"{source}: {exc}") from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise UsageError(f"{source}: malformed run record ({exc!r})") from None


def load_records(paths: list[str | os.PathLike[str]]) -> list[RunRecord]:
    """Load files and every ``*.json`` record found directly inside folders given."""
    out: list[RunRecord] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files = sorted(f for f in p.glob("*.json") if not f.name.startswith(".") and f.name != SWEEP_FILE)
            if not files:
                raise UsageError(f"{p}: no *.json records in this folder")
            out.extend(load_record(f) for f in files)
        else:
            out.append(load_record(p))
    return out
