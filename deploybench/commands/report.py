"""`deploybench report`: render run records as Markdown, HTML (+PNG plots), CSV and JSON
(``deploybench.reports.render``), or one sweep (its folder or ``sweep.json``: the points' table, the knee and
the latency-throughput chart, ``deploybench.reports.sweep_render``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from deploybench.errors import UsageError
from deploybench.paths import results_dir
from deploybench.record import load_records
from deploybench.reports.render import expand_record_paths, parse_formats, write_report
from deploybench.reports.sweep_render import write_sweep_report
from deploybench.sweep import load_sweep, sweep_path

DEFAULT_TITLE = "deploybench report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "records",
        nargs="+",
        help="record files (JSON) or folders of them; micro and load records; or one sweep (its folder or "
        "sweep.json, from `deploybench load --users 1,2,4` / `--rate 100,200`)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: $DEPLOYBENCH_RESULTS/report)"
    )
    parser.add_argument(
        "--format", default="md,html", help="comma-separated: md, html, csv, json (default: md,html)"
    )
    parser.add_argument("--title", default=DEFAULT_TITLE, help="report title")


def run(args: argparse.Namespace) -> int:
    formats = parse_formats(args.format)
    out_dir = args.out if args.out is not None else results_dir() / "report"
    sweeps = [p for p in (sweep_path(r) for r in args.records) if p is not None]
    if sweeps:
        if len(args.records) != 1:
            raise UsageError("a sweep is reported on its own: give one sweep folder (or sweep.json) alone")
        title = args.title if args.title != DEFAULT_TITLE else "deploybench sweep"
        written = write_sweep_report(load_sweep(sweeps[0]), out_dir, formats, title=title)
    else:
        records = load_records(list(expand_record_paths(args.records)))
        written = write_report(records, out_dir, formats, title=args.title)
    for fmt in formats:
        print(f"{fmt}: {written[fmt]}")
    return 0
