"""The saturation search against a server of known capacity (real load runs)."""

from __future__ import annotations

import pytest

from deploybench.decisions.compare.saturation import RateMeasurement, SloRules, saturation_search

pytestmark = pytest.mark.e2e  # starts the known-latency server and Locust


# -- accuracy against a server of known capacity ------------------------------------------------
def test_search_finds_the_known_capacity_of_a_fixed_service_time_server(tmp_path):
    """One request at a time, 50 ms each: capacity 20 rps. Constant (deterministic) arrivals, so below
    capacity latency stays ~ the service time and above it the queue grows by (rate - 20) per second.
    Stated tolerance: the search must land within +-20% of 20 rps (host overhead makes the real capacity a
    little lower than nominal), with short 3 s steps and at most 6 probes."""
    from deploybench.decisions.compare.run import figures_from_record, rate_measurement
    from deploybench.loadtests.runner import run_load
    from tests.support.known_latency import KnownLatencyServer

    capacity_rps = 20.0
    rules = SloRules(slo_p99_us=250_000)  # 5x the service time: above capacity the queue grows past it
    with KnownLatencyServer(service_ms=50, max_concurrency=1) as srv:

        def measure(rate: float) -> RateMeasurement:
            path = tmp_path / f"rate-{rate:.1f}.json"
            record = run_load(srv.url, "tabular", duration_s=3.0, warmup_s=1.0, rate_rps=rate,
                              load_model="constant", results_dir=tmp_path, record_path=path)  # fmt: skip
            return rate_measurement(figures_from_record(record))

        res = saturation_search(measure, rules, 10.0, 40.0, max_probes=6, rel_tolerance=0.08)
    assert res.status == "bracketed", [
        (p.offered_rps, p.throughput_rps, p.p99_us, p.reasons) for p in res.points
    ]
    assert 0.8 * capacity_rps <= res.max_rps <= 1.2 * capacity_rps, res.to_dict()
    assert res.first_fail_rps is not None and res.first_fail_rps > res.max_rps
    assert len(res.points) <= 6
