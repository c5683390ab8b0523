"""`deploybench baseline save|show`: store records as the baseline of their environment + config, or list
the store (``deploybench.decisions.gate.baseline``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from deploybench.decisions.gate.baseline import (
    DEFAULT_BASELINE,
    env_hash,
    how_to_create,
    is_store,
    render_store,
    save_baseline,
)
from deploybench.decisions.gate.matching import latest_runs, load_inputs
from deploybench.env import capture_env
from deploybench.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    save = sub.add_parser("save", help="store records as the baseline for their environment + config")
    save.add_argument("records", nargs="+", metavar="RECORDS", help="record files or folders of records")
    save.add_argument("--dir", default=DEFAULT_BASELINE, help="baseline store (default: baselines)")
    save.add_argument("--append", action="store_true", help="add to the saved runs (repeated-run baseline)")
    save.add_argument(
        "--last",
        type=int,
        default=1,
        metavar="N",
        help="per config, save the latest N runs given; 0: all (default 1)",
    )
    save.add_argument(
        "--keep",
        type=int,
        default=0,
        metavar="N",
        help="then keep only the newest N runs per environment + config (a rolling baseline; 0: all)",
    )
    show = sub.add_parser("show", help="list the stored baselines; marks this machine's environment")
    show.add_argument("--dir", default=DEFAULT_BASELINE, help="baseline store (default: baselines)")


def run(args: argparse.Namespace) -> int:
    store = Path(args.dir)
    if args.action == "save":
        if store.exists() and not store.is_dir():
            raise UsageError(f"--dir {store}: not a folder")
        if store.is_dir() and any(store.iterdir()) and not is_store(store):
            raise UsageError(f"--dir {store}: exists and is not a baseline store; choose another folder")
        records, notes = load_inputs(args.records)
        records, latest = latest_runs(records, args.last, "save")
        for note in notes + latest:
            print(note)
        written = save_baseline(records, store, append=args.append, keep=args.keep)
        for p in written:
            print(f"saved {p}")
        return 0
    if not is_store(store):
        raise UsageError(f"{store}: no baseline store here; " + how_to_create(store))
    print(render_store(store, env_hash(capture_env())), end="")
    return 0
