"""Concurrency and rate sweeps: the points of a sweep, its latency-throughput curve and the curve's knee.

A sweep is several load runs of one target, one per point of one axis, run in order: ``users`` (closed loop:
concurrent users, like perf_analyzer's ``--concurrency-range``) or ``rate`` (open loop: arrival rate in
requests/s, like its ``--request-rate-range``). Each point keeps its own run record; the sweep's summary
(``sweep.json`` in the sweep's folder, schema below) lists the points and the knee. This module is pure logic
(values -> points -> curve -> knee) plus ``save_sweep``/``load_sweep``; the runner
(``deploybench.loadtests.runner.run_sweep``) measures, reports and compare read the summary.

Point lists (``parse_points``), for ``--users`` and ``--rate``:

- ``8`` — one value: one ordinary run (no sweep);
- ``1,2,4,8,16`` — a list, run in the order given, which must be strictly increasing (an unsorted list or a
  repeated value is refused, not silently sorted: the curve joins the points in sweep order);
- ``1:16`` / ``2:10:2`` — perf_analyzer's linear range ``start:end[:step]``: start, start+step, ... up to
  and including end when a step lands on it (step 1 by default);
- ``1:16:x2`` — a geometric range: start, start*2, start*4, ... up to end (the factor is > 1).

Users are whole numbers >= 1, rates numbers > 0 (rps); at most ``MAX_POINTS`` (20) points.

The knee (``find_knee``): the eligible point of maximal **power**, Kleinrock's ``throughput / delay`` (here
``throughput_rps / P99 latency``; Kleinrock, "Power and deterministic rules of thumb for probabilistic
problems in computer communications", ICC 1979). Below the knee more load buys throughput at little extra
latency, so power rises; past it, latency grows faster than throughput and power falls: its maximum is
where d log P99 / d log throughput crosses 1, the usual "latency starts to grow faster than throughput"
knee, found without differentiating noisy points. P99 rather than the mean because tails are what an SLO
bounds. Rules:

- a point whose run did not complete, whose error ratio is above ``KNEE_MAX_ERROR_RATIO`` (1 %), whose load
  generator was bound (a ``generator-bound`` warning: its figures are the generator's) or which has no
  throughput or P99 cannot be the knee; the summary says why for each;
- fewer than ``MIN_KNEE_POINTS`` (3) eligible points: no knee (a curve needs a rise and a fall to show one);
- the maximum at the last eligible point: no knee, "not reached" (power still rising: sweep further);
- the maximum at the first eligible point: that point is the knee, with a note that it may lie at or below it.

Summary layout (``SWEEP_SCHEMA_VERSION`` 1)::

    {
      "kind": "deploybench-sweep", "schema_version": 1,
      "axis": "users" | "rate", "load_model": "closed" | "constant" | "poisson",
      "status": "complete" | "failed" | "interrupted", "error": null | "message",
      "started_utc": "...", "ended_utc": "...",
      "config": {...},                      # what every point shares: target, scenario, duration_s, ...
      "points": [{"value": 4, "record": "03-users-4.json", "status": "complete",
                  "throughput_rps": 98.7, "offered_rps": null,
                  "latency_us": {"p50": ..., "p90": ..., "p99": ..., "p99.9": ...},   # corrected (open loop)
                  "error_ratio": 0.0, "cpu_us_per_request": 120.5, "busy_percent_max": 11.2,
                  "generator_bound": false, "power": 4.93, "eligible": true, "why_not": ""}, ...],
      "knee": null | {"index": 2, "value": 4, "throughput_rps": ..., "p99_us": ..., "power": ...},
      "knee_rule": "...", "knee_note": "..."
    }

``power`` is throughput_rps per ms of P99 (rps/ms), a figure only for ranking the points of one curve.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploybench.errors import UsageError
from deploybench.io import read_json_object, utc_now, write_json_atomic
from deploybench.record import SWEEP_FILE, RunRecord

SWEEP_KIND = "deploybench-sweep"
SWEEP_SCHEMA_VERSION = 1
AXES: tuple[str, ...] = ("users", "rate")
MAX_POINTS = 20
KNEE_MAX_ERROR_RATIO = 0.01
MIN_KNEE_POINTS = 3
POINT_PCTS: tuple[str, ...] = ("p50", "p90", "p99", "p99.9")
KNEE_RULE = (
    "the eligible point of maximal power = throughput_rps / P99 (Kleinrock); eligible: complete, error ratio "
    f"<= {KNEE_MAX_ERROR_RATIO:.0%}, generator not bound; needs >= {MIN_KNEE_POINTS} eligible points and a "
    "maximum before the last of them"
)
_GEOMETRIC = re.compile(r"^[x*](.+)$")


# -- point lists -------------------------------------------------------------------------------------------
def _number(text: str, axis: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{option} {text!r}: not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"{option} {text!r}: not a finite number")
    if axis == "users":
        if value != int(value) or value < 1:
            raise UsageError(f"{option} must be >= 1: users are whole numbers (got {text!r})")
        return float(int(value))
    if value <= 0:
        raise UsageError(f"{option} must be > 0 requests/s (got {text!r})")
    return value


def _range(text: str, axis: str, option: str) -> list[float]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(p.strip() for p in parts):
        raise UsageError(f"{option} {text!r}: a range is START:END[:STEP] or START:END:xFACTOR")
    start, end = (_number(p.strip(), axis, option) for p in parts[:2])
    if end < start:
        raise UsageError(f"{option} {text!r}: the range's end is below its start")
    step_text = parts[2].strip() if len(parts) == 3 else "1"
    values: list[float] = []
    geometric = _GEOMETRIC.match(step_text)
    if geometric:
        try:
            factor = float(geometric.group(1))
        except ValueError:
            raise UsageError(f"{option} {text!r}: the factor after 'x' is not a number") from None
        if not (math.isfinite(factor) and factor > 1):
            raise UsageError(f"{option} {text!r}: a geometric range needs a factor > 1")
        v = start
        while v <= end * (1 + 1e-9) and len(values) <= MAX_POINTS:
            values.append(float(round(v)) if axis == "users" else round(v, 6))
            v *= factor
    else:
        try:
            step = float(step_text)
        except ValueError:
            raise UsageError(f"{option} {text!r}: the step is not a number (or xFACTOR)") from None
        if not (math.isfinite(step) and step > 0):
            raise UsageError(f"{option} {text!r}: the step must be > 0")
        if axis == "users" and step != int(step):
            raise UsageError(f"{option} {text!r}: a users step is a whole number")
        i = 0
        while start + i * step <= end * (1 + 1e-9) and len(values) <= MAX_POINTS:
            values.append(round(start + i * step, 6))
            i += 1
    deduped = list(dict.fromkeys(values))  # a geometric users range may round two steps to one value
    return deduped


def parse_points(text: str, axis: str, option: str | None = None) -> list[float]:
    """The points of ``--users``/``--rate`` (module docstring), or a UsageError naming the problem.
    Users come back as whole floats (``int(v)`` them); one value means no sweep."""
    if axis not in AXES:
        raise UsageError(f"sweep axis must be one of {', '.join(AXES)} (got {axis!r})")
    option = option or f"--{axis}"
    text = str(text).strip()
    if not text:
        raise UsageError(f"{option}: empty; give a value, a list (1,2,4) or a range (1:16 or 1:16:x2)")
    if ":" in text:
        if "," in text:
            raise UsageError(f"{option} {text!r}: give a list (1,2,4) or a range (1:16), not both")
        values = _range(text, axis, option)
    else:
        items = [t.strip() for t in text.split(",")]
        if any(not t for t in items):
            raise UsageError(f"{option} {text!r}: an empty item in the list")
        values = [_number(t, axis, option) for t in items]
    check_points(values, axis, option)
    return values


def check_points(values: list[float], axis: str, option: str | None = None) -> None:
    """UsageError unless ``values`` are 1..MAX_POINTS valid, strictly increasing points of ``axis``."""
    option = option or f"--{axis}"
    if not values:
        raise UsageError(f"{option}: no points")
    if len(values) > MAX_POINTS:
        raise UsageError(f"{option}: {len(values)} or more points; a sweep has at most {MAX_POINTS}")
    for v in values:
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise UsageError(f"{option}: {v!r} is not a value > 0")
        if axis == "users" and (v != int(v) or v < 1):
            raise UsageError(f"{option} must be >= 1: users are whole numbers (got {v!r})")
    bad = [(a, b) for a, b in itertools.pairwise(values) if b <= a]
    if bad:
        a, b = bad[0]
        raise UsageError(
            f"{option}: the points must be strictly increasing (the sweep runs them in order): "
            f"{_fmt_value(b)} comes after {_fmt_value(a)}"
        )


def _fmt_value(v: float) -> str:
    return f"{v:g}"


def point_label(axis: str, value: float) -> str:
    """'users=4', 'rate=250 rps'."""
    return f"users={int(value)}" if axis == "users" else f"rate={value:g} rps"


def point_file_name(index: int, axis: str, value: float) -> str:
    """The record file of point ``index`` (0-based) in the sweep folder: '03-users-4.json'."""
    v = str(int(value)) if axis == "users" else f"{value:g}".replace(".", "_")
    return f"{index + 1:02d}-{axis}-{v}.json"


# -- points and the knee -----------------------------------------------------------------------------------
@dataclass
class SweepPoint:
    """One point of the curve: what its record measured (all its series together)."""

    value: float
    record: str  # the record's file name, relative to the sweep folder
    status: str = "complete"
    throughput_rps: float | None = None
    offered_rps: float | None = None
    latency_us: dict[str, int | None] = field(default_factory=dict)
    error_ratio: float = 0.0
    cpu_us_per_request: float | None = None
    busy_percent_max: float | None = None
    generator_bound: bool = False
    power: float | None = None  # throughput_rps per ms of P99
    eligible: bool = False
    why_not: str = ""  # why it cannot be the knee ("" when eligible)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepPoint:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def point_from_record(value: float, record: RunRecord, record_name: str) -> SweepPoint:
    """A point from its run record. With several series (endpoints): throughput summed, each percentile the
    slowest series' (a conservative curve), errors over all requests."""
    series = record.series
    tput = [s.throughput_rps for s in series if s.throughput_rps is not None]
    offered = [s.offered_rps for s in series if s.offered_rps is not None]
    latency: dict[str, int | None] = {}
    for key in POINT_PCTS:
        vals = [s.latency_us.get(key) for s in series if s.latency_us.get(key) is not None]
        latency[key] = max(vals) if vals else None  # type: ignore[type-var]
    ok = sum(s.count for s in series)
    errors = sum(s.error_count for s in series)
    head = record.config.get("generator_headroom") or {}
    point = SweepPoint(
        value=value, record=record_name, status=record.status,
        throughput_rps=round(sum(tput), 3) if tput else None,
        offered_rps=round(sum(offered), 3) if offered else None, latency_us=latency,
        error_ratio=round(errors / (ok + errors), 6) if ok + errors else 0.0,
        cpu_us_per_request=head.get("cpu_us_per_request"), busy_percent_max=head.get("busy_percent_max"),
        generator_bound=any(w.code == "generator-bound" for w in record.warnings),
    )  # fmt: skip
    judge_point(point)
    return point


def judge_point(point: SweepPoint) -> None:
    """Fill ``power``, ``eligible`` and ``why_not`` (the knee rules of the module docstring)."""
    p99 = point.latency_us.get("p99")
    if point.throughput_rps and p99:
        point.power = round(point.throughput_rps / (p99 / 1000), 6)
    else:
        point.power = None
    why = ""
    if point.status != "complete":
        why = f"run {point.status}"
    elif point.error_ratio > KNEE_MAX_ERROR_RATIO:
        why = f"error ratio {point.error_ratio:.1%} > {KNEE_MAX_ERROR_RATIO:.0%}"
    elif point.generator_bound:
        why = "load generator bound (its figures are the generator's)"
    elif point.power is None:
        why = "no throughput or P99"
    point.eligible, point.why_not = not why, why


@dataclass(frozen=True)
class Knee:
    index: int  # into the sweep's points
    value: float
    throughput_rps: float
    p99_us: int
    power: float


def find_knee(points: list[SweepPoint]) -> tuple[Knee | None, str]:
    """(the knee or None, a note saying why none or what to know about it); rules in the module docstring."""
    eligible = [(i, p) for i, p in enumerate(points) if p.eligible and p.power is not None]
    if len(points) < MIN_KNEE_POINTS:
        return None, f"no knee: {len(points)} point(s); a knee needs at least {MIN_KNEE_POINTS}"
    if len(eligible) < MIN_KNEE_POINTS:
        return None, (
            f"no knee: {len(eligible)} eligible point(s) of {len(points)}; a knee needs at least "
            f"{MIN_KNEE_POINTS} (see each point's why_not)"
        )
    best_i, best = max(eligible, key=lambda ip: (ip[1].power, -ip[0]))  # ties: the lighter load
    if best_i == eligible[-1][0]:
        return None, (
            "no knee: not reached within the sweep (power, throughput / P99, still highest at the last "
            "eligible point); sweep further"
        )
    knee = Knee(best_i, best.value, float(best.throughput_rps or 0.0), int(best.latency_us["p99"] or 0),
                float(best.power or 0.0))  # fmt: skip
    note = "the point of maximal power (throughput / P99)"
    if best_i == eligible[0][0]:
        note += "; at the first eligible point: the knee may lie at or below it"
    skipped = [p for p in points if not p.eligible]
    if skipped:
        note += f"; {len(skipped)} point(s) could not be the knee (see why_not)"
    return knee, note


# -- the summary -------------------------------------------------------------------------------------------
@dataclass
class Sweep:
    axis: str
    load_model: str
    points: list[SweepPoint] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    error: str | None = None
    started_utc: str = ""
    ended_utc: str | None = None
    knee: Knee | None = None
    knee_note: str = ""

    def __post_init__(self) -> None:
        if self.axis not in AXES:
            raise UsageError(f"sweep axis must be one of {', '.join(AXES)} (got {self.axis!r})")
        if not self.started_utc:
            self.started_utc = utc_now()

    def add(self, point: SweepPoint) -> None:
        self.points.append(point)
        self.knee, self.knee_note = find_knee(self.points)

    def finish(self, status: str = "complete", error: str | None = None) -> None:
        self.status, self.error, self.ended_utc = status, error, utc_now()
        self.knee, self.knee_note = find_knee(self.points)

    def label(self, index: int) -> str:
        return point_label(self.axis, self.points[index].value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": SWEEP_KIND,
            "schema_version": SWEEP_SCHEMA_VERSION,
            "axis": self.axis,
            "load_model": self.load_model,
            "status": self.status,
            "error": self.error,
            "started_utc": self.started_utc,
            "ended_utc": self.ended_utc,
            "config": self.config,
            "points": [asdict(p) for p in self.points],
            "knee": asdict(self.knee) if self.knee else None,
            "knee_rule": KNEE_RULE,
            "knee_note": self.knee_note,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | os.PathLike[str] = "sweep") -> Sweep:
        if d.get("kind") != SWEEP_KIND:
            raise UsageError(f"{source}: not a deploybench sweep summary (kind is not {SWEEP_KIND!r})")
        version = d.get("schema_version")
        if not isinstance(version, int) or version > SWEEP_SCHEMA_VERSION:
            raise UsageError(
                f"{source}: sweep schema_version {version!r} is not one this deploybench understands "
                f"(<= {SWEEP_SCHEMA_VERSION})"
            )
        try:
            points = [SweepPoint.from_dict(p) for p in d.get("points") or []]
            sweep = cls(
                axis=d["axis"], load_model=str(d.get("load_model") or ""), points=points,
                config=dict(d.get("config") or {}), status=str(d.get("status") or "complete"),
                error=d.get("error"), started_utc=str(d.get("started_utc") or ""),
                ended_utc=d.get("ended_utc"),
            )  # fmt: skip
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise UsageError(f"{source}: malformed sweep summary ({exc!r})") from None
        for p in sweep.points:  # the rules of this version, whatever the file says
            judge_point(p)
        sweep.knee, sweep.knee_note = find_knee(sweep.points)
        return sweep


def sweep_path(path: str | os.PathLike[str]) -> Path | None:
    """The summary file of ``path`` when it is a sweep folder (it holds ``sweep.json``) or a sweep summary
    file; else None. A ``.json`` file is recognised by its name or its ``kind``."""
    p = Path(path)
    if p.is_dir():
        return p / SWEEP_FILE if (p / SWEEP_FILE).is_file() else None
    if p.name == SWEEP_FILE and p.is_file():
        return p
    if p.suffix == ".json" and p.is_file():
        try:
            head = p.read_text(errors="replace")[:4096]
        except OSError:
            return None
        return p if f'"kind": "{SWEEP_KIND}"' in head else None
    return None


def save_sweep(sweep: Sweep, path: str | os.PathLike[str]) -> Path:
    """Write the summary atomically."""
    return write_json_atomic(path, sweep.to_dict())


def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """A sweep from its summary file or folder, or a UsageError naming the file and the problem."""
    p = Path(path)
    if p.is_dir():
        p = p / SWEEP_FILE
    return Sweep.from_dict(read_json_object(p, what="deploybench sweep summary"), p)


def point_line(sweep: Sweep, index: int) -> str:
    """'users=4: 98.7 rps  p50 20.41 ms  p99 40.12 ms  errors 0.00%  generator 12% busy  <- knee' (the CLI
    prints it)."""
    p = sweep.points[index]
    ms = lambda v: "-" if v is None else f"{v / 1000:.2f} ms"  # noqa: E731
    tput = "-" if p.throughput_rps is None else f"{p.throughput_rps:,.1f} rps"
    line = (
        f"  {sweep.label(index)}: {tput}  p50 {ms(p.latency_us.get('p50'))}"
        f"  p99 {ms(p.latency_us.get('p99'))}"
        f"  errors {p.error_ratio:.2%}"
    )
    if p.busy_percent_max is not None:
        line += f"  generator {p.busy_percent_max:.0f}% busy"
    if p.status != "complete":
        line += f"  [{p.status}]"
    if sweep.knee is not None and sweep.knee.index == index:
        line += "  <- knee"
    return line
