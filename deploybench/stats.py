"""Exact statistics. Percentiles are never averaged: they come from raw samples or merged histograms.

Percentile definition everywhere (``percentile_rank``, the one place it is written): the smallest recorded
value v such that at least p% of the samples are <= v (numpy ``method="inverted_cdf"``). It serves raw
samples (``percentile``), HdrHistograms (``value_at_percentile``) and bootstrap resamples (``Dist``).

Estimators for comparisons (significance only from independent units, never from requests): ``Estimate``
(a change on the test scale with its standard error and t degrees of freedom) from runs (``runs_estimate``),
paired A/B rounds (``paired_estimate``) or time blocks of one run (``Blocks``, ``block_estimate``: a circular
block bootstrap); ``holm`` (multiplicity), ``detectable_shift`` (what a rule can catch at a given noise).
``Dist`` (distinct values + counts) is a plain distribution; its multinomial ``bootstrap`` treats every
sample as independent and is kept for comparisons with that (wrong, for latencies) assumption only.
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

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


@dataclass(frozen=True)
class Binned:
    """Many latencies sorted into HdrHistogram buckets once (``bin_us``), to be added to several histograms
    of the same configuration (``add_binned``): a run's and its time block's, say."""

    index: np.ndarray  # the non-empty buckets' indices in the counts array
    counts: np.ndarray  # how many values each holds
    total: int
    min_us: int
    max_us: int


def bin_us(values_us: np.ndarray, like: HdrHistogram) -> Binned | None:
    """``values_us`` (each clamped like ``record_us``) in the buckets of histograms configured as ``like``,
    with the bucket arithmetic of hdrh's ``_counts_index_for`` done in numpy (the lean load engine records
    thousands of values a second; hdrh's per-value Python costs ~3 µs each). None when empty."""
    if len(values_us) == 0:
        return None
    v = np.clip(np.asarray(values_us, dtype=np.int64), HIST_LOWEST_US, HIST_HIGHEST_US)
    # bucket index = bit length of (v | sub_bucket_mask) - unit magnitude - (half-count magnitude + 1);
    # frexp's exponent is the bit length for integers below 2**53 (values here are <= 3.6e9)
    bits = np.frexp((v | like.sub_bucket_mask).astype(np.float64))[1].astype(np.int64)
    bucket = bits - like.unit_magnitude - (like.sub_bucket_half_count_magnitude + 1)
    sub_bucket = v >> (bucket + like.unit_magnitude)
    index = ((bucket + 1) << like.sub_bucket_half_count_magnitude) + sub_bucket - like.sub_bucket_half_count
    binned = np.bincount(index)
    nz = np.flatnonzero(binned)
    return Binned(nz, binned[nz], len(v), int(v.min()), int(v.max()))


def add_binned(hist: HdrHistogram, b: Binned | None) -> None:
    """Add ``bin_us``'s buckets to ``hist`` (configured as the ``like`` they were binned for): the same
    counts, total, min and max as ``record_us`` one value at a time."""
    if b is None:
        return
    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len]
    counts[b.index] += b.counts.astype(counts.dtype)
    hist.total_count += b.total
    hist.min_value = min(hist.min_value, b.min_us)
    hist.max_value = max(hist.max_value, b.max_us)


def record_many_us(hist: HdrHistogram, values_us: np.ndarray) -> None:
    """Record many latencies at once: ``add_binned(hist, bin_us(values_us, hist))``."""
    add_binned(hist, bin_us(values_us, hist))


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


def _bucket_bounds(hist: HdrHistogram, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowest value and width of the buckets at counts ``index`` (hdrh's ``get_value_from_index``)."""
    bucket = (index >> hist.sub_bucket_half_count_magnitude) - 1
    sub = (index & (hist.sub_bucket_half_count - 1)) + hist.sub_bucket_half_count
    first = bucket < 0
    sub[first] -= hist.sub_bucket_half_count
    bucket[first] = 0
    shift = bucket + hist.unit_magnitude
    return sub << shift, np.int64(1) << shift


def mean_value(hist: HdrHistogram) -> float:
    """hdrh's ``get_mean_value`` (each count at its bucket's median-equivalent value), fully vectorised: hdrh
    iterates every bucket in Python (~150 ms a histogram), which stalled the load generator's event loop at
    every periodic save. Bucket values follow hdrh's ``get_value_from_index``."""
    n = hist.get_total_count()
    if n == 0:
        return 0.0
    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len]
    index = np.flatnonzero(counts).astype(np.int64)
    lowest, width = _bucket_bounds(hist, index)
    mids = lowest + (width >> 1)  # lowest value of the bucket + half its width
    return float(np.dot(counts[index].astype(np.float64), mids.astype(np.float64)) / n)


def histogram_arrays(hist: HdrHistogram) -> tuple[np.ndarray, np.ndarray]:
    """(values, counts) of the non-empty buckets, each value the bucket's highest equivalent value (what
    hdrh's recorded iterator yields, and ``value_at_percentile`` returns), vectorised."""
    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len]
    index = np.flatnonzero(counts).astype(np.int64)
    lowest, width = _bucket_bounds(hist, index)
    return (lowest + width - 1).astype(np.float64), counts[index].astype(np.int64)


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
        values, counts = histogram_arrays(hist)
        return cls(values, counts)

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


def stat_from_counts(values: np.ndarray, counts: np.ndarray, n: int | np.ndarray, metric: str) -> np.ndarray:
    """A statistic (``mean``, ``max``, ``min`` or a percentile ``p50`` ... ``p99.9``) per row of ``counts``
    (rows: resamples of ``n`` values each; ``n`` one number or one per row, as a block bootstrap's resamples
    differ in size). Percentiles follow ``percentile_rank``."""
    if metric == "mean":
        return (counts @ values) / n
    if metric == "max":
        last = counts.shape[1] - 1 - np.argmax(counts[:, ::-1] > 0, axis=1)
        return values[last]
    if metric == "min":
        return values[np.argmax(counts > 0, axis=1)]
    p = float(metric[1:])
    if np.ndim(n) == 0:
        k: int | np.ndarray = percentile_rank(p, int(n))
    else:
        k = np.maximum(1, np.ceil(np.round(p * np.asarray(n, dtype=np.float64) / 100.0, 9)))[:, None]
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


def t_quantile(q: float, df: float) -> float:
    """Student's t quantile ``q`` with ``df`` degrees of freedom (``math.inf``: the normal quantile)."""
    # import cost: scipy.stats takes ~0.5 s, only comparisons need it
    from scipy.stats import norm
    from scipy.stats import t as student_t

    return float(norm.ppf(q) if math.isinf(df) else student_t.ppf(q, df))


def t_critical(confidence: float, df: float) -> float:
    """Student's t quantile for a two-sided ``confidence`` interval with ``df`` degrees of freedom."""
    return t_quantile(0.5 + confidence / 2.0, df)


def t_sf(x: float, df: float) -> float:
    """P(T > x) for Student's t with ``df`` degrees of freedom (``math.inf``: normal)."""
    # import cost: scipy.stats takes ~0.5 s, only comparisons need it
    from scipy.stats import norm
    from scipy.stats import t as student_t

    return float(norm.sf(x) if math.isinf(df) else student_t.sf(x, df))


# -- significance from independent units ---------------------------------------------------------------------
# Requests of one load run are not independent (a slow moment slows every request queued behind it), nor are
# consecutive calls of a micro-benchmark (CPU frequency, caches, neighbours). Significance therefore comes
# only from units that are close to independent: runs, paired A/B rounds, or time blocks of one run
# (a circular block bootstrap over them). Every comparison is an ``Estimate`` on a test scale -- the log of
# the ratio for relative rules, the difference for absolute ones -- with a standard error and the degrees of
# freedom of its t reference; ``holm`` adjusts the one-sided p-values of all comparisons of one gate call.

MIN_BLOCKS = 8  # fewer time blocks per side: a block bootstrap says nothing worth a verdict


@dataclass(frozen=True)
class Estimate:
    """``diff`` = current - baseline on the test scale (log ratio when relative), its standard error ``se``
    (NaN: unknown, e.g. one round) and the degrees of freedom ``df`` of its t reference; ``units`` names
    the independent units it comes from ("runs 3+3", "rounds 4", "blocks 30+30")."""

    diff: float
    se: float
    df: float
    units: str

    @property
    def has_spread(self) -> bool:
        return math.isfinite(self.se) and self.df > 0

    def p_above(self, sign: float = 1.0) -> float | None:
        """One-sided p-value of ``sign * diff > 0`` (None without a standard error)."""
        if not self.has_spread:
            return None
        d = sign * self.diff
        if self.se == 0.0:
            return 0.0 if d > 0 else 1.0
        return t_sf(d / self.se, self.df)

    def interval(self, confidence: float) -> tuple[float, float] | None:
        """Two-sided ``confidence`` interval of ``diff`` (None without a standard error)."""
        if not self.has_spread:
            return None
        half = t_critical(confidence, self.df) * self.se if self.se > 0 else 0.0
        return self.diff - half, self.diff + half


def _test_scale(values: Sequence[float], relative: bool) -> np.ndarray | None:
    arr = np.asarray(values, dtype=np.float64)
    if relative:
        return np.log(arr) if (arr > 0).all() else None
    return arr


def runs_estimate(base: Sequence[float], cur: Sequence[float], *, relative: bool) -> Estimate | None:
    """Runs as the units: Welch's t on the per-run statistics (logs when relative) with 2+ runs a side;
    with one run on one side, that side is taken to spread like the other (a prediction interval for one
    new run, df = the other side's runs - 1). None with one run per side, or a non-positive relative value."""
    a, b = _test_scale(base, relative), _test_scale(cur, relative)
    if a is None or b is None or (a.size < 2 and b.size < 2):
        return None
    d = float(b.mean() - a.mean())
    units = f"runs {a.size}+{b.size}"
    if a.size >= 2 and b.size >= 2:
        va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)) if se > 0 else a.size + b.size - 2
        return Estimate(d, se, float(df), units)
    spread = a if a.size >= 2 else b
    var = float(spread.var(ddof=1))
    return Estimate(d, math.sqrt(var * (1.0 / a.size + 1.0 / b.size)), float(spread.size - 1), units)


def paired_estimate(base: Sequence[float], cur: Sequence[float], *, relative: bool) -> Estimate | None:
    """Paired rounds as the units: the mean per-round change (log ratio when relative) and its t standard
    error (NaN with one round). None with a non-positive relative value."""
    a, b = _test_scale(base, relative), _test_scale(cur, relative)
    if a is None or b is None:
        return None
    diffs = b - a
    n = diffs.size
    se = float(diffs.std(ddof=1)) / math.sqrt(n) if n >= 2 else math.nan
    return Estimate(float(diffs.mean()), se, float(n - 1), f"rounds {n}")


def to_change(value: float, relative: bool) -> float:
    """A test-scale value back in a rule's terms: a fraction (relative) or the difference itself."""
    return math.expm1(value) if relative else value


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control for any dependence between tests):
    p_adj(i) = max over the j smallest of min(1, (m - j + 1) * p(j)). Reject where p_adj <= alpha."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def detectable_shift(se: float, df: float, alpha: float, limit: float, power: float = 0.9) -> float:
    """The true change (test scale, bad direction) caught with probability ~``power`` by the rule "point
    change > ``limit`` and one-sided p <= ``alpha``": the larger of limit + t_power * se (the point change
    must clear the limit: at the limit itself that is a coin toss) and (t_(1-alpha) + t_power) * se."""
    tp = t_quantile(power, df)
    return max(limit + tp * se, (t_quantile(1.0 - alpha, df) + tp) * se)


@dataclass(frozen=True)
class Blocks:
    """One run cut into consecutive blocks -- time blocks of a load run, runs of consecutive calls of a
    micro-benchmark -- as a shared value grid (µs) and one row of counts per block, plus each block's
    duration (s; 0 when unknown) and errors. ``resample``: a circular block bootstrap over the blocks, so a
    correlated stretch of requests stays together; statistics are recomputed from the merged counts."""

    values: np.ndarray  # (V,) sorted distinct values
    counts: np.ndarray  # (B, V)
    durations: np.ndarray  # (B,)
    errors: np.ndarray  # (B,)

    @classmethod
    def from_arrays(
        cls,
        blocks: Sequence[tuple[np.ndarray, np.ndarray]],
        durations: Sequence[float] | None = None,
        errors: Sequence[int] | None = None,
    ) -> Blocks:
        """From (values, counts) per block."""
        nonempty = [np.asarray(v, dtype=np.float64) for v, _ in blocks if len(v)]
        grid = np.unique(np.concatenate(nonempty)) if nonempty else np.zeros(0)
        counts = np.zeros((len(blocks), grid.size), dtype=np.int64)
        for i, (v, c) in enumerate(blocks):
            if len(v):
                np.add.at(counts[i], np.searchsorted(grid, np.asarray(v, dtype=np.float64)), c)
        nb = len(blocks)
        dur = np.zeros(nb) if durations is None else np.asarray(durations, dtype=np.float64)
        err = np.zeros(nb) if errors is None else np.asarray(errors, dtype=np.float64)
        return cls(grid, counts, dur, err)

    @classmethod
    def from_record_blocks(cls, blocks: Sequence[dict]) -> Blocks:
        """From a load series' ``blocks`` ({"duration_s", "count", "errors", "histogram"} each)."""
        arrays, durations, errors = [], [], []
        for b in blocks:
            try:
                hist = decode_histogram(b["histogram"]) if b.get("histogram") else None
                durations.append(float(b["duration_s"]))
                errors.append(int(b.get("errors") or 0))
            except Exception as exc:  # hdrh raises assorted errors on garbage
                raise UsageError(f"unreadable time block in record ({exc})") from None
            arrays.append(
                histogram_arrays(hist) if hist is not None else (np.zeros(0), np.zeros(0, np.int64))
            )
        return cls.from_arrays(arrays, durations, errors)

    @classmethod
    def from_samples(cls, samples_us: Sequence[float] | np.ndarray, n_blocks: int | None = None) -> Blocks:
        """Consecutive samples in ``n_blocks`` blocks (default: blocks of about sqrt(n) calls)."""
        arr = np.asarray(samples_us, dtype=np.float64)
        if n_blocks is None:
            n_blocks = max(1, arr.size // max(1, math.ceil(math.sqrt(arr.size))))
        parts = np.array_split(arr, n_blocks)
        return cls.from_arrays([np.unique(p, return_counts=True) for p in parts])

    @property
    def n_blocks(self) -> int:
        return int(self.counts.shape[0])

    @property
    def block_len(self) -> int:
        """Blocks per resampled stretch: about B^(1/3) (the usual rate for a block bootstrap)."""
        return max(1, round(self.n_blocks ** (1.0 / 3.0)))

    def resample(self, rng: np.random.Generator, n_boot: int) -> np.ndarray:
        """(n_boot, B) multiplicities of a circular block bootstrap: stretches of ``block_len`` consecutive
        blocks (wrapping around) from random starts, until B blocks are drawn."""
        b, length = self.n_blocks, self.block_len
        k = -(-b // length)
        starts = rng.integers(0, b, size=(n_boot, k))
        idx = ((starts[:, :, None] + np.arange(length)) % b).reshape(n_boot, k * length)[:, :b]
        flat = (np.arange(n_boot)[:, None] * b + idx).ravel()
        return np.bincount(flat, minlength=n_boot * b).reshape(n_boot, b).astype(np.float64)

    @cached_property
    def _cum(self) -> np.ndarray:
        """Cumulative counts along the values, per block (float32: exact below 2^24 per cell)."""
        return np.cumsum(self.counts, axis=1).astype(np.float32)

    @cached_property
    def _per_block(self) -> tuple[np.ndarray, np.ndarray]:
        """(samples, sum of values) per block."""
        return self.counts.sum(axis=1).astype(np.float64), self.counts @ self.values

    def stat(self, metric: str, weights: np.ndarray | None = None) -> np.ndarray:
        """A statistic per row of block ``weights`` (all ones: the run itself): a latency metric (µs) of the
        merged counts, ``rate`` (successes per second) or ``error_ratio``. NaN where undefined. Percentiles
        use cumsum(W @ C) = W @ cumsum(C): one product with the blocks' cumulative counts per resample."""
        w = np.ones((1, self.n_blocks)) if weights is None else weights
        per_block, sums = self._per_block
        n = w @ per_block
        with np.errstate(divide="ignore", invalid="ignore"):
            if metric == "rate":
                return n / (w @ self.durations)
            if metric == "error_ratio":
                return (w @ self.errors) / (w @ (per_block + self.errors))
            if metric == "mean":
                return np.where(n > 0, (w @ sums) / n, np.nan)
        if not self.values.size:
            return np.full(w.shape[0], np.nan)
        out = np.empty(w.shape[0])
        safe = np.where(n > 0, n, 1)
        chunk = max(1, 4_000_000 // self.values.size)
        for start in range(0, w.shape[0], chunk):
            ws, ns = w[start : start + chunk], safe[start : start + chunk]
            if metric.startswith("p"):
                k = np.maximum(1, np.ceil(np.round(float(metric[1:]) * ns / 100.0, 9)))[:, None]
                cum = ws.astype(np.float32) @ self._cum
                idx = np.minimum((cum < k - 0.5).sum(axis=1), self.values.size - 1)
                out[start : start + chunk] = self.values[idx]
            else:  # max, min
                out[start : start + chunk] = stat_from_counts(self.values, ws @ self.counts, ns, metric)
        return np.where(n > 0, out, np.nan)


def block_estimate(
    base: Blocks,
    cur: Blocks,
    metric: str,
    *,
    relative: bool,
    rng: np.random.Generator,
    n_boot: int,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[float, float, Estimate] | None:
    """Time blocks as the units: (base statistic, current statistic, Estimate) with the standard error from
    a circular block bootstrap of each side and a t reference with df = independent stretches - 1 (blocks /
    block_len on the side with fewer; a bootstrap over few blocks understates the spread). ``transform`` maps
    the statistic first (e.g. mean µs -> calls/s). None when a side has no statistic (or a non-positive one
    for a relative comparison). Validated on simulated queues (tests/unit/test_gate_calibration.py): near
    nominal for the P50; a heavily loaded queue's P99 over 30 s is under-covered (~12 % instead of 5 %)."""
    f = transform or (lambda x: x)
    sides = []
    for blocks in (base, cur):
        point = f(blocks.stat(metric))
        reps = f(blocks.stat(metric, blocks.resample(rng, n_boot)))
        if not np.isfinite(point).all() or not np.isfinite(reps).all():
            return None
        if relative:
            if (point <= 0).any() or (reps <= 0).any():
                return None
            sides.append((float(point[0]), np.log(point[0]), np.log(reps)))
        else:
            sides.append((float(point[0]), float(point[0]), reps))
    (bp, bt, br), (cp, ct, cr) = sides
    se = math.sqrt(float(br.var(ddof=1)) + float(cr.var(ddof=1)))
    df = float(min(base.n_blocks // base.block_len, cur.n_blocks // cur.block_len) - 1)
    return bp, cp, Estimate(float(ct - bt), se, df, f"blocks {base.n_blocks}+{cur.n_blocks}")
