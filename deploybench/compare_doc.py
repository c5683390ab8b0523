"""The compare document (``compare.json``): what `deploybench compare` measured, choice by choice, and how the
choices rank. Written by the compare runner (``decisions.compare.run``), read by its renderer
(``reports.compare_render``) and by ``deploybench compare --report``.

Format history (``schema_version``): 1, the first version; later additions that default to the old
meaning (absent = a zoo or started choice): ``Choice.url`` / ``Choice.name`` (an external choice, measured by
URL) and ``ChoiceResult.target_health``. A change of a field bumps ``COMPARE_SCHEMA_VERSION``; a newer
document is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from deploybench.errors import UsageError
from deploybench.io import read_json_object, utc_now, write_json_atomic
from deploybench.record import RecordWarning

COMPARE_SCHEMA_VERSION = 1
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

    @property
    def external(self) -> bool:
        return bool(self.url)

    @property
    def id(self) -> str:
        """Stable, file-name safe: ``fastapi-uvicorn-iris-rf-onnx-w1`` (``-t4`` for gthread threads);
        ``url-NAME`` for an external choice."""
        if self.external:
            return f"url-{self.name}"
        t = f"-t{self.threads}" if self.server == "gunicorn-gthread" else ""
        return f"{self.framework}-{self.server}-{self.model}-{self.format}-w{self.workers}{t}"

    @property
    def label(self) -> str:
        """Human label: ``fastapi+uvicorn iris-rf/onnx w1`` (``w2 t4`` for gthread); ``NAME (external,
        URL)`` for an external choice."""
        if self.external:
            return f"{self.name} (external, {self.url})"
        t = f" t{self.threads}" if self.server == "gunicorn-gthread" else ""
        return f"{self.framework}+{self.server} {self.model}/{self.format} w{self.workers}{t}"

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
        )


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
    target_health: dict[str, Any] | None = None  # an external choice: what its /health said at the start

    @property
    def max_rps(self) -> float | None:
        return (self.saturation or {}).get("max_rps")

    @property
    def resolution(self) -> float | None:
        return (self.saturation or {}).get("resolution")

    def common_pct(self, key: str) -> int | None:
        return ((self.common or {}).get("latency_us") or {}).get(key)

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
            target_health=d.get("target_health"),
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
        )

    def save(self, path: Path) -> Path:
        return write_json_atomic(path, self.to_dict())


def load_compare(path: str | os.PathLike[str]) -> CompareRun:
    p = Path(path)
    if p.is_dir():
        p = p / SUMMARY_NAME
    data = read_json_object(p, "deploybench compare document")
    try:
        return CompareRun.from_dict(data)
    except (KeyError, TypeError) as exc:
        raise UsageError(f"{p}: malformed compare document ({exc!r})") from None


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


def _fmt_rps(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def best_sentence(ranked: Sequence[ChoiceResult], slo_p99_us: int, rel_tolerance: float = 0.10) -> str:
    """The best choice in one sentence, with its margin over the runner-up (or why there is none)."""
    slo = f"{slo_p99_us / 1000:g} ms P99 SLO"
    done = [r for r in ranked if r.status == "complete"]
    if not done:
        return "No choice completed, so there is nothing to rank."
    best = done[0]
    if best.max_rps is None:
        return f"No choice met the {slo} at any rate tried, so there is no best choice."
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
