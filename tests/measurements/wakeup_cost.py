"""What one wake-up of a sleeping process costs on this machine: the CPU time (user + system) per wake of
a loop that sleeps until a deadline ``--gap-us`` ahead, by ``time.sleep`` and by the lean engine's timerfd
timer under uvloop. An open-loop generator pays it about once per request at moderate rates.

    python -m tests.measurements.wakeup_cost [--gap-us 500] [--wakes 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import uvloop

from deploybench.loadtests.lean import PreciseTimer


def cpu_s() -> float:
    return time.process_time()  # CLOCK_PROCESS_CPUTIME_ID: the scheduler's exact account, not 10 ms ticks


def sleep_loop(gap_s: float, wakes: int) -> float:
    start = cpu_s()
    for _ in range(wakes):
        time.sleep(gap_s)
    return (cpu_s() - start) / wakes


async def timerfd_loop(gap_ns: int, wakes: int) -> float:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = wakes

    def fired() -> None:
        nonlocal left
        left -= 1
        if left:
            timer.at(time.perf_counter_ns() + gap_ns)
        else:
            done.set_result(None)

    timer = PreciseTimer(loop, fired)
    start = cpu_s()
    timer.at(time.perf_counter_ns() + gap_ns)
    await done
    timer.close()
    return (cpu_s() - start) / wakes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.measurements.wakeup_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--gap-us", type=float, default=500.0)
    p.add_argument("--wakes", type=int, default=4000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    rows = []
    for _ in range(args.rounds):
        sleep = sleep_loop(args.gap_us / 1e6, args.wakes)
        timerfd = uvloop.run(timerfd_loop(int(args.gap_us * 1000), args.wakes))
        rows.append({"sleep_us_per_wake": round(1e6 * sleep, 1), "timerfd_us_per_wake": round(1e6 * timerfd)})
    json.dump({"gap_us": args.gap_us, "wakes": args.wakes, "rounds": rows}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
