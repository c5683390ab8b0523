"""Capacity and cost plans from measured results: how many replicas and cores each deployment choice needs to
carry a traffic under its SLO, what that costs, and the range the measured intervals imply.

The arithmetic, per choice (``plan_row``), all in requests/s:

- **capacity of one replica** = the measured max rate under the SLO (compare: the repeated searches'
  geometric mean, with its 95 % interval; a load record: the achieved throughput of a run that met the SLO),
  measured on ``cores_measured`` cores. A replica of ``cores_per_replica`` cores is taken to carry
  ``capacity x cores_per_replica / cores_measured`` (linear). When that factor is not 1 the plan says so: it
  extrapolates beyond (or interpolates below) the cores measured, and scaling is rarely linear;
- **usable per replica** = capacity x (1 - headroom): the share kept free for bursts and failover;
- **replicas** = ceil(traffic / usable); **cores** = replicas x cores_per_replica;
- **cost per month** = cores x price per core-hour x ``HOURS_PER_MONTH`` (730);
  **cost per million requests** = cores x price / (traffic x 3600 / 1e6): an hour's cost over the requests
  of that hour at the planned traffic;
- **range**: the same with the interval's ends: the high end of capacity gives the fewest replicas, the low
  end the most. A single search or a load record has no interval (said in the row's notes).

Choices whose figure is the load generator's ceiling (``generator-bound``), that met the SLO at no rate tried,
or did not complete are left out, each with its reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploybench.compare_doc import CompareRun, compare_from_json
from deploybench.errors import UsageError
from deploybench.io import read_json_object
from deploybench.record import RunRecord, record_from_json
from deploybench.thresholds import parse_threshold

HOURS_PER_MONTH = 730.0  # 365 x 24 / 12
MAX_HEADROOM = 0.95
_RATE_UNITS_PER_S = {"rps": 1.0, "/s": 1.0, "r/s": 1.0, "/min": 1 / 60, "rpm": 1 / 60, "/h": 1 / 3600}
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([km]?)\s*(rps|r/s|/s|rpm|/min|/h)\s*$", re.I)
_PRICE = re.compile(r"^\s*\$?\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(?:/\s*(?:core-?)?h(?:our)?)?\s*$", re.I)


def parse_traffic(text: str) -> float:
    """``"2000rps"``, ``"2k/s"``, ``"120000/min"``, ``"7.2M/h"`` -> requests/s. A bare number or another unit
    is a UsageError (exit 2): a traffic needs its time unit."""
    m = _RATE.match(text)
    if not m:
        raise UsageError(
            f"--traffic {text!r}: give a rate with its unit, e.g. 2000rps, 2k/s, 120000/min or 7.2M/h"
        )
    number, prefix, unit = m.groups()
    value = float(number) * {"": 1.0, "k": 1e3, "m": 1e6}[prefix.lower()] * _RATE_UNITS_PER_S[unit.lower()]
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"--traffic {text!r}: must be a positive rate")
    return value


def parse_price(text: str) -> float:
    """A price per core-hour: ``"0.04"``, ``"$0.04"``, ``"0.04/h"``, ``"0.04/core-hour"``; anything else
    (another time unit, a unit that is not a price) is a UsageError."""
    m = _PRICE.match(text)
    if not m:
        raise UsageError(
            f"--core-hour-price {text!r}: give the price of one core for one hour, e.g. 0.04 or 0.04/h"
        )
    value = float(m.group(1))
    if not math.isfinite(value):
        raise UsageError(f"--core-hour-price {text!r}: must be a finite number")
    return value


def parse_headroom(text: str) -> float:
    """``"30%"`` or ``"0.3"`` -> 0.3; in [0, 95 %)."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise UsageError(f"--headroom {text!r}: a share kept free, e.g. 30% or 0.3") from None
    if not 0.0 <= value < MAX_HEADROOM:
        raise UsageError(f"--headroom {text!r}: must be at least 0 and below {MAX_HEADROOM:.0%}")
    return value


def parse_slo_p99_ms(text: str) -> float:
    """``"p99<50ms"`` -> 50.0. The plan takes the SLO the measurements were made under: a P99 limit."""
    t = parse_threshold(text)
    if t.metric != "p99" or t.op not in ("<", "<="):
        raise UsageError(f"--slo {text!r}: a P99 limit, e.g. p99<50ms (the SLO compare measured under)")
    return t.limit / 1000.0


@dataclass(frozen=True)
class Capacity:
    """One choice's measured capacity: ``rps`` (with its interval when repeated) on ``cores_measured``."""

    label: str
    rps: float
    cores_measured: int
    lo_rps: float | None = None
    hi_rps: float | None = None
    source: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlanRequest:
    traffic_rps: float
    headroom: float = 0.0
    core_hour_price: float | None = None
    cores_per_replica: int | None = None  # None: as measured


@dataclass
class PlanRow:
    label: str
    source: str
    capacity_rps: float  # one replica of cores_per_replica cores
    capacity_lo_rps: float | None
    capacity_hi_rps: float | None
    cores_measured: int
    cores_per_replica: int
    usable_rps: float
    replicas: int
    replicas_range: tuple[int, int] | None  # (fewest, most): from the interval's high and low ends
    cores: int
    cores_range: tuple[int, int] | None
    cost_per_month: float | None
    cost_per_month_range: tuple[float, float] | None
    cost_per_million: float | None
    extrapolated: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """As JSON keeps it (ranges as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _replicas(traffic_rps: float, capacity_rps: float, headroom: float) -> int:
    usable = capacity_rps * (1.0 - headroom)
    return max(1, math.ceil(traffic_rps / usable - 1e-9))


def plan_row(cap: Capacity, req: PlanRequest) -> PlanRow:
    """The plan for one choice (the arithmetic is in the module doc)."""
    if cap.rps <= 0 or cap.cores_measured < 1:
        raise ValueError(f"{cap.label}: capacity {cap.rps} rps on {cap.cores_measured} cores")
    cores = req.cores_per_replica or cap.cores_measured
    factor = cores / cap.cores_measured
    notes = list(cap.notes)
    extrapolated = factor > 1.0
    if factor != 1.0:
        how = "extrapolated beyond" if extrapolated else "interpolated below"
        notes.append(
            f"{how} the cores measured: measured on {cap.cores_measured} core(s), planned at {cores} per "
            f"replica, assuming capacity scales linearly ({factor:g}x), which it rarely does: measure it"
        )
    capacity = cap.rps * factor
    lo = cap.lo_rps * factor if cap.lo_rps is not None else None
    hi = cap.hi_rps * factor if cap.hi_rps is not None else None
    replicas = _replicas(req.traffic_rps, capacity, req.headroom)
    rep_range = None
    if lo is not None and hi is not None:
        rep_range = (
            _replicas(req.traffic_rps, hi, req.headroom),
            _replicas(req.traffic_rps, lo, req.headroom),
        )
    else:
        notes.append("no interval (a single measurement): no range")
    price = req.core_hour_price
    n_cores = replicas * cores
    cores_range = (rep_range[0] * cores, rep_range[1] * cores) if rep_range else None
    return PlanRow(
        label=cap.label,
        source=cap.source,
        capacity_rps=capacity,
        capacity_lo_rps=lo,
        capacity_hi_rps=hi,
        cores_measured=cap.cores_measured,
        cores_per_replica=cores,
        usable_rps=capacity * (1.0 - req.headroom),
        replicas=replicas,
        replicas_range=rep_range,
        cores=n_cores,
        cores_range=cores_range,
        cost_per_month=None if price is None else n_cores * price * HOURS_PER_MONTH,
        cost_per_month_range=None
        if price is None or cores_range is None
        else (cores_range[0] * price * HOURS_PER_MONTH, cores_range[1] * price * HOURS_PER_MONTH),
        cost_per_million=None if price is None else n_cores * price / (req.traffic_rps * 3600.0 / 1e6),
        extrapolated=extrapolated,
        notes=notes,
    )


# -- measured capacities from results ----------------------------------------------------------------------
def capacities_from_compare(run: CompareRun) -> tuple[list[Capacity], list[str]]:
    """Each ranked choice's capacity, and a line for each choice left out (with why)."""
    caps: list[Capacity] = []
    left: list[str] = []
    for r in run.results:
        label = r.choice.label
        if r.status != "complete":
            left.append(f"{label}: {r.status}, no capacity measured")
            continue
        if r.max_rps is None:
            left.append(f"{label}: met the SLO at no rate tried")
            continue
        if r.generator_bound:
            left.append(f"{label}: its figure is the load generator's ceiling (a lower bound), not planned")
            continue
        notes: list[str] = []
        if r.server_affinity:
            cores = len(r.server_affinity)
        else:
            cores = max(1, int(r.choice.workers))
            notes.append(f"cores not pinned when measured: taken as its {cores} worker(s)")
        iv = r.interval
        lo, hi = (iv.lo_rps, iv.hi_rps) if iv else (None, None)
        caps.append(Capacity(label, float(r.max_rps), cores, lo, hi, f"compare {r.choice.id}", tuple(notes)))
    return caps, left


def capacity_from_record(record: RunRecord, slo_p99_ms: float) -> Capacity:
    """A load run as one replica's capacity: its achieved throughput, when its P99 met the SLO (a single run:
    no interval; an open-loop run at a rate below capacity is a lower bound, said in the notes)."""
    if record.kind != "load" or record.status != "complete":
        raise UsageError(f"{record.run_id}: a plan needs a complete load record (kind {record.kind!r}, "
                         f"status {record.status!r})")  # fmt: skip
    tput = sum(s.throughput_rps or 0.0 for s in record.series)
    p99s = [s.latency_us.get("p99") for s in record.series if s.count]
    if not tput or not p99s or any(p is None for p in p99s):
        raise UsageError(f"{record.run_id}: the record has no throughput or P99 to plan from")
    worst = max(p99s) / 1000.0  # type: ignore[type-var]
    if worst > slo_p99_ms:
        raise UsageError(
            f"{record.run_id}: its P99 {worst:.3g} ms is above the SLO {slo_p99_ms:g} ms: that throughput is "
            "not a capacity under the SLO"
        )
    cfg = record.config
    target = cfg.get("target") if isinstance(cfg.get("target"), dict) else cfg
    cpus = target.get("cpus") or cfg.get("server_cpus")
    notes = ["a single load run: its throughput under the SLO, not a searched maximum"]
    if cfg.get("load_model") in ("constant", "poisson"):
        notes.append("an open-loop run at a set rate: a lower bound of the capacity")
    if cpus:
        cores = len(cpus)
    else:
        cores = max(1, int(target.get("workers") or 1))
        notes.append(f"cores not pinned when measured: taken as its {cores} worker(s)")
    label = " ".join(str(target.get(k)) for k in ("framework", "server", "model", "format") if target.get(k))
    return Capacity(label or record.run_id, tput, cores, source=f"load {record.run_id}", notes=tuple(notes))


def load_capacities(
    paths: Sequence[str | Path], slo_p99_ms: float | None, runs: list[CompareRun] | None = None
) -> tuple[list[Capacity], list[str], float]:
    """Capacities from compare folders/documents and load records (a compare folder is used as one; a folder
    otherwise gives its load records). Returns (capacities, left-out lines, the SLO in ms they were measured
    under); the compare documents read are appended to ``runs`` when given. No measurement found, or an SLO
    that differs from the compare's: UsageError (exit 2)."""
    caps: list[Capacity] = []
    left: list[str] = []
    slo: float | None = slo_p99_ms
    records: list[RunRecord] = []

    def add_compare(doc: Path, data: dict[str, Any]) -> None:
        nonlocal slo
        run = compare_from_json(data, doc)
        measured = float(run.config["slo"]["p99_ms"])
        if slo is not None and abs(slo - measured) > 1e-9:
            raise UsageError(
                f"{doc}: compare measured its max rates under P99 < {measured:g} ms; a plan cannot re-judge "
                f"them under {slo:g} ms: re-run compare with --slo-ms {slo:g}"
            )
        slo = measured
        if runs is not None:
            runs.append(run)
        c, lf = capacities_from_compare(run)
        caps.extend(c)
        left.extend(lf)

    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UsageError(f"{p}: no such file or folder")
        if p.is_file():
            data = read_json_object(p, "deploybench result")
            if data.get("kind") == "compare":
                add_compare(p, data)
            elif data.get("kind") == "load" and "schema_version" in data:
                records.append(record_from_json(data, p))
            else:
                raise UsageError(f"{p}: neither a compare document nor a load record")
            continue
        # a folder: every compare folder in it is one compare (its probes' records belong to it); the load
        # records elsewhere in it are runs of their own
        compares = sorted(d.parent for d in p.rglob("compare.json"))
        for d in compares:
            data = read_json_object(d / "compare.json", "deploybench compare document")
            if data.get("kind") == "compare":
                add_compare(d / "compare.json", data)
        for f in sorted(p.rglob("*.json")):
            if any(f.is_relative_to(d) for d in compares):
                continue
            try:
                data = read_json_object(f, "deploybench result")
            except UsageError:
                continue
            if data.get("kind") == "load" and "schema_version" in data:
                records.append(record_from_json(data, f))
    if records:
        if slo is None:
            raise UsageError("load records carry no SLO: give --slo, e.g. --slo 'p99<50ms'")
        caps += [capacity_from_record(r, slo) for r in records]
    if not caps:
        why = "; ".join(left) if left else "no compare document or complete load record found"
        raise UsageError(f"nothing to plan from in {', '.join(map(str, paths))}: {why}")
    assert slo is not None
    return caps, left, slo


def plan(caps: Sequence[Capacity], req: PlanRequest) -> list[PlanRow]:
    """One row per capacity, cheapest first (fewest cores, then the most capacity per replica)."""
    rows = [plan_row(c, req) for c in caps]
    return sorted(rows, key=lambda r: (r.cores, -r.capacity_rps))


# -- the compare report's capacity section ------------------------------------------------------------------
def capacity_doc(run: CompareRun, req: PlanRequest) -> dict[str, Any]:
    """The plan of a compare's ranked choices at ``req``'s traffic, as kept in ``compare.json``
    (``CompareRun.capacity``): the request, one row per choice (cheapest first) and the choices left out."""
    caps, left = capacities_from_compare(run)
    rows = plan(caps, req) if caps else []
    return {
        "traffic_rps": req.traffic_rps,
        "headroom": req.headroom,
        "core_hour_price": req.core_hour_price,
        "cores_per_replica": req.cores_per_replica,
        "hours_per_month": HOURS_PER_MONTH,
        "rows": [r.to_dict() for r in rows],
        "left_out": left,
    }


def capacity_sentence(doc: dict[str, Any]) -> str:
    """The verdict's sentence on cost at the traffic target: the cheapest choice, and whether its range of
    cores overlaps the next one's (then the cost ranking is not certain)."""
    rows = doc.get("rows") or []
    traffic = f"{doc['traffic_rps']:,.0f} rps"
    if not rows:
        return f"At {traffic} no choice can be planned (none has a max rate under the SLO to plan from)."
    best = rows[0]
    price = doc.get("core_hour_price")

    def span(r: dict[str, Any]) -> str:
        rng = r.get("cores_range")
        return f" ({rng[0]}-{rng[1]})" if rng and rng[0] != rng[1] else ""

    head = (
        f"At {traffic} with {doc['headroom']:.0%} headroom the cheapest is **{best['label']}**: "
        f"{best['cores']} core(s){span(best)}" + (f", {best['cost_per_month']:,.2f} a month" if price else "")
    )
    if len(rows) == 1:
        return head + "."
    nxt = rows[1]

    def cores(r: dict[str, Any]) -> tuple[int, int]:
        lo, hi = r.get("cores_range") or (r["cores"], r["cores"])
        return lo, hi

    tail = f"; next **{nxt['label']}**: {nxt['cores']} core(s){span(nxt)}"
    if cores(nxt)[0] <= cores(best)[1]:  # sorted by cores: nxt hi >= best lo always
        tail += ", their ranges overlap, so this cost ranking is not certain"
    return head + tail + "."
