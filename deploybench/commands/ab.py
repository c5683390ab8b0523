"""`deploybench ab`: measure a base git ref and the working tree interleaved, then gate on the ratio
(``deploybench.decisions.ab``). Rule options as `deploybench gate`. ``--calibrate``: A/A rounds of the
working tree, the machine's noise floor and the change a gate of ``--gate-rounds`` rounds detects (exit 0)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from deploybench.commands.gate import add_rule_arguments, rules_from_args
from deploybench.decisions.ab import ab_gate, calibrate, run_ab
from deploybench.errors import UsageError
from deploybench.io import utc_stamp, write_json_atomic
from deploybench.loadtests.runner import ENGINE_ENV
from deploybench.paths import results_dir
from deploybench.progress import add_progress_argument, progress_from_args
from deploybench.reports.gate_render import render_calibration, render_table, write_outputs
from deploybench.vocabulary import ENGINES

# The rounds the gate trials measured good enough on a quiet 2-core machine (docs/measurements/gate-trials.md)
DEFAULT_ROUNDS = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-ref", help="git ref measured as the base (e.g. main, origin/main)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_ROUNDS,
        help="interleaved rounds per side (default %(default)s: on this project's 2-core machine, 10 rounds "
        "false-alarmed in 0 of 20 A/A trials and caught 18 of 20 slowdowns of about +13 %%; run --calibrate "
        "on your runner and take the rounds it recommends)",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="A/A: measure the working tree on both sides for --rounds rounds (10+), print the noise floor "
        "and the change a gate of --gate-rounds rounds detects on this machine (JSON: --json); exit 0",
    )
    parser.add_argument(
        "--gate-rounds",
        type=int,
        default=None,
        help="with --calibrate: the rounds the gate will use (default: --rounds)",
    )
    parser.add_argument("--repo", default=".", help="the candidate git working tree (default: .)")
    parser.add_argument("--out", default=None, help="where records go (default: results/ab/<UTC time>)")
    parser.add_argument(
        "--round-timeout-s", type=float, default=900.0, help="limit for one measurement run (default 900)"
    )
    parser.add_argument(
        "--separate-zoo", action="store_true", help="do not share the candidate's model zoo with the base"
    )
    parser.add_argument("--keep-worktree", action="store_true", help="leave the base worktree for inspection")
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        help=f"the load generator of every `deploybench load` run of the measurement (sets ${ENGINE_ENV} for "
        "both sides; default: each run's own, lean for the built-in scenarios)",
    )
    add_rule_arguments(parser)
    add_progress_argument(parser)
    parser.add_argument(
        "measure_command",
        metavar="COMMAND",
        nargs=argparse.REMAINDER,
        help="after --: the measurement, writing records into {out} (or $DEPLOYBENCH_RESULTS)",
    )


def run(args: argparse.Namespace) -> int:
    rules, confidence = rules_from_args(args)  # refuse bad rules before measuring anything
    command = list(args.measure_command)
    if command and command[0] == "--":
        command = command[1:]
    if not 1 <= args.rounds <= 100:
        raise UsageError(f"--rounds must be between 1 and 100; got {args.rounds}")
    if not args.round_timeout_s > 0:
        raise UsageError("--round-timeout-s must be positive")
    if args.calibrate:
        if args.base_ref:
            raise UsageError("--calibrate measures the working tree on both sides (A/A): drop --base-ref")
        if args.rounds < 3:
            raise UsageError("--calibrate needs at least 3 rounds (10 or more give a usable noise floor)")
        gate_rounds = args.gate_rounds if args.gate_rounds is not None else args.rounds
        if not 2 <= gate_rounds <= 100:
            raise UsageError(f"--gate-rounds must be between 2 and 100; got {gate_rounds}")
    elif args.gate_rounds is not None:
        raise UsageError("--gate-rounds goes with --calibrate")
    elif not args.base_ref:
        raise UsageError("--base-ref is required (or --calibrate for an A/A calibration)")
    if args.engine:
        os.environ[ENGINE_ENV] = args.engine  # inherited by every measurement run, base and candidate
    out_dir = Path(args.out) if args.out else results_dir() / "ab" / utc_stamp()
    sink = progress_from_args(args)  # the round and side running, and its figures (stderr)
    try:
        runs = run_ab(
            Path(args.repo),
            args.base_ref or "HEAD",
            command,
            rounds=args.rounds,
            out_dir=out_dir,
            timeout_s=args.round_timeout_s,
            share_zoo=not args.separate_zoo,
            keep_worktree=args.keep_worktree,
            same_tree=args.calibrate,
            sink=sink,
        )
    finally:
        sink.close()
    if args.calibrate:
        doc = calibrate(
            runs.rounds,
            rules,
            gate_rounds=gate_rounds,
            confidence=confidence,
            force=args.force,
            series_filter=args.series,
        )
        doc.update({"command": runs.command, "wall_s": runs.wall_s, "records": str(runs.out_dir)})
        text = render_calibration(doc)
        print(text, end="")
        if args.markdown:
            Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
            Path(args.markdown).write_text("```\n" + text + "```\n")
        if args.json_out:
            write_json_atomic(args.json_out, doc)
        write_json_atomic(runs.out_dir / "calibration.json", doc)
        return 0
    result = ab_gate(runs.rounds, rules, confidence=confidence, force=args.force, series_filter=args.series)
    result.notes.append(
        f"base {runs.base_ref} = {runs.base_commit[:12]}; candidate = working tree of "
        f"{Path(args.repo).resolve()}; records in {runs.out_dir}"
    )
    print(render_table(result), end="")
    write_outputs(result, args.markdown, args.json_out)
    write_json_atomic(
        runs.out_dir / "ab.json",
        {"base_ref": runs.base_ref, "base_commit": runs.base_commit, "command": runs.command,
         "wall_s": runs.wall_s, **result.to_dict()},
    )  # fmt: skip
    return result.exit_code
