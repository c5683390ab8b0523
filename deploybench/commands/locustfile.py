"""`deploybench locustfile [NAME]`: print the path of a built-in Locust scenario (or of their folder), for
``locust -f "$(deploybench locustfile image)" --host ...`` with an installed deploybench."""

from __future__ import annotations

import argparse

from deploybench.loadtests.runner import RUNNER_SCENARIOS, SCENARIO_DIR, scenario_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        nargs="?",
        choices=(*RUNNER_SCENARIOS, "user"),
        help="scenario (user: the module with DeployBenchUser); without it, the folder of the scenarios",
    )


def run(args: argparse.Namespace) -> int:
    if args.name is None:
        print(SCENARIO_DIR)
    elif args.name == "user":
        print(SCENARIO_DIR / "user.py")
    else:
        print(scenario_file(args.name))
    return 0
