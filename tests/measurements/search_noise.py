"""How reproducible can compare's figure be, given how noisy one probe is? A simulation of compare's own
search (the coarse ``saturation_search``, then the dithered repeated searches and their ``RateInterval``,
with the ``[search]`` settings of a compare file, ``quick`` by default) against a synthetic server, and the
same noise statistic read from real runs, so that the two can be matched.

The synthetic server: a probe at rate r passes the SLO with probability 1 / (1 + exp((ln r - ln C) / s)),
where C is the process's capacity (its 50 % point) and ``s`` the width of that boundary on the log scale.
Each freshly started process has its own C, log-normal around the choice's true capacity with sd
``process_sd`` (the repeats after the first run on fresh processes, as ``repeat_restart`` does); the coarse
search starts from a closed-loop figure of 1.1 x C, with a log-normal error of sd 0.12 (what compare's runs
showed: the closed loop read 0.82-1.58 x the final figure). No drift of the machine between runs: what
this shows is the spread of a stationary machine.

The noise statistic, for real and simulated runs alike: the share of inverted probe pairs, among the pairs
of one choice's probes (one run) with different verdicts, those where the pass was at a higher rate than
the fail. 0 is a sharp boundary; it grows with ``s``.

    python -m tests.measurements.search_noise [--runs results/compare/<run> ...] [--scales 0.03,0.06,0.1]
        [--process-sd 0,0.04,0.08] [--sets 400] [--config quick] [--set search.repeat_margin=0.25 ...]

Per (scale, process sd): the inverted share, the sd of a run's figure (the geometric mean of its repeats)
around the truth, the share of three-run sets of one choice within ±10 % of their median (and that share to
the 6th power: six independent choices all within ±10 %, the main job's target), the share of run pairs
whose 95 % interval contains the other run's estimate, and the share of intervals containing the truth.
Seeded: the same arguments print the same figures. Pure arithmetic, no servers (a few seconds).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from deploybench.compare_doc import RateInterval
from deploybench.decisions.compare.config import SearchConfig, load_config
from deploybench.decisions.compare.run import repeat_probes, repeats_interval, search_bounds
from deploybench.decisions.compare.saturation import (
    RateMeasurement,
    SloRules,
    dither_factors,
    dithered_search,
    repeat_bracket,
    saturation_search,
)

RULES = SloRules(slo_p99_us=50_000)
CLOSED_FACTOR = 1.1  # the closed loop's figure over the capacity, on average ...
CLOSED_SD = 0.12  # ... and its log-normal spread
TRUE_RPS = 4000.0


def inverted_share(points: list[tuple[float, bool]]) -> tuple[int, int]:
    """(inverted pairs, pairs with different verdicts) among one choice's probes: inverted when the pass
    was at a higher rate than the fail."""
    passes = [r for r, ok in points if ok]
    fails = [r for r, ok in points if not ok]
    inverted = sum(1 for p in passes for f in fails if p > f)
    return inverted, len(passes) * len(fails)


def run_points(doc: dict[str, Any]) -> dict[str, list[tuple[float, bool]]]:
    """{choice label: [(offered rps, passed)]} of every probe (coarse and repeats) of one compare run."""
    out: dict[str, list[tuple[float, bool]]] = {}
    for r in doc["results"]:
        points = (r.get("saturation") or {}).get("points") or []
        if points:
            out[r["label"]] = [(float(p["offered_rps"]), bool(p["passed"])) for p in points]
    return out


class Server:
    """A started process of the synthetic server: its capacity and the probes it answered."""

    def __init__(self, rng: random.Random, true_rps: float, scale: float, process_sd: float) -> None:
        self.rng, self.scale = rng, scale
        self.capacity = true_rps * math.exp(rng.gauss(0.0, process_sd))
        self.points: list[tuple[float, bool]] = []

    def measure(self, rate: float) -> RateMeasurement:
        z = (math.log(rate) - math.log(self.capacity)) / self.scale
        passed = self.rng.random() < 1.0 / (1.0 + math.exp(min(z, 700.0)))
        self.points.append((rate, passed))
        return RateMeasurement(p99_us=10_000 if passed else 500_000, throughput_rps=rate, error_ratio=0.0)


def one_run(
    rng: random.Random, se: SearchConfig, scale: float, process_sd: float, seed: int
) -> tuple[RateInterval, list[tuple[float, bool]]] | None:
    """One compare run of one choice, as ``CompareRun`` does it: coarse search, then the repeats."""
    first = Server(rng, TRUE_RPS, scale, process_sd)
    closed = first.capacity * CLOSED_FACTOR * math.exp(rng.gauss(0.0, CLOSED_SD))
    lo, hi = search_bounds(se, closed)
    sat = saturation_search(first.measure, RULES, lo, hi, max_probes=se.max_probes,
                            rel_tolerance=se.rel_tolerance, max_expansions=se.max_expansions)  # fmt: skip
    bracket = repeat_bracket(sat, se.repeat_margin)
    if bracket is None or not se.repeats:
        return None
    n = repeat_probes(bracket, se.repeat_probes, se.rel_tolerance)
    reps = []
    points = list(first.points)
    for k, dither in enumerate(dither_factors(seed, *bracket, n, se.repeats)):
        server = first if k == 0 or not se.repeat_restart else Server(rng, TRUE_RPS, scale, process_sd)
        server.points = []
        est = dithered_search(
            server.measure, RULES, *bracket, dither, probes=n, max_extra=se.repeat_extra_probes
        )
        reps.append(est)
        points += server.points
    return repeats_interval(reps, bracket, n), points


def study(se: SearchConfig, scale: float, process_sd: float, sets: int, seed: int = 7) -> dict[str, Any]:
    """``sets`` sets of three runs of one choice: how far their figures spread (see the module docstring)."""
    rng = random.Random(seed)
    runs: list[tuple[RateInterval, list[tuple[float, bool]]]] = []
    while len(runs) < 3 * sets:
        one = one_run(rng, se, scale, process_sd, seed=len(runs))
        if one is not None:
            runs.append(one)
    logs = [math.log(iv.center_rps / TRUE_RPS) for iv, _ in runs]
    inv = [inverted_share(points) for _, points in runs]
    within = pairs = pairs_ok = covered = 0
    for i in range(0, len(runs), 3):
        trio = [iv for iv, _ in runs[i : i + 3]]
        med = statistics.median(iv.center_rps for iv in trio)
        within += all(abs(iv.center_rps / med - 1.0) <= 0.10 for iv in trio)
        for a in trio:
            covered += a.lo_rps <= TRUE_RPS <= a.hi_rps
            for b in trio:
                if a is not b:
                    pairs += 1
                    pairs_ok += a.lo_rps <= b.center_rps <= a.hi_rps
    share = within / sets
    return {
        "scale": scale,
        "process_sd": process_sd,
        "inverted_share": round(sum(i for i, _ in inv) / max(1, sum(n for _, n in inv)), 3),
        "figure_sd_percent": round(100.0 * statistics.pstdev(logs), 1),
        "figure_bias_percent": round(100.0 * (math.exp(statistics.fmean(logs)) - 1.0), 1),
        "sets": sets,
        "within_10_percent_share": round(share, 3),
        "six_choices_share": round(share**6, 3),
        "pairs_containing_share": round(pairs_ok / pairs, 3),
        "covering_truth_share": round(covered / len(runs), 3),
        "mean_probes": round(statistics.fmean(len(p) for _, p in runs), 1),
    }


def real_noise(paths: list[Path]) -> dict[str, Any]:
    """The inverted share of real runs: per choice and run, and over all of them."""
    rows, tot_inv, tot_n = [], 0, 0
    for path in paths:
        doc = json.loads((path / "compare.json" if path.is_dir() else path).read_text())
        for label, points in run_points(doc).items():
            inv, n = inverted_share(points)
            tot_inv, tot_n = tot_inv + inv, tot_n + n
            rows.append(
                {"run": path.name, "choice": label, "probes": len(points), "inverted": inv, "pairs": n}
            )
    return {"runs": rows, "inverted_share": round(tot_inv / tot_n, 3) if tot_n else None}


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", type=Path, default=[], help="compare runs (folders or compare.json)")
    ap.add_argument("--scales", default="0.03,0.06,0.1", help="boundary widths s (log scale)")
    ap.add_argument("--process-sd", default="0,0.04,0.08", help="start-to-start sd of a process's capacity")
    ap.add_argument("--sets", type=int, default=400, help="sets of three runs per cell")
    ap.add_argument("--config", default="quick", help="the compare file whose [search] is simulated")
    ap.add_argument("--set", action="append", default=[], metavar="search.KEY=VALUE",
                    help="override a [search] setting (repeatable)")  # fmt: skip
    args = ap.parse_args(argv)
    se = load_config(args.config).search
    for item in args.set:
        key, _, value = item.partition("=")
        name = key.removeprefix("search.")
        current = getattr(se, name)
        se = replace(se, **{name: type(current)(json.loads(value))})
    out: dict[str, Any] = {"search": vars(se), "simulated": []}
    if args.runs:
        out["real"] = real_noise(args.runs)
    for s in _floats(args.scales):
        for sd in _floats(args.process_sd):
            out["simulated"].append(study(se, s, sd, args.sets))
    json.dump(out, sys.stdout, indent=1, default=str)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
