"""`deploybench bench`: run the in-process micro-benchmarks (``deploybench.bench.run``), write their records
and a report (``deploybench.reports.render``). ``--model-file`` (repeatable: the same model in several
formats) benchmarks your model's files like zoo artifacts (alone, or with the zoo models named by
``--models``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from deploybench.bench.profiles import PROFILES, select_profile
from deploybench.bench.run import run_bench
from deploybench.bench.suite import UserBenchModel, check_selection
from deploybench.commands.model_options import add_model_file_arguments, user_model_from_args
from deploybench.io import parse_csv
from deploybench.paths import results_dir, zoo_dir
from deploybench.progress import Ticker, add_progress_argument, make_progress, resolve_mode
from deploybench.reports.render import parse_formats, write_report
from deploybench.targets.catalog import MODELS, load_manifest
from deploybench.targets.modelfile import inspect_user_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        choices=list(PROFILES),
        default="quick",
        help="; ".join(f"{p.name}: {p.description}" for p in PROFILES.values()),
    )
    parser.add_argument("--full", action="store_true", help="same as --profile full")
    parser.add_argument("--models", default="", help="comma-separated models (default: the profile's)")
    parser.add_argument("--formats", default="", help="comma-separated formats (default: every format)")
    parser.add_argument(
        "--zoo", type=Path, default=None, help="zoo folder (default: $DEPLOYBENCH_ZOO or artifacts/zoo)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: $DEPLOYBENCH_RESULTS/bench)"
    )
    parser.add_argument("--report-format", default="md,html", help="report formats (default: md,html)")
    parser.add_argument("--no-report", action="store_true", help="write the records only")
    add_model_file_arguments(parser, several=True)
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    profile_name = "full" if args.full else args.profile
    models = parse_csv(args.models)
    formats = parse_csv(args.formats)
    user: dict[str, UserBenchModel] = {}
    um = user_model_from_args(args)
    if um is not None:  # load + inspect here: a bad file is a one-line error (exit 2) before pytest starts
        info, _ = inspect_user_model(um)
        user[um.name] = UserBenchModel.from_info(um, info)
        models = [*models, um.name]
    profile = select_profile(profile_name, models)
    check_selection(profile, tuple(formats) or None, user)
    report_formats = [] if args.no_report else parse_formats(args.report_format)
    zoo = (args.zoo if args.zoo is not None else zoo_dir()).resolve()
    if any(m in MODELS for m in profile.models):
        load_manifest(zoo)  # ArtifactError (a UsageError) when the zoo is missing: "run deploybench build"
    out = args.out if args.out is not None else results_dir() / "bench"

    # the pytest child writes its own lines to the terminal: a live line would be drawn over them, so bench's
    # progress is plain lines (elapsed time, on stderr) on a terminal too
    mode = resolve_mode(args.progress)
    sink = make_progress("plain" if mode == "live" else mode)
    sink.phase(f"bench {profile.name}: pytest-benchmark running")
    try:
        with Ticker(sink):
            result = run_bench(
                profile, models, formats, zoo, out, say=lambda msg: print(msg, flush=True), user_models=user
            )
    finally:
        sink.close()
    print(
        f"deploybench bench: {len(result.records)} records in {out}, pytest-benchmark JSON {result.json_path}"
    )
    if report_formats:
        written = write_report(
            result.records, out, report_formats, title=f"deploybench micro-benchmarks ({profile.name})"
        )
        for fmt, path in written.items():
            print(f"deploybench bench: {fmt} report {path}")
    print(f"deploybench bench: wall time {result.wall_s:.0f} s, status {result.status}")
    if result.status == "interrupted":
        raise KeyboardInterrupt
    return 0 if result.status == "complete" else 1
