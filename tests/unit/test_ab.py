"""A/B judging in-process (no git, no measurement processes): it pairs series exactly as the gate does."""

from __future__ import annotations

import pytest

from deploybench.decisions.ab import ab_gate
from deploybench.decisions.gate.judge import gate
from deploybench.decisions.gate.rules import parse_rules
from deploybench.errors import UsageError
from deploybench.record import RunRecord, Series

ENV = {"cpu_model": "test", "cpu_count": 2, "python": "3.11", "platform": "Linux-x86_64"}
CONFIG = {"model": "iris-rf", "format": "onnx", "scenario": "tabular"}


def rec(series: dict[str, float]) -> list[RunRecord]:
    r = RunRecord("load", dict(CONFIG), dict(ENV), status="complete")
    for name, rps in series.items():
        r.series.append(Series(name, count=int(rps * 10), duration_s=10.0, throughput_rps=rps))
    return [r]


def test_ab_notes_series_measured_on_one_side_only_like_the_gate() -> None:
    rules = parse_rules(["throughput:-10%"])
    predict = "POST /predict"
    rounds = [
        {"base": rec({predict: 100.0, "GET /health": 50.0}), "candidate": rec({predict: 99.0})},
        {"base": rec({predict: 101.0}), "candidate": rec({predict: 100.0, "POST /new": 9.0})},
    ]
    result = ab_gate(rounds, rules)
    (row,) = result.rows
    assert row.series == "POST /predict" and row.verdict == "pass"
    assert "round 1: baseline series 'GET /health' missing in the current run" in result.notes
    assert "round 2: series 'POST /new' has no baseline (new?): not gated" in result.notes
    # the gate says the same about the same records (one pairing function for both)
    single = gate(rounds[0]["base"], rounds[0]["candidate"], rules)
    assert "baseline series 'GET /health' missing in the current run" in single.notes


def test_ab_series_filter_applies_before_pairing() -> None:
    base, candidate = {"a": 10.0, "b": 10.0}, {"a": 10.0, "b": 1.0}
    rounds = [{"base": rec(base), "candidate": rec(candidate)} for _ in range(2)]
    result = ab_gate(rounds, parse_rules(["throughput:-10%"]), series_filter=["a"])
    assert [r.series for r in result.rows] == ["a"] and result.exit_code == 0
    with pytest.raises(UsageError, match="no series measured on both sides"):
        ab_gate(rounds, parse_rules(["throughput:-10%"]), series_filter=["nothing*"])
