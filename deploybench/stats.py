"""Exact statistics. Percentiles are never averaged: they come from raw samples or merged histograms.

Percentile definition everywhere (``percentile_rank``, the one place it is written): the smallest recorded
value v such that at least p% of the samples are <= v (numpy ``method="inverted_cdf"``). It serves raw
samples (``percentile``), HdrHistograms (``value_at_percentile``) and bootstrap resamples (``Dist``).

Estimators for comparisons: ``Dist`` (a distribution as distinct values + counts, with a multinomial
bootstrap), ``welch_ci`` (runs vs runs) and ``paired_ci`` (paired rounds), ``quantile_interval`` and
``seeded_rng`` (deterministic resampling).
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from hdrh.histogram import HdrHistogram

from deploybench.errors import UsageError
from deploybench.record import PERCENTILES, pct_key

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
    target = percentile_rank(p, n)
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


def percentile_rank(p: float, n: int) -> int:
    """The percentile rule: the 1-based rank, among ``n`` sorted values, of the P-th percentile.

    inverted CDF: the smallest rank k with k >= p% of n (at least 1). The product is rounded to 9 decimals
    first so that float noise (99.9 * 1000 / 100 = 999.0000000000001) does not move the rank up by one.
    """
    return max(1, math.ceil(round(p * n / 100.0, 9)))


def percentile(samples: Sequence[float] | np.ndarray, p: float) -> float:
    """The P-th percentile of raw samples (``percentile_rank``)."""
    arr = np.asarray(samples, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("percentile of no samples")
    k = percentile_rank(p, arr.size)
    return float(np.partition(arr, k - 1)[k - 1])


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


# -- distributions and comparison estimators ---------------------------------------------------------------
@dataclass(frozen=True)
class Dist:
    """A latency distribution: sorted distinct values (µs) with counts. Bootstrap = multinomial on counts."""

    values: np.ndarray
    counts: np.ndarray

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def from_samples(cls, samples_us: Sequence[float]) -> Dist:
        values, counts = np.unique(np.asarray(samples_us, dtype=np.float64), return_counts=True)
        return cls(values, counts.astype(np.int64))

    @classmethod
    def from_histogram(cls, encoded: str) -> Dist:
        try:
            hist = decode_histogram(encoded)
        except Exception as exc:  # hdrh raises assorted errors on garbage
            raise UsageError(f"undecodable histogram in record ({exc})") from None
        values, counts = [], []
        for item in hist.get_recorded_iterator():
            values.append(float(item.value_iterated_to))
            counts.append(int(item.count_added_in_this_iter_step))
        return cls(np.asarray(values, dtype=np.float64), np.asarray(counts, dtype=np.int64))

    @classmethod
    def pooled(cls, dists: Sequence[Dist]) -> Dist:
        if len(dists) == 1:
            return dists[0]
        values = np.concatenate([d.values for d in dists])
        counts = np.concatenate([d.counts for d in dists])
        uniq, inverse = np.unique(values, return_inverse=True)
        return cls(uniq, np.bincount(inverse, weights=counts).astype(np.int64))

    def stat(self, metric: str) -> float:
        return float(stat_from_counts(self.values, self.counts[None, :], self.n, metric)[0])

    def bootstrap(self, metric: str, rng: np.random.Generator, n_boot: int) -> np.ndarray:
        n = self.n
        probs = self.counts / n
        out = np.empty(n_boot, dtype=np.float64)
        chunk = max(1, min(n_boot, 2_000_000 // max(len(self.values), 1)))
        for start in range(0, n_boot, chunk):
            m = min(chunk, n_boot - start)
            counts = rng.multinomial(n, probs, size=m)
            out[start : start + m] = stat_from_counts(self.values, counts, n, metric)
        return out


def stat_from_counts(values: np.ndarray, counts: np.ndarray, n: int, metric: str) -> np.ndarray:
    """A statistic (``mean``, ``max``, ``min`` or a percentile ``p50`` ... ``p99.9``) per row of ``counts``
    (rows: resamples of ``n`` values each). Percentiles follow ``percentile_rank``."""
    if metric == "mean":
        return (counts @ values) / n
    if metric == "max":
        last = counts.shape[1] - 1 - np.argmax(counts[:, ::-1] > 0, axis=1)
        return values[last]
    if metric == "min":
        return values[np.argmax(counts > 0, axis=1)]
    k = percentile_rank(float(metric[1:]), n)
    cum = np.cumsum(counts, axis=1)
    return values[(cum < k).sum(axis=1)]


def seeded_rng(seed: int, *parts: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and the names of what is resampled (deterministic per comparison)."""
    return np.random.default_rng([seed, zlib.crc32("\x1f".join(parts).encode())])


def quantile_interval(x: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap replicates (percentile method)."""
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(x, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def t_critical(confidence: float, df: float) -> float:
    """Student's t quantile for a two-sided ``confidence`` interval with ``df`` degrees of freedom."""
    from scipy.stats import t as student_t  # import cost: scipy.stats takes ~0.5 s, only comparisons need it

    return float(student_t.ppf(0.5 + confidence / 2.0, df))


def welch_ci(
    base: Sequence[float], cur: Sequence[float], *, relative: bool, confidence: float
) -> tuple[float, tuple[float, float]] | None:
    """Change (cur vs base) and its Welch t interval across runs. Relative: on logs, returned as fractions."""
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(cur, dtype=np.float64)
    if relative:
        if (a <= 0).any() or (b <= 0).any():
            return None
        a, b = np.log(a), np.log(b)
    d = float(b.mean() - a.mean())
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        lo = hi = d
    else:
        df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
        half = t_critical(confidence, df) * se
        lo, hi = d - half, d + half
    if relative:
        return math.expm1(d), (math.expm1(lo), math.expm1(hi))
    return d, (lo, hi)


def paired_ci(
    base: Sequence[float], cur: Sequence[float], *, relative: bool, confidence: float
) -> tuple[float, tuple[float, float] | None] | None:
    """Paired rounds: mean per-round change (geometric for relative), its t interval (None with 1 round)."""
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(cur, dtype=np.float64)
    if relative:
        if (a <= 0).any() or (b <= 0).any():
            return None
        diffs = np.log(b) - np.log(a)
    else:
        diffs = b - a
    d = float(diffs.mean())
    if diffs.size < 2:
        return (math.expm1(d) if relative else d), None
    half = t_critical(confidence, diffs.size - 1) * float(diffs.std(ddof=1)) / math.sqrt(diffs.size)
    lo, hi = d - half, d + half
    if relative:
        return math.expm1(d), (math.expm1(lo), math.expm1(hi))
    return d, (lo, hi)
