"""Pure search logic for `deploybench compare`: the stability rule and the saturation (max rate under SLO)
search.

Nothing here starts servers, sleeps or prints: every function takes the measurement as a callable, so tests
drive it with fakes and the real runner drives it with short ``run_load`` calls.

Stability rule (perf_analyzer's): a closed-loop measurement is *stable* once the last ``n`` (3) consecutive
windows have ``max/min <= 1 + tolerance`` (10%) for both throughput and median latency, and every one of them
had successes. Windows are measured until that holds or a max number of windows / max duration is reached;
the latter is reported as "unstable" (a warning, never a failure).

Saturation rule (MLPerf Server scenario style): an open-loop arrival rate *passes* when all of

1. the corrected P99 (latency from the intended send time) is ``<= slo_p99_us``,
2. the error ratio (errors / requests) is ``<= max_error_ratio`` (1%),
3. the requests that succeeded are ``>= min_throughput_ratio`` (95%) of the arrival slots the generator
   scheduled in the window (``RateMeasurement.scheduled``, exact: a Poisson schedule's realised count, so no
   statistical allowance), else the target or the generator is falling behind. Dropped and never-sent
   slots are errors of their own kinds ("dropped", "not-sent") and count in rule 2 as well. A record
   without the exact count (an older generator) falls back to achieved vs offered rate with the old edge
   allowances (one request, the requests in flight at the end, 3 sd of a Poisson count:
   ``SloRules.throughput_floor_rps``), and the point says so ("approximate throughput check").

The search finds the highest passing rate by bisection between a lower and an upper bound, with geometric
midpoints (relative resolution), a fixed budget of probes, and a relative tolerance: it stops when the
bracket ``[highest pass, lowest fail]`` is within ``rel_tolerance``. An upper bound that passes is raised by
``expand_factor`` (at most ``max_expansions`` times); a lower bound that fails is lowered likewise. The
reported ``max_rps`` is always a rate that was actually measured and passed.

Repeated searches (``dithered_search``, one per repeat, seeded by ``dither_factors``): one search's answer
is a pass/fail bracket, and which side of it a short run lands on is partly luck. After the coarse search has
bracketed the boundary, R fresh short searches (``refine_search``: geometric bisection of the coarse bracket
widened by a margin, ends assumed, not probed; stepping outwards when every probe went the same way) each
give one estimate: the geometric midpoint of their final [pass, fail] pair. Each repeat's bracket is shifted
by a seeded random factor of up to half its final cell (dither), so the quantisation of the bisection grid
shows up as spread between repeats instead of a bias shared by all.
``deploybench.compare_doc.RateInterval`` turns the R estimates into a centre and a 95% interval.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from deploybench.record import RecordWarning

# ---------------------------------------------------------------------------------------------------------
# Rate measurements and the pass rule
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateMeasurement:
    """What one open-loop run at an offered rate produced."""

    p99_us: int | None  # corrected P99; None when nothing succeeded
    throughput_rps: float  # achieved (successes / window)
    error_ratio: float  # errors / (successes + errors)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. record path, p50/p95, cpu
    window_s: float | None = None  # measured window (for the edge allowances of the throughput rule)
    p50_us: int | None = None  # median latency: requests still in flight when the window closes
    count: int | None = None  # successful requests in the window
    scheduled: int | None = None  # arrival slots scheduled in the window (exact; None: not recorded)


@dataclass(frozen=True)
class SloRules:
    """When an offered rate counts as sustained (see module docstring)."""

    slo_p99_us: int
    max_error_ratio: float = 0.01
    min_throughput_ratio: float = 0.95
    poisson: bool = False  # Poisson arrivals: allow 3 standard deviations of the arrival count

    def throughput_floor_rps(
        self, offered_rps: float, window_s: float | None, p50_us: int | None = None
    ) -> float:
        """Lowest achieved rate that passes: ``min_throughput_ratio * offered``, less three edge allowances
        expressed as rates over ``window_s``: one request (counts are integers); the requests still in flight
        when the generator stops (Little's law: offered x median latency); and with Poisson arrivals
        3 standard deviations of the arrival count (sd = sqrt(rate * window)). The P99 rule still catches a
        target that falls behind, since its queue (and latency) then grows."""
        floor = self.min_throughput_ratio * offered_rps
        if window_s and window_s > 0:
            floor -= 1.0 / window_s
            if p50_us:
                floor -= offered_rps * (p50_us / 1e6) / window_s
            if self.poisson:
                floor -= 3.0 * math.sqrt(offered_rps / window_s)
        return max(floor, 0.0)

    def __post_init__(self) -> None:
        if self.slo_p99_us <= 0:
            raise ValueError("slo_p99_us must be > 0")
        if not 0.0 <= self.max_error_ratio < 1.0:
            raise ValueError("max_error_ratio must be in [0, 1)")
        if not 0.0 < self.min_throughput_ratio <= 1.0:
            raise ValueError("min_throughput_ratio must be in (0, 1]")

    def failures(self, offered_rps: float, m: RateMeasurement) -> list[str]:
        """Why ``m`` does not sustain ``offered_rps`` (empty list: it passes)."""
        out: list[str] = []
        if m.p99_us is None:
            out.append("no successful requests")
        elif m.p99_us > self.slo_p99_us:
            out.append(f"p99 {m.p99_us / 1000:.1f} ms > SLO {self.slo_p99_us / 1000:g} ms")
        if m.error_ratio > self.max_error_ratio:
            out.append(f"errors {m.error_ratio:.1%} > {self.max_error_ratio:.1%}")
        if m.scheduled and m.count is not None:
            need = self.min_throughput_ratio * m.scheduled
            if m.count < need:
                out.append(
                    f"achieved {m.count} of {m.scheduled} scheduled requests ({m.count / m.scheduled:.1%} < "
                    f"{self.min_throughput_ratio:.0%})"
                )
            return out
        floor = self.throughput_floor_rps(offered_rps, m.window_s, m.p50_us)
        if m.throughput_rps < floor:
            out.append(
                f"throughput {m.throughput_rps:.1f} rps < {floor:.1f} rps "
                f"({self.min_throughput_ratio:.0%} of offered {offered_rps:.1f} rps"
                + (f" over {m.window_s:.2f} s" if m.window_s else "")
                + "; approximate throughput check: no exact scheduled count)"
            )
        return out

    def exact(self, m: RateMeasurement) -> bool:
        """Whether the throughput rule could use the exact scheduled count for ``m``."""
        return bool(m.scheduled) and m.count is not None


@dataclass(frozen=True)
class RatePoint:
    """One probe of the search: offered rate, what was measured, and the verdict."""

    offered_rps: float
    p99_us: int | None
    throughput_rps: float
    error_ratio: float
    passed: bool
    reasons: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RatePoint:
        return cls(
            offered_rps=float(d["offered_rps"]),
            p99_us=d.get("p99_us"),
            throughput_rps=float(d.get("throughput_rps") or 0.0),
            error_ratio=float(d.get("error_ratio") or 0.0),
            passed=bool(d["passed"]),
            reasons=tuple(d.get("reasons", ())),
            extra=dict(d.get("extra", {})),
        )


@dataclass
class SaturationResult:
    """Outcome of a search. ``max_rps`` is None when even the lowest rate tried failed."""

    max_rps: float | None
    first_fail_rps: float | None  # lowest failing rate above max_rps (None: the top bound passed)
    status: str  # "bracketed" | "above-range" | "below-range" | "interrupted"
    points: list[RatePoint] = field(default_factory=list)
    warnings: list[RecordWarning] = field(default_factory=list)

    @property
    def resolution(self) -> float | None:
        """Relative width of the final bracket, e.g. 0.05 = the true capacity is within +5% of max_rps."""
        if self.max_rps is None or self.first_fail_rps is None or self.max_rps <= 0:
            return None
        return self.first_fail_rps / self.max_rps - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_rps": self.max_rps,
            "first_fail_rps": self.first_fail_rps,
            "status": self.status,
            "resolution": self.resolution,
            "points": [p.to_dict() for p in self.points],
            "warnings": [asdict(w) for w in self.warnings],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SaturationResult:
        return cls(
            max_rps=d.get("max_rps"),
            first_fail_rps=d.get("first_fail_rps"),
            status=d.get("status", "bracketed"),
            points=[RatePoint.from_dict(p) for p in d.get("points", [])],
            warnings=[RecordWarning.from_dict(w) for w in d.get("warnings", [])],
        )


def evaluate(offered_rps: float, m: RateMeasurement, rules: SloRules) -> RatePoint:
    reasons = rules.failures(offered_rps, m)
    extra = dict(m.extra)
    if m.scheduled is not None:
        extra["scheduled"] = m.scheduled
    if m.count is not None:
        extra["count"] = m.count
    if not rules.exact(m):
        extra["throughput_check"] = "approximate"
    return RatePoint(
        offered_rps=offered_rps,
        p99_us=m.p99_us,
        throughput_rps=m.throughput_rps,
        error_ratio=m.error_ratio,
        passed=not reasons,
        reasons=tuple(reasons),
        extra=extra,
    )


class Prober:
    """Probes rates for a search: measure, judge against the rules, keep the point, report it."""

    def __init__(
        self,
        measure: Callable[[float], RateMeasurement],
        rules: SloRules,
        on_point: Callable[[RatePoint], None] | None,
    ) -> None:
        self.measure, self.rules, self.on_point = measure, rules, on_point
        self.points: list[RatePoint] = []

    def __call__(self, rate: float) -> bool:
        """Probe ``rate``: True when it passed."""
        point = evaluate(rate, self.measure(rate), self.rules)
        self.points.append(point)
        if self.on_point is not None:
            self.on_point(point)
        return point.passed

    def halve(self, lo: float, hi: float) -> tuple[float, float, bool]:
        """One geometric bisection step of ``[lo, hi]``: the half the boundary lies in, and the verdict."""
        mid = math.sqrt(lo * hi)
        passed = self(mid)
        return (mid, hi, True) if passed else (lo, mid, False)


def saturation_search(
    measure: Callable[[float], RateMeasurement],
    rules: SloRules,
    lo_rps: float,
    hi_rps: float,
    *,
    max_probes: int = 7,
    rel_tolerance: float = 0.10,
    expand_factor: float = 2.0,
    max_expansions: int = 1,
    on_point: Callable[[RatePoint], None] | None = None,
) -> SaturationResult:
    """Highest offered rate that passes ``rules`` (see the module docstring for the rule and the search).

    Order of probes: ``hi`` first (raised while it passes), then geometric bisection of ``[lo, hi]``, then,
    only if no probe has passed yet, ``lo`` (lowered while it fails). ``max_probes`` bounds the number of
    ``measure`` calls, expansions included. ``on_point`` is called after every probe (to save as you go).
    A KeyboardInterrupt inside ``measure`` propagates; points measured so far are kept by ``on_point``.
    """
    if not (0 < lo_rps < hi_rps):
        raise ValueError(f"need 0 < lo_rps < hi_rps, got {lo_rps}, {hi_rps}")
    if max_probes < 2:
        raise ValueError("max_probes must be >= 2 (one bound and one more probe)")
    if rel_tolerance <= 0 or expand_factor <= 1:
        raise ValueError("rel_tolerance must be > 0 and expand_factor > 1")

    probe = Prober(measure, rules, on_point)
    points = probe.points

    best: float | None = None  # highest measured pass
    fail: float | None = None  # lowest measured fail (above best when the measurements are monotonic)

    # 1. the upper bound (raised while it passes)
    expansions = 0
    while True:
        if probe(hi_rps):
            best = hi_rps
            if expansions >= max_expansions or len(points) >= max_probes:
                result = SaturationResult(best, None, "above-range", points)
                result.warnings.append(
                    RecordWarning(
                        "above-range",
                        f"the highest rate tried ({hi_rps:.1f} rps) still met the SLO: capacity is higher",
                        hint="raise the search's upper bound (hi_rps / hi_factor)",
                    ),
                )
                return result
            lo_rps, hi_rps = hi_rps, hi_rps * expand_factor
            expansions += 1
        else:
            fail = hi_rps
            break

    # 2. geometric bisection of [lo, hi]; keep one probe for lo when nothing has passed yet
    def bisect(lo: float, hi: float) -> None:
        nonlocal best, fail
        while hi / lo - 1.0 > rel_tolerance and len(points) < max_probes - (0 if best is not None else 1):
            lo, hi, passed = probe.halve(lo, hi)
            if passed:
                best = lo
            else:
                fail = hi

    bisect(lo_rps, hi_rps)

    # 3. verify the lower bound when no probe passed (lowered while it fails), then bisect above it
    if best is None:
        lo = lo_rps
        expansions = 0
        while len(points) < max_probes:
            if probe(lo):
                best = lo
                break
            fail = lo
            if expansions >= max_expansions:
                break
            lo /= expand_factor
            expansions += 1
        if best is not None and fail is not None:
            bisect(best, fail)

    status = "below-range" if best is None else "bracketed"
    result = SaturationResult(best, fail, status, points)
    if best is None:
        result.warnings.append(
            RecordWarning(
                "below-range",
                f"even the lowest rate tried ({min(p.offered_rps for p in points):.1f} rps) missed the SLO",
                hint="lower the search's lower bound, or relax the SLO",
            )
        )
    elif result.resolution is not None and result.resolution > rel_tolerance:
        result.warnings.append(
            RecordWarning(
                "coarse-search",
                f"search stopped after {len(points)} probes with a {result.resolution:.0%} bracket "
                f"(wanted {rel_tolerance:.0%})",
                hint="allow more probes (search.max_probes) or narrow the bounds",
            )
        )
    return result


# ---------------------------------------------------------------------------------------------------------
# Repeated searches: R independent estimates of the boundary
# ---------------------------------------------------------------------------------------------------------


@dataclass
class RepeatEstimate:
    """One repeated search: its estimate of the max rate under the SLO and how it got there.

    ``pass_rps`` / ``fail_rps``: the final bracket (a bound that was assumed, not probed, when every probe
    went the same way and the confirmation probe agreed). ``censored``: "" when the boundary lay inside the
    bracket; "above" when even the top of the bracket passed (the estimate is a lower bound); "below" when
    even the bottom failed (an upper bound)."""

    estimate_rps: float
    pass_rps: float | None
    fail_rps: float | None
    censored: str = ""
    dither: float = 1.0
    points: list[RatePoint] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimate_rps": self.estimate_rps,
            "pass_rps": self.pass_rps,
            "fail_rps": self.fail_rps,
            "censored": self.censored,
            "dither": self.dither,
            "points": [p.to_dict() for p in self.points],
        }


def refine_search(
    measure: Callable[[float], RateMeasurement],
    rules: SloRules,
    lo_rps: float,
    hi_rps: float,
    *,
    probes: int = 3,
    max_extra: int = 2,
    on_point: Callable[[RatePoint], None] | None = None,
) -> RepeatEstimate:
    """``probes`` geometric bisections of ``[lo, hi]``, whose ends are assumed to pass / fail (they come
    from an earlier search, widened) and are not probed; the estimate is the geometric midpoint of the final
    bracket.

    When every probe went the same way, the boundary may lie outside the bracket (it moved since the earlier
    search): up to ``max_extra`` more probes step outwards from that end by half the bracket's width (log
    scale) until the other verdict is seen, and the estimate is the midpoint of the last [pass, fail] pair.
    If even that does not find it, the estimate is the last rate tried, marked censored ("below": all
    failed, an upper bound; "above": all passed, a lower bound)."""
    if not (0 < lo_rps < hi_rps):
        raise ValueError(f"need 0 < lo_rps < hi_rps, got {lo_rps}, {hi_rps}")
    if probes < 1 or max_extra < 0:
        raise ValueError("probes must be >= 1 and max_extra >= 0")
    probe = Prober(measure, rules, on_point)
    points = probe.points

    lo, hi = lo_rps, hi_rps
    passed_any = failed_any = False
    for _ in range(probes):
        lo, hi, passed = probe.halve(lo, hi)
        passed_any, failed_any = passed_any or passed, failed_any or not passed
    step = math.sqrt(hi_rps / lo_rps)  # half the bracket's log width
    extra = 0
    if not passed_any:  # every probe failed: is the lower end really a pass? step down until one is
        rate = lo_rps
        while extra < max_extra:
            extra += 1
            if probe(rate):
                return RepeatEstimate(math.sqrt(rate * hi), rate, hi, points=points)
            hi, rate = rate, rate / step
        return RepeatEstimate(hi, None, hi, "below", points=points)
    if not failed_any:  # every probe passed: step up until one fails
        rate = hi_rps
        while extra < max_extra:
            extra += 1
            if not probe(rate):
                return RepeatEstimate(math.sqrt(lo * rate), lo, rate, points=points)
            lo, rate = rate, rate * step
        return RepeatEstimate(lo, lo, None, "above", points=points)
    return RepeatEstimate(math.sqrt(lo * hi), lo, hi, points=points)


def repeat_bracket(coarse: SaturationResult, margin: float) -> tuple[float, float] | None:
    """The bracket the repeated searches bisect: the coarse search's [max pass, lowest fail] widened by
    ``margin`` on both sides (only a max pass: up to twice it; nothing passed: None, nothing to refine)."""
    if coarse.max_rps is None:
        return None
    lo = coarse.max_rps / (1.0 + margin)
    hi = coarse.first_fail_rps * (1.0 + margin) if coarse.first_fail_rps else coarse.max_rps * 2.0
    return lo, max(hi, lo * (1.0 + 2 * margin))


def dither_factor(rng: random.Random, lo_rps: float, hi_rps: float, probes: int) -> float:
    """A factor of up to half a final cell either way (a cell = (hi/lo) ** (1 / 2**probes))."""
    cell_log = math.log(hi_rps / lo_rps) / 2**probes
    return math.exp(rng.uniform(-0.5, 0.5) * cell_log)


def final_cell_log(lo_rps: float, hi_rps: float, probes: int) -> float:
    """Log width of a repeated search's final bracket: its resolution."""
    return math.log(hi_rps / lo_rps) / 2**probes


def dither_factors(seed: int, lo_rps: float, hi_rps: float, probes: int, repeats: int) -> list[float]:
    """The seeded dither factors of ``repeats`` repeated searches of ``[lo, hi]``, in repeat order."""
    rng = random.Random(seed)
    return [dither_factor(rng, lo_rps, hi_rps, probes) for _ in range(repeats)]


def dithered_search(
    measure: Callable[[float], RateMeasurement],
    rules: SloRules,
    lo_rps: float,
    hi_rps: float,
    dither: float,
    *,
    probes: int = 3,
    max_extra: int = 2,
    on_point: Callable[[RatePoint], None] | None = None,
) -> RepeatEstimate:
    """One repeated search: ``refine_search`` of ``[lo, hi]`` shifted by the factor ``dither``."""
    lo, hi = lo_rps * dither, hi_rps * dither
    est = refine_search(measure, rules, lo, hi, probes=probes, max_extra=max_extra, on_point=on_point)
    est.dither = dither
    return est


# ---------------------------------------------------------------------------------------------------------
# Stability: 3 consecutive windows within 10%
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One closed-loop measurement window."""

    throughput_rps: float
    p50_us: int | None
    count: int
    extra: dict[str, Any] = field(default_factory=dict)


def windows_spread(windows: Sequence[Window]) -> tuple[float, float] | None:
    """(max/min - 1) of throughput and of median latency over ``windows``; None when a window is empty."""
    if not windows or any(w.count <= 0 or w.throughput_rps <= 0 or not w.p50_us for w in windows):
        return None
    tput = [w.throughput_rps for w in windows]
    lat = [float(w.p50_us) for w in windows if w.p50_us]
    return max(tput) / min(tput) - 1.0, max(lat) / min(lat) - 1.0


def is_stable(windows: Sequence[Window], n: int = 3, tolerance: float = 0.10) -> bool:
    """True when the last ``n`` windows all had successes and max/min <= 1 + tolerance for throughput and
    median latency (perf_analyzer's stability rule)."""
    if n < 1 or len(windows) < n:
        return False
    spread = windows_spread(list(windows)[-n:])
    return spread is not None and spread[0] <= tolerance and spread[1] <= tolerance


@dataclass
class StabilityResult:
    stable: bool
    windows: list[Window]
    elapsed_s: float
    warnings: list[RecordWarning] = field(default_factory=list)

    @property
    def throughput_rps(self) -> float | None:
        """Mean throughput of the last (up to 3) windows: the closed-loop throughput estimate."""
        tail = [w.throughput_rps for w in self.windows[-3:] if w.count > 0]
        return sum(tail) / len(tail) if tail else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stable": self.stable,
            "elapsed_s": self.elapsed_s,
            "throughput_rps": self.throughput_rps,
            "windows": [asdict(w) for w in self.windows],
            "warnings": [asdict(w) for w in self.warnings],
        }


def measure_until_stable(
    measure_window: Callable[[int], Window],
    *,
    n: int = 3,
    tolerance: float = 0.10,
    max_windows: int = 8,
    max_duration_s: float = 30.0,
    clock_ns: Callable[[], int] = time.perf_counter_ns,
    on_window: Callable[[Window], None] | None = None,
) -> StabilityResult:
    """Call ``measure_window(i)`` until the last ``n`` windows are stable, or ``max_windows`` windows were
    measured, or ``max_duration_s`` has elapsed (checked between windows): at most max_windows calls."""
    if n < 1 or max_windows < n:
        raise ValueError("need 1 <= n <= max_windows")
    start = clock_ns()
    windows: list[Window] = []
    stable = False
    while len(windows) < max_windows:
        w = measure_window(len(windows))
        windows.append(w)
        if on_window is not None:
            on_window(w)
        if is_stable(windows, n, tolerance):
            stable = True
            break
        if (clock_ns() - start) / 1e9 >= max_duration_s:
            break
    elapsed_s = (clock_ns() - start) / 1e9
    result = StabilityResult(stable, windows, elapsed_s)
    if not stable:
        spread = windows_spread(windows[-n:]) if len(windows) >= n else None
        detail = (
            f"last {n} windows spread {spread[0]:.0%} (throughput) / {spread[1]:.0%} (p50)"
            if spread
            else f"only {len(windows)} usable window(s)"
        )
        result.warnings.append(
            RecordWarning(
                "unstable",
                f"not stable after {len(windows)} windows / {elapsed_s:.1f} s: {detail} "
                f"(wanted {n} within {tolerance:.0%})",
                hint="longer windows, fewer background processes, or --pin",
            )
        )
    return result
