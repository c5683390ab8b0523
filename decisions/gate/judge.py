"""Latency regression gate: compare current run records with a baseline under declarative rules
(``decisions.gate.rules``); the public judging API that ``deploybench gate`` and ``deploybench ab`` share.

Significance. Each rule compares a statistic of the current series with the baseline's and computes a
confidence interval (CI, default 95%) for the change:

- one run per side (or runs pooled): a seeded bootstrap — micro records resample their raw ``samples_ns``,
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

Comparability (``decisions.gate.matching``): series are matched by name + params; record groups by config
and kind. Different configs, environments or incomplete records are refused (exit 2) unless ``force`` (then
compared, with a note). Exit codes: 0 pass, 1 regression, 2 usage error or incomparable input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from decisions.gate.matching import IncomparableError, check_env, check_records, pair_groups, pair_series
from decisions.gate.rules import DEFAULT_BOOTSTRAP, LATENCY_METRICS, Rule
from deploybench.errors import UsageError
from deploybench.record import RunRecord, Series
from deploybench.stats import Dist, min_samples_for, quantile_interval, seeded_rng, welch_ci
from deploybench.verdicts import DEFAULT_CONFIDENCE, GateResult, Row


def series_dist(series: Series) -> Dist | None:
    """The raw distribution behind a series: micro samples, else the (corrected) load histogram."""
    if series.samples_ns:
        return Dist.from_samples(np.asarray(series.samples_ns, dtype=np.float64) / 1000.0)  # µs, unrounded
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
        if series.samples_ns:  # micro: items/s from the raw call times
            mean_us = float(np.mean(series.samples_ns)) / 1000.0
            return _batch_size(series) * 1e6 / mean_us if mean_us > 0 else None
        value = series.throughput_rps if series.throughput_rps is not None else series.items_per_s
        return float(value) if value is not None else None
    dist = series_dist(series)
    if dist is not None:
        return dist.stat(metric)
    value = series.latency_us.get(metric)
    return float(value) if value is not None else None


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


def change(rule: Rule, base: float, cur: float) -> float | None:
    """The change from ``base`` to ``cur`` in the rule's terms: a fraction (relative) or a difference."""
    if rule.relative:
        return cur / base - 1.0 if base > 0 else None
    return cur - base


def _measured(series: Series, metric: str) -> bool:
    """Whether a run measured anything for ``metric`` (raw samples count, even all-zero ones)."""
    return bool(series.samples_ns) or point_value(series, metric) is not None


def metric_unit(rule: Rule) -> str:
    """The unit of a rule's statistic in a Row: "us", "/s" or "ratio"."""
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
    row.change = change(rule, row.baseline, row.current)
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
    row = Row(rule.text, rule.metric, name, metric_unit(rule), None, None, None, None, "no data", "")
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
            row.change = change(rule, row.baseline, row.current)
        else:
            row.change, row.ci = res
    else:
        row.method = "bootstrap"
        rng = seeded_rng(seed, name, rule.metric)
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
            row.ci = quantile_interval(diffs, confidence)
        elif rule.metric == "throughput" and not all(s.samples_ns for s in (*base, *cur)):
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
                row.change = change(rule, row.baseline, row.current)
                if row.change is not None:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        boot = cs / bs - 1.0 if rule.relative else cs - bs
                    row.ci = quantile_interval(boot, confidence) if np.isfinite(boot).all() else None
    if row.change is None and row.baseline is not None:
        notes.append("baseline is zero: no relative change")
    row.verdict = judge(rule, row.change, row.ci)
    row.note = "; ".join([*notes, row.note] if row.note else notes)
    return row


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
        for pair in pair_series(base_runs, cur_runs, result.notes, series_filter=series_filter):
            for rule in rules:
                result.rows.append(
                    compare_series(
                        rule,
                        pair.label,
                        pair.base,
                        pair.current,
                        confidence=confidence,
                        n_boot=n_boot,
                        seed=seed,
                    )
                )
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
