"""Latency regression gate: compare current run records with a baseline under declarative rules.

Rules (``METRIC:CHANGE``), one per ``--rule`` or in a rules file:

- latency metrics ``p50 p90 p95 p99 p99.9 mean max min`` take an increase: ``p99:+10%`` (relative),
  ``p95:+5ms`` or ``p95:+500us`` (absolute);
- ``throughput`` takes a decrease: ``throughput:-5%`` or ``throughput:-50rps`` (load: requests/s;
  micro-benchmarks: items/s = batch size / mean call time);
- ``error_ratio`` takes an increase in percentage points: ``error_ratio:+1pp`` (0.5% -> 1.5% fails).

The sign says which direction is the regression and must be written (``p99:10%`` is refused). A rules file is
TOML (``rules = ["p99:+10%", ...]``, optional ``confidence = 0.95``) or JSON (a list, or the same keys).
Without rules, ``DEFAULT_RULES`` apply.

Significance. Each rule compares a statistic of the current series with the baseline's and computes a
confidence interval (CI, default 95%) for the change:

- one run per side (or runs pooled): a seeded bootstrap — micro records resample their raw ``samples_us``,
  load records resample their HdrHistogram buckets by count (multinomial); the CI is the percentile interval
  of ``stat(current*) / stat(baseline*)`` (or the difference, for absolute rules). Deterministic: the seed is
  fixed per (seed, series, metric);
- two or more runs on *both* sides: the spread across runs (Welch's t interval on the log of the per-run
  statistic for relative rules, on the raw statistic for absolute ones). This includes run-to-run noise,
  which a within-run bootstrap cannot see.

Verdicts: ``regression`` when the change is beyond the limit in the bad direction *and* the CI excludes no
change; ``not significant`` when it is beyond the limit but the CI includes no change (passes);
``improvement`` when beyond the limit in the good direction and significant; else ``pass``. A statistic with
no CI (load throughput from a single run each side) is judged on the point change alone (noted).
Never retried: one evaluation, one verdict.

Comparability: series are matched by name + params; record groups by config (``CONFIG_KEYS``) and kind.
Different configs, environments (``reports.env.env_mismatch``) or incomplete records are refused (exit 2)
unless ``--force`` (then compared, with a note). Exit codes: 0 pass, 1 regression, 2 usage error or
incomparable input.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import tomllib
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploybench.errors import UsageError
from deploybench.paths import results_dir
from reports.env import env_mismatch
from reports.record import RunRecord, Series, load_records, write_json_atomic
from reports.stats import decode_histogram, min_samples_for

LATENCY_METRICS = ("p50", "p90", "p95", "p99", "p99.9", "mean", "max", "min")
METRICS = (*LATENCY_METRICS, "throughput", "error_ratio")
DEFAULT_RULES = ("p50:+10%", "p99:+15%", "throughput:-10%", "error_ratio:+1pp")
DEFAULT_CONFIDENCE = 0.95
DEFAULT_BOOTSTRAP = 2000
DEFAULT_BASELINE = "baselines"

# Config fields that must be equal for two records to be compared (plus the record kind).
CONFIG_KEYS = (
    "framework", "server", "workers", "threads", "intra_op_threads", "model", "format", "scenario",
    "load_model", "users", "rate_rps", "profile",
)  # fmt: skip

VERDICTS = ("pass", "improvement", "not significant", "regression", "no data")

_UNIT_SCALE_US = {"us": 1.0, "µs": 1.0, "ms": 1000.0, "s": 1_000_000.0}


class RuleError(UsageError):
    """A rule that cannot be parsed; the message names the rule and the fix."""


class IncomparableError(UsageError):
    """Records that must not be compared (config, environment, status): exit code 2."""


# ---------------------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# Distributions: raw samples or histogram buckets as (values, counts)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """A latency distribution: sorted distinct values (µs) with counts. Bootstrap = multinomial on counts."""

    values: np.ndarray
    counts: np.ndarray

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def from_samples(cls, samples_us: Sequence[float]) -> Dist:
        values, counts = np.unique(np.asarray(samples_us, dtype=np.float64), return_counts=True)
        return cls(values, counts.astype(np.int64))

    @classmethod
    def from_histogram(cls, encoded: str) -> Dist:
        try:
            hist = decode_histogram(encoded)
        except Exception as exc:  # hdrh raises assorted errors on garbage
            raise UsageError(f"undecodable histogram in record ({exc})") from None
        values, counts = [], []
        for item in hist.get_recorded_iterator():
            values.append(float(item.value_iterated_to))
            counts.append(int(item.count_added_in_this_iter_step))
        return cls(np.asarray(values, dtype=np.float64), np.asarray(counts, dtype=np.int64))

    @classmethod
    def pooled(cls, dists: Sequence[Dist]) -> Dist:
        if len(dists) == 1:
            return dists[0]
        values = np.concatenate([d.values for d in dists])
        counts = np.concatenate([d.counts for d in dists])
        uniq, inverse = np.unique(values, return_inverse=True)
        return cls(uniq, np.bincount(inverse, weights=counts).astype(np.int64))

    def stat(self, metric: str) -> float:
        return float(_stat_from_counts(self.values, self.counts[None, :], self.n, metric)[0])

    def bootstrap(self, metric: str, rng: np.random.Generator, n_boot: int) -> np.ndarray:
        n = self.n
        probs = self.counts / n
        out = np.empty(n_boot, dtype=np.float64)
        chunk = max(1, min(n_boot, 2_000_000 // max(len(self.values), 1)))
        for start in range(0, n_boot, chunk):
            m = min(chunk, n_boot - start)
            counts = rng.multinomial(n, probs, size=m)
            out[start : start + m] = _stat_from_counts(self.values, counts, n, metric)
        return out


def _stat_from_counts(values: np.ndarray, counts: np.ndarray, n: int, metric: str) -> np.ndarray:
    """A statistic per row of ``counts`` (rows: resamples). Percentiles: inverted CDF, as reports.stats."""
    if metric == "mean":
        return (counts @ values) / n
    if metric == "max":
        last = counts.shape[1] - 1 - np.argmax(counts[:, ::-1] > 0, axis=1)
        return values[last]
    if metric == "min":
        return values[np.argmax(counts > 0, axis=1)]
    k = max(1, math.ceil(round(float(metric[1:]) * n / 100.0, 9)))  # 1-based rank, as reports.stats
    cum = np.cumsum(counts, axis=1)
    return values[(cum < k).sum(axis=1)]


def series_dist(series: Series) -> Dist | None:
    """The raw distribution behind a series: micro samples, else the (corrected) load histogram."""
    if series.samples_us:
        return Dist.from_samples(series.samples_us)
    if series.histogram:
        d = Dist.from_histogram(series.histogram)
        return d if d.n else None
    return None


def _batch_size(series: Series) -> float:
    b = series.params.get("batch_size", 1) if isinstance(series.params, dict) else 1
    return float(b) if isinstance(b, int | float) and b > 0 else 1.0


def point_value(series: Series, metric: str) -> float | None:
    """One run's statistic (µs for latency, /s for throughput, a fraction for error_ratio)."""
    if metric == "error_ratio":
        return series.error_ratio if series.count + series.error_count else None
    if metric == "throughput":
        if series.samples_us:  # micro: items/s from the raw call times
            mean_us = float(np.mean(series.samples_us))
            return _batch_size(series) * 1e6 / mean_us if mean_us > 0 else None
        value = series.throughput_rps if series.throughput_rps is not None else series.items_per_s
        return float(value) if value is not None else None
    dist = series_dist(series)
    if dist is not None:
        return dist.stat(metric)
    value = series.latency_us.get(metric)
    return float(value) if value is not None else None


# ---------------------------------------------------------------------------------------------------------
# Comparison rows and verdicts
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One rule applied to one series. ``change`` and ``ci`` are fractions for % / pp rules, else µs or /s."""

    rule: str
    metric: str
    series: str
    unit: str
    baseline: float | None
    current: float | None
    change: float | None
    ci: tuple[float, float] | None
    verdict: str
    method: str
    note: str = ""


@dataclass
class GateResult:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    confidence: float = DEFAULT_CONFIDENCE
    title: str = "Latency gate"

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "regression"]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "result": "regression" if self.regressions else "pass",
            "exit_code": self.exit_code,
            "confidence": self.confidence,
            "rows": [asdict(r) for r in self.rows],
            "notes": list(self.notes),
        }


def judge(rule: Rule, change: float | None, ci: tuple[float, float] | None) -> str:
    """Verdict for a change (signed, in the rule's terms) and its CI (or None)."""
    if change is None:
        return "no data"
    sign = 1.0 if rule.higher_is_worse else -1.0
    bad = sign * change
    limit = rule.limit_value
    if ci is None:
        if bad > limit:
            return "regression"
        return "improvement" if bad < -limit else "pass"
    bad_lo, bad_hi = sorted((sign * ci[0], sign * ci[1]))
    if bad > limit:
        return "regression" if bad_lo > 0 else "not significant"
    if bad < -limit and bad_hi < 0:
        return "improvement"
    return "pass"


def _change(rule: Rule, base: float, cur: float) -> float | None:
    if rule.relative:
        return cur / base - 1.0 if base > 0 else None
    return cur - base


def _rng(seed: int, *parts: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32("\x1f".join(parts).encode())])


def _quantiles(x: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(x, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _t_crit(confidence: float, df: float) -> float:
    from scipy.stats import t as student_t

    return float(student_t.ppf(0.5 + confidence / 2.0, df))


def welch_ci(
    base: Sequence[float], cur: Sequence[float], *, relative: bool, confidence: float
) -> tuple[float, tuple[float, float]] | None:
    """Change (cur vs base) and its Welch t interval across runs. Relative: on logs, returned as fractions."""
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(cur, dtype=np.float64)
    if relative:
        if (a <= 0).any() or (b <= 0).any():
            return None
        a, b = np.log(a), np.log(b)
    d = float(b.mean() - a.mean())
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        lo = hi = d
    else:
        df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
        half = _t_crit(confidence, df) * se
        lo, hi = d - half, d + half
    if relative:
        return math.expm1(d), (math.expm1(lo), math.expm1(hi))
    return d, (lo, hi)


def paired_ci(
    base: Sequence[float], cur: Sequence[float], *, relative: bool, confidence: float
) -> tuple[float, tuple[float, float] | None] | None:
    """A/B rounds: mean per-round change (geometric for relative) and its t interval (None with 1 round)."""
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(cur, dtype=np.float64)
    if relative:
        if (a <= 0).any() or (b <= 0).any():
            return None
        diffs = np.log(b) - np.log(a)
    else:
        diffs = b - a
    d = float(diffs.mean())
    if diffs.size < 2:
        return (math.expm1(d) if relative else d), None
    half = _t_crit(confidence, diffs.size - 1) * float(diffs.std(ddof=1)) / math.sqrt(diffs.size)
    lo, hi = d - half, d + half
    if relative:
        return math.expm1(d), (math.expm1(lo), math.expm1(hi))
    return d, (lo, hi)


def _measured(series: Series, metric: str) -> bool:
    """Whether a run measured anything for ``metric`` (raw samples count, even all-zero ones)."""
    return bool(series.samples_us) or point_value(series, metric) is not None


def _metric_unit(rule: Rule) -> str:
    return {"throughput": "/s", "error_ratio": "ratio"}.get(rule.metric, "us")


def _point_values(
    base: Sequence[Series], cur: Sequence[Series], metric: str
) -> tuple[list[float], list[float]] | None:
    """The metric's point value in every baseline and current run, or None when any run lacks it."""
    bv = [point_value(s, metric) for s in base]
    cv = [point_value(s, metric) for s in cur]
    if any(v is None for v in (*bv, *cv)):
        return None
    return bv, cv  # type: ignore[return-value]


def _point_estimate(row: Row, rule: Rule, values: tuple[list[float], list[float]]) -> None:
    """Judge on the means of the point values, without a confidence interval."""
    row.baseline, row.current = float(np.mean(values[0])), float(np.mean(values[1]))
    row.change = _change(rule, row.baseline, row.current)
    row.method = "point (no CI)"


def compare_series(
    rule: Rule,
    name: str,
    base: Sequence[Series],
    cur: Sequence[Series],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> Row:
    """Apply one rule to one series given the baseline's runs and the current runs of it."""
    row = Row(rule.text, rule.metric, name, _metric_unit(rule), None, None, None, None, "no data", "")
    notes: list[str] = []
    if rule.metric in LATENCY_METRICS and rule.metric.startswith("p"):
        need = min_samples_for(float(rule.metric[1:]))
        fewest = min(s.count for s in (*base, *cur))
        if fewest < need:
            notes.append(f"few samples ({fewest} < {need} for {rule.metric})")
    bp = [point_value(s, rule.metric) for s in base]
    if all(v is not None for v in bp) and not any(_measured(s, rule.metric) for s in cur):
        # The baseline measured this statistic and the current run measured nothing (e.g. every request
        # failed): a regression, not "no data". Both sides empty stays "no data".
        row.baseline = float(np.mean(bp))  # type: ignore[arg-type]
        row.method = "point (no CI)"
        row.verdict = "regression"
        lost = f"current run measured no {rule.metric} where the baseline did (e.g. every request failed)"
        row.note = "; ".join([*notes, lost])
        return row
    if len(base) >= 2 and len(cur) >= 2:
        values = _point_values(base, cur, rule.metric)
        if values is None:
            row.note = "statistic missing in some run"
            return row
        bv, cv = values
        row.baseline, row.current = float(np.mean(bv)), float(np.mean(cv))
        row.method = f"runs {len(base)}+{len(cur)} (t)"
        res = welch_ci(bv, cv, relative=rule.relative, confidence=confidence)  # type: ignore[arg-type]
        if res is None:
            row.change = _change(rule, row.baseline, row.current)
        else:
            row.change, row.ci = res
    else:
        row.method = "bootstrap"
        rng = _rng(seed, name, rule.metric)
        if rule.metric == "error_ratio":
            bn = sum(s.count + s.error_count for s in base)
            cn = sum(s.count + s.error_count for s in cur)
            if not bn or not cn:
                row.note = "no requests"
                return row
            bp = sum(s.error_count for s in base) / bn
            cp = sum(s.error_count for s in cur) / cn
            row.baseline, row.current, row.change = bp, cp, cp - bp
            diffs = rng.binomial(cn, cp, n_boot) / cn - rng.binomial(bn, bp, n_boot) / bn
            row.ci = _quantiles(diffs, confidence)
        elif rule.metric == "throughput" and not all(s.samples_us for s in (*base, *cur)):
            values = _point_values(base, cur, "throughput")
            if values is None:
                row.note = "no throughput in record"
                return row
            _point_estimate(row, rule, values)
            notes.append("single run per side: no CI for throughput; use repeated runs or A/B")
        else:
            bd = [series_dist(s) for s in base]
            cd = [series_dist(s) for s in cur]
            if any(d is None for d in (*bd, *cd)):
                values = _point_values(base, cur, rule.metric)
                if values is None:
                    row.note = "no samples or histogram"
                    return row
                _point_estimate(row, rule, values)
                notes.append("no raw samples or histogram: no CI")
            else:
                b, c = Dist.pooled(bd), Dist.pooled(cd)  # type: ignore[arg-type]
                stat = "mean" if rule.metric == "throughput" else rule.metric
                bs, cs = b.bootstrap(stat, rng, n_boot), c.bootstrap(stat, rng, n_boot)
                row.baseline, row.current = b.stat(stat), c.stat(stat)
                if rule.metric == "throughput":
                    if min(row.baseline, row.current, bs.min(), cs.min()) <= 0:
                        row.baseline = row.current = None
                        row.note = "zero-time samples: no throughput"
                        return row
                    batch = _batch_size(cur[0])
                    bs, cs = batch * 1e6 / bs, batch * 1e6 / cs
                    row.baseline, row.current = batch * 1e6 / row.baseline, batch * 1e6 / row.current
                row.change = _change(rule, row.baseline, row.current)
                if row.change is not None:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        boot = cs / bs - 1.0 if rule.relative else cs - bs
                    row.ci = _quantiles(boot, confidence) if np.isfinite(boot).all() else None
    if row.change is None and row.baseline is not None:
        notes.append("baseline is zero: no relative change")
    row.verdict = judge(rule, row.change, row.ci)
    row.note = "; ".join([*notes, row.note] if row.note else notes)
    return row


# ---------------------------------------------------------------------------------------------------------
# Matching records and series
# ---------------------------------------------------------------------------------------------------------


def _config_value(config: dict[str, Any], key: str) -> Any:
    if key in config:
        return config[key]
    for v in config.values():  # one level of nesting, e.g. config["target"] = TargetConfig.to_dict()
        if isinstance(v, dict) and key in v:
            return v[key]
    return None


def config_identity(record: RunRecord) -> dict[str, Any]:
    """The config fields that must match (None-valued ones left out), plus the record kind."""
    out: dict[str, Any] = {"kind": record.kind}
    for key in CONFIG_KEYS:
        value = _config_value(record.config, key)
        if value is not None:
            out[key] = value
    return out


def identity_key(identity: dict[str, Any]) -> str:
    return json.dumps(identity, sort_keys=True, default=str)


def describe_identity(identity: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in identity.items())


def group_by_config(records: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(identity_key(config_identity(r)), []).append(r)
    return groups


def identity_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def series_key(s: Series) -> str:
    params = json.dumps(s.params, sort_keys=True, default=str) if s.params else ""
    return f"{s.name}\x1f{params}"


def _series_label(s: Series, ambiguous: bool) -> str:
    if not ambiguous or not s.params:
        return s.name
    return s.name + " [" + ",".join(f"{k}={v}" for k, v in sorted(s.params.items())) + "]"


def check_records(records: Sequence[RunRecord], side: str, force: bool, notes: list[str]) -> None:
    bad = [r for r in records if r.status != "complete"]
    for r in bad:
        msg = f"{side} record {r.run_id} has status {r.status!r}" + (f" ({r.error})" if r.error else "")
        if not force:
            raise IncomparableError(f"{msg}; only complete runs are compared (use --force to compare anyway)")
        notes.append(f"forced: {msg}")


def check_env(base: Sequence[RunRecord], cur: Sequence[RunRecord], force: bool, notes: list[str]) -> None:
    diff = env_mismatch(base[0].env, cur[0].env)
    for r in cur[1:]:
        diff = diff or env_mismatch(base[0].env, r.env)
    if not diff:
        return
    text = "; ".join(f"{k}: baseline {a!r} vs current {b!r}" for k, (a, b) in diff.items())
    if not force:
        raise IncomparableError(
            f"environments differ ({text}); measure the baseline on the same machine/software, "
            "use same-job A/B (deploybench ab), or --force to compare anyway"
        )
    notes.append(f"forced: environments differ ({text})")


def pair_groups(
    base: Sequence[RunRecord], cur: Sequence[RunRecord], force: bool, notes: list[str]
) -> list[tuple[list[RunRecord], list[RunRecord]]]:
    """(baseline runs, current runs) per config; refuses configs without a matching baseline."""
    if not base:
        raise IncomparableError("no baseline records")
    if not cur:
        raise IncomparableError("no current records")
    bg, cg = group_by_config(base), group_by_config(cur)
    pairs = []
    for key, cur_runs in cg.items():
        if key in bg:
            pairs.append((bg[key], cur_runs))
            continue
        ident = config_identity(cur_runs[0])
        closest = min(bg.values(), key=lambda runs: len(identity_diff(config_identity(runs[0]), ident)))
        diff = identity_diff(config_identity(closest[0]), ident)
        text = "; ".join(f"{k}: baseline {a!r} vs current {b!r}" for k, (a, b) in diff.items())
        if force and len(bg) == 1 and len(cg) == 1:
            notes.append(f"forced: configs differ ({text})")
            pairs.append((closest, cur_runs))
            continue
        raise IncomparableError(
            f"no baseline with the current config ({describe_identity(ident)}); closest differs in {text}"
            + ("; use --force to compare anyway" if len(bg) == 1 and len(cg) == 1 else "")
        )
    for key, runs in bg.items():
        if key not in cg:
            notes.append(f"baseline config not measured now: {describe_identity(config_identity(runs[0]))}")
    return pairs


def gate(
    baseline: Sequence[RunRecord],
    current: Sequence[RunRecord],
    rules: Sequence[Rule],
    *,
    force: bool = False,
    confidence: float = DEFAULT_CONFIDENCE,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    series_filter: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> GateResult:
    """Compare current records with baseline records under ``rules``. Raises IncomparableError (exit 2)."""
    if not rules:
        raise UsageError("no rules")
    result = GateResult(notes=list(notes), confidence=confidence)
    check_records(baseline, "baseline", force, result.notes)
    check_records(current, "current", force, result.notes)
    pairs = pair_groups(baseline, current, force, result.notes)
    for base_runs, cur_runs in pairs:
        check_env(base_runs, cur_runs, force, result.notes)
        base_series = _series_by_key(base_runs)
        cur_series = _series_by_key(cur_runs)
        names = [ss[0].name for ss in cur_series.values()]
        for key, cur_list in cur_series.items():
            label = _series_label(cur_list[0], names.count(cur_list[0].name) > 1)
            if series_filter and not any(fnmatch.fnmatchcase(label, pat) for pat in series_filter):
                continue
            if key not in base_series:
                result.notes.append(f"series {label!r} has no baseline (new?): not gated")
                continue
            for rule in rules:
                result.rows.append(
                    compare_series(
                        rule,
                        label,
                        base_series[key],
                        cur_list,
                        confidence=confidence,
                        n_boot=n_boot,
                        seed=seed,
                    )
                )
        for key, base_list in base_series.items():
            if key not in cur_series:
                result.notes.append(f"baseline series {base_list[0].name!r} missing in the current run")
    if any(r.method == "bootstrap" for r in result.rows):
        result.notes.append(
            "bootstrap CIs cover the sampling noise within one run, not run-to-run drift of the machine: "
            "on shared runners gate repeated runs (--last N; baseline save --append) or use deploybench ab"
        )
    if not result.rows:
        raise IncomparableError(
            "nothing to compare: no series of the current records matches the baseline"
            + (f" (filter {', '.join(series_filter)})" if series_filter else "")
        )
    return result


def latest_runs(records: Sequence[RunRecord], last: int, side: str) -> tuple[list[RunRecord], list[str]]:
    """Keep the ``last`` most recent runs (by start time) of each config; ``last <= 0`` keeps all."""
    if last <= 0:
        return list(records), []
    out: list[RunRecord] = []
    notes: list[str] = []
    for runs in group_by_config(records).values():
        keep = sorted(runs, key=lambda r: r.started_utc)[-last:]
        if len(keep) < len(runs):
            ident = describe_identity(config_identity(runs[0]))
            notes.append(
                f"{side}: using the latest {len(keep)} of {len(runs)} runs of {ident} (--last 0: all)"
            )
        out.extend(keep)
    return out, notes


def load_inputs(paths: Sequence[str | Path]) -> tuple[list[RunRecord], list[str]]:
    """Record files, and the records directly in folders (other JSON there, e.g. summary.json: skipped)."""
    records: list[RunRecord] = []
    notes: list[str] = []
    for p in map(Path, paths):
        if not p.is_dir():
            records.extend(load_records([p]))
            continue
        files = sorted(f for f in p.glob("*.json") if not f.name.startswith("."))
        skipped = 0
        for f in files:
            try:
                data = json.loads(f.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                data = None
            if isinstance(data, dict) and "schema_version" in data:
                records.extend(load_records([f]))
            else:
                notes.append(f"skipped {f}: not a run record")
                skipped += 1
        if not files or skipped == len(files):
            raise UsageError(f"{p}: no run records (*.json) in this folder")
    return records, notes


def _series_by_key(runs: Sequence[RunRecord]) -> dict[str, list[Series]]:
    out: dict[str, list[Series]] = {}
    for r in runs:
        for s in r.series:
            out.setdefault(series_key(s), []).append(s)
    return out


# ---------------------------------------------------------------------------------------------------------
# Rendering (terminal table, Markdown, JSON)
# ---------------------------------------------------------------------------------------------------------


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
        "; ".join(filter(None, [row.method, row.note])),
    ]


HEADERS = ["rule", "series", "baseline", "current", "change", "CI", "verdict", "method / notes"]


def summary_line(result: GateResult) -> str:
    counts = {v: sum(r.verdict == v for r in result.rows) for v in VERDICTS}
    parts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    status = "REGRESSION" if result.regressions else "PASS"
    return f"{result.title}: {status} ({parts}; {result.confidence:.0%} CI)"


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


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def add_rule_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``gate`` and ``ab``."""
    g = parser.add_argument_group("rules and significance")
    g.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="RULE",
        help="METRIC:CHANGE, repeatable, e.g. p99:+10%%, p95:+5ms, throughput:-5%%, error_ratio:+1pp "
        f"(default: {' '.join(DEFAULT_RULES).replace('%', '%%')})",
    )
    g.add_argument("--rules-file", metavar="FILE", help='TOML or JSON: rules = ["p99:+10%%", ...]')
    g.add_argument("--confidence", type=float, default=None, help="CI level (default 0.95)")
    g.add_argument(
        "--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples (default 2000)"
    )
    g.add_argument("--seed", type=int, default=0, help="bootstrap seed (verdicts are deterministic per seed)")
    g.add_argument("--force", action="store_true", help="compare different configs/environments (noted)")
    g.add_argument("--series", action="append", default=[], metavar="GLOB", help="only series matching GLOB")
    g.add_argument(
        "--markdown", metavar="FILE", help="also write the table as Markdown (e.g. $GITHUB_STEP_SUMMARY)"
    )
    g.add_argument("--json", dest="json_out", metavar="FILE", help="also write the result as JSON")


def rules_from_args(args: argparse.Namespace) -> tuple[list[Rule], float]:
    rules: list[Rule] = []
    confidence: float | None = None
    if args.rules_file:
        rules, confidence = load_rules_file(args.rules_file)
    if args.rule:
        rules = parse_rules([*(r.text for r in rules), *args.rule])
    if not rules:
        rules = parse_rules(DEFAULT_RULES)
    if args.confidence is not None:
        confidence = check_confidence(args.confidence)
    if not 100 <= args.bootstrap <= 100_000:
        raise UsageError(f"--bootstrap must be between 100 and 100000; got {args.bootstrap}")
    return rules, confidence if confidence is not None else DEFAULT_CONFIDENCE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--baseline",
        nargs="+",
        default=[DEFAULT_BASELINE],
        metavar="PATH",
        help="a baseline store (deploybench baseline save) or record files/folders (default: baselines)",
    )
    parser.add_argument(
        "--current",
        nargs="+",
        default=None,
        metavar="PATH",
        help="current record files or folders (default: $DEPLOYBENCH_RESULTS/bench, i.e. results/bench)",
    )
    parser.add_argument(
        "--last",
        type=int,
        default=1,
        metavar="N",
        help="per config, use the latest N current runs (and baseline record files); 0: all (default 1)",
    )
    add_rule_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from reports.baseline import resolve_baseline

    rules, confidence = rules_from_args(args)
    current_paths = args.current or [results_dir() / "bench"]
    missing = [str(p) for p in current_paths if not Path(p).exists()]
    if missing:
        raise UsageError(
            f"no current records at {', '.join(missing)}: run a measurement first (nox -s bench, "
            "deploybench load) or pass --current FILES"
        )
    loaded, notes = load_inputs(current_paths)
    current, latest_notes = latest_runs(loaded, args.last, "current")
    baseline, base_notes = resolve_baseline(args.baseline, current, force=args.force, last=args.last)
    notes += latest_notes + base_notes
    result = gate(
        baseline,
        current,
        rules,
        force=args.force,
        confidence=confidence,
        n_boot=args.bootstrap,
        seed=args.seed,
        series_filter=args.series,
        notes=notes,
    )
    print(render_table(result), end="")
    write_outputs(result, args.markdown, args.json_out)
    return result.exit_code
