"""`deploybench worker`: a Locust worker process (or several) for a master started by `deploybench load
--expect-workers N` on another machine (or this one), for a target that outgrows one generator machine.

    deploybench load --url http://api.internal:8000 --expect-workers 2 --master-bind 0.0.0.0:5557  # on A
    deploybench worker --master A:5557 --scenario tabular                                       # on B and C

The worker runs the same built-in scenario (or ``--locustfile``) as the master; the master assigns each
worker its share of the rate, merges their histograms exactly and writes the record. The worker runs until
the master ends the test (Locust's own worker lifecycle), at most ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from commands.args import cpu_list, host_port
from deploybench.env import pinned_argv
from deploybench.errors import UsageError
from loadtests.payloads import parse_headers
from loadtests.runner import RUNNER_SCENARIOS, locust_env, scenario_file, user_locustfile


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
    proc = subprocess.Popen(pinned_argv(cmd, args.generator_cpus, sys.executable), env=locust_env(headers))
    try:
        return proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(15)
        print(f"deploybench worker: stopped after --timeout {args.timeout:g} s", file=sys.stderr)
        return 1
    except BaseException:
        proc.terminate()
        proc.wait(15)
        raise
