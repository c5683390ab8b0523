"""Absolute pass/fail limits on a load run, like k6's thresholds: ``--threshold "p99<50ms"`` (repeatable).

Grammar: ``METRIC OP VALUE[UNIT]`` with OP one of ``< <= > >=``:

- latency ``p50 p90 p95 p99 p99.9 mean max min``: the unit is required (``us``, ``µs``, ``ms``, ``s``), as in
  ``p99<50ms`` or ``p95<=800us``; open-loop runs are judged on the corrected latency;
- ``error_ratio``: a percentage (``error_ratio<1%``) or a fraction (``error_ratio<0.01``);
- ``throughput``: requests/s achieved, ``throughput>200`` or ``throughput>200rps``.

A threshold holds for every series (endpoint) of the run: each is judged on its own. A series without the
figure (no successful request: no latency) crosses any latency threshold. Crossings are written into the
record as ``threshold`` warnings; the command exits with ``EXIT_THRESHOLD``.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from deploybench.errors import UsageError
from deploybench.record import RunRecord, Series

LATENCY_METRICS = ("p50", "p90", "p95", "p99", "p99.9", "mean", "max", "min")
METRICS = (*LATENCY_METRICS, "error_ratio", "throughput")
WARNING_CODE = "threshold"
EXIT_THRESHOLD = 3  # a run that completed but crossed a threshold (1: the run failed, 2: bad input)

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_LATENCY_UNITS_US = {"us": 1.0, "µs": 1.0, "ms": 1_000.0, "s": 1_000_000.0}
_PATTERN = re.compile(
    r"^\s*([a-z_][a-z0-9_.]*)\s*(<=|>=|<|>)\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-zµ%]*)\s*$"
)


class ThresholdError(UsageError):
    """A threshold that cannot be parsed; the message names it and shows the form."""


@dataclass(frozen=True)
class Threshold:
    """One limit. ``limit`` is in the unit the record keeps: µs for latency, a fraction for error_ratio,
    requests/s for throughput."""

    metric: str
    op: str
    limit: float
    text: str

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.limit)

    def format_value(self, value: float | None) -> str:
        if value is None:
            return "none"
        if self.metric in LATENCY_METRICS:
            return f"{value / 1000:.3f} ms"
        if self.metric == "error_ratio":
            return f"{100 * value:.3g} %"
        return f"{value:,.1f} rps"


@dataclass(frozen=True)
class Outcome:
    threshold: Threshold
    series: str
    value: float | None
    passed: bool

    def describe(self) -> str:
        verdict = "ok" if self.passed else "crossed"
        return f"{self.threshold.text}: {self.series} {self.threshold.format_value(self.value)} ({verdict})"


def parse_threshold(text: str) -> Threshold:
    """``"p99<50ms"`` -> a Threshold; a ThresholdError (exit 2) names what is wrong."""
    form = 'write METRIC OP VALUE, e.g. "p99<50ms", "error_ratio<1%", "throughput>200"'
    m = _PATTERN.match(text.lower().replace("μ", "µ"))
    if not m:
        raise ThresholdError(f"threshold {text!r}: {form}")
    metric, op, number, unit = m.groups()
    if metric not in METRICS:
        raise ThresholdError(f"threshold {text!r}: unknown metric {metric!r}; one of {', '.join(METRICS)}")
    value = float(number)
    if not math.isfinite(value):
        raise ThresholdError(f"threshold {text!r}: the limit must be a finite number")
    if metric in LATENCY_METRICS:
        if not unit:
            raise ThresholdError(
                f"threshold {text!r}: missing unit; latency takes us, ms or s (e.g. {metric}<50ms)"
            )
        if unit not in _LATENCY_UNITS_US:
            raise ThresholdError(f"threshold {text!r}: unknown unit {unit!r}; latency takes us, ms or s")
        limit = value * _LATENCY_UNITS_US[unit]
    elif metric == "error_ratio":
        if unit not in ("", "%"):
            raise ThresholdError(
                f"threshold {text!r}: unknown unit {unit!r}; error_ratio takes % or a fraction"
            )
        limit = value / 100.0 if unit == "%" else value
        if not 0.0 <= limit <= 1.0:
            raise ThresholdError(f"threshold {text!r}: an error ratio is between 0 and 100 %")
    else:
        if unit not in ("", "rps"):
            raise ThresholdError(f"threshold {text!r}: unknown unit {unit!r}; throughput takes rps")
        limit = value
    return Threshold(metric, op, limit, text.strip())


def parse_thresholds(texts: Iterable[str] | None) -> list[Threshold]:
    return [parse_threshold(t) for t in texts or ()]


def series_value(series: Series, metric: str) -> float | None:
    if metric == "error_ratio":
        return series.error_ratio
    if metric == "throughput":
        return series.throughput_rps
    value = series.latency_us.get(metric)
    return None if value is None else float(value)


def evaluate(record: RunRecord, thresholds: Iterable[Threshold]) -> list[Outcome]:
    """Every threshold on every series; a series without the figure (no latency) crosses it."""
    outcomes = []
    for threshold in thresholds:
        for series in record.series:
            value = series_value(series, threshold.metric)
            passed = value is not None and threshold.holds(value)
            outcomes.append(Outcome(threshold, series.name, value, passed))
    return outcomes


def apply(record: RunRecord, thresholds: Iterable[Threshold]) -> tuple[list[Outcome], bool]:
    """Record the limits (``config["thresholds"]``), evaluate them and write each crossing into the record as
    a ``threshold`` warning. Returns the outcomes and whether every threshold held (a run with thresholds but
    no series holds none of them)."""
    thresholds = list(thresholds)
    if thresholds:
        record.config["thresholds"] = [t.text for t in thresholds]
    outcomes = evaluate(record, thresholds)
    if thresholds and not record.series:
        record.add_warning(WARNING_CODE, "no series measured: no threshold can hold", "")
        return outcomes, False
    for o in outcomes:
        if not o.passed:
            record.add_warning(
                WARNING_CODE,
                f"{o.threshold.text} crossed: {o.threshold.format_value(o.value)}",
                "an absolute limit given with --threshold",
                o.series,
            )
    return outcomes, all(o.passed for o in outcomes)
