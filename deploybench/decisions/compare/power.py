"""How large a gap compare's ranking can tell apart, and how often: the power of its tie rule.

Two choices are told apart when the 95 % Welch interval of their ratio excludes 1
(``deploybench.compare_doc.ratio_interval``, never narrower than the repeated searches' resolution floor).
With R repeats per choice and a per-repeat spread ``log_sd`` (the sd of log estimates of one choice within
one run), a true gap is told apart only some of the time. This simulates it, with compare's own interval
code: two choices a ``gap`` apart, R log-normal estimates each, ``trials`` times; the share told apart is the
power (at gap 0: the false-separation rate).

``--from`` takes compare result folders and uses their measured spread: the pooled within-choice sd of the
log estimates (every complete choice with 2 or more repeats, pooled over all the folders) and their median
floor (``--only TEXT``: only the choices whose id contains it). Usage::

    python -m deploybench.decisions.compare.power --from results/compare/<stamp>-quick --gap 0.05,0.12,0.25
    python -m deploybench.decisions.compare.power --log-sd 0.09 --floor-log 0.038 --repeats 3,5,8,15
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from deploybench.compare_doc import ChoiceResult, RateInterval, load_compare, ratio_interval
from deploybench.errors import UsageError


def pooled_log_sd(results: Sequence[ChoiceResult]) -> tuple[float, int]:
    """The pooled within-choice sd of the log repeat estimates, and its degrees of freedom (choices that
    completed with 2 or more repeats)."""
    ss, df = 0.0, 0
    for r in results:
        iv = r.interval
        if r.status != "complete" or iv is None or iv.n < 2:
            continue
        logs = [math.log(e) for e in iv.estimates_rps]
        m = sum(logs) / len(logs)
        ss += sum((x - m) ** 2 for x in logs)
        df += len(logs) - 1
    if df == 0:
        raise UsageError("no complete choice with 2 or more repeated searches: nothing to take a spread from")
    return math.sqrt(ss / df), df


def separation_rate(
    gap: float, log_sd: float, repeats: int, floor_log: float, *, trials: int = 2000, seed: int = 0
) -> float:
    """The share of ``trials`` simulated pairs, ``gap`` apart (0.12 = +12 %) with ``repeats`` log-normal
    estimates each of spread ``log_sd``, that compare's tie rule tells apart."""
    if repeats < 2 or trials < 1 or log_sd < 0 or floor_log < 0 or gap <= -1:
        raise ValueError("need repeats >= 2, trials >= 1, log_sd >= 0, floor_log >= 0 and gap > -1")
    rng = random.Random(seed)
    d = math.log1p(gap)
    told = 0
    for _ in range(trials):
        a = tuple(math.exp(d + rng.gauss(0.0, log_sd)) for _ in range(repeats))
        b = tuple(math.exp(rng.gauss(0.0, log_sd)) for _ in range(repeats))
        told += ratio_interval(RateInterval(a, floor_log), RateInterval(b, floor_log)).separated
    return told / trials


def _numbers(text: str, kind: type, what: str) -> list:
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{what}: a comma-separated list of numbers, got {text!r}") from None
    if not values:
        raise UsageError(f"{what}: empty")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploybench.decisions.compare.power", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--from", dest="dirs", nargs="+", type=Path, help="compare result folders")
    parser.add_argument("--only", default="", help="with --from: only choices whose id contains this text")
    parser.add_argument(
        "--log-sd", type=float, help="per-repeat spread (sd of log estimates), without --from"
    )
    parser.add_argument("--floor-log", type=float, default=None, help="the interval's floor (default 0.038)")
    parser.add_argument(
        "--gap", default="0,0.05,0.12,0.25", help="true gaps (0.12 = +12 %%), comma-separated"
    )
    parser.add_argument("--repeats", default="3,5,8,12,15", help="repeats per choice, comma-separated")
    parser.add_argument("--trials", type=int, default=2000, help="simulated pairs per cell (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if (args.dirs is None) == (args.log_sd is None):
            raise UsageError("give either --from FOLDER... or --log-sd X")
        gaps = _numbers(args.gap, float, "--gap")
        repeats = _numbers(args.repeats, int, "--repeats")
        if any(g <= -1 for g in gaps) or any(not 2 <= r <= 100 for r in repeats):
            raise UsageError("--gap values must be > -1 and --repeats values in 2..100")
        if not 1 <= args.trials <= 100_000:
            raise UsageError("--trials must be in 1..100000")
        if args.dirs is not None:
            results, floors = [], []
            for d in args.dirs:
                if not (d / "compare.json").is_file():
                    raise UsageError(f"{d}: no compare.json here (a `deploybench compare` result folder)")
                chosen = [r for r in load_compare(d).results if args.only in r.choice.id]
                results.extend(chosen)
                floors.extend(r.interval.floor_log for r in chosen if r.interval is not None)
            log_sd, df = pooled_log_sd(results)
            source = f"pooled over {len(args.dirs)} run(s), {df} df"
            floor = args.floor_log if args.floor_log is not None else statistics.median(floors)
        else:
            log_sd, source = args.log_sd, "given"
            floor = args.floor_log if args.floor_log is not None else 0.038
        if log_sd < 0 or floor < 0:
            raise UsageError("--log-sd and --floor-log must be >= 0")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"per-repeat spread (sd of log estimates) {log_sd:.4f} ({source}); floor {floor:.4f}; "
        f"{args.trials} trials"
    )
    print("share of pairs told apart (gap 0: false separations)")
    print("| gap | " + " | ".join(f"{r} repeats" for r in repeats) + " |")
    print("|---|" + "--:|" * len(repeats))
    for g in gaps:
        rates = [separation_rate(g, log_sd, r, floor, trials=args.trials, seed=args.seed) for r in repeats]
        print(f"| {g:+.0%} | " + " | ".join(f"{x:.0%}" for x in rates) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
