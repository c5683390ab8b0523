"""Gate rules (``METRIC:CHANGE``), one per ``--rule`` or in a rules file:

- latency metrics ``p50 p90 p95 p99 p99.9 mean max min`` take an increase: ``p99:+10%`` (relative),
  ``p95:+5ms`` or ``p95:+500us`` (absolute);
- ``throughput`` takes a decrease: ``throughput:-5%`` or ``throughput:-50rps`` (load: requests/s;
  micro-benchmarks: items/s = batch size / mean call time);
- ``error_ratio`` takes an increase in percentage points: ``error_ratio:+1pp`` (0.5% -> 1.5% fails).

The sign says which direction is the regression and must be written (``p99:10%`` is refused). A rules file is
TOML (``rules = ["p99:+10%", ...]``, optional ``confidence = 0.95``) or JSON (a list, or the same keys).
Without rules, ``DEFAULT_RULES`` apply.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploybench.errors import UsageError

LATENCY_METRICS = ("p50", "p90", "p95", "p99", "p99.9", "mean", "max", "min")
METRICS = (*LATENCY_METRICS, "throughput", "error_ratio")
DEFAULT_RULES = ("p50:+10%", "p99:+15%", "throughput:-10%", "error_ratio:+1pp")
DEFAULT_BOOTSTRAP = 2000

_UNIT_SCALE_US = {"us": 1.0, "µs": 1.0, "ms": 1000.0, "s": 1_000_000.0}


class RuleError(UsageError):
    """A rule that cannot be parsed; the message names the rule and the fix."""


@dataclass(frozen=True)
class Rule:
    """One gate rule. ``limit`` is a positive magnitude in ``unit``: "%", "us", "rps" or "pp"."""

    metric: str
    limit: float
    unit: str
    text: str

    @property
    def relative(self) -> bool:
        return self.unit == "%"

    @property
    def higher_is_worse(self) -> bool:
        return self.metric != "throughput"

    @property
    def bad_sign(self) -> float:
        """+1 where an increase is the regression, -1 for throughput."""
        return 1.0 if self.higher_is_worse else -1.0

    @property
    def limit_on_scale(self) -> float:
        """The limit on the test scale, as a magnitude in the bad direction: log(1 + limit) for a relative
        increase, -log(1 - limit) for a relative decrease (infinite for -100% or more), else the limit."""
        if not self.relative:
            return self.limit_value
        if self.higher_is_worse:
            return math.log1p(self.limit_value)
        return -math.log1p(-self.limit_value) if self.limit_value < 1.0 else math.inf

    def from_scale(self, value: float) -> float:
        """A test-scale value (log ratio when relative) as a change in the rule's terms."""
        return math.expm1(value) if self.relative else value

    @property
    def limit_value(self) -> float:
        """The limit in the unit changes are computed in: a fraction for % and pp, µs or rps otherwise."""
        return self.limit / 100.0 if self.unit in ("%", "pp") else self.limit


def parse_rule(text: str) -> Rule:
    """Parse ``p99:+10%``, ``p95:+5ms``, ``throughput:-5%``, ``error_ratio:+1pp`` (see module doc)."""
    raw = text
    text = text.strip()
    if ":" not in text:
        raise RuleError(f"rule {raw!r}: expected METRIC:CHANGE, e.g. p99:+10% or throughput:-5%")
    metric, change = (part.strip() for part in text.split(":", 1))
    metric = metric.lower()
    if metric == "median":
        metric = "p50"
    if metric not in METRICS:
        raise RuleError(f"rule {raw!r}: unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if not change:
        raise RuleError(f"rule {raw!r}: missing change after ':', e.g. {metric}:{_example(metric)}")
    sign = change[0]
    if sign not in "+-":
        raise RuleError(
            f"rule {raw!r}: missing sign: write {metric}:{_example(metric)} "
            f"({'a decrease' if metric == 'throughput' else 'an increase'} is the regression)"
        )
    body = change[1:].strip()
    number = body.rstrip("abcdefghijklmnopqrstuvwxyzµ%").strip()
    unit = body[len(number) :].strip().lower() if number else body.lower()
    try:
        value = float(number)
    except ValueError:
        raise RuleError(
            f"rule {raw!r}: {number or body!r} is not a number, e.g. {metric}:{_example(metric)}"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise RuleError(
            f"rule {raw!r}: the limit must be a positive number, e.g. {metric}:{_example(metric)}"
        )
    if not unit:
        units = {"throughput": "% or rps", "error_ratio": "pp (percentage points)"}.get(metric, "% or ms")
        raise RuleError(f"rule {raw!r}: missing unit: use {units}, e.g. {metric}:{_example(metric)}")
    if metric == "throughput":
        if sign != "-":
            raise RuleError(f"rule {raw!r}: a throughput rule limits a decrease: write throughput:-{body}")
        if unit not in ("%", "rps"):
            raise RuleError(f"rule {raw!r}: unit {unit!r} does not fit throughput: use % or rps")
        return Rule(metric, value, unit, text)
    if sign != "+":
        raise RuleError(f"rule {raw!r}: a {metric} rule limits an increase: write {metric}:+{body}")
    if metric == "error_ratio":
        if unit != "pp":
            raise RuleError(
                f"rule {raw!r}: error_ratio takes percentage points (absolute): write error_ratio:+{number}pp"
            )
        return Rule(metric, value, "pp", text)
    if unit == "%":
        return Rule(metric, value, "%", text)
    if unit in _UNIT_SCALE_US:
        return Rule(metric, value * _UNIT_SCALE_US[unit], "us", text)
    raise RuleError(f"rule {raw!r}: unit {unit!r} does not fit {metric}: use %, ms or us")


def _example(metric: str) -> str:
    return {"throughput": "-5%", "error_ratio": "+1pp"}.get(metric, "+10%")


def parse_rules(texts: Iterable[str]) -> list[Rule]:
    rules = [parse_rule(t) for t in texts]
    seen: set[str] = set()
    for r in rules:
        key = f"{r.metric}/{r.unit}"
        if key in seen:
            raise RuleError(f"rule {r.text!r}: more than one {r.metric} rule in {r.unit}; keep one")
        seen.add(key)
    return rules


def load_rules_file(path: str | Path) -> tuple[list[Rule], float | None]:
    """Rules (+ optional confidence) from TOML (``rules = [...]``) or JSON (a list, or ``{"rules": ...}``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"rules file {path}: cannot read ({exc.strerror or exc})") from None
    try:
        if path.suffix.lower() == ".json":
            data: Any = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(
            f"rules file {path}: not valid {path.suffix.lstrip('.') or 'TOML'} ({exc})"
        ) from None
    if isinstance(data, list):
        data = {"rules": data}
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise UsageError(f'rules file {path}: expected a list of rules, e.g. rules = ["p99:+10%"]')
    unknown = sorted(set(data) - {"rules", "confidence"})
    if unknown:
        raise UsageError(
            f"rules file {path}: unknown key(s) {', '.join(unknown)}; allowed: rules, confidence"
        )
    if not all(isinstance(r, str) for r in data["rules"]) or not data["rules"]:
        raise UsageError(f"rules file {path}: 'rules' must be a non-empty list of strings")
    try:
        rules = parse_rules(data["rules"])
    except RuleError as exc:
        raise RuleError(f"rules file {path}: {exc}") from None
    confidence = data.get("confidence")
    if confidence is not None:
        confidence = check_confidence(confidence, f"rules file {path}: confidence")
    return rules, confidence


def check_confidence(value: Any, what: str = "--confidence") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.5 <= float(value) < 1.0:
        raise UsageError(f"{what} must be a number in [0.5, 1), e.g. 0.95; got {value!r}")
    return float(value)
