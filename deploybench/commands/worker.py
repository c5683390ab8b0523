"""`deploybench worker`: a Locust worker process (or several) for a master started by `deploybench load
--expect-workers N` on another machine (or this one), for a target that outgrows one generator machine.

    deploybench load --url http://api.internal:8000 --expect-workers 2 --master-bind 0.0.0.0:5557  # on A
    deploybench worker --master A:5557 --scenario tabular                                       # on B and C

The worker runs the same built-in scenario (or ``--locustfile``) as the master; the master assigns each
worker its share of the rate, merges their histograms exactly and writes the record. The worker runs until
the master ends the test (Locust's own worker lifecycle), at most ``--timeout`` seconds. With ``--keep`` it
serves one master run after another until ``--timeout``: `deploybench compare --expect-workers N` starts a
master on the same address for every measurement.

    deploybench compare --expect-workers 2 --master-bind 0.0.0.0:5557                             # on A
    deploybench worker --master A:5557 --scenario tabular --keep --timeout 3600                   # on B and C
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

from deploybench.commands.args import cpu_list, host_port
from deploybench.env import pinned_argv
from deploybench.errors import UsageError
from deploybench.loadtests.payloads import parse_headers
from deploybench.loadtests.runner import RUNNER_SCENARIOS, locust_env, scenario_file, user_locustfile

KEEP_MIN_RUN_S = 1.0  # --keep: a Locust worker that exits sooner never ran (e.g. a broken locustfile)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--master",
        type=host_port,
        required=True,
        metavar="HOST:PORT",
        help="the master's address (the port `deploybench load --expect-workers` bound)",
    )
    parser.add_argument("--scenario", choices=RUNNER_SCENARIOS, default="tabular", help="as the master's")
    parser.add_argument("--locustfile", help="your own Locust file (as the master's) instead of --scenario")
    parser.add_argument("--processes", type=int, default=0, help="worker processes here (0 = one)")
    parser.add_argument("--generator-cpus", type=cpu_list, help="CPU affinity of the worker(s), e.g. 2-3")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="header sent with every request (as the master's), repeatable")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=3600.0, help="stop after this many seconds")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="serve one master run after another until --timeout (for `deploybench compare "
        "--expect-workers`, which runs a master per measurement on one address)",
    )


def run(args: argparse.Namespace) -> int:
    if args.processes < 0:
        raise UsageError("--processes must be >= 0")
    if not args.timeout > 0:
        raise UsageError("--timeout must be > 0 seconds")
    file = user_locustfile(args.locustfile) if args.locustfile else scenario_file(args.scenario)
    host, port = args.master
    if port == 0:
        raise UsageError("--master needs the master's port (it is in its log and --master-port-file)")
    headers = parse_headers(args.header) or None
    cmd = [sys.executable, "-P", "-m", "locust", "-f", str(file), "--worker",
           "--master-host", host, "--master-port", str(port)]  # fmt: skip
    if args.processes:
        cmd += ["--processes", str(args.processes)]
    argv = pinned_argv(cmd, args.generator_cpus, sys.executable)
    # a SIGTERM stops the Locust worker too (SystemExit passes through the wait below), never orphans it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    deadline = time.monotonic() + args.timeout
    while True:
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=locust_env(headers))
        try:
            rc = proc.wait(timeout=max(0.0, deadline - started))
        except subprocess.TimeoutExpired:
            _stop(proc)
            if args.keep:  # the planned end of a worker that serves runs until --timeout
                return 0
            print(f"deploybench worker: stopped after --timeout {args.timeout:g} s", file=sys.stderr)
            return 1
        except BaseException:
            _stop(proc)
            raise
        # --keep: a master ended its run (or went away): wait for the next one; a worker that could not
        # even start (under a second) is a broken command, not a finished run
        if not args.keep or time.monotonic() - started < KEEP_MIN_RUN_S or time.monotonic() >= deadline:
            return rc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
