"""Unit tests of the load harness's pure parts: pacer (fake clock), measurement, histogram merge, parsing."""

from __future__ import annotations

import numpy as np
import pytest

from deploybench.errors import UsageError
from deploybench.measure import Measurement, error_kind, parse_server_timing
from deploybench.pacer import NS_PER_S, ArrivalSchedule
from deploybench.stats import (
    decode_histogram,
    merge_histograms,
    new_histogram,
    record_us,
    summarize_histogram,
)


# -- pacer ------------------------------------------------------------------------------------------------
def test_schedule_constant_on_time_late_and_dropped() -> None:
    s = ArrivalSchedule(100.0, "constant", max_lag_s=0.5)
    t0 = 1_000 * NS_PER_S
    slots = [s.take(t0) for _ in range(3)]  # three free senders at t0
    assert [x.intended_ns - t0 for x in slots] == [0, 10_000_000, 20_000_000]
    assert s.late == 0
    for x in slots:
        s.sent(x, x.intended_ns)  # each sent on time
    # a sender comes back 200 ms later: slot 3 (due 30 ms) is 170 ms late -> sent late, counted
    slot = s.take(t0 + 200_000_000)
    assert slot.index == 3 and slot.lag_ns == 170_000_000
    assert s.sent(slot, t0 + 200_000_000) == 170_000_000 and s.late == 1
    assert s.pop_dropped() == []
    # after a 2 s gap every slot more than 0.5 s in the past is dropped, not queued
    slot = s.take(t0 + 2_200_000_000)
    assert slot.intended_ns >= t0 + 1_700_000_000
    assert s.dropped == slot.index - 4
    dropped = s.pop_dropped()  # their intended times, for the caller to count as errors
    assert dropped == [t0 + i * 10_000_000 for i in range(4, slot.index)] and s.pop_dropped() == []
    assert s.counters()["scheduled"] == s.taken + s.dropped


def test_schedule_poisson_is_seeded_with_the_right_mean_rate() -> None:
    def offsets(seed: int) -> list[int]:
        s = ArrivalSchedule(200.0, "poisson", seed=seed, max_lag_s=1e6)
        return [s.take(0).intended_ns for _ in range(4000)]

    a, b, c = offsets(1), offsets(1), offsets(2)
    assert a == b and a != c
    gaps = np.diff([0, *a]) / 1e9
    assert gaps.min() > 0
    assert gaps.mean() == pytest.approx(1 / 200.0, rel=0.05)
    assert np.std(gaps) == pytest.approx(1 / 200.0, rel=0.1)  # exponential: sd == mean


def test_schedule_workers_interleave_to_the_total_rate() -> None:
    w0 = ArrivalSchedule(50.0, "constant", worker_index=0, worker_count=2)
    w1 = ArrivalSchedule(50.0, "constant", worker_index=1, worker_count=2)
    times = sorted([w0.take(0).intended_ns for _ in range(5)] + [w1.take(0).intended_ns for _ in range(5)])
    assert np.diff(times).tolist() == [10_000_000] * 9  # 100 rps total, evenly spaced


def test_schedule_max_requests_and_bad_input() -> None:
    s = ArrivalSchedule(10.0, "constant", max_requests=2)
    assert s.take(0) is not None and s.take(0) is not None and s.take(0) is None
    for kwargs, message in (
        ({"rate_rps": 0}, r"rate_rps must be > 0"),
        ({"rate_rps": 1, "model": "closed"}, r"load model 'closed' is not open-loop"),
        ({"rate_rps": 1, "max_lag_s": 0}, r"max_lag_s must be > 0"),
        ({"rate_rps": 1, "worker_index": 2, "worker_count": 2}, r"worker_index < worker_count"),
    ):
        with pytest.raises(ValueError, match=message):
            ArrivalSchedule(**kwargs)


# -- measurement ------------------------------------------------------------------------------------------
def test_measurement_warmup_window_and_correction() -> None:
    m = Measurement(open_loop=True, window_start_ns=1_000)
    m.add("POST /predict", start_ns=999, latency_us=5_000)  # warm-up: kept out
    m.add("POST /predict", start_ns=1_000, latency_us=5_000, send_delay_us=0)
    m.add(
        "POST /predict",
        start_ns=2_000,
        latency_us=5_000,
        send_delay_us=995_000,
        server_timing_us={"infer": 4},
    )
    m.add("POST /predict", start_ns=3_000, latency_us=100, error="http-503")
    ep = m.endpoints["POST /predict"]
    assert ep.warmup_count == 1 and ep.count == 2 and ep.errors == {"http-503": 1}
    assert ep.latency.get_max_value() == pytest.approx(1_000_000, rel=1e-3)  # corrected
    assert ep.uncorrected.get_max_value() == pytest.approx(5_000, rel=1e-3)
    m.close(10_000)
    m.add("POST /predict", start_ns=10_000, latency_us=1)
    assert ep.after_window_count == 1 and ep.count == 2


def test_histogram_merge_equals_histogram_of_pooled_samples() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.lognormal(8, 1, size=n).astype(int) + 1 for n in (500, 1500, 7)]
    hists = []
    for part in parts:
        h = new_histogram()
        for v in part:
            record_us(h, int(v))
        hists.append(h)
    pooled = new_histogram()
    for v in np.concatenate(parts):
        record_us(pooled, int(v))
    merged = merge_histograms([new_histogram(), *hists])  # an empty one must not disturb the min
    assert merged.get_total_count() == pooled.get_total_count() == 2007
    assert summarize_histogram(merged) == summarize_histogram(pooled)
    assert summarize_histogram(merged)["min"] > 0


def test_merge_wire_pools_generators_and_sums_throughput() -> None:
    snaps = []
    for latencies in ([1000, 2000, 3000], [10_000] * 5):
        m = Measurement(open_loop=False, window_start_ns=0)
        for v in latencies:
            m.add("GET /health", start_ns=1, latency_us=v)
        m.close(2 * NS_PER_S)  # a 2 s window
        snaps.append(m.to_wire(0, {"worker_index": len(snaps)}))
    merged = Measurement.merge_wire(snaps)
    (series,) = merged.to_series()
    assert series.count == 8
    assert series.throughput_rps == pytest.approx(8 / 2)
    assert decode_histogram(series.histogram).get_total_count() == 8
    assert series.latency_us["max"] == pytest.approx(10_000, rel=1e-3)
    assert series.uncorrected_latency_us is None  # closed loop: one histogram
    assert [g["worker_index"] for g in merged.generators] == [0, 1]


def test_parse_server_timing() -> None:
    h = 'decode;dur=0.12, preprocess;desc="x";dur=1.5, infer;dur=4, cache;desc=hit, bad'
    assert parse_server_timing(h) == {"decode": 120, "preprocess": 1500, "infer": 4000}
    assert parse_server_timing(None) == {} and parse_server_timing(";;,") == {}


def test_error_kind() -> None:
    assert error_kind(None, 200) is None
    assert error_kind(Exception("x"), 503) == "http-503"
    assert error_kind(ConnectionRefusedError(), 0) == "connection-refused"
    assert error_kind(ConnectionResetError(), None) == "connection-reset"
    assert error_kind(TimeoutError(), None) == "timeout"
    assert error_kind(ValueError(), None) == "error-valueerror"


def test_image_scenario_option_parsing() -> None:
    from deploybench.loadtests.payloads import make_images, parse_mix, parse_size

    assert parse_mix("multipart=3, base64=1") == {"multipart": 3.0, "base64": 1.0}
    assert parse_mix("multipart") == {"multipart": 1.0}
    for bad, message in (
        ("jpeg=1", r"unknown kind 'jpeg'"),
        ("multipart=x", r"weight of 'multipart' is not a number"),
        ("multipart=0", r"needs at least one kind with a weight > 0"),
        ("", r"needs at least one kind with a weight > 0"),
        ("multipart=-1", r"weight of 'multipart' must be >= 0"),
    ):
        with pytest.raises(UsageError, match=message):
            parse_mix(bad)
    assert parse_size("640x480") == (640, 480) and parse_size("224") == (224, 224)
    with pytest.raises(UsageError, match=r"--image-size must be between 1x1 and 8192x8192 \(got '0x10'\)"):
        parse_size("0x10")
    imgs = make_images((32, 16), "png", 2, 0)
    assert len(imgs) == 2 and imgs[0].startswith(b"\x89PNG") and imgs[0] != imgs[1]
