"""Compare with uncertainty, without servers: the exact-scheduled throughput rule, repeated searches (with
fakes), the per-choice interval, the ratio interval and ties, the verdict sentence, and the handler axis of
the matrix."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import pytest

from deploybench.compare_doc import (
    Choice,
    ChoiceResult,
    CompareRun,
    RateInterval,
    places,
    rank,
    ratio_interval,
    verdict,
)
from deploybench.decisions.compare.config import (
    CompareConfig,
    ModelInfo,
    expand,
    load_config,
    open_loop_users,
    step_duration_s,
)
from deploybench.decisions.compare.power import main as power_main
from deploybench.decisions.compare.power import pooled_log_sd, separation_rate
from deploybench.decisions.compare.run import figures_from_record, rate_measurement
from deploybench.decisions.compare.saturation import (
    RateMeasurement,
    SaturationResult,
    SloRules,
    dither_factors,
    dithered_search,
    evaluate,
    final_cell_log,
    refine_search,
    repeat_bracket,
)
from deploybench.errors import UsageError
from deploybench.record import RecordWarning, RunRecord, Series
from deploybench.reports.compare_render import ranked_rows

SLO_US = 50_000
CATALOG = {
    "iris-rf": ModelInfo("tabular", ("pickle", "onnx")),
    "iris-mlp": ModelInfo("tabular", ("pickle", "onnx", "torchscript", "pt2")),
}


# -- the throughput rule: successes vs the exact number of scheduled slots ---------------------------------
def test_old_poisson_allowance_accepted_65_percent_at_36_rps_and_the_exact_rule_does_not():
    """The issue's case: 36 req/s over a 3 s window. The old floor (95% of offered, less one request, the
    in-flight requests and 3 sd of the Poisson count) let 65% of the offered rate pass; with the exact
    scheduled count, 65% of the slots is a failure and 95% a pass."""
    rules = SloRules(SLO_US, min_throughput_ratio=0.95, poisson=True)
    floor = rules.throughput_floor_rps(36.0, 3.0, 20_000)
    assert floor / 36.0 == pytest.approx(0.645, abs=0.01)
    old = RateMeasurement(20_000, 0.65 * 36.0, 0.0, window_s=3.0, p50_us=20_000)  # no exact count
    point = evaluate(36.0, old, rules)
    assert point.passed and point.extra["throughput_check"] == "approximate"
    exact = RateMeasurement(20_000, 0.65 * 36.0, 0.0, window_s=3.0, p50_us=20_000, count=70, scheduled=108)
    point = evaluate(36.0, exact, rules)
    assert not point.passed and "achieved 70 of 108 scheduled requests" in point.reasons[0]
    assert "throughput_check" not in point.extra and point.extra["scheduled"] == 108
    ok = RateMeasurement(20_000, 34.3, 0.0, window_s=3.0, count=103, scheduled=108)  # 95.4%
    assert evaluate(36.0, ok, rules).passed
    # a realised Poisson count above the rate's mean is judged against what was really scheduled
    lucky = RateMeasurement(20_000, 40.0, 0.0, window_s=3.0, count=118, scheduled=125)  # 94.4%
    assert not evaluate(36.0, lucky, rules).passed


def test_dropped_and_not_sent_slots_count_as_errors_and_scheduled_is_pooled():
    def series(name: str, count: int, errors: dict[str, int], scheduled: int | None) -> Series:
        return Series(name, count=count, errors=errors, duration_s=2.0, throughput_rps=count / 2.0,
                      offered_rps=50.0, latency_us={"p50": 1000, "p99": 3000},
                      scheduled=scheduled)  # fmt: skip

    rec = RunRecord("load", {}, {})
    rec.series = [
        series("POST /a", 90, {"not-sent": 4, "dropped": 2}, 100),
        series("POST /b", 98, {}, 100),
    ]
    fig = figures_from_record(rec)
    assert fig.scheduled == 200 and fig.error_count == 6 and fig.errors == {"not-sent": 4, "dropped": 2}
    assert fig.error_ratio == pytest.approx(6 / 194)
    m = rate_measurement(fig)
    assert m.count == 188 and m.scheduled == 200
    point = evaluate(100.0, m, SloRules(SLO_US))
    assert not point.passed and any("errors" in r for r in point.reasons)
    rec.series[1].scheduled = None  # one series without the exact count: unknown, not a partial sum
    assert figures_from_record(rec).scheduled is None


# -- repeated searches -------------------------------------------------------------------------------------
def noisy_target(capacity_rps: float, noise: float, seed: int = 1):
    """Passes a rate when it is below capacity x (1 + uniform noise): a boundary that moves run to run."""
    rng = random.Random(seed)

    def measure(rate: float) -> RateMeasurement:
        cap = capacity_rps * (1.0 + rng.uniform(-noise, noise))
        if rate <= cap:
            return RateMeasurement(10_000, rate, 0.0, count=int(rate), scheduled=int(rate))
        return RateMeasurement(900_000, cap, 0.0, count=int(cap), scheduled=int(rate))

    return measure


def test_refine_search_bisects_inside_the_bracket_without_probing_its_ends():
    calls: list[float] = []

    def measure(rate: float) -> RateMeasurement:
        calls.append(rate)
        return RateMeasurement(10_000 if rate <= 1000 else 900_000, rate, 0.0)

    est = refine_search(measure, SloRules(SLO_US), 800.0, 1200.0, probes=3)
    assert len(calls) == 3 and all(800 < c < 1200 for c in calls)
    assert est.pass_rps <= 1000 < est.fail_rps and est.fail_rps / est.pass_rps == pytest.approx(
        1.5 ** (1 / 8)
    )
    assert est.estimate_rps == pytest.approx(math.sqrt(est.pass_rps * est.fail_rps)) and not est.censored


def test_refine_search_steps_outwards_when_every_probe_went_one_way_and_marks_censoring():
    rules = SloRules(SLO_US)
    always = refine_search(lambda r: RateMeasurement(10_000, r, 0.0), rules, 100.0, 200.0, probes=2)
    assert always.censored == "above" and len(always.points) == 4  # 2 probes + 2 steps up, all passed
    assert always.estimate_rps == pytest.approx(200.0 * math.sqrt(2)) and always.fail_rps is None
    never = refine_search(lambda r: RateMeasurement(None, 0.0, 1.0), rules, 100.0, 200.0, probes=2)
    assert never.censored == "below" and len(never.points) == 4
    assert never.estimate_rps == pytest.approx(100.0 / math.sqrt(2)) and never.pass_rps is None
    # the boundary moved below the bracket (80 rps): found by stepping down, a proper estimate
    calls: list[float] = []

    def moved(rate: float) -> RateMeasurement:
        calls.append(rate)
        return RateMeasurement(10_000 if rate <= 80 else 900_000, rate, 0.0)

    est = refine_search(moved, rules, 100.0, 200.0, probes=2)
    assert not est.censored and est.pass_rps == pytest.approx(100 / math.sqrt(2)) and est.fail_rps == 100.0
    assert calls[-2:] == [100.0, pytest.approx(100 / math.sqrt(2))]
    # every probe passed but the assumed upper end fails: between the last pass and it
    est = refine_search(
        lambda r: RateMeasurement(10_000 if r < 199 else 900_000, r, 0.0), rules, 100.0, 200.0, probes=2
    )
    assert not est.censored and est.fail_rps == 200.0 and len(est.points) == 3
    fail = lambda r: RateMeasurement(None, 0.0, 1.0)  # noqa: E731
    none = refine_search(fail, rules, 100.0, 200.0, probes=1, max_extra=0)
    assert none.censored == "below" and len(none.points) == 1


def test_repeat_bracket_widens_the_coarse_bracket():
    assert repeat_bracket(SaturationResult(100.0, 120.0, "bracketed"), 0.1) == pytest.approx((100 / 1.1, 132))
    assert repeat_bracket(SaturationResult(100.0, None, "above-range"), 0.1) == pytest.approx(
        (100 / 1.1, 200)
    )
    assert repeat_bracket(SaturationResult(None, 50.0, "below-range"), 0.1) is None


def repeated_search(measure, rules, lo, hi, *, repeats, probes, seed):
    """What compare runs for one choice, its repeats in a row: a seeded dither factor each."""
    return [
        dithered_search(measure, rules, lo, hi, u, probes=probes)
        for u in dither_factors(seed, lo, hi, probes, repeats)
    ]


def test_repeated_searches_are_dithered_seeded_and_land_near_the_capacity():
    rules = SloRules(SLO_US)
    reps = repeated_search(noisy_target(1000.0, 0.0), rules, 800.0, 1300.0, repeats=5, probes=3, seed=7)
    estimates = [r.estimate_rps for r in reps]
    # a noiseless boundary: every estimate within one final cell of it, and the dither spreads them
    cell = math.exp(final_cell_log(800.0, 1300.0, 3))
    assert all(1000 / cell <= e <= 1000 * cell for e in estimates)
    assert len({round(e, 6) for e in estimates}) > 1
    again = repeated_search(noisy_target(1000.0, 0.0), rules, 800.0, 1300.0, repeats=5, probes=3, seed=7)
    assert [r.estimate_rps for r in again] == estimates  # seeded: the same probes
    # one factor per repeat, each shifting the bracket by at most half a final cell
    factors = dither_factors(7, 800.0, 1300.0, 3, 5)
    assert [r.dither for r in reps] == factors
    assert all(abs(math.log(u)) <= math.log(cell) / 2 for u in factors)


def test_interval_from_repeats_covers_a_noisy_boundary_and_is_never_narrower_than_the_resolution():
    rules = SloRules(SLO_US)
    covered = 0
    for seed in range(40):
        reps = repeated_search(
            noisy_target(1000.0, 0.08, seed), rules, 800.0, 1300.0, repeats=3, probes=3, seed=seed
        )
        iv = RateInterval(tuple(r.estimate_rps for r in reps), final_cell_log(800, 1300, 3) / 2)
        covered += iv.lo_rps <= 1000.0 <= iv.hi_rps
        assert math.log(iv.hi_rps / iv.lo_rps) >= 2 * iv.floor_log - 1e-12
        assert iv.lo_rps <= iv.center_rps <= iv.hi_rps
    assert covered >= 34  # ~95% nominal; 40 trials


# -- intervals, ratio intervals, ties, the verdict ---------------------------------------------------------
def test_rate_interval_is_a_t_interval_on_the_log_scale_with_a_floor():
    iv = RateInterval((900.0, 1000.0, 1100.0), floor_log=0.01)
    logs = [math.log(x) for x in (900.0, 1000.0, 1100.0)]
    mean = sum(logs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / 2)
    half = 4.302653 * sd / math.sqrt(3)  # t(0.975, 2)
    assert iv.center_rps == pytest.approx(math.exp(mean))
    assert iv.lo_rps == pytest.approx(math.exp(mean - half), rel=1e-5)
    assert iv.hi_rps == pytest.approx(math.exp(mean + half), rel=1e-5)
    same = RateInterval((1000.0, 1000.0, 1000.0), floor_log=0.02)  # agreeing repeats: the floor remains
    assert same.lo_rps == pytest.approx(1000 * math.exp(-0.02)) and same.hi_rps > 1000
    one = RateInterval((500.0,), floor_log=0.05)
    assert one.half_log == 0.05 and one.median_rps == 500.0
    assert RateInterval.from_dict(iv.to_dict()) == iv
    with pytest.raises(ValueError):
        RateInterval((), 0.0)
    with pytest.raises(ValueError):
        RateInterval((0.0, 1.0), 0.0)


def test_ratio_interval_separates_clear_differences_and_ties_overlapping_ones():
    a = RateInterval((1500.0, 1520.0, 1490.0), 0.01)
    b = RateInterval((1000.0, 1010.0, 990.0), 0.01)
    rr = ratio_interval(a, b)
    assert rr.separated and rr.lo > 1.4 and rr.hi < 1.6 and rr.ratio == pytest.approx(1.5, rel=0.01)
    c = RateInterval((1050.0, 950.0, 1020.0), 0.01)
    assert not ratio_interval(b, c).separated
    # floors alone (one estimate each; in quadrature +-2.8%) still decide: 10% apart is separated
    assert ratio_interval(RateInterval((1100.0,), 0.02), RateInterval((1000.0,), 0.02)).separated
    assert not ratio_interval(RateInterval((1020.0,), 0.02), RateInterval((1000.0,), 0.02)).separated


def choice_result(
    fw: str, fmt: str, estimates: tuple[float, ...] | None, floor: float = 0.01
) -> ChoiceResult:
    r = ChoiceResult(Choice(fw, "uvicorn" if fw == "fastapi" else "gunicorn-sync", "iris-mlp", fmt))
    r.status = "complete"
    if estimates is None:
        r.saturation = {"max_rps": None, "first_fail_rps": 10.0}
    else:
        iv = RateInterval(estimates, floor)
        r.saturation = {"max_rps": min(estimates), "first_fail_rps": max(estimates) * 1.1,
                        "repeats": iv.to_dict()}  # fmt: skip
    r.common = {"latency_us": {"p50": 1000, "p95": 2000, "p99": 3000}}
    return r


def test_places_mark_ties_with_the_group_leader():
    rs = rank([
        choice_result("flask", "onnx", (1000.0, 1010.0, 990.0)),
        choice_result("fastapi", "onnx", (1500.0, 1520.0, 1490.0)),
        choice_result("fastapi", "torchscript", (1480.0, 1530.0, 1500.0)),
        choice_result("flask", "pickle", (600.0, 605.0, 598.0)),
    ])  # fmt: skip
    assert [r.choice.format for r in rs] == ["onnx", "torchscript", "onnx", "pickle"]
    assert places(rs) == ["1=", "1=", "3", "4"]
    failed = choice_result("flask", "torchscript", None)
    failed.status = "failed"
    assert places(rank([*rs, failed]))[-1] == "-"


def test_verdict_picks_a_clear_winner_with_margin_and_confidence():
    rs = rank([
        choice_result("fastapi", "onnx", (1500.0, 1520.0, 1490.0)),
        choice_result("flask", "onnx", (1000.0, 1010.0, 990.0)),
    ])  # fmt: skip
    v = verdict(rs, SLO_US)
    assert v.startswith(
        "Pick **fastapi+uvicorn iris-mlp/onnx w1**: 1,503 rps under the 50 ms P99 SLO (95% CI"
    )
    assert "50% more than **flask+gunicorn-sync iris-mlp/onnx w1** (1,000 rps; 95% CI +" in v
    assert v.endswith("measured 3 times each.") and v.count(". ") == 0


def test_verdict_reports_a_tie_and_the_margin_over_the_next_choice():
    rs = rank([
        choice_result("fastapi", "onnx", (1500.0, 1520.0, 1490.0)),
        choice_result("fastapi", "torchscript", (1480.0, 1530.0, 1500.0)),
        choice_result("flask", "onnx", (1000.0, 1010.0, 990.0)),
    ])  # fmt: skip
    v = verdict(rs, SLO_US)
    assert v.startswith(
        "Tie: **fastapi+uvicorn iris-mlp/onnx w1** and **fastapi+uvicorn iris-mlp/torchscript"
    )
    assert "pick any of them" in v and "more than **flask+gunicorn-sync iris-mlp/onnx w1**" in v
    only_tie = verdict(rs[:2], SLO_US)
    assert only_tie.startswith("Tie:") and "more than" not in only_tie
    assert "nothing to rank" in verdict([], SLO_US)
    assert "no best choice" in verdict(rank([choice_result("flask", "onnx", None)]), SLO_US)


def test_a_generator_bound_choice_is_a_lower_bound_never_tied_nor_in_the_verdict():
    """Issue 20: a figure taken while the load generator had no headroom is the generator's ceiling. It
    ties with nothing, the verdict leaves it out and says so, and the table shows it as '>= X'."""
    bound = choice_result("fastapi", "onnx", (1500.0, 1520.0, 1490.0))
    bound.add_warning(RecordWarning("generator-bound", "load generator process 1 used 97% of a core"))
    twin = choice_result("fastapi", "torchscript", (1480.0, 1530.0, 1500.0))
    flask = choice_result("flask", "onnx", (1000.0, 1010.0, 990.0))
    rs = rank([bound, twin, flask])
    assert bound.generator_bound and not twin.generator_bound
    assert places(rs) == ["1", "2", "3"]  # without the warning: 1=, 1=, 3
    v = verdict(rs, SLO_US)
    assert v.startswith("Pick **fastapi+uvicorn iris-mlp/torchscript w1**")
    assert "no headroom for **fastapi+uvicorn iris-mlp/onnx w1** (at least 1,503 rps)" in v
    assert "No choice could be ranked" in verdict(rank([bound]), SLO_US)
    run = CompareRun(config={"slo": {"p99_ms": 50}}, scenario="tabular", env={}, results=rs)
    rows = ranked_rows(run)
    assert rows[0][2] == "≥ 1,503 (generator-bound)" and "generator" not in rows[1][2]


def test_version_1_documents_still_load_and_rank_by_their_single_search(tmp_path: Path):
    doc = {
        "schema_version": 1, "kind": "compare", "config": {"slo": {"p99_ms": 50}}, "scenario": "tabular",
        "env": {}, "results": [
            {"choice": {"framework": "fastapi", "server": "uvicorn", "model": "iris-rf", "format": "onnx",
                        "workers": 1, "threads": 1}, "status": "complete",
             "saturation": {"max_rps": 1200.0, "first_fail_rps": 1300.0, "resolution": 0.083}},
            {"choice": {"framework": "flask", "server": "gunicorn-sync", "model": "iris-rf", "format": "onnx",
                        "workers": 1, "threads": 1}, "status": "complete",
             "saturation": {"max_rps": 1150.0, "first_fail_rps": 1250.0, "resolution": 0.087}},
        ],
    }  # fmt: skip
    run = CompareRun.from_dict(doc)
    assert run.results[0].choice.handler == "auto" and run.results[0].interval is None
    assert run.verdict is None
    rs = rank(run.results)
    assert places(rs) == ["1=", "1="]  # 4% apart, inside the search resolution
    assert "treat it as a tie" in verdict(rs, run.slo_p99_us)


# -- the handler axis, step lengths and senders -------------------------------------------------------------
def test_handler_axis_expands_for_fastapi_and_skips_flask_with_a_reason(tmp_path: Path):
    toml = tmp_path / "h.toml"
    toml.write_text(
        '[matrix]\nframework = ["fastapi", "flask"]\nserver = ["uvicorn", "gunicorn-sync"]\n'
        'model = ["iris-rf"]\nformat = ["onnx"]\nhandler = ["auto", "inline", "threadpool"]\n'
    )
    choices, skipped, _ = expand(load_config(str(toml)), CATALOG)
    assert [c.id for c in choices] == [
        "fastapi-uvicorn-iris-rf-onnx-w1",
        "fastapi-uvicorn-iris-rf-onnx-w1-inline",
        "fastapi-uvicorn-iris-rf-onnx-w1-threadpool",
        "flask-gunicorn-sync-iris-rf-onnx-w1",
    ]
    assert choices[1].label == "fastapi+uvicorn iris-rf/onnx w1 inline"
    reasons = {s.combo: s.reason for s in skipped}
    assert "FastAPI" in reasons["flask handler=inline"] and "flask handler=threadpool" in reasons
    only_flask = CompareConfig.from_dict({"matrix": {"framework": ["flask"], "server": ["gunicorn-sync"],
                                                     "handler": ["inline"]}})  # fmt: skip
    with pytest.raises(UsageError, match="no valid choice"):
        expand(only_flask, CATALOG)
    with pytest.raises(UsageError, match="handler 'async' is not one of"):
        CompareConfig.from_dict({"matrix": {"handler": ["async"]}})
    # old documents without a handler load as "auto"; the id and label do not change for auto
    old = Choice.from_dict({"framework": "flask", "server": "gunicorn-sync", "model": "iris-rf",
                            "format": "onnx"})  # fmt: skip
    assert old.handler == "auto" and old.id == "flask-gunicorn-sync-iris-rf-onnx-w1"


def test_handler_configs_ship_and_expand():
    for name in ("handlers", "handlers-resnet18"):
        choices, skipped, _ = expand(
            load_config(name), {**CATALOG, "resnet18": ModelInfo("image", ("onnx",))}
        )
        assert {c.handler for c in choices} == {"auto", "inline", "threadpool"}
        assert any(c.server == "gunicorn-gthread" and c.threads == 4 for c in choices)
        assert any(s.combo == "flask handler=inline" for s in skipped)


@pytest.mark.parametrize(
    ("pin", "ok"), [(True, True), (False, True), ("auto", True), ("yes", False), (1, False)]
)
def test_pin_is_true_false_or_auto(pin, ok):
    if ok:
        assert CompareConfig.from_dict({"measure": {"pin": pin}}).measure.pin == pin
    else:
        with pytest.raises(UsageError, match="`pin` must be true, false or"):
            CompareConfig.from_dict({"measure": {"pin": pin}})


def test_low_rates_get_longer_steps_and_high_rates_enough_senders():
    cfg = load_config("quick")
    assert step_duration_s(cfg, 2000.0) == cfg.search.step_s
    assert step_duration_s(cfg, 100.0) == pytest.approx(cfg.search.min_step_requests / 100.0)
    assert step_duration_s(cfg, 1.0) == cfg.search.max_step_s
    assert step_duration_s(cfg, 200.0, 5.0) == 5.0
    assert open_loop_users(cfg, 50.0) == 16
    assert open_loop_users(cfg, 1500.0) == math.ceil(2 * 1500 * 0.050)
    assert open_loop_users(cfg, 1e6) == 1000
    cfg.measure.open_loop_users = 24
    assert open_loop_users(cfg, 1500.0) == 24


def test_a_wide_coarse_bracket_gets_more_bisections_per_repeat():
    from deploybench.decisions.compare.run import repeat_probes

    assert repeat_probes((100 / 1.1, 132.0), 2, 0.20) == 2  # the usual widened 20% bracket
    assert repeat_probes((293.0, 710.0), 2, 0.20) == 4  # a 100% coarse bracket: cells of ~10% again
    assert repeat_probes((10.0, 1000.0), 2, 0.20) == 4  # at most 2 more
    assert repeat_probes((100.0, 104.0), 3, 0.20) == 3  # never fewer than asked


# ---------------------------------------------------------------------------------------------------------
# The power of the tie rule (deploybench.decisions.compare.power)
# ---------------------------------------------------------------------------------------------------------


def test_tie_rule_false_separations_stay_under_5_percent_and_power_grows_with_repeats():
    """At gap 0 the rule is the 95 % interval's: about 5 % of equal pairs told apart, no more (the floor
    makes it conservative at few repeats); a +12 % gap at the spread compare measured (log sd 0.09) is told
    apart far more often with 15 repeats than with 3; a gap far beyond the spread always."""
    nominal = 0.05 + 3 * math.sqrt(0.05 * 0.95 / 4000)  # 5 % plus 3 standard errors of a 4,000-trial share
    assert separation_rate(0.0, 0.09, 3, 0.038, trials=4000, seed=1) <= nominal
    assert separation_rate(0.0, 0.09, 8, 0.038, trials=4000, seed=1) <= nominal
    few, many = (separation_rate(0.12, 0.09, n, 0.038, trials=2000, seed=2) for n in (3, 15))
    assert few < 0.4 and many > 0.8
    assert separation_rate(1.0, 0.09, 3, 0.038, trials=200) == 1.0
    with pytest.raises(ValueError):
        separation_rate(0.1, 0.09, 1, 0.038)


def test_pooled_spread_is_the_within_choice_sd_of_the_log_estimates():
    def result(estimates, status="complete"):
        r = ChoiceResult(Choice("fastapi", "uvicorn", "iris-rf", "onnx"), status=status)
        r.saturation = {"repeats": RateInterval(tuple(estimates), 0.03).to_dict()}
        return r

    e = math.e
    # logs (0, 2) and (1, 1, 4): squares about the means 2 + 6 = 8 over 1 + 2 df
    results = [result([1.0, e**2]), result([e, e, e**4]), result([5.0]), result([1.0, 9.0], "failed")]
    sd, df = pooled_log_sd(results)
    assert df == 3 and sd == pytest.approx(math.sqrt(8 / 3))
    with pytest.raises(UsageError):
        pooled_log_sd([result([5.0])])


def test_power_cli_from_compare_folders_and_bad_input_exits_2(tmp_path, capsys):
    run = CompareRun(config={"slo": {"p99_ms": 50}}, scenario="tabular", env={}, results=[])
    for estimates in ([1000.0, 1100.0, 950.0], [500.0, 520.0, 480.0]):
        r = ChoiceResult(Choice("flask", "gunicorn-sync", "iris-rf", "onnx"), status="complete")
        r.saturation = {"repeats": RateInterval(tuple(estimates), 0.038).to_dict()}
        run.results.append(r)
    run.save(tmp_path / "compare.json")
    assert power_main(["--from", str(tmp_path), "--gap", "0,0.5", "--repeats", "3", "--trials", "200"]) == 0
    out = capsys.readouterr().out
    assert "pooled over 1 run(s), 4 df" in out and "floor 0.0380" in out
    assert re.search(r"^\| \+50% \| \d+% \|$", out, re.M)
    assert power_main(["--from", str(tmp_path), "--only", "flask", "--repeats", "3", "--trials", "10"]) == 0
    assert "4 df" in capsys.readouterr().out
    assert power_main(["--from", str(tmp_path), "--only", "fastapi", "--trials", "10"]) == 2  # nothing left
    for bad in (
        [],
        ["--log-sd", "0.1", "--from", str(tmp_path)],
        ["--log-sd", "0.1", "--gap", "x"],
        ["--log-sd", "0.1", "--repeats", "1"],
        ["--from", str(tmp_path / "nowhere")],
    ):
        assert power_main(bad) == 2, bad
        assert "error:" in capsys.readouterr().err
