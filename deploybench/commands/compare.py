"""`deploybench compare`: run a matrix of deployment choices and rank them under a P99 SLO (see
``deploybench.decisions.compare.run``); ``--report DIR`` re-renders an earlier run's report.

``--model-file`` (repeatable: one model in several formats, with the ``deploybench.commands.model_options``
options) compares your model's formats instead of the config's zoo models (add ``--model`` to keep those too);
``--url NAME=URL`` (repeatable) adds an already-running service as a choice (never started or stopped): to the
matrix when one is asked for (``-c``, a matrix override or ``--model-file``), else it is the only kind of
choice (``--url`` alone measures just the URLs, with the default file's settings). A matrix file does the same
with ``[[models]]`` and ``[[urls]]`` (``deploybench.decisions.compare.config``).

Exit codes: 0 at least one choice has a max rate under the SLO; 1 every choice failed or none met the SLO (the
report is written all the same); 2 bad input, before anything starts; 130 interrupted (the report holds what
was measured)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploybench.commands.args import csv_ints, csv_list
from deploybench.commands.model_options import add_model_file_arguments, user_model_from_args
from deploybench.compare_doc import (
    ChoiceResult,
    CompareRun,
    describe_split,
    load_compare,
    nothing_held_the_thresholds,
    nothing_met_the_slo,
)
from deploybench.decisions.compare.config import (
    SCENARIOS,
    CompareConfig,
    ModelInfo,
    UrlEntry,
    apply_overrides,
    expand,
    inspect_models,
    load_config,
    user_catalog,
    validate,
    zoo_catalog,
)
from deploybench.decisions.compare.driver import RealDriver, core_split, fetch_health, resolve_pin
from deploybench.decisions.compare.run import run_matrix
from deploybench.decisions.plan import parse_headroom, parse_price, parse_traffic
from deploybench.errors import UsageError
from deploybench.io import utc_stamp
from deploybench.paths import results_dir
from deploybench.paths import zoo_dir as default_zoo_dir
from deploybench.progress import add_progress_argument, progress_from_args
from deploybench.reports.compare_render import ranked_table_markdown, write_report
from deploybench.targets.catalog import MODELS
from deploybench.thresholds import EXIT_THRESHOLD
from deploybench.vocabulary import ENGINES, MODEL_FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        default=None,
        help="matrix file (TOML) or the name of one in configs/ (default: quick; none with --url alone)",
    )
    g = parser.add_argument_group("matrix overrides (comma-separated lists replace the config's axis)")
    g.add_argument("--framework", type=csv_list, help="e.g. fastapi,flask")
    g.add_argument(
        "--server", type=csv_list, help="gunicorn-sync, gunicorn-gthread, uvicorn, gunicorn-uvicorn"
    )
    g.add_argument("--model", type=csv_list, help="e.g. iris-rf,iris-mlp")
    g.add_argument("--format", type=csv_list, help=", ".join(MODEL_FORMATS))
    g.add_argument("--workers", type=csv_ints, help="e.g. 1,2")
    g.add_argument("--threads", type=csv_ints, help="gunicorn-gthread threads, e.g. 1,4")
    g.add_argument(
        "--handler", type=csv_list, help="FastAPI handler styles: auto, inline, threadpool (Flask: auto only)"
    )
    g.add_argument("--intra-op-threads", type=csv_ints, help="model runtime threads per worker, e.g. 1,2")
    g.add_argument("--inter-op-threads", type=csv_ints, help="onnxruntime inter-op threads (ONNX formats)")
    g.add_argument(
        "--ort-opt-level", type=csv_list, help="onnxruntime graph optimisation: disable, basic, extended, all"
    )
    g.add_argument(
        "--max-batch-size",
        type=csv_ints,
        help="server-side dynamic batching, rows per batch (0: off), e.g. 0,8; Flask needs gunicorn-gthread",
    )
    g.add_argument(
        "--max-queue-delay-us", type=csv_ints, help="how long a batch waits for more requests, e.g. 500,2000"
    )
    m = parser.add_argument_group("measurement overrides")
    m.add_argument("--slo-ms", type=float, help="P99 SLO in milliseconds")
    m.add_argument(
        "--threshold",
        action="append",
        default=None,
        metavar="EXPR",
        help='an absolute limit on each choice, repeatable (replaces [slo] thresholds): "p99<20ms", '
        '"error_ratio<1%%" at the common rate, "throughput>500" on the max rate under the SLO; a choice '
        "crossing one is not recommended, and compare exits 3 when every choice that met the SLO crossed one",
    )
    m.add_argument(
        "--scenario",
        choices=SCENARIOS,
        help="requests every choice is sent (default: the config's, auto: from the models' or URLs' task)",
    )
    m.add_argument("--rate", type=float, help="the common open-loop rate (rps) every choice is measured at")
    c = parser.add_argument_group("capacity plan (the report's capacity section; see deploybench plan)")
    c.add_argument("--traffic", help="a peak traffic with its unit (2000rps, 2k/s, 7.2M/h): replicas, cost")
    c.add_argument("--headroom", help="share of each replica's capacity kept free, e.g. 30%%")
    c.add_argument("--core-hour-price", help="price of one core for one hour, e.g. 0.04: adds costs")
    m.add_argument("--users", type=int, help="closed-loop users for warm-up and stability windows")
    m.add_argument(
        "--sweep-users",
        metavar="POINTS",
        help="a concurrency sweep per choice (closed loop): 1,2,4,8,16 or a range 1:16 / 1:16:x2; the report "
        "shows each curve and its knee (the point of max throughput / P99)",
    )
    m.add_argument("--sweep-rates", metavar="POINTS", help="a rate sweep per choice (open loop): 100,200")
    m.add_argument("--step-s", type=float, help="measured seconds per saturation-search step")
    m.add_argument("--max-probes", type=int, help="rates tried per choice by the coarse saturation search")
    m.add_argument("--repeats", type=int, help="repeated searches per choice (0: the coarse search only)")
    pin = m.add_mutually_exclusive_group()
    pin.add_argument(
        "--pin",
        action="store_true",
        default=None,
        help="server and generator on cores of their own (2 CPUs: server 1, generator 0; default: the "
        'config\'s, "auto": when 2 or more CPUs are usable)',
    )
    pin.add_argument("--no-pin", dest="pin", action="store_false", help="never pin")
    m.add_argument(
        "--engine",
        choices=ENGINES,
        help="load generator (default: the config's, lean): lean costs ~1/3-1/4 of Locust's CPU per request, "
        "so a fast target is measured, not the generator",
    )
    m.add_argument(
        "--expect-workers",
        type=int,
        metavar="N",
        help="remote load: every run is a Locust master that waits for N `deploybench worker --keep --master "
        "HOST:PORT` processes (implies --engine locust)",
    )
    m.add_argument(
        "--master-bind",
        metavar="HOST:PORT",
        help="with --expect-workers: the address the master binds, a fixed port (default 127.0.0.1:5557; "
        "0.0.0.0:5557 for workers on other machines)",
    )
    parser.add_argument("--zoo", type=Path, default=None, help="model zoo folder (default: artifacts/zoo)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: results/compare/<stamp>-<name>)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the expanded matrix and skipped combos, run nothing"
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        default=None,
        help="only re-render the report of an earlier compare folder (or its compare.json)",
    )
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="no progress lines (implies --progress off)"
    )
    add_progress_argument(parser)
    parser.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="an already-running service as a choice (e.g. current=http://127.0.0.1:8000), measured and "
        "ranked like the others but never started or stopped; repeatable. Alone, compare measures only the "
        "URLs (with the default config's SLO, measurement and search settings); with -c, a matrix "
        "override or --model-file, they are added to that matrix",
    )
    add_model_file_arguments(parser, several=True)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "matrix.framework": args.framework,
        "matrix.server": args.server,
        "matrix.model": args.model,
        "matrix.format": args.format,
        "matrix.workers": args.workers,
        "matrix.threads": args.threads,
        "matrix.handler": args.handler,
        "matrix.intra_op_threads": args.intra_op_threads,
        "matrix.inter_op_threads": args.inter_op_threads,
        "matrix.ort_opt_level": args.ort_opt_level,
        "matrix.max_batch_size": args.max_batch_size,
        "matrix.max_queue_delay_us": args.max_queue_delay_us,
        "slo.p99_ms": args.slo_ms,
        "slo.thresholds": args.threshold,
        "plan.traffic_rps": parse_traffic(args.traffic) if args.traffic else None,
        "plan.headroom": parse_headroom(args.headroom) if args.headroom else None,
        "plan.core_hour_price": parse_price(args.core_hour_price) if args.core_hour_price else None,
        "measure.scenario": args.scenario,
        "measure.common_rate_rps": args.rate,
        "measure.users": args.users,
        "measure.sweep_users": args.sweep_users,
        "measure.sweep_rates": args.sweep_rates,
        "measure.pin": args.pin,
        "measure.engine": "locust" if args.expect_workers and args.engine is None else args.engine,
        "measure.expect_workers": args.expect_workers,
        "measure.master_bind": args.master_bind,
        "search.step_s": args.step_s,
        "search.max_probes": args.max_probes,
        "search.repeats": args.repeats,
    }


def parse_url_choice(text: str) -> UrlEntry:
    name, sep, url = text.partition("=")
    if not sep or not name.strip() or not url.strip():
        raise UsageError(f"--url expects NAME=URL (e.g. current=http://127.0.0.1:8000), got {text!r}")
    return UrlEntry(name.strip(), url.strip())


# The flags that ask for a matrix of targets to start (with -c and --model-file); --url without any of them
# measures only the URLs.
MATRIX_FLAGS = ("framework", "server", "model", "format", "workers", "threads", "handler", "intra_op_threads",
                "inter_op_threads", "ort_opt_level", "max_batch_size", "max_queue_delay_us")  # fmt: skip


def asks_for_matrix(args: argparse.Namespace) -> bool:
    """``-c``, a matrix override or ``--model-file``: compare runs a matrix (``--url`` choices join it)."""
    return (
        args.config is not None
        or bool(args.model_file)
        or any(getattr(args, flag) is not None for flag in MATRIX_FLAGS)
    )


def urls_only(cfg: CompareConfig) -> CompareConfig:
    """``cfg`` without its matrix: only the services given by ``--url`` are measured (none is started), with
    ``cfg``'s SLO, measurement and search settings."""
    cfg.description = (
        f"The running services given by --url, measured with the {cfg.name} config's SLO, measurement and "
        "search settings; compare started no target."
    )
    cfg.name, cfg.source = "urls", "--url"
    cfg.matrix.model = []
    cfg.models = []
    return cfg


def resolve_config(args: argparse.Namespace) -> CompareConfig:
    """The config a compare run measures: ``-c`` (default: the built-in quick) with the command line's
    overrides, ``--model-file`` and ``--url`` choices added; ``--url`` alone (``asks_for_matrix`` false):
    the URLs only."""
    cfg = apply_overrides(load_config(args.config), _overrides(args))
    if args.url and not asks_for_matrix(args):
        cfg = urls_only(cfg)
    return add_cli_choices(cfg, args)


def add_cli_choices(cfg: CompareConfig, args: argparse.Namespace) -> CompareConfig:
    """``--model-file`` (your model; replaces the zoo models unless --model is given) and ``--url``."""
    um = user_model_from_args(args)
    if um is not None:
        if cfg.user_model(um.name) is not None:
            raise UsageError(f"--model-file: the config already has a model named {um.name} (--model-name)")
        cfg.models.append(um)
        cfg.matrix.model = [*(args.model or []), um.name]
    cfg.urls.extend(parse_url_choice(text) for text in args.url)
    validate(cfg)
    return cfg


def _progress(quiet: bool) -> Callable[[str], None]:
    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    return say


def progress_line(r: ChoiceResult, what: str, repeats: int) -> str:
    """One line per pass of a choice (its repeats are interleaved in time with the other choices') and one
    when it is ``done``: the interval only then (before, it would be from fewer repeats than planned)."""
    mx = "-" if r.max_rps is None else f"{r.max_rps:.1f} rps"
    iv = r.interval
    if what != "done":
        n = f" ({iv.n} of {repeats} repeats)" if iv is not None else ""
        return f"  {r.choice.id}: {what} done, max under SLO so far {mx}{n}"
    if iv is not None:
        mx += f" (95% CI {iv.lo_rps:.1f}-{iv.hi_rps:.1f}; {iv.n} repeats)"
    why = f" ({r.error.splitlines()[0]})" if r.error else ""
    return f"  {r.choice.id}: {r.status}, max under SLO {mx}, {r.wall_s or 0:.0f} s{why}"


def write_compare_report(run: CompareRun, out_dir: Path) -> list[Path]:
    return write_report(run, out_dir)


def run(args: argparse.Namespace) -> int:
    say = _progress(args.quiet)
    if args.report is not None:
        compare = load_compare(args.report)
        folder = args.report if args.report.is_dir() else args.report.parent
        for p in write_compare_report(compare, folder):
            print(p)
        return 0

    cfg = resolve_config(args)
    infos = inspect_models(cfg)  # a bad model file: exit 2 before anything starts
    catalog: dict[str, ModelInfo] = {**zoo_catalog(), **user_catalog(infos)}
    url_tasks = {u.name: (fetch_health(u.url) or {}).get("task") for u in cfg.urls}
    choices, skipped, scenario = expand(cfg, catalog, url_tasks)
    if args.dry_run:
        print(f"{cfg.name}: {len(choices)} choice(s), scenario {scenario}, P99 SLO {cfg.slo.p99_ms:g} ms")
        for c in choices:
            print(f"  {c.id}" + (f" ({c.url}, not started by compare)" if c.external else ""))
        for s in skipped:
            print(f"  skipped {s.combo}: {s.reason}")
        return 0
    cfg.measure.pin = resolve_pin(cfg.measure.pin)  # "auto" -> what this machine allows (recorded)
    zoo = args.zoo or default_zoo_dir()
    if any(c.model in MODELS for c in choices) and not (zoo / "manifest.json").is_file():
        raise UsageError(f"{zoo}: no model zoo here (run `deploybench build` first, or pass --zoo)")

    out_dir = args.out or results_dir() / "compare" / f"{utc_stamp()}-{cfg.name}"
    pinned = "not pinned"
    if cfg.measure.pin:
        pinned = "pinned: " + describe_split(*core_split(os.sched_getaffinity(0)))
        if any(c.workers > 1 for c in choices):
            pinned += " (one server core per worker, as many for the generator)"
    pinned += f"; {cfg.measure.engine} load generator"
    if cfg.measure.expect_workers:
        pinned += f" (master on {cfg.measure.master_bind} for {cfg.measure.expect_workers} remote workers)"
    say(f"compare {cfg.name}: {len(choices)} choice(s), {pinned} -> {out_dir}")
    for s in skipped:
        say(f"  skipped {s.combo}: {s.reason}")
    live = progress_from_args(args)  # which choice and probe runs, and the running load's figures
    driver = RealDriver(cfg, scenario, zoo, out_dir / "_runner", model_infos=infos, progress=live,
                        choices=choices)  # fmt: skip

    def progress(r: ChoiceResult, what: str) -> None:
        say(progress_line(r, what, cfg.search.repeats))

    interrupted = False
    try:
        compare = run_matrix(cfg, choices, skipped, scenario, driver, out_dir, on_progress=progress)
    except KeyboardInterrupt:
        interrupted = True
        compare = load_compare(out_dir)
    finally:
        live.close()
    paths = write_compare_report(compare, out_dir)
    print(ranked_table_markdown(compare))
    for p in paths:
        print(p)
    if interrupted:
        raise KeyboardInterrupt
    if (why := nothing_met_the_slo(compare.results)) is not None:
        print(f"deploybench compare: {why} (exit 1)", file=sys.stderr)
        return 1
    if (why := nothing_held_the_thresholds(compare.results)) is not None:
        print(f"deploybench compare: {why} (exit {EXIT_THRESHOLD})", file=sys.stderr)
        return EXIT_THRESHOLD
    return 0
