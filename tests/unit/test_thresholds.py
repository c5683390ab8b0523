"""Absolute thresholds (k6-like ``--threshold "p99<50ms"``): the grammar, its errors, the judgement of a
record (every series on its own), the warnings written into the record, and compare's "nothing met the
SLO"."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploybench.commands.cli import main
from deploybench.compare_doc import (
    ChoiceResult,
    judge_thresholds,
    nothing_held_the_thresholds,
    nothing_met_the_slo,
    rank,
    verdict,
)
from deploybench.decisions.compare.config import Choice, load_config
from deploybench.errors import UsageError
from deploybench.record import RunRecord, Series
from deploybench.thresholds import (
    EXIT_THRESHOLD,
    WARNING_CODE,
    ThresholdError,
    apply,
    evaluate,
    parse_threshold,
    parse_thresholds,
)


@pytest.mark.parametrize(
    ("text", "metric", "op", "limit"),
    [
        ("p99<50ms", "p99", "<", 50_000.0),
        ("p95<=800us", "p95", "<=", 800.0),
        ("p99.9 < 1 s", "p99.9", "<", 1_000_000.0),
        ("P50<2.5MS", "p50", "<", 2_500.0),
        ("max<120µs", "max", "<", 120.0),
        ("error_ratio<1%", "error_ratio", "<", 0.01),
        ("error_ratio<=0.002", "error_ratio", "<=", 0.002),
        ("throughput>200", "throughput", ">", 200.0),
        ("throughput>=1.5e3rps", "throughput", ">=", 1500.0),
    ],
)
def test_the_grammar(text: str, metric: str, op: str, limit: float) -> None:
    t = parse_threshold(text)
    assert (t.metric, t.op, t.limit, t.text) == (metric, op, pytest.approx(limit), text.strip())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p99<50", "missing unit; latency takes us, ms or s"),
        ("p42<5ms", "unknown metric 'p42'"),
        ("latency<5ms", "unknown metric 'latency'"),
        ("p99<50parsecs", "unknown unit 'parsecs'"),
        ("error_ratio<150%", "between 0 and 100 %"),
        ("error_ratio<1ms", "unknown unit 'ms'"),
        ("throughput>200ms", "unknown unit 'ms'"),
        ("p99 50ms", "write METRIC OP VALUE"),
        ("p99=<50ms", "write METRIC OP VALUE"),
        ("", "write METRIC OP VALUE"),
    ],
)
def test_malformed_thresholds_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ThresholdError, match=message.replace("(", r"\(")) as info:
        parse_threshold(text)
    assert "\n" not in str(info.value)


def record(*series: Series) -> RunRecord:
    return RunRecord(kind="load", config={"scenario": "tabular"}, env={}, series=list(series))


def fast() -> Series:
    return Series("POST /predict", count=990, errors={"http-500": 10}, throughput_rps=495.0,
                  latency_us={"p50": 1_000, "p99": 9_000, "max": 20_000})  # fmt: skip


def slow() -> Series:
    return Series("GET /health", count=100, throughput_rps=50.0, latency_us={"p50": 30_000, "p99": 80_000})


def test_every_series_is_judged_on_its_own() -> None:
    rec = record(fast(), slow())
    limits = [
        parse_threshold("p99<50ms"),
        parse_threshold("error_ratio<2%"),
        parse_threshold("throughput>100"),
    ]
    got = {(o.threshold.text, o.series): (o.value, o.passed) for o in evaluate(rec, limits)}
    assert got == {
        ("p99<50ms", "POST /predict"): (9_000.0, True),
        ("p99<50ms", "GET /health"): (80_000.0, False),
        ("error_ratio<2%", "POST /predict"): (pytest.approx(0.01), True),
        ("error_ratio<2%", "GET /health"): (0.0, True),
        ("throughput>100", "POST /predict"): (495.0, True),
        ("throughput>100", "GET /health"): (50.0, False),
    }


def test_apply_writes_each_crossing_into_the_record() -> None:
    rec = record(fast(), slow())
    outcomes, held = apply(rec, [parse_threshold("p99<50ms"), parse_threshold("error_ratio<0.5%")])
    assert not held and len(outcomes) == 4
    crossed = [(w.series, w.message) for w in rec.warnings if w.code == WARNING_CODE]
    assert crossed == [
        ("GET /health", "p99<50ms crossed: 80.000 ms"),
        ("POST /predict", "error_ratio<0.5% crossed: 1 %"),
    ]
    health = next(o for o in outcomes if o.series == "GET /health")
    assert health.describe() == "p99<50ms: GET /health 80.000 ms (crossed)"


def test_generous_thresholds_hold_and_write_nothing() -> None:
    rec = record(fast())
    outcomes, held = apply(rec, [parse_threshold("p99<1s"), parse_threshold("throughput>=1")])
    assert held and all(o.passed for o in outcomes) and rec.warnings == []


def test_a_series_without_latency_crosses_a_latency_threshold_and_no_series_holds_nothing() -> None:
    rec = record(Series("POST /predict", count=0, errors={"connection": 5}, latency_us={}))
    outcomes, held = apply(rec, [parse_threshold("p99<1s")])
    assert not held and outcomes[0].value is None
    assert rec.warnings[0].message == "p99<1s crossed: none"
    nothing = record()
    _, held = apply(nothing, [parse_threshold("p99<1s")])
    assert not held and nothing.warnings[0].code == WARNING_CODE
    _, held = apply(record(), [])
    assert held  # no thresholds: nothing to hold


def test_a_malformed_threshold_is_exit_2_before_any_load(capsys: pytest.CaptureFixture[str]) -> None:
    # the URL is a closed port: the threshold is checked first, so the message is about the threshold
    rc = main(["load", "--url", "http://127.0.0.1:9", "--threshold", "p99<1s", "--threshold", "p99<50"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == (
        "deploybench load: error: threshold 'p99<50': missing unit; latency takes us, ms or s (e.g. p99<50ms)"
    )
    assert EXIT_THRESHOLD not in (0, 1, 2)


def choice_result(status: str, max_rps: float | None) -> ChoiceResult:
    r = ChoiceResult(Choice("fastapi", "uvicorn", "iris-rf", "onnx"))
    r.status = status
    r.saturation = {"max_rps": max_rps}
    return r


def test_compare_answers_nothing_when_every_choice_failed_or_none_met_the_slo() -> None:
    assert nothing_met_the_slo([choice_result("failed", None), choice_result("failed", None)]) == (
        "no choice completed"
    )
    assert nothing_met_the_slo([choice_result("complete", None), choice_result("failed", None)]) == (
        "no choice met the SLO at any rate tried"
    )
    assert nothing_met_the_slo([choice_result("complete", None), choice_result("complete", 120.0)]) is None


# -- per choice in compare ---------------------------------------------------------------------------------
def judged(fw: str, max_rps: float | None, p99_us: int, errors: float = 0.0) -> ChoiceResult:
    r = ChoiceResult(Choice(fw, "uvicorn" if fw == "fastapi" else "gunicorn-sync", "iris-rf", "onnx"))
    r.status = "complete"
    r.saturation = {"max_rps": max_rps, "first_fail_rps": max_rps * 1.05 if max_rps else None}
    r.common = {"latency_us": {"p50": p99_us // 2, "p99": p99_us}, "error_ratio": errors}
    judge_thresholds(r, parse_thresholds(["p99<20ms", "throughput>500", "error_ratio<1%"]))
    return r


def test_compare_judges_each_choice_and_recommends_only_those_within_the_thresholds() -> None:
    fast_but_slow_tail = judged("fastapi", 900.0, p99_us=25_000)  # the best rate, but P99 crosses 20 ms
    steady = judged("flask", 600.0, p99_us=8_000)
    slow = judged("fastapi", 400.0, p99_us=8_000, errors=0.02)  # crosses throughput and error_ratio
    assert [w.message for w in fast_but_slow_tail.crossed_thresholds] == [
        "crossed p99<20ms: 25.000 ms at the common rate"
    ]
    assert not steady.crossed_thresholds
    assert {w.message.split(":")[0] for w in slow.crossed_thresholds} == {
        "crossed throughput>500",
        "crossed error_ratio<1%",
    }
    sentence = verdict(rank([fast_but_slow_tail, steady, slow]), 50_000)
    assert sentence.startswith("Best: **flask+gunicorn-sync iris-rf/onnx w1** sustains 600 rps"), sentence
    left_out = "Crossed a threshold, so not recommended: **fastapi+uvicorn iris-rf/onnx w1** (p99<20ms"
    assert left_out in sentence
    assert nothing_held_the_thresholds([fast_but_slow_tail, steady, slow]) is None
    assert nothing_held_the_thresholds([fast_but_slow_tail, slow]) == (
        "every choice that met the SLO crossed a threshold"
    )
    assert verdict(rank([fast_but_slow_tail, slow]), 50_000).startswith("No choice held every threshold.")
    # a choice that met the SLO at no rate tried crosses a throughput threshold (no figure)
    none = judged("flask", None, p99_us=8_000)
    assert [w.message for w in none.crossed_thresholds] == [
        "crossed throughput>500: none as its max rate under the SLO"
    ]


def test_compare_thresholds_in_the_config_and_their_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[slo]\np99_ms = 50\nthresholds = ["p99<20ms", "throughput>500"]\n')
    assert load_config(str(good)).slo.thresholds == ["p99<20ms", "throughput>500"]
    none = tmp_path / "none.toml"
    none.write_text("[slo]\nthresholds = []\n")
    assert load_config(str(none)).slo.thresholds == []
    bad = tmp_path / "bad.toml"
    bad.write_text('[slo]\nthresholds = ["p99<20"]\n')
    with pytest.raises(UsageError, match=r"\[slo\] thresholds: threshold 'p99<20': missing unit"):
        load_config(str(bad))
