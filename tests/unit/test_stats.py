"""Percentile maths checked against numpy on known data; histogram helpers within their stated resolution."""

from __future__ import annotations

import binascii

import numpy as np
import pytest

from deploybench.record import PERCENTILES, pct_key
from deploybench.stats import (
    Dist,
    decode_histogram,
    encode_histogram,
    few_samples_percentiles,
    mad,
    merge_histograms,
    min_samples_for,
    new_histogram,
    percentile,
    percentile_rank,
    record_us,
    summarize_histogram,
    summarize_samples,
    value_at_percentile,
)


def test_percentile_on_known_data() -> None:
    data = list(range(1, 101))  # 1..100
    # inverted_cdf: the smallest value with at least p% of samples <= it
    assert percentile(data, 50) == 50
    assert percentile(data, 90) == 90
    assert percentile(data, 99) == 99
    assert percentile(data, 99.9) == 100
    assert percentile(data, 100) == 100
    assert percentile([7], 99) == 7
    assert percentile([3, 1, 2], 50) == 2  # order does not matter


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [1, 7, 100, 1001])
def test_percentile_matches_numpy_inverted_cdf(seed: int, n: int) -> None:
    data = np.random.default_rng(seed).lognormal(8, 1, n)
    for p in (*PERCENTILES, 0.0, 100.0):
        assert percentile(data, p) == np.percentile(data, p, method="inverted_cdf")
        assert percentile(data, p) in data  # always a recorded value, never an interpolation


def test_one_percentile_rule_for_samples_histograms_and_resamples() -> None:
    """p * n / 100 an integer: P99.9 of 1000 values is the 999th (99.9% of them are <= it). numpy's float
    rank (99.9 / 100 * 1000 = 999.0000000000001) would take the 1000th; percentile_rank rounds that away,
    and raw samples, histograms and the gate's bootstrap distributions all use it."""
    data = np.arange(1, 1001)
    assert percentile_rank(99.9, 1000) == 999 and percentile_rank(50, 1000) == 500
    assert percentile_rank(99, 71) == 71 and percentile_rank(0, 10) == 1
    assert percentile(data, 99.9) == 999
    h = new_histogram()
    for v in data:
        record_us(h, int(v))
    assert value_at_percentile(h, 99.9) == 999
    assert Dist.from_samples(data).stat("p99.9") == 999
    assert summarize_samples(data)["p99.9"] == summarize_histogram(h)["p99.9"] == 999


def test_percentile_of_nothing_raises() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_summarize_samples_known_values() -> None:
    data = [10, 20, 30, 40, 1000]
    s = summarize_samples(data)
    assert s["p50"] == 30
    assert s["p90"] == s["p99"] == s["p99.9"] == s["max"] == 1000
    assert s["min"] == 10
    assert s["mean"] == 220
    assert s["stdev"] == round(float(np.std(data, ddof=1)))
    assert s["mad"] == 10  # |x - 30| = 20, 10, 0, 10, 970 -> median 10


def test_summarize_samples_edge_cases() -> None:
    one = summarize_samples([42])
    assert one["p50"] == one["p99.9"] == one["min"] == one["max"] == 42
    assert one["stdev"] is None  # needs 2 samples
    empty = summarize_samples([])
    assert set(empty) == set(one) and all(v is None for v in empty.values())


def test_summarize_samples_against_numpy_random() -> None:
    # n = 5001: p * n / 100 is never an integer, so float rounding cannot move numpy by one rank
    data = np.random.default_rng(3).integers(1, 100_000, 5001)
    s = summarize_samples(data)
    for p in PERCENTILES:
        assert s[pct_key(p)] == round(np.percentile(data, p, method="inverted_cdf"))


def test_mad() -> None:
    assert mad([1, 1, 2, 2, 4, 6, 9]) == 1.0
    assert mad([5, 5, 5]) == 0.0


def test_min_samples_and_few_samples() -> None:
    assert min_samples_for(50) == 2
    assert min_samples_for(99) == 100
    assert min_samples_for(99.9) == 1000
    assert few_samples_percentiles(99) == ["p99", "p99.9"]
    assert few_samples_percentiles(100) == ["p99.9"]
    assert few_samples_percentiles(1000) == []
    assert few_samples_percentiles(1) == [pct_key(p) for p in PERCENTILES]


def test_histogram_percentiles_within_resolution() -> None:
    # n = 20011: p * n / 100 is never an integer, so float rounding cannot move numpy by one rank
    data = np.random.default_rng(5).lognormal(7, 0.8, 20_011).astype(int) + 1
    h = new_histogram()
    for v in data:
        record_us(h, int(v))
    s = summarize_histogram(h)
    assert h.get_total_count() == len(data)
    for p in PERCENTILES:
        exact = np.percentile(data, p, method="inverted_cdf")
        # 3 significant digits: values are equivalent within 0.1% (+1 µs for tiny values)
        assert abs(s[pct_key(p)] - exact) <= exact * 0.001 + 1, p
    assert s["min"] == data.min()
    assert abs(s["max"] - data.max()) <= data.max() * 0.001


def test_histogram_clamps_out_of_range() -> None:
    h = new_histogram()
    record_us(h, 0)
    record_us(h, -5)
    assert summarize_histogram(h)["max"] == 1
    assert summarize_histogram(new_histogram())["p50"] is None


def test_histogram_encode_decode_and_merge() -> None:
    a, b = new_histogram(), new_histogram()
    for v in range(1, 501):
        record_us(a, v)
    for v in range(501, 1001):
        record_us(b, v)
    roundtrip = decode_histogram(encode_histogram(a))
    assert summarize_histogram(roundtrip) == summarize_histogram(a)
    merged = merge_histograms([a, b])
    assert merged.get_total_count() == 1000
    # merging histograms is exact; averaging the two P50s (250.5, 750.5) would not be
    assert merged.get_value_at_percentile(50) == 500
    assert merged.get_value_at_percentile(99) == 990


def test_decode_garbage_raises() -> None:
    # checked by decode_histogram itself before hdrh sees it (binascii.Error is a ValueError)
    with pytest.raises(binascii.Error, match="base64"):
        decode_histogram("not base64 at all!")


def test_mean_value_equals_hdrh_mean() -> None:
    """The vectorised mean must be hdrh's own get_mean_value exactly (it replaces a slow Python loop)."""
    from deploybench.stats import mean_value

    rng = np.random.default_rng(7)
    for n in (1, 3, 5000):
        h = new_histogram()
        for v in rng.integers(1, 5_000_000, size=n):
            record_us(h, int(v))
        assert mean_value(h) == h.get_mean_value()
    assert mean_value(new_histogram()) == 0.0


# -- significance from independent units ---------------------------------------------------------------------
def test_histogram_arrays_match_hdrh_recorded_iterator() -> None:
    from deploybench.stats import histogram_arrays

    h = new_histogram()
    for v in np.random.default_rng(1).lognormal(6, 1, 5000):
        record_us(h, int(v))
    values, counts = histogram_arrays(h)
    it = [(i.value_iterated_to, i.count_added_in_this_iter_step) for i in h.get_recorded_iterator()]
    assert values.tolist() == [v for v, _ in it] and counts.tolist() == [c for _, c in it]


def test_blocks_resample_and_statistics() -> None:
    from deploybench.stats import Blocks

    rng = np.random.default_rng(2)
    samples = rng.lognormal(5, 0.3, 1000)
    b = Blocks.from_samples(samples)
    assert b.n_blocks == 31 and b.block_len == 3 and b.counts.sum() == 1000
    assert b.stat("p50")[0] == percentile(samples, 50) and b.stat("mean")[0] == pytest.approx(samples.mean())
    w = b.resample(rng, 50)
    assert w.shape == (50, 31) and (w.sum(axis=1) == 31).all()
    # a resample that takes every block once is the run itself, whatever the per-row sizes
    assert b.stat("p99", np.ones((2, 31)))[0] == percentile(samples, 99)
    loads = Blocks.from_arrays([(np.array([100.0]), np.array([10])), (np.array([200.0]), np.array([30]))],
                               durations=[1.0, 1.0], errors=[0, 10])  # fmt: skip
    assert loads.stat("rate")[0] == 20.0 and loads.stat("error_ratio")[0] == pytest.approx(0.2)
    assert loads.stat("p50")[0] == 200.0


def test_estimate_p_value_and_interval_agree() -> None:
    from deploybench.stats import Estimate, paired_estimate, runs_estimate

    for diff in (0.02, 0.08, 0.09, 0.1, 0.3):  # a 90 % two-sided CI excludes 0 <=> one-sided p < 0.05
        est = Estimate(diff, 0.05, 10.0, "rounds 11")
        lo, _ = est.interval(0.90)
        assert (est.p_above() < 0.05) == (lo > 0)
        assert est.p_above(-1.0) == pytest.approx(1 - est.p_above())
    one = paired_estimate([1.0], [1.2], relative=True)
    assert one is not None and one.p_above() is None and one.interval(0.95) is None
    assert runs_estimate([1.0], [2.0], relative=True) is None  # one run per side: no spread to use
    assert runs_estimate([1.0, 0.0], [2.0, 2.0], relative=True) is None
