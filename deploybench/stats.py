"""Exact statistics. Percentiles are never averaged: they come from raw samples or merged histograms.

Percentile definition everywhere: the smallest recorded value v such that at least p% of the samples are
<= v (numpy ``method="inverted_cdf"``, HdrHistogram ``get_value_at_percentile``).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Sequence

import numpy as np
from hdrh.histogram import HdrHistogram

from reports.record import PERCENTILES, pct_key

# 1 µs .. 1 hour, 3 significant digits (0.1% value resolution).
HIST_LOWEST_US = 1
HIST_HIGHEST_US = 3_600_000_000
HIST_DIGITS = 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HIST_LOWEST_US, HIST_HIGHEST_US, HIST_DIGITS)


def record_us(hist: HdrHistogram, value_us: int) -> None:
    """Record one latency (clamped into the histogram's range; 0 µs becomes 1 µs)."""
    hist.record_value(min(max(int(value_us), HIST_LOWEST_US), HIST_HIGHEST_US))


def encode_histogram(hist: HdrHistogram) -> str:
    encoded = hist.encode()
    return encoded.decode("ascii") if isinstance(encoded, bytes) else encoded


def decode_histogram(encoded: str | bytes) -> HdrHistogram:
    if isinstance(encoded, str):
        encoded = encoded.encode("ascii")
    base64.b64decode(encoded, validate=True)  # a clear error for garbage before hdrh sees it
    return HdrHistogram.decode(encoded)


def merge_histograms(hists: Iterable[HdrHistogram]) -> HdrHistogram:
    out = new_histogram()
    for h in hists:
        if h.get_total_count():  # hdrh's add() of an empty histogram sets the min to 0
            out.add(h)
    return out


def value_at_percentile(hist: HdrHistogram, p: float) -> int:
    """inverted_cdf on a histogram: the smallest recorded value v with at least p% of the counts <= v.

    (hdrh's own ``get_value_at_percentile`` rounds the rank to the nearest, ``int(p*n/100 + 0.5)``, which
    disagrees with numpy inverted_cdf, e.g. P99 of 71 samples: the 70th instead of the 71st value.)
    """
    n = hist.get_total_count()
    if n == 0:
        return 0
    target = max(1, math.ceil(round(p * n / 100.0, 9)))
    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len]
    index = int(np.searchsorted(np.cumsum(counts, dtype=np.int64), target))
    return int(hist.get_highest_equivalent_value(hist.get_value_from_index(index)))


def summarize_histogram(hist: HdrHistogram) -> dict[str, int | None]:
    """p50..p99.9, min, max, mean (integer µs). All None for an empty histogram."""
    n = hist.get_total_count()
    keys = [pct_key(p) for p in PERCENTILES] + ["min", "max", "mean"]
    if n == 0:
        return dict.fromkeys(keys)
    out: dict[str, int | None] = {pct_key(p): value_at_percentile(hist, p) for p in PERCENTILES}
    out["min"] = int(hist.get_min_value())
    out["max"] = int(hist.get_max_value())
    out["mean"] = round(mean_value(hist))
    return out


def mean_value(hist: HdrHistogram) -> float:
    """hdrh's ``get_mean_value`` (each count at its bucket's median-equivalent value), fully vectorised: hdrh
    iterates every bucket in Python (~150 ms a histogram), which stalled the load generator's event loop at
    every periodic save. Bucket values follow hdrh's ``get_value_from_index``."""
    n = hist.get_total_count()
    if n == 0:
        return 0.0
    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len]
    index = np.flatnonzero(counts).astype(np.int64)
    bucket = (index >> hist.sub_bucket_half_count_magnitude) - 1
    sub = (index & (hist.sub_bucket_half_count - 1)) + hist.sub_bucket_half_count
    first = bucket < 0
    sub[first] -= hist.sub_bucket_half_count
    bucket[first] = 0
    shift = bucket + hist.unit_magnitude
    mids = (sub << shift) + ((np.int64(1) << shift) >> 1)  # lowest value of the bucket + half its width
    return float(np.dot(counts[index].astype(np.float64), mids.astype(np.float64)) / n)


def percentile(samples: Sequence[float] | np.ndarray, p: float) -> float:
    arr = np.asarray(samples, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("percentile of no samples")
    return float(np.percentile(arr, p, method="inverted_cdf"))


def summarize_samples(samples_us: Sequence[int] | np.ndarray) -> dict[str, int | None]:
    """Same keys as ``summarize_histogram``, exact from raw samples, plus median/MAD/stdev.

    A statistic that needs 2 samples (stdev) is None with 1.
    """
    arr = np.asarray(samples_us, dtype=np.float64)
    keys = [pct_key(p) for p in PERCENTILES] + ["min", "max", "mean", "stdev", "mad"]
    if arr.size == 0:
        return dict.fromkeys(keys)
    out: dict[str, int | None] = {pct_key(p): round(percentile(arr, p)) for p in PERCENTILES}
    out["min"] = round(float(arr.min()))
    out["max"] = round(float(arr.max()))
    out["mean"] = round(float(arr.mean()))
    out["stdev"] = round(float(arr.std(ddof=1))) if arr.size >= 2 else None
    out["mad"] = round(mad(arr))
    return out


def mad(samples: Sequence[float] | np.ndarray) -> float:
    """Median absolute deviation (unscaled)."""
    arr = np.asarray(samples, dtype=np.float64)
    med = np.median(arr)
    return float(np.median(np.abs(arr - med)))


def min_samples_for(p: float) -> int:
    """Samples needed before percentile p is more than the max: e.g. 100 for P99, 1000 for P99.9."""
    tail = 1.0 - p / 100.0
    return int(np.ceil(round(1.0 / tail, 6))) if tail > 0 else 1  # round: 1 - 0.999 is not 0.001


def few_samples_percentiles(count: int) -> list[str]:
    """Percentile keys that ``count`` samples cannot resolve (the value is just the max or near it)."""
    return [pct_key(p) for p in PERCENTILES if count < min_samples_for(p)]
