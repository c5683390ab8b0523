"""Latency regression gate: compare current run records with a baseline under declarative rules
(``deploybench.decisions.gate.rules``); the public judging API that ``deploybench gate`` and ``deploybench
ab`` share.

Significance comes only from independent units, never from requests treated as independent (requests of a
load run queue behind each other; consecutive micro-benchmark calls share the machine's state):

- two or more runs on a side: the runs are the units -- Welch's t on the per-run statistic (its log for
  relative rules); with one run on the other side, that run is taken to spread like the runs of this side
  (a prediction interval for one new run). This covers run-to-run drift of the machine;
- one run per side: time blocks are the units -- a circular block bootstrap over a load run's ~1 s blocks
  (``Series.blocks``) or over blocks of consecutive micro-benchmark calls (``samples_ns``), statistics
  recomputed from the merged counts of the resampled blocks (the interval shown). This covers the noise
  within each run, *not* a change of the machine between the two runs, so such a row never says
  "regression": beyond its limit it is "cannot tell" (exit 4); fewer than ``MIN_BLOCKS`` blocks, or an old
  record without blocks: no interval either;
- A/B rounds (``deploybench.decisions.ab``): the paired rounds are the units.

Verdict (``finalize``): every row with a p-value joins one Holm family (all rules x series of the gate
call; a statistic with no variation and no change, e.g. no errors on either side, cannot become
significant and is left out); with alpha = 1 - confidence (one-sided, family-wise), ``regression`` when
the point change is beyond the limit in the bad direction *and* the Holm-adjusted one-sided p-value of
"worse at all" is <= alpha; ``not significant`` when beyond the limit without that (passes);
``improvement`` when beyond the limit the other way and significant (Bonferroni); else ``pass``. A true
change exactly at the limit is caught about half the time by any rule of this kind; each row therefore
carries ``detectable``, the change caught 9 times in 10 at the measured noise, and the result notes rules
that cannot reach 1.5x their limit. Never retried: one evaluation, one verdict.

Comparability (``deploybench.decisions.gate.matching``): series are matched by name + params; record groups
by config and kind. Different configs, environments or incomplete records are refused (exit 2) unless
``force`` (then compared, with a note). Exit codes: 0 pass, 1 regression, 2 usage error or incomparable input,
4 cannot tell (no regression, but one run per side and a change beyond a limit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from deploybench.decisions.gate.matching import (
    IncomparableError,
    check_env,
    check_records,
    pair_groups,
    pair_series,
)
from deploybench.decisions.gate.rules import DEFAULT_BOOTSTRAP, LATENCY_METRICS, Rule
from deploybench.errors import UsageError
from deploybench.record import RunRecord, Series
from deploybench.stats import (
    MIN_BLOCKS,
    Blocks,
    Dist,
    Estimate,
    block_estimate,
    detectable_shift,
    holm,
    min_samples_for,
    runs_estimate,
    seeded_rng,
)
from deploybench.verdicts import DEFAULT_CONFIDENCE, GateResult, Row

LOST = "point (no data)"
ONE_RUN_NO_CI = "one run each (no CI)"
DETECTABLE_POWER = 0.9
COIN_TOSS_FACTOR = 1.5  # a rule whose 90%-detectable change is beyond 1.5x its limit gets a note


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


def series_blocks(series: Series) -> Blocks | None:
    """The independent units inside one run: micro calls in blocks of consecutive calls, a load run's
    time blocks; None for an old load record without blocks."""
    if series.samples_ns:
        return Blocks.from_samples(np.asarray(series.samples_ns, dtype=np.float64) / 1000.0)
    if series.blocks:
        return Blocks.from_record_blocks(series.blocks)
    return None


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


def _center(values: Sequence[float], relative: bool) -> float:
    """Geometric mean for relative rules (the change is judged on logs), else the mean."""
    arr = np.asarray(values, dtype=np.float64)
    if relative and arr.size and (arr > 0).all():
        return float(np.exp(np.log(arr).mean()))
    return float(arr.mean())


def apply_estimate(row: Row, rule: Rule, est: Estimate, confidence: float) -> None:
    """Fill a row's change, CI, one-sided p-value, standard error and df from an estimate."""
    row.change = rule.from_scale(est.diff)
    ci = est.interval(confidence)
    row.ci = None if ci is None else (rule.from_scale(ci[0]), rule.from_scale(ci[1]))
    row.p_value = est.p_above(rule.bad_sign)
    if est.has_spread:
        row.se, row.df = est.se, est.df


def _block_metric(rule: Rule, micro: bool) -> str:
    if rule.metric == "throughput":
        return "mean" if micro else "rate"
    return rule.metric


def compare_series(
    rule: Rule,
    name: str,
    base: Sequence[Series],
    cur: Sequence[Series],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    blocks: dict[int, Blocks | None] | None = None,
) -> Row:
    """Apply one rule to one series given the baseline's runs and the current runs of it: the change, its
    CI and one-sided p-value (the verdict comes from ``finalize``, across all rows). ``blocks``: a cache of
    ``series_blocks`` by ``id(series)``."""
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
        row.method = LOST
        row.verdict = "regression"
        lost = f"current run measured no {rule.metric} where the baseline did (e.g. every request failed)"
        row.note = "; ".join([*notes, lost])
        return row
    values = _point_values(base, cur, rule.metric)
    if values is None:
        row.note = "; ".join([*notes, "statistic missing in some run"])
        return row
    bv, cv = values
    row.baseline, row.current = _center(bv, rule.relative), _center(cv, rule.relative)
    row.change = change(rule, row.baseline, row.current)
    if len(base) >= 2 or len(cur) >= 2:
        est = runs_estimate(bv, cv, relative=rule.relative)
        row.method = f"runs {len(base)}+{len(cur)} (t)"
        if est is None:
            notes.append("zero statistic in some run: no CI")
        else:
            apply_estimate(row, rule, est, confidence)
            if len(base) < 2 or len(cur) < 2:
                notes.append("one run on one side: taken to spread like the other side's runs")
    else:
        cache = blocks if blocks is not None else {}
        for s in (base[0], cur[0]):
            if id(s) not in cache:
                cache[id(s)] = series_blocks(s)
        bb, cb = cache[id(base[0])], cache[id(cur[0])]
        micro = bool(base[0].samples_ns and cur[0].samples_ns)
        fewest = min(bb.n_blocks if bb else 0, cb.n_blocks if cb else 0)
        if bb is None or cb is None or fewest < MIN_BLOCKS:
            row.method = ONE_RUN_NO_CI
            why = "no time blocks in the record" if fewest == 0 else f"{fewest} blocks < {MIN_BLOCKS}"
            notes.append(f"one run per side, {why}: no significance can be claimed")
        else:
            transform = None
            if micro and rule.metric == "throughput":
                batch = _batch_size(cur[0])
                transform = lambda mean_us: batch * 1e6 / mean_us  # noqa: E731
            res = block_estimate(
                bb,
                cb,
                _block_metric(rule, micro),
                relative=rule.relative,
                rng=seeded_rng(seed, name, rule.metric),
                n_boot=n_boot,
                transform=transform,
            )
            row.method = f"blocks {bb.n_blocks}+{cb.n_blocks} (bootstrap)"
            if res is None:
                notes.append("statistic undefined in some resample: no CI")
            else:
                row.baseline, row.current, est = res
                apply_estimate(row, rule, est, confidence)
    if row.change is None and row.baseline is not None:
        notes.append("baseline is zero: no relative change")
    row.note = "; ".join([*notes, row.note] if row.note else notes)
    return row


def one_run_each(row: Row) -> bool:
    """Whether a row compared one run with one run (its interval, if any, comes from blocks inside them)."""
    return row.method.startswith("blocks ") or row.method == ONE_RUN_NO_CI


def verdict(rule: Rule, row: Row, alpha: float, family: int) -> str:
    """The verdict of a row whose p-value has been Holm-adjusted (see the module doc)."""
    if row.method == LOST:  # measured nothing where the baseline did: a regression without statistics
        return "regression"
    if row.change is None:
        return "no data"
    bad = rule.bad_sign * row.change
    limit = rule.limit_value
    if one_run_each(row):
        # One run per side cannot tell the machine's drift between the two runs from a change (8 of 20
        # unchanged 10 s runs were called regressions when blocks decided): beyond the limit, say so.
        return "cannot tell" if bad > limit else "pass"
    if bad > limit:
        return "regression" if row.p_adjusted is not None and row.p_adjusted <= alpha else "not significant"
    if bad < -limit and row.p_value is not None and min(1.0, (1.0 - row.p_value) * family) <= alpha:
        return "improvement"
    return "pass"


def finalize(result: GateResult, rules: Sequence[Rule]) -> None:
    """Holm-adjust the p-values of all rows of one gate call, set each verdict and detectable change, and
    note what the family was and which rules cannot detect 1.5x their limit at this noise."""
    by_text = {r.text: r for r in rules}
    alpha = result.alpha
    # A statistic without any variation on either side and no change (e.g. 0 errors everywhere) cannot
    # reach significance whatever happens: it stays out of the family (Tarone), so it costs no power.
    inert = [r for r in result.rows if r.p_value is not None and r.se == 0.0 and r.change == 0.0]
    tested = [r for r in result.rows if r.p_value is not None and r not in inert]
    result.family = len(tested)
    for row, adjusted in zip(tested, holm([r.p_value for r in tested]), strict=True):  # type: ignore[misc]
        row.p_adjusted = adjusted
    for row in inert:
        row.p_adjusted = 1.0
        row.note = "; ".join(filter(None, [row.note, "no variation, no change: not in the Holm family"]))
    weak: list[str] = []
    for row in result.rows:
        rule = by_text[row.rule]
        row.verdict = verdict(rule, row, alpha, max(1, result.family))
        if row.se is not None and row.df is not None and result.family:
            level = alpha / result.family  # Holm's first step: the level the smallest p-value faces
            shift = detectable_shift(row.se, row.df, level, rule.limit_on_scale, DETECTABLE_POWER)
            row.detectable = rule.from_scale(rule.bad_sign * shift) if math.isfinite(shift) else None
            if row.detectable is None or abs(row.detectable) > COIN_TOSS_FACTOR * rule.limit_value:
                weak.append(f"{row.rule} on {row.series}: {_fmt_share(rule, row.detectable)}")
    if result.family:
        levels = ", ".join(f"{alpha / (result.family - i):.3g}" for i in range(min(3, result.family)))
        result.notes.append(
            f"significance: Holm over {result.family} one-sided test{'s' if result.family != 1 else ''} "
            "(rules x series of this call), "
            f"family-wise false-alarm level {alpha:.3g}; sorted p-values are held to {levels}"
            + (", ..." if result.family > 3 else "")
        )
    if weak:
        result.notes.append(
            "at this noise and number of units a rule catches a change at its limit about half the time; "
            f"caught 9 times in 10 only from: {'; '.join(weak)} (more runs or rounds narrow this; "
            "deploybench ab --calibrate measures it for a machine)"
        )


def _fmt_share(rule: Rule, value: float | None) -> str:
    if value is None:
        return "no change at all (limit unreachable)"
    if rule.relative or rule.unit == "pp":
        return f"{value * 100:+.1f}{'pp' if rule.unit == 'pp' else '%'}"
    return f"{value:+.0f} {'rps' if rule.metric == 'throughput' else 'µs'}"


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
    cache: dict[int, Blocks | None] = {}
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
                        blocks=cache,
                    )
                )
    if not result.rows:
        raise IncomparableError(
            "nothing to compare: no series of the current records matches the baseline"
            + (f" (filter {', '.join(series_filter)})" if series_filter else "")
        )
    if any(one_run_each(r) for r in result.rows):
        result.notes.append(
            "one run per side: the time blocks inside each run give the interval shown, but not the drift "
            "of the machine between the baseline run and this one, which on a shared or busy machine alone "
            "exceeds 10% rules; so a change beyond a limit is 'cannot tell' (exit 4), never 'regression'. "
            "Gate against repeated baseline runs saved at different times (baseline save --append --keep N) "
            "or use deploybench ab"
        )
    finalize(result, rules)
    return result
