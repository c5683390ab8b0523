"""`deploybench report`: render run records as Markdown, HTML (+PNG plots), CSV and JSON
(``deploybench.reports.render``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from deploybench.paths import results_dir
from deploybench.record import load_records
from deploybench.reports.render import expand_record_paths, parse_formats, write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "records", nargs="+", help="record files (JSON) or folders of them; micro and load records"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: $DEPLOYBENCH_RESULTS/report)"
    )
    parser.add_argument(
        "--format", default="md,html", help="comma-separated: md, html, csv, json (default: md,html)"
    )
    parser.add_argument("--title", default="deploybench report", help="report title")


def run(args: argparse.Namespace) -> int:
    formats = parse_formats(args.format)
    records = load_records(list(expand_record_paths(args.records)))
    out_dir = args.out if args.out is not None else results_dir() / "report"
    written = write_report(records, out_dir, formats, title=args.title)
    for fmt in formats:
        print(f"{fmt}: {written[fmt]}")
    return 0
