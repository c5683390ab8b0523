"""The pure search logic (fakes, no servers); the accuracy test against a known-capacity server is in
tests/e2e/test_saturation_e2e.py."""

from __future__ import annotations

import pytest

from deploybench.decisions.compare.saturation import (
    RateMeasurement,
    SloRules,
    Window,
    evaluate,
    is_stable,
    measure_until_stable,
    saturation_search,
)

SLO_US = 50_000


def fake_target(capacity_rps: float, calls: list[float] | None = None):
    """An ideal queue: under capacity, P99 10 ms; above it, throughput caps and latency explodes."""

    def measure(rate: float) -> RateMeasurement:
        if calls is not None:
            calls.append(rate)
        if rate <= capacity_rps:
            return RateMeasurement(10_000, rate, 0.0)
        return RateMeasurement(2_000_000, capacity_rps, 0.0)

    return measure


# -- the pass rule ---------------------------------------------------------------------------------------
def test_rule_passes_only_when_all_three_conditions_hold():
    rules = SloRules(SLO_US, max_error_ratio=0.01, min_throughput_ratio=0.95)
    assert evaluate(100, RateMeasurement(SLO_US, 100.0, 0.0), rules).passed  # P99 == SLO passes
    slow = evaluate(100, RateMeasurement(SLO_US + 1, 100.0, 0.0), rules)
    assert not slow.passed and "p99" in slow.reasons[0]
    errs = evaluate(100, RateMeasurement(1000, 100.0, 0.02), rules)
    assert not errs.passed and "errors" in errs.reasons[0]
    behind = evaluate(100, RateMeasurement(1000, 94.0, 0.0), rules)
    assert not behind.passed and "throughput" in behind.reasons[0]
    assert evaluate(100, RateMeasurement(1000, 95.0, 0.0), rules).passed
    none = evaluate(100, RateMeasurement(None, 0.0, 1.0), rules)
    assert not none.passed and len(none.reasons) == 3


def test_poisson_allowance_is_three_sd_of_the_arrival_count():
    rules = SloRules(SLO_US, min_throughput_ratio=0.95, poisson=True)
    # 40 rps over 1.6 s: 64 expected arrivals, sd 8 -> 5 rps; floor = 38 - 1/1.6 - 15 = 22.375 rps
    assert rules.throughput_floor_rps(40.0, 1.6) == pytest.approx(22.375)
    assert SloRules(SLO_US).throughput_floor_rps(40.0, 2.0) == pytest.approx(37.5)  # one request of slack
    assert SloRules(SLO_US).throughput_floor_rps(40.0, None) == pytest.approx(38.0)
    # 100 rps, 50 ms median, 2 s window: 5 requests in flight at the stop -> 2.5 rps more slack
    assert SloRules(SLO_US).throughput_floor_rps(100.0, 2.0, 50_000) == pytest.approx(95.0 - 0.5 - 2.5)
    assert evaluate(40, RateMeasurement(1000, 34.0, 0.0, window_s=1.6), rules).passed
    assert not evaluate(40, RateMeasurement(1000, 20.0, 0.0, window_s=1.6), rules).passed
    assert not evaluate(40, RateMeasurement(1000, 34.0, 0.0, window_s=1.6), SloRules(SLO_US)).passed


def test_rules_reject_nonsense():
    with pytest.raises(ValueError, match=r"slo_p99_us must be > 0"):
        SloRules(0)
    with pytest.raises(ValueError, match=r"min_throughput_ratio must be in \(0, 1\]"):
        SloRules(1000, min_throughput_ratio=0.0)
    with pytest.raises(ValueError, match=r"max_error_ratio must be in \[0, 1\)"):
        SloRules(1000, max_error_ratio=1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lo_rps": 50.0, "hi_rps": 50.0}, r"need 0 < lo_rps < hi_rps, got 50.0, 50.0"),
        ({"lo_rps": 0.0, "hi_rps": 50.0}, r"need 0 < lo_rps < hi_rps"),
        ({"max_probes": 1}, r"max_probes must be >= 2"),
        ({"rel_tolerance": 0.0}, r"rel_tolerance must be > 0"),
    ],
)
def test_search_rejects_nonsense(kwargs, message):
    args = {"lo_rps": 10.0, "hi_rps": 100.0, **kwargs}
    calls: list[float] = []
    with pytest.raises(ValueError, match=message):
        saturation_search(fake_target(50.0, calls), SloRules(SLO_US), args.pop("lo_rps"), args.pop("hi_rps"),
                          **args)  # fmt: skip
    assert calls == []  # refused before measuring anything


def test_measure_until_stable_rejects_nonsense():
    with pytest.raises(ValueError, match=r"need 1 <= n <= max_windows"):
        measure_until_stable(lambda i: w(100), n=4, max_windows=3, max_duration_s=1.0)


# -- the search -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("capacity", "budget"), [(100.0, 8), (180.0, 8), (240.0, 8), (37.0, 16), (400.0, 16)]
)
def test_search_brackets_the_capacity_within_tolerance(capacity, budget):
    """Inside [lo, hi] 8 probes reach 5%; a capacity outside the bounds costs the expansions too."""
    calls: list[float] = []
    res = saturation_search(
        fake_target(capacity, calls), SloRules(SLO_US), 50.0, 250.0, max_probes=budget, rel_tolerance=0.05,
        max_expansions=1,
    )  # fmt: skip
    assert res.status == "bracketed"
    assert res.max_rps is not None and res.max_rps <= capacity  # only a measured pass is reported
    assert res.first_fail_rps is not None and res.first_fail_rps > capacity
    assert res.resolution is not None and res.resolution <= 0.05
    assert capacity / res.max_rps - 1 <= 0.05
    assert len(calls) <= budget and [p.offered_rps for p in res.points] == calls


def test_probe_budget_is_respected_and_coarse_bracket_warned():
    calls: list[float] = []
    res = saturation_search(fake_target(100.0, calls), SloRules(SLO_US), 10.0, 1000.0, max_probes=3,
                            rel_tolerance=0.01)  # fmt: skip
    assert len(calls) == 3
    assert res.max_rps is not None and res.max_rps <= 100.0
    assert any(w.code == "coarse-search" for w in res.warnings)


def test_upper_bound_passing_expands_then_reports_above_range():
    calls: list[float] = []
    res = saturation_search(fake_target(1e9, calls), SloRules(SLO_US), 10.0, 100.0, max_expansions=2)
    assert calls == [100.0, 200.0, 400.0]
    assert res.status == "above-range" and res.max_rps == 400.0 and res.first_fail_rps is None
    assert res.warnings[0].code == "above-range"


def test_expansion_then_bisection_finds_capacity_above_the_first_bound():
    res = saturation_search(fake_target(150.0), SloRules(SLO_US), 50.0, 100.0, max_probes=10,
                            rel_tolerance=0.05)  # fmt: skip
    assert res.points[0].offered_rps == 100.0 and res.points[0].passed
    assert res.status == "bracketed" and 150 / 1.05 <= res.max_rps <= 150.0


def test_lower_bound_failing_is_lowered_then_below_range():
    res = saturation_search(fake_target(1.0), SloRules(SLO_US), 10.0, 20.0, max_probes=10, max_expansions=1)
    assert res.max_rps is None and res.status == "below-range"
    assert res.warnings[0].code == "below-range"
    # lower bound verified, then lowered once (10 -> 5), never below
    assert sorted(p.offered_rps for p in res.points)[:2] == [5.0, 10.0]


def test_capacity_between_lowered_bounds_is_found():
    res = saturation_search(fake_target(7.0), SloRules(SLO_US), 10.0, 20.0, max_probes=10, max_expansions=1)
    assert res.status == "bracketed" and 7.0 / 1.10 <= res.max_rps <= 7.0 < res.first_fail_rps


def test_on_point_sees_every_probe_and_interrupt_keeps_them():
    seen = []

    def measure(rate: float) -> RateMeasurement:
        if len(seen) == 2:
            raise KeyboardInterrupt
        return fake_target(100.0)(rate)

    with pytest.raises(KeyboardInterrupt):
        saturation_search(measure, SloRules(SLO_US), 10.0, 1000.0, on_point=seen.append)
    assert len(seen) == 2 and all(p.offered_rps > 0 for p in seen)


def test_result_round_trips_through_dict():
    res = saturation_search(fake_target(80.0), SloRules(SLO_US), 50.0, 120.0)
    back = type(res).from_dict(res.to_dict())
    assert back.max_rps == res.max_rps and back.points == res.points and back.resolution == res.resolution


# -- stability ----------------------------------------------------------------------------------------------
def w(tput: float, p50: int = 1000, count: int = 100) -> Window:
    return Window(tput, p50, count)


def test_three_windows_within_ten_percent_are_stable():
    assert is_stable([w(100), w(105), w(109)])
    assert not is_stable([w(100), w(105), w(111)])  # 11% spread in throughput
    assert not is_stable([w(100), w(100, 1000), w(100, 1120)])  # 12% spread in P50
    assert not is_stable([w(100), w(100)])  # too few windows
    assert not is_stable([w(100), w(100), w(0, None, 0)])  # an empty window is never stable
    assert is_stable([w(10), w(100), w(101), w(102)])  # only the last three count


def test_measure_until_stable_stops_at_first_stable_window():
    seq = [w(50), w(95), w(100), w(98), w(101), w(100)]
    calls = []
    res = measure_until_stable(lambda i: calls.append(i) or seq[i], max_windows=6, max_duration_s=1e9)
    assert res.stable and calls == [0, 1, 2, 3] and not res.warnings
    assert res.throughput_rps == pytest.approx((95 + 100 + 98) / 3)


def test_measure_until_stable_gives_up_at_max_windows_or_duration_with_a_warning():
    alternating = [w(100 if i % 2 else 150) for i in range(10)]
    res = measure_until_stable(lambda i: alternating[i], max_windows=5, max_duration_s=1e9)
    assert not res.stable and len(res.windows) == 5
    assert res.warnings[0].code == "unstable" and "50%" in res.warnings[0].message

    ticks = iter(range(0, 10**12, 10**9))  # a fake clock: 0 s at start, +1 s per reading
    res = measure_until_stable(lambda i: alternating[i], max_windows=10, max_duration_s=2.5,
                               clock_ns=lambda: next(ticks))  # fmt: skip
    assert not res.stable and len(res.windows) == 3  # 3 s >= 2.5 s after the third window
