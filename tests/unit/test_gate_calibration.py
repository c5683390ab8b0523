"""The gate's error rates in simulation: each statistics fix with the reproduction that failed before it.

Seeded and deterministic. Latencies are simulated the way they misbehave in real runs: a queue (an M/M/1
by Lindley's recursion), so that requests waiting behind the same busy period are correlated; AR(1)
log-latencies within a run; a drift of the machine from run to run. Targets (the issue's must-show): A/A
false alarms <= 5 % and a true +15 % change caught >= 90 % under a +10 % rule, per gate mode.
"""

from __future__ import annotations

import math
import os
import subprocess

import numpy as np
import pytest
from scipy.signal import lfilter

from deploybench.decisions.ab import ab_gate, calibrate
from deploybench.decisions.gate.judge import gate
from deploybench.decisions.gate.rules import DEFAULT_RULES, parse_rules
from deploybench.decisions.gate.trials import ARMS, SIDE_SCRIPT, _summary, arm_order, main
from deploybench.record import RunRecord, Series
from deploybench.reports.gate_render import render_calibration, render_table
from deploybench.stats import (
    Blocks,
    Dist,
    block_estimate,
    detectable_shift,
    encode_histogram,
    holm,
    new_histogram,
    runs_estimate,
    seeded_rng,
    summarize_samples,
)

ENV = {"cpu_model": "Sim CPU", "cpu_count": 2, "python": "3.11.7", "platform": "Linux-x86_64"}
CONFIG = {"model": "iris-rf", "format": "onnx", "scenario": "tabular", "load_model": "closed", "users": 1}
RULES = parse_rules(DEFAULT_RULES)
TRIALS = 40


def sig3(x: np.ndarray) -> np.ndarray:
    """Round to 3 significant digits, the resolution of the records' HdrHistograms."""
    e = np.floor(np.log10(np.maximum(x, 1.0))) - 2
    return np.round(x / 10**e) * 10**e


def queue_run(rng: np.random.Generator, lam: float = 200.0, mu: float = 250.0, duration: int = 30):
    """One open-loop run of an M/M/1 queue at utilisation lam/mu: latencies (µs) and their 1 s blocks."""
    warm = 2.0
    n = int((duration + warm) * lam * 1.2) + 100
    gaps, service = rng.exponential(1 / lam, n), rng.exponential(1 / mu, n)
    t = np.cumsum(gaps)
    u = np.concatenate([[0.0], np.cumsum(service[:-1] - gaps[1:])])
    wait = u - np.minimum(0.0, np.minimum.accumulate(u))  # Lindley: W = U - min(0, min U)
    lat = sig3((wait + service) * 1e6)
    keep = (t >= warm) & (t < warm + duration)
    t, lat = t[keep] - warm, lat[keep]
    block = np.floor(t).astype(int)
    blocks = Blocks.from_arrays(
        [np.unique(lat[block == i], return_counts=True) for i in range(duration)], [1.0] * duration
    )
    return lat, blocks


def test_correlated_queue_per_request_bootstrap_false_alarms_block_bootstrap_does_not() -> None:
    """Reproduction (issue 12): identical queues, the old per-request bootstrap's 95 % interval for P99
    excluded 0 in 27 of 40 pairs. Time blocks as the units bring the P50 to nominal; the P99 of a heavily
    loaded queue (80 % busy) stays above nominal (~12 % in 100 pairs): a tail set by a few long busy periods
    in 30 s is hard to bootstrap from within one run -- one reason one run per side is not a gate."""
    old = {"p50": 0, "p99": 0}
    new = {"p50": 0, "p99": 0}
    for i in range(TRIALS):
        rng = np.random.default_rng([7, i])
        (la, ba), (lb, bb) = queue_run(rng), queue_run(rng)
        da, db = Dist.from_samples(la), Dist.from_samples(lb)
        for metric in old:
            r = seeded_rng(0, str(i), metric)
            ra, rb = da.bootstrap(metric, r, 100), db.bootstrap(metric, r, 100)
            lo, hi = np.quantile(np.log(rb / ra), [0.025, 0.975])
            old[metric] += not lo <= 0 <= hi
            res = block_estimate(ba, bb, metric, relative=True, rng=r, n_boot=250)
            assert res is not None
            ci = res[2].interval(0.95)
            assert ci is not None
            new[metric] += not ci[0] <= 0 <= ci[1]
    assert old["p99"] >= 24 and old["p50"] >= 20, old  # before: requests treated as independent
    assert new["p50"] <= 4, new  # nominal 2 of 40
    assert new["p99"] <= 6, new


# -- gate modes, through gate() / ab_gate() ------------------------------------------------------------------
def ar1_run(rng: np.random.Generator, scale: float = 1.0, seconds: int = 30, rate: int = 100) -> RunRecord:
    """A load run whose log-latencies follow an AR(1) (phi 0.9: a slow moment lasts ~10 requests), in 1 s
    blocks; ``scale`` multiplies every latency and stretches time (a slower target, throughput / scale)."""
    n = seconds * rate
    eps = rng.normal(0.0, 0.25 * math.sqrt(1 - 0.81), n)
    eps[0] = rng.normal(0.0, 0.25)
    x = lfilter([1.0], [1.0, -0.9], eps)  # x[i] = 0.9 x[i-1] + eps[i]
    lat = sig3(500.0 * np.exp(x) * scale).astype(np.int64)
    blocks = []
    for i, part in enumerate(np.array_split(lat, seconds)):
        h = new_histogram()
        values, counts = np.unique(part, return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist(), strict=True):
            h.record_value(v, c)
        blocks.append({"start_s": i * scale, "duration_s": scale, "count": len(part), "errors": 0,
                       "histogram": encode_histogram(h)})  # fmt: skip
    return _load_record(lat, seconds * scale, blocks)


def _load_record(lat: np.ndarray, duration_s: float, blocks: list[dict] | None = None) -> RunRecord:
    r = RunRecord("load", dict(CONFIG), dict(ENV), status="complete")
    summary = {k: v for k, v in summarize_samples(lat).items() if k not in ("stdev", "mad")}
    r.series.append(Series("POST /predict", count=len(lat), latency_us=summary, duration_s=duration_s,
                           throughput_rps=len(lat) / duration_s, blocks=blocks))  # fmt: skip
    return r


def summary_run(p50_us: float, rps: float) -> RunRecord:
    """A load record with its summary only (runs and rounds are the units: no histogram needed)."""
    r = RunRecord("load", dict(CONFIG), dict(ENV), status="complete")
    latency = {"p50": p50_us, "p99": 2.5 * p50_us, "mean": 1.2 * p50_us}
    r.series.append(Series("POST /predict", count=int(rps * 10), latency_us=latency, duration_s=10.0,
                           throughput_rps=rps))  # fmt: skip
    return r


def rates(outcomes: list[int]) -> int:
    return sum(outcomes)


def test_single_run_with_time_blocks_meets_the_targets_without_drift() -> None:
    """One run per side, correlated requests, no drift between runs: A/A <= 5 %, +15 % caught >= 90 %."""
    aa, slow = [], []
    for i in range(TRIALS):
        rng = np.random.default_rng([11, i])
        base = ar1_run(rng)
        aa.append(gate([base], [ar1_run(rng)], RULES, n_boot=300).exit_code)
        result = gate([base], [ar1_run(rng, scale=1.15)], RULES, n_boot=300)
        slow.append(result.exit_code)
    assert result.rows[0].method == "blocks 30+30 (bootstrap)"
    assert rates(aa) <= 2, aa  # <= 5 % of 40
    assert rates(slow) >= 36, slow  # >= 90 % of 40


def test_single_run_cannot_tell_drift_from_change_and_says_so() -> None:
    """The issue's measurement (6 of 8 unchanged runs flagged against one stored run) is drift between runs:
    time blocks cannot see it. With a 15 % run-to-run drift of the machine, one run per side beyond a limit
    is "cannot tell" (exit 4), never a regression (exit 1), and the output says what the interval covers."""
    codes = []
    for i in range(20):
        rng = np.random.default_rng([12, i])
        base = ar1_run(rng, scale=math.exp(rng.normal(0, 0.15)))
        result = gate([base], [ar1_run(rng, scale=math.exp(rng.normal(0, 0.15)))], RULES, n_boot=300)
        codes.append(result.exit_code)
        assert not result.regressions
    assert set(codes) <= {0, 4} and codes.count(4) > 2  # the drift is beyond the limits often: said so
    assert any(
        "not the drift of the machine between the baseline run and this one" in n for n in result.notes
    )


def test_repeated_runs_are_the_units_and_cover_drift() -> None:
    """5 baseline runs vs 5 current runs, 4 % run-to-run drift: A/A <= 5 %, +15 % caught >= 90 %; the old
    interval from requests could not see the drift at all."""
    aa, slow = [], []
    for i in range(TRIALS):
        rng = np.random.default_rng([13, i])

        def runs(scale: float, rng: np.random.Generator = rng, k: int = 5) -> list[RunRecord]:
            d = np.exp(rng.normal(0, 0.04, k))
            return [summary_run(500.0 * scale * f, 1000.0 / (scale * f)) for f in d]

        base = runs(1.0)
        aa.append(gate(base, runs(1.0), RULES).exit_code)
        slow.append(gate(base, runs(1.15), RULES).exit_code)
    assert rates(aa) <= 2 and rates(slow) >= 36, (aa, slow)


def test_one_new_run_against_repeated_baseline_runs_is_a_prediction_interval() -> None:
    base_values = [500.0, 520.0, 490.0, 510.0, 505.0, 495.0]
    est = runs_estimate(base_values, [600.0], relative=True)
    assert est is not None and est.units == "runs 6+1" and est.df == 5
    spread = np.log(base_values).std(ddof=1)
    assert est.se == pytest.approx(spread * math.sqrt(1 + 1 / 6))
    result = gate([summary_run(v, 1000.0) for v in base_values], [summary_run(600.0, 830.0)], RULES)
    p50 = next(r for r in result.rows if r.metric == "p50")
    assert p50.verdict == "regression" and p50.method == "runs 6+1 (t)", render_table(result)


def ab_rounds(rng: np.random.Generator, scale: float, noise: float, k: int = 4) -> list[dict]:
    """A/B rounds: a drift common to both sides of a round (cancels in the ratio) plus per-side noise."""
    out = []
    for _ in range(k):
        common = math.exp(rng.normal(0, 0.15))
        b, c = np.exp(rng.normal(0, noise / math.sqrt(2), 2))
        cb, cc = common * b, common * c * scale
        out.append(
            {"base": [summary_run(500 * cb, 1000 / cb)], "candidate": [summary_run(500 * cc, 1000 / cc)]}
        )
    return out


@pytest.mark.parametrize(("k", "noise"), [(4, 0.03), (10, 0.07)])
def test_ab_paired_rounds_meet_the_targets(k: int, noise: float) -> None:
    """k rounds, ``noise`` = spread of one round's A/A ratio, a 15 % drift common to both sides of a round:
    A/A <= 5 %, +15 % caught >= 90 %, after Holm over the default rules. 4 rounds need a quiet machine
    (3 %); the workflow's 10 rounds cope with 7 % (a 2-core machine shared with other work measured ~10 %:
    ``deploybench ab --calibrate`` says what a machine needs)."""
    aa, slow = [], []
    for i in range(TRIALS):
        rng = np.random.default_rng([14, k, i])
        aa.append(ab_gate(ab_rounds(rng, 1.0, noise, k), RULES).exit_code)
        result = ab_gate(ab_rounds(rng, 1.15, noise, k), RULES)
        slow.append(result.exit_code)
    assert rates(aa) <= 2 and rates(slow) >= 36, (rates(aa), rates(slow))
    # error_ratio (no errors on either side: no variation, no change) cannot become significant: not counted
    assert result.family == 3 and "Holm over 3 one-sided tests" in " ".join(result.notes)
    assert "not in the Holm family" in next(r.note for r in result.rows if r.metric == "error_ratio")


def test_detectable_change_is_what_the_gate_catches_9_times_in_10() -> None:
    """Detection at the limit is a coin toss for any rule "beyond the limit and significant"; what the gate
    can promise is the change it catches 9 times in 10 at the measured noise (``Row.detectable``), and it
    says when that is far beyond a rule's limit. Checked: a true change equal to ``detectable`` is caught
    80-99 % of the time; at the limit itself about half the time."""
    rules = parse_rules(["p50:+10%"])
    noise, k = 0.06, 6
    se = noise / math.sqrt(k)
    shift = detectable_shift(se, k - 1, 0.05, math.log1p(0.10))
    caught = {"at limit": 0, "at detectable": 0}
    for i in range(100):
        rng = np.random.default_rng([15, i])
        caught["at limit"] += ab_gate(ab_rounds(rng, 1.10, noise, k), rules).exit_code
        caught["at detectable"] += ab_gate(ab_rounds(rng, math.exp(shift), noise, k), rules).exit_code
    assert 25 <= caught["at limit"] <= 65, caught
    assert 80 <= caught["at detectable"] <= 99, caught  # the formula errs on the safe side
    noisy = ab_gate(ab_rounds(np.random.default_rng(3), 1.0, 0.15, 4), RULES)
    p50 = next(r for r in noisy.rows if r.metric == "p50")
    assert p50.detectable is not None and p50.detectable > 0.15
    assert any("caught 9 times in 10 only from" in n and "p50:+10%" in n for n in noisy.notes)


def test_holm_controls_the_family_of_rules_x_series() -> None:
    """Reproduction: 20 series x rules tested at once at 5 % each flag something in most A/A gates; with
    Holm the family-wise rate is <= 5 %."""
    any_raw = any_holm = 0
    for i in range(200):
        rng = np.random.default_rng([16, i])
        p = []
        for _ in range(20):
            est = runs_estimate(rng.normal(0, 1, 5), rng.normal(0, 1, 5), relative=False)
            assert est is not None
            p.append(est.p_above())
        any_raw += min(p) <= 0.05
        any_holm += min(holm(p)) <= 0.05
    assert any_raw > 100 and any_holm <= 14, (any_raw, any_holm)
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_micro_7us_call_at_full_timer_resolution() -> None:
    """Reproduction: samples rounded to whole µs made a 0.6 % slower 7.5 µs call "+14.3 %, CI [+14.3,
    +14.3], regression" (7 -> 8 µs). In ns the change is +0.6 % and passes; the rounded data still fails."""
    rng = np.random.default_rng(17)

    def micro(ns: np.ndarray) -> RunRecord:
        r = RunRecord("micro", {"model": "iris-rf", "format": "onnx"}, dict(ENV), status="complete")
        r.series.append(Series("iris-rf/onnx/b1", count=ns.size, samples_ns=ns.astype(int).tolist(),
                               params={"batch_size": 1}))  # fmt: skip
        return r

    base = rng.normal(7470, 12, 1000)
    cur = rng.normal(7470 * 1.006, 12, 1000)
    rules = parse_rules(["p50:+10%"])
    exact = gate([micro(base)], [micro(cur)], rules)
    (row,) = exact.rows
    assert row.change == pytest.approx(0.006, abs=0.002) and row.verdict == "pass" and exact.exit_code == 0
    rounded = gate([micro(np.round(base / 1000) * 1000)], [micro(np.round(cur / 1000) * 1000)], rules)
    (old,) = rounded.rows
    assert old.change == pytest.approx(1 / 7) and old.ci == pytest.approx((1 / 7, 1 / 7))
    assert old.verdict == "cannot tell"  # one run per side: never a regression; the interval is still wrong
    # the no-op harness case (~60 ns) is no longer 0: it has a throughput and a change
    noop = gate(
        [micro(rng.normal(60, 3, 500))], [micro(rng.normal(60, 3, 500))], parse_rules(["throughput:-10%"])
    )
    assert noop.rows[0].baseline > 1e7 and noop.rows[0].verdict == "pass"


def test_calibrate_reports_noise_floor_and_detectable_change() -> None:
    rng = np.random.default_rng(18)
    rounds = ab_rounds(rng, 1.0, 0.05, k=12)
    doc = calibrate(rounds, RULES, gate_rounds=4)
    p50 = next(r for r in doc["rows"] if r["metric"] == "p50")
    assert doc["family"] == 4 and doc["holm_first_level"] == pytest.approx(0.0125)
    assert 0.02 < p50["noise_one_round"] < 0.09  # ~5 %
    assert p50["detectable"] > p50["ci_half_width"] > 0
    assert p50["rounds_for_1_5x_limit"] is not None and p50["rounds_for_1_5x_limit"] >= 3
    text = render_calibration(doc)
    assert "noise (1 round, sd)" in text and "90% detects (4 rounds)" in text and "p50:+10%" in text
    with pytest.raises(Exception, match="at least 3 rounds"):
        calibrate(rounds[:2], RULES, gate_rounds=4)


# -- the trial script (python -m deploybench.decisions.gate.trials)
# ----------------------------------------------------
def test_trials_summary_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    trial = {"p50_change": 0.15, "regressions": [], "methods": []}
    outcome = {"aa": [{**trial, "exit_code": 0}] * 19 + [{**trial, "exit_code": 1}],
               "slow": [{**trial, "exit_code": 1}] * 18 + [{**trial, "exit_code": 0}] * 2}  # fmt: skip
    s = _summary("ab", "10 rounds", outcome)
    assert s["line"].startswith("ab (10 rounds): A/A false alarms 1 of 20; +15 % detected 18 of 20")
    assert s["targets_met"] and "NOT met" not in s["line"]
    assert not _summary("ab", "x", {**outcome, "slow": outcome["slow"][2:] + outcome["aa"][:2]})[
        "targets_met"
    ]
    assert main(["--modes", "nightly"]) == 2
    assert "--modes: ab, single" in capsys.readouterr().err
    assert main(["--deploybench", "/no/such/deploybench"]) == 2
    assert "no deploybench executable" in capsys.readouterr().err


@pytest.mark.e2e
def test_trials_side_script_adds_the_delay_on_the_candidate_only() -> None:
    for side, delay in (("base", "0"), ("candidate", "0.25")):
        argv = ["sh", "-c", SIDE_SCRIPT, "echo", "0.25", "/tmp/out dir", "load", "--users", "1"]
        env = {**os.environ, "DEPLOYBENCH_AB_SIDE": side}
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
        assert out.strip() == f"load --users 1 --inject-delay-ms {delay} --out /tmp/out dir"


def test_trial_arms_rotate_through_every_position_and_both_orders() -> None:
    """Over 6 rounds each arm runs once in each position twice, and the unchanged candidate runs before the
    slowed one in 3 rounds: no arm is favoured by its place in the round (warm caches, a drifting machine)."""
    orders = [arm_order(r) for r in range(1, 7)]
    assert all(sorted(o) == sorted(ARMS) for o in orders)
    for position in range(3):
        assert sorted(o[position] for o in orders) == sorted(ARMS * 2)
    assert sum(o.index("aa") < o.index("slow") for o in orders) == 3
    assert arm_order(7) == arm_order(1)
