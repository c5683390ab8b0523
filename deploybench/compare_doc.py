"""The compare document (``compare.json``): what `deploybench compare` measured, choice by choice, and how the
choices rank. Written by the compare runner (``deploybench.decisions.compare.run``), read by its renderer
(``deploybench.reports.compare_render``) and by ``deploybench compare --report``.

Format history (``schema_version``): 1, the first version; later additions that default to the old
meaning (absent = a zoo or started choice): ``Choice.url`` / ``Choice.name`` (an external choice, measured by
URL) and ``ChoiceResult.target_health``. 2: each choice's max rate under the SLO comes from repeated searches
with a confidence interval (``saturation["repeats"]``, see ``RateInterval``), the ranking has ties and
``CompareRun.verdict`` is the one-sentence answer; ``Choice.handler`` (FastAPI handler style, "auto" when
absent). Version 1 documents still load (their max rate is the single search's, without an interval). A
change of a field bumps ``COMPARE_SCHEMA_VERSION``; a newer document is refused.

Uncertainty and ties: every choice has R independent estimates of its max rate under the SLO (one per
repeated search). On the log scale (rates are compared as ratios) their mean +- t(0.975, R-1) x sd / sqrt(R)
is the 95% interval, widened to at least half the repeated search's resolution (its final bracket). Two
choices are told apart when the 95% Welch t interval of their log ratio excludes 0 (same floor, in
quadrature); otherwise they tie (``ratio_interval``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from deploybench.errors import UsageError
from deploybench.io import read_json_object, utc_now, write_json_atomic
from deploybench.record import RecordWarning
from deploybench.stats import t_critical
from deploybench.thresholds import WARNING_CODE as THRESHOLD_CODE
from deploybench.thresholds import Outcome, Threshold
from deploybench.vocabulary import MODEL_SERVERS

COMPARE_SCHEMA_VERSION = 2
SUMMARY_NAME = "compare.json"


@dataclass(frozen=True)
class Choice:
    """One deployment choice: everything that differs between the targets being compared.

    An *external* choice (``url`` set) is a service that is already running: measured and ranked like the
    others, never started or stopped; ``name`` names it, and framework/server/model/format are unknown ("")
    until its /health says (``ChoiceResult.target_health``)."""

    framework: str
    server: str
    model: str
    format: str
    workers: int = 1
    threads: int = 1
    url: str = ""
    name: str = ""
    handler: str = "auto"  # FastAPI handler style (deploybench.vocabulary.HANDLER_STYLES)
    # dynamic batching (0: off) and the model runtime's options; the defaults leave id and label unchanged
    max_batch_size: int = 0
    max_queue_delay_us: int = 0
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    ort_opt_level: str = "all"

    @property
    def external(self) -> bool:
        return bool(self.url)

    @property
    def model_server(self) -> bool:
        """A third-party model server (MLServer, LitServe) that compare starts in its own environment."""
        return self.framework in MODEL_SERVERS

    def _tuning(self, sep: str) -> list[str]:
        """The non-default batching and runtime options, as id parts (``sep="-"``) or label words."""
        parts = []
        if self.max_batch_size:
            parts.append(f"b{self.max_batch_size}d{self.max_queue_delay_us}" if sep == "-"
                         else f"batch {self.max_batch_size}/{self.max_queue_delay_us}us")  # fmt: skip
        if self.intra_op_threads != 1:
            parts.append(f"intra{self.intra_op_threads}")
        if self.inter_op_threads != 1:
            parts.append(f"inter{self.inter_op_threads}")
        if self.ort_opt_level != "all":
            parts.append(f"ort{sep if sep == '-' else '='}{self.ort_opt_level}")
        return parts

    @property
    def id(self) -> str:
        """Stable, file-name safe: ``fastapi-uvicorn-iris-rf-onnx-w1`` (``-t4`` for gthread threads,
        ``-inline`` / ``-threadpool`` for a handler style other than auto); ``url-NAME`` for an external
        choice."""
        if self.external:
            return f"url-{self.name}"
        t = f"-t{self.threads}" if self.server == "gunicorn-gthread" else ""
        h = f"-{self.handler}" if self.handler != "auto" else ""
        x = "".join(f"-{p}" for p in self._tuning("-"))
        server = "" if self.model_server else f"-{self.server}"
        return f"{self.framework}{server}-{self.model}-{self.format}-w{self.workers}{t}{h}{x}"

    @property
    def label(self) -> str:
        """Human label: ``fastapi+uvicorn iris-rf/onnx w1`` (``w2 t4`` for gthread, `` inline`` for a handler
        style other than auto); ``NAME (external, URL)`` for an external choice."""
        if self.external:
            return f"{self.name} (external, {self.url})"
        t = f" t{self.threads}" if self.server == "gunicorn-gthread" else ""
        h = f" {self.handler}" if self.handler != "auto" else ""
        x = "".join(f" {p}" for p in self._tuning(" "))
        who = self.framework if self.model_server else f"{self.framework}+{self.server}"
        return f"{who} {self.model}/{self.format} w{self.workers}{t}{h}{x}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Choice:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass(frozen=True)
class Skipped:
    """A combination of the axes that is not a valid target, and why."""

    combo: str
    reason: str


@dataclass
class LoadFigures:
    """What the compare report needs from one load record (all series pooled: histograms are merged)."""

    offered_rps: float | None
    throughput_rps: float
    count: int
    error_count: int
    errors: dict[str, int]
    latency_us: dict[str, int | None]  # corrected for open loop
    histogram: str | None  # merged, encoded (corrected)
    warnings: list[RecordWarning] = field(default_factory=list)
    record: str | None = None  # path relative to the compare folder
    duration_s: float | None = None  # measured window (the longest of the series)
    status: str = "complete"  # the load record's status
    scheduled: int | None = None  # open loop: arrival slots scheduled in the window (exact; None: unknown)

    @property
    def error_ratio(self) -> float:
        total = self.count + self.error_count
        return self.error_count / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["error_ratio"] = self.error_ratio
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadFigures:
        return cls(
            offered_rps=d.get("offered_rps"),
            throughput_rps=float(d.get("throughput_rps") or 0.0),
            count=int(d.get("count") or 0),
            error_count=int(d.get("error_count") or 0),
            errors=dict(d.get("errors") or {}),
            latency_us=dict(d.get("latency_us") or {}),
            histogram=d.get("histogram"),
            warnings=[RecordWarning.from_dict(w) for w in d.get("warnings", [])],
            record=d.get("record"),
            duration_s=d.get("duration_s"),
            status=d.get("status", "complete"),
            scheduled=d.get("scheduled"),
        )


def describe_split(server_cpus: list[int] | None, generator_cpus: list[int] | None) -> str:
    """E.g. "server on CPU 1, generator on CPU 0", or with 4 workers on 16 CPUs "server on CPUs 12-15,
    generator on CPUs 0-3 (4 processes)"."""

    def cpus(c: list[int]) -> str:
        c = sorted(c)
        contiguous = len(c) > 2 and c == list(range(c[0], c[-1] + 1))
        listed = f"{c[0]}-{c[-1]}" if contiguous else ", ".join(str(x) for x in c)
        return f"CPU{'s' if len(c) > 1 else ''} {listed}"

    if not generator_cpus:
        return "not pinned"
    server = f"server on {cpus(server_cpus)}, " if server_cpus else ""
    procs_note = f" ({len(generator_cpus)} processes)" if len(generator_cpus) > 1 else ""
    return f"{server}generator on {cpus(generator_cpus)}{procs_note}"


GENERATOR_BOUND = "generator-bound"  # the load record's warning code when the generator had no headroom


@dataclass
class ChoiceResult:
    choice: Choice
    status: str = "pending"  # pending | running | complete | failed | interrupted
    error: str | None = None
    started_utc: str | None = None
    ended_utc: str | None = None
    wall_s: float | None = None
    stability: dict[str, Any] | None = None  # StabilityResult.to_dict()
    common: dict[str, Any] | None = None  # LoadFigures.to_dict() + server_cpu_percent
    saturation: dict[str, Any] | None = None  # SaturationResult.to_dict()
    warnings: list[RecordWarning] = field(default_factory=list)
    server_log: str | None = None
    server_affinity: list[int] | None = None  # CPUs the target's processes ran on, read from the OS
    generator_cpus: list[int] | None = None  # CPUs the load generator was pinned to (one process each)
    target_health: dict[str, Any] | None = None  # an external choice: what its /health said at the start
    # (a model server: the versions that served it)
    sweeps: dict[str, dict[str, Any]] = field(default_factory=dict)  # axis -> deploybench.sweep summary

    @property
    def interval(self) -> RateInterval | None:
        """The max rate under the SLO from repeated searches, with its interval (None: a single search)."""
        rep = (self.saturation or {}).get("repeats")
        return RateInterval.from_dict(rep) if rep else None

    @property
    def max_rps(self) -> float | None:
        """The ranked figure: the repeated searches' centre when there are any, else the single search's."""
        iv = self.interval
        if iv is not None:
            return iv.center_rps
        return (self.saturation or {}).get("max_rps")

    @property
    def resolution(self) -> float | None:
        return (self.saturation or {}).get("resolution")

    @property
    def generator_bound(self) -> bool:
        """Whether the load generator had no headroom in some run of this choice: its max rate is then a lower
        bound of the target's capacity (the generator's ceiling), never ranked as the target's."""
        return any(w.code == GENERATOR_BOUND for w in self.warnings)

    def common_pct(self, key: str) -> int | None:
        return ((self.common or {}).get("latency_us") or {}).get(key)

    @property
    def crossed_thresholds(self) -> list[RecordWarning]:
        """The compare thresholds this choice crossed (``judge_thresholds``): then it is not recommended."""
        return [w for w in self.warnings if w.code == THRESHOLD_CODE]

    def add_warning(self, w: RecordWarning) -> None:
        if w not in self.warnings:
            self.warnings.append(w)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["choice"] = self.choice.to_dict()
        d["id"] = self.choice.id
        d["label"] = self.choice.label
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChoiceResult:
        return cls(
            choice=Choice.from_dict(d["choice"]),
            status=d.get("status", "pending"),
            error=d.get("error"),
            started_utc=d.get("started_utc"),
            ended_utc=d.get("ended_utc"),
            wall_s=d.get("wall_s"),
            stability=d.get("stability"),
            common=d.get("common"),
            saturation=d.get("saturation"),
            warnings=[RecordWarning.from_dict(w) for w in d.get("warnings", [])],
            server_log=d.get("server_log"),
            server_affinity=d.get("server_affinity"),
            generator_cpus=d.get("generator_cpus"),
            target_health=d.get("target_health"),
            sweeps=dict(d.get("sweeps") or {}),
        )


@dataclass
class CompareRun:
    """The compare document (``compare.json``): config, environment, skipped combos, one result per choice."""

    config: dict[str, Any]
    scenario: str
    env: dict[str, Any]
    results: list[ChoiceResult]
    skipped: list[Skipped] = field(default_factory=list)
    status: str = "running"  # running | complete | interrupted
    started_utc: str = field(default_factory=utc_now)
    ended_utc: str | None = None
    wall_s: float | None = None
    verdict: str | None = None  # the one-sentence answer (``verdict``), set when the run ends
    capacity: dict[str, Any] | None = None  # [plan] traffic given: deploybench.decisions.plan.capacity_doc
    kind: str = "compare"
    schema_version: int = COMPARE_SCHEMA_VERSION

    @property
    def slo_p99_us(self) -> int:
        return round(float(self.config["slo"]["p99_ms"]) * 1000)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["results"] = [r.to_dict() for r in self.results]
        return {"schema_version": d.pop("schema_version"), "kind": d.pop("kind"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompareRun:
        if d.get("kind") != "compare" or not isinstance(d.get("schema_version"), int):
            raise UsageError("not a deploybench compare document (kind 'compare' + schema_version)")
        if d["schema_version"] > COMPARE_SCHEMA_VERSION:
            raise UsageError(f"compare schema_version {d['schema_version']} is newer than this deploybench")
        return cls(
            config=d["config"],
            scenario=d["scenario"],
            env=d.get("env", {}),
            results=[ChoiceResult.from_dict(r) for r in d.get("results", [])],
            skipped=[Skipped(**s) for s in d.get("skipped", [])],
            status=d.get("status", "complete"),
            started_utc=d.get("started_utc", ""),
            ended_utc=d.get("ended_utc"),
            wall_s=d.get("wall_s"),
            verdict=d.get("verdict"),
            capacity=d.get("capacity"),
        )

    def save(self, path: Path) -> Path:
        return write_json_atomic(path, self.to_dict())


def load_compare(path: str | os.PathLike[str]) -> CompareRun:
    p = Path(path)
    if p.is_dir():
        p = p / SUMMARY_NAME
    return compare_from_json(read_json_object(p, "deploybench compare document"), p)


def compare_from_json(data: dict[str, Any], source: str | os.PathLike[str]) -> CompareRun:
    """A compare document from its parsed JSON; a UsageError names ``source`` and the problem."""
    try:
        return CompareRun.from_dict(data)
    except (KeyError, TypeError) as exc:
        raise UsageError(f"{source}: malformed compare document ({exc!r})") from None


# ---------------------------------------------------------------------------------------------------------
# Uncertainty: intervals from repeated searches, ratio intervals, ties
# ---------------------------------------------------------------------------------------------------------

CONFIDENCE = 0.95
INTERVAL_METHOD = (
    "95% t interval over the repeated searches' estimates on the log scale (geometric mean +- "
    "t(0.975, R-1) x sd / sqrt(R)), at least +- half the repeated search's final bracket"
)


@dataclass(frozen=True)
class RateInterval:
    """A choice's max rate under the SLO from R independent estimates (one per repeated search).

    ``center_rps`` is their geometric mean; ``[lo_rps, hi_rps]`` the ``confidence`` t interval on the log
    scale, widened to at least ``floor_log`` (half the log width of a repeated search's final bracket: the
    resolution no number of agreeing repeats can beat). With one estimate the interval is the floor alone.
    ``censored``: repeats whose estimate is only a bound (the boundary lay outside their bracket)."""

    estimates_rps: tuple[float, ...]
    floor_log: float
    confidence: float = CONFIDENCE
    censored: int = 0
    method: str = INTERVAL_METHOD

    def __post_init__(self) -> None:
        if not self.estimates_rps or any(not (e > 0 and math.isfinite(e)) for e in self.estimates_rps):
            raise ValueError(f"need one or more positive estimates, got {self.estimates_rps}")
        if self.floor_log < 0:
            raise ValueError("floor_log must be >= 0")

    @property
    def n(self) -> int:
        return len(self.estimates_rps)

    @property
    def log_mean(self) -> float:
        return sum(math.log(e) for e in self.estimates_rps) / self.n

    @property
    def log_sd(self) -> float:
        if self.n < 2:
            return 0.0
        m = self.log_mean
        return math.sqrt(sum((math.log(e) - m) ** 2 for e in self.estimates_rps) / (self.n - 1))

    @property
    def half_log(self) -> float:
        """Half-width of the interval on the log scale."""
        if self.n < 2:
            return self.floor_log
        t = t_critical(self.confidence, self.n - 1) * self.log_sd / math.sqrt(self.n)
        return max(t, self.floor_log)

    @property
    def center_rps(self) -> float:
        return math.exp(self.log_mean)

    @property
    def lo_rps(self) -> float:
        return math.exp(self.log_mean - self.half_log)

    @property
    def hi_rps(self) -> float:
        return math.exp(self.log_mean + self.half_log)

    @property
    def median_rps(self) -> float:
        xs = sorted(self.estimates_rps)
        mid = len(xs) // 2
        return xs[mid] if len(xs) % 2 else math.sqrt(xs[mid - 1] * xs[mid])

    @property
    def spread(self) -> float:
        """max/min - 1 of the estimates (0 for one)."""
        return max(self.estimates_rps) / min(self.estimates_rps) - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimates_rps": list(self.estimates_rps),
            "floor_log": self.floor_log,
            "confidence": self.confidence,
            "censored": self.censored,
            "method": self.method,
            "n": self.n,
            "center_rps": self.center_rps,
            "median_rps": self.median_rps,
            "lo_rps": self.lo_rps,
            "hi_rps": self.hi_rps,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RateInterval:
        return cls(
            estimates_rps=tuple(float(e) for e in d["estimates_rps"]),
            floor_log=float(d.get("floor_log") or 0.0),
            confidence=float(d.get("confidence") or CONFIDENCE),
            censored=int(d.get("censored") or 0),
            method=str(d.get("method") or INTERVAL_METHOD),
        )


@dataclass(frozen=True)
class RatioInterval:
    """``a / b`` of two choices' max rates: the ratio of their geometric means and its interval."""

    ratio: float
    lo: float
    hi: float
    confidence: float = CONFIDENCE

    @property
    def separated(self) -> bool:
        """True when the interval excludes 1: ``a`` and ``b`` are told apart (else they tie)."""
        return self.lo > 1.0 or self.hi < 1.0


def ratio_interval(a: RateInterval, b: RateInterval, confidence: float = CONFIDENCE) -> RatioInterval:
    """Welch's t interval of ``log a - log b`` from the two sets of repeats, at least as wide as the two
    floors combined in quadrature. With fewer than two estimates on either side the floors alone."""
    d = a.log_mean - b.log_mean
    floor = math.hypot(a.floor_log, b.floor_log)
    half = floor
    if a.n >= 2 and b.n >= 2:
        va, vb = a.log_sd**2 / a.n, b.log_sd**2 / b.n
        se = math.sqrt(va + vb)
        if se > 0:
            df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
            half = max(half, t_critical(confidence, df) * se)
    return RatioInterval(math.exp(d), math.exp(d - half), math.exp(d + half), confidence)


# ---------------------------------------------------------------------------------------------------------
# Ranking
# ---------------------------------------------------------------------------------------------------------


def rank(results: Sequence[ChoiceResult]) -> list[ChoiceResult]:
    """Complete choices first, by max throughput under the SLO (desc; none = 0), then by P99 at the common
    rate (asc), then by id; then every other choice (failed / interrupted / pending) in run order."""
    done = [r for r in results if r.status == "complete"]
    rest = [r for r in results if r.status != "complete"]
    inf = float("inf")
    done.sort(key=lambda r: (-(r.max_rps or 0.0), r.common_pct("p99") or inf, r.choice.id))
    return done + rest


def _tied(a: ChoiceResult, b: ChoiceResult, rel_tolerance: float) -> bool:
    """Whether ``b`` (ranked below ``a``) cannot be told apart from ``a``. A generator-bound choice ties with
    none: its figure is a lower bound, so the comparison cannot be resolved either way."""
    if a.generator_bound or b.generator_bound:
        return False
    if a.max_rps is None or b.max_rps is None:
        return a.max_rps is None and b.max_rps is None
    ia, ib = a.interval, b.interval
    if ia is not None and ib is not None:
        return not ratio_interval(ia, ib).separated
    # a single search each (a version 1 document, or repeats = 0): the search resolution decides
    resolution = max([rel_tolerance, *(r.resolution for r in (a, b) if r.resolution is not None)])
    return a.max_rps / b.max_rps - 1.0 <= resolution


def places(ranked: Sequence[ChoiceResult], rel_tolerance: float = 0.10) -> list[str]:
    """Rank labels of ``rank``'s order: ``1``, ``2``, ...; a choice that ties with the leader of the group
    above it shares the leader's place, shown ``2=`` (every member of a tie group carries the ``=``);
    choices that did not complete get ``-``."""
    out: list[str] = []
    leader: ChoiceResult | None = None
    leader_place = 0
    done = 0
    groups: list[list[int]] = []
    for i, r in enumerate(ranked):
        if r.status != "complete":
            out.append("-")
            continue
        done += 1
        if leader is not None and _tied(leader, r, rel_tolerance):
            groups[-1].append(i)
            out.append(str(leader_place))
        else:
            leader, leader_place = r, done
            groups.append([i])
            out.append(str(done))
    for g in groups:
        if len(g) > 1:
            for i in g:
                out[i] += "="
    return out


def _fmt_rps(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _fmt_pct(x: float) -> str:
    return f"{x:+.0%}".replace("+-", "-")


def _label(r: ChoiceResult) -> str:
    return f"**{r.choice.label}**"


def _no_best(ranked: Sequence[ChoiceResult], slo: str) -> tuple[list[ChoiceResult], str | None]:
    """The completed choices, and the sentence to say instead of a verdict when there is no best one."""
    done = [r for r in ranked if r.status == "complete"]
    why = nothing_met_the_slo(ranked)
    if why is None:
        return done, None
    if not done:
        return done, "No choice completed, so there is nothing to rank."
    return done, f"No choice met the {slo} at any rate tried, so there is no best choice."


def threshold_outcomes(result: ChoiceResult, thresholds: Sequence[Threshold]) -> list[Outcome]:
    """Judge one completed choice on the compare's thresholds: ``throughput`` on its max rate under the SLO
    (the ranked figure; None when it met the SLO at no rate tried: crossed), latency and ``error_ratio`` on
    its measurement at the common rate (the same load for every choice; open loop, so corrected latency)."""
    common = result.common or {}
    out = []
    for t in thresholds:
        if t.metric == "throughput":
            value, where = result.max_rps, "as its max rate under the SLO"
        elif t.metric == "error_ratio":
            value, where = common.get("error_ratio"), "at the common rate"
        else:
            value, where = (common.get("latency_us") or {}).get(t.metric), "at the common rate"
        value = None if value is None else float(value)
        out.append(Outcome(t, where, value, value is not None and t.holds(value)))
    return out


def judge_thresholds(result: ChoiceResult, thresholds: Sequence[Threshold]) -> None:
    """Add a ``threshold`` warning to a completed choice for each threshold it crossed."""
    if result.status != "complete":
        return
    for o in threshold_outcomes(result, thresholds):
        if not o.passed:
            result.add_warning(
                RecordWarning(
                    THRESHOLD_CODE,
                    f"crossed {o.threshold.text}: {o.threshold.format_value(o.value)} {o.series}",
                    "left out of the recommendation",
                    series="thresholds",
                )
            )


def nothing_held_the_thresholds(results: Sequence[ChoiceResult]) -> str | None:
    """Why no choice can be recommended under the thresholds (every choice that met the SLO crossed one), or
    None. ``deploybench compare`` then exits 3, as ``load`` does on a crossed threshold."""
    ranked = [r for r in results if r.status == "complete" and r.max_rps is not None]
    if ranked and all(r.crossed_thresholds for r in ranked):
        return "every choice that met the SLO crossed a threshold"
    return None


def nothing_met_the_slo(results: Sequence[ChoiceResult]) -> str | None:
    """Why a compare answered nothing (every choice failed, or none met the SLO at any rate tried), or None
    when at least one choice has a max rate under the SLO. ``deploybench compare`` then exits 1."""
    done = [r for r in results if r.status == "complete"]
    if not done:
        return "no choice completed"
    if all(r.max_rps is None for r in done):
        return "no choice met the SLO at any rate tried"
    return None


def verdict(ranked: Sequence[ChoiceResult], slo_p99_us: int, rel_tolerance: float = 0.10) -> str:
    """The answer in one sentence: which choice to pick, by how much, how sure (or who ties); then sentences
    on the choices that crossed a threshold and on those whose figure is the load generator's ceiling (both
    left out of the verdict)."""
    crossed = [r for r in ranked if r.status == "complete" and r.crossed_thresholds and r.max_rps is not None]
    if not crossed:
        return _verdict_bound(ranked, slo_p99_us, rel_tolerance)
    names = "; ".join(
        f"{_label(r)} ({', '.join(w.message.removeprefix('crossed ') for w in r.crossed_thresholds)})"
        for r in crossed
    )
    note = f"Crossed a threshold, so not recommended: {names}."
    rest = [r for r in ranked if r not in crossed]
    if not any(r.status == "complete" and r.max_rps is not None for r in rest):
        return f"No choice held every threshold. {note}"
    return f"{_verdict_bound(rest, slo_p99_us, rel_tolerance)} {note}"


def _verdict_bound(ranked: Sequence[ChoiceResult], slo_p99_us: int, rel_tolerance: float = 0.10) -> str:
    bound = [r for r in ranked if r.status == "complete" and r.generator_bound and r.max_rps is not None]
    if not bound:
        return _verdict(ranked, slo_p99_us, rel_tolerance)
    names = ", ".join(f"{_label(r)} (at least {_fmt_rps(r.max_rps or 0.0)} rps)" for r in bound)
    note = (
        f"The load generator had no headroom for {names}: those figures are the generator's ceiling, lower "
        "bounds of the target's capacity, left out of this verdict and of every tie; rerun with more "
        "generator processes or cores."
    )
    rest = [r for r in ranked if r not in bound]
    if not any(r.status == "complete" for r in rest):
        return f"No choice could be ranked. {note}"
    return f"{_verdict(rest, slo_p99_us, rel_tolerance)} {note}"


def _verdict(ranked: Sequence[ChoiceResult], slo_p99_us: int, rel_tolerance: float = 0.10) -> str:
    slo = f"{slo_p99_us / 1000:g} ms P99 SLO"
    done, instead = _no_best(ranked, slo)
    if instead is not None:
        return instead
    best = done[0]
    if best.interval is None:
        return best_sentence(ranked, slo_p99_us, rel_tolerance)
    n = best.interval.n
    measured = f"measured {n} time{'s' if n != 1 else ''} each"
    ties = [r for r in done[1:] if _tied(best, r, rel_tolerance)]
    others = [r for r in done[1:] if r not in ties]
    nxt = others[0] if others else None

    def ci(r: ChoiceResult) -> str:
        iv = r.interval
        return f"95% CI {_fmt_rps(iv.lo_rps)}-{_fmt_rps(iv.hi_rps)}" if iv else "single search"

    def margin(a: ChoiceResult, b: ChoiceResult) -> str:
        """``y% more than B (M rps; 95% CI +a% to +b%)``."""
        assert a.max_rps is not None
        if b.max_rps is None:
            return f"while {_label(b)} met the SLO at no rate tried"
        ia, ib = a.interval, b.interval
        more = a.max_rps / b.max_rps - 1.0
        if ia is not None and ib is not None:
            rr = ratio_interval(ia, ib)
            how = f"95% CI {_fmt_pct(rr.lo - 1.0)} to {_fmt_pct(rr.hi - 1.0)}"
        else:
            how = "single search"
        return f"{more:.0%} more than {_label(b)} ({_fmt_rps(b.max_rps)} rps; {how})"

    if not ties:
        head = f"Pick {_label(best)}: {_fmt_rps(best.max_rps)} rps under the {slo} ({ci(best)})"
        if nxt is None:
            return f"{head}, the only choice that completed; {measured}."
        return f"{head}, {margin(best, nxt)}; {measured}."
    group = [best, *ties]  # the next choice is told apart from the best (else it would be in the group)
    names = ", ".join(_label(r) for r in group[:-1]) + f" and {_label(group[-1])}"
    rates = " / ".join(_fmt_rps(r.max_rps or 0.0) for r in group)
    worst = group[-1]
    spread = ""
    if best.interval is not None and worst.interval is not None:
        rr = ratio_interval(best.interval, worst.interval)
        spread = f"; top vs bottom of the tie {_fmt_pct(rr.lo - 1.0)} to {_fmt_pct(rr.hi - 1.0)}, 95% CI"
    head = f"Tie: {names} cannot be told apart ({rates} rps under the {slo}{spread}), so pick any of them"
    if nxt is None:
        return f"{head}; {measured}."
    return f"{head}; the best of them sustains {margin(best, nxt)}; {measured}."


def best_sentence(ranked: Sequence[ChoiceResult], slo_p99_us: int, rel_tolerance: float = 0.10) -> str:
    """The best choice in one sentence from single searches (version 1 documents): its margin over the
    runner-up, a tie when the margin is within the search resolution."""
    slo = f"{slo_p99_us / 1000:g} ms P99 SLO"
    done, instead = _no_best(ranked, slo)
    if instead is not None:
        return instead
    best = done[0]
    lead = f"Best: **{best.choice.label}** sustains {_fmt_rps(best.max_rps)} rps under the {slo}"
    if len(done) == 1:
        return f"{lead}; it is the only choice that completed, so there is no runner-up."
    second = done[1]
    if second.max_rps is None:
        return f"{lead}, while the runner-up **{second.choice.label}** met the SLO at no rate tried."
    diff = best.max_rps - second.max_rps
    margin = diff / second.max_rps
    # (a list: max() of a lone float, when neither search found a failing rate, would raise)
    resolution = max([rel_tolerance, *(r.resolution for r in (best, second) if r.resolution is not None)])
    sentence = (
        f"{lead}, {margin:.0%} ({_fmt_rps(diff)} rps) more than the runner-up "
        f"**{second.choice.label}** ({_fmt_rps(second.max_rps)} rps)"
    )
    if margin <= resolution:
        sentence += f" — within the search resolution (~{resolution:.0%}), so treat it as a tie"
    return sentence + "."


# -- scaling: the same deployment at several worker counts -------------------------------------------------
@dataclass(frozen=True)
class ScalingRow:
    """One choice of a group that differs only in workers (threads): its rate, rate per core and the scaling
    against the group's fewest workers, with the 95 % interval of that ratio (``ratio_interval``)."""

    group: str  # framework+server model/format
    workers: int
    cores: int
    rps: float
    lo_rps: float | None
    hi_rps: float | None
    rps_per_core: float
    speedup: float | None  # rps / rps of the fewest workers
    speedup_lo: float | None
    speedup_hi: float | None
    efficiency: float | None  # speedup / (cores / cores of the fewest workers)


def _cores(r: ChoiceResult) -> int:
    return len(r.server_affinity) if r.server_affinity else max(1, int(r.choice.workers))


def scaling_rows(run: CompareRun) -> list[ScalingRow]:
    """Groups of ranked choices that differ only in worker count; empty when no group has two."""
    groups: dict[str, list[ChoiceResult]] = {}
    for r in run.results:
        if r.status == "complete" and r.max_rps is not None and not r.generator_bound:
            c = r.choice
            key = f"{c.framework}+{c.server} {c.model}/{c.format} t{c.threads} {c.handler}"
            groups.setdefault(key, []).append(r)
    rows: list[ScalingRow] = []
    for key, members in groups.items():
        if len({m.choice.workers for m in members}) < 2:
            continue
        members.sort(key=lambda m: m.choice.workers)
        base = members[0]
        for m in members:
            iv, biv = m.interval, base.interval
            both = iv is not None and biv is not None and m is not base
            ratio = ratio_interval(iv, biv) if both else None  # type: ignore[arg-type]
            speedup = float(m.max_rps) / float(base.max_rps)  # type: ignore[arg-type]
            rows.append(
                ScalingRow(
                    group=key.rsplit(" t", 1)[0],
                    workers=m.choice.workers,
                    cores=_cores(m),
                    rps=float(m.max_rps),  # type: ignore[arg-type]
                    lo_rps=iv.lo_rps if iv else None,
                    hi_rps=iv.hi_rps if iv else None,
                    rps_per_core=float(m.max_rps) / _cores(m),  # type: ignore[arg-type]
                    speedup=speedup,
                    speedup_lo=ratio.lo if ratio else None,
                    speedup_hi=ratio.hi if ratio else None,
                    efficiency=speedup / (_cores(m) / _cores(base)),
                )
            )
    return rows
