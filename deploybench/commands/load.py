"""`deploybench load`: start a target (or use --url of any HTTP service), run a Locust scenario headless,
write a run record (``deploybench.loadtests.runner``); prints one line per endpoint and the record's path.
Exit codes: 0 done, 1 the run failed, 2 bad input (before any load), 3 a ``--threshold`` was crossed.

Sweeps: ``--users 1,2,4,8`` (or a range ``1:16``, ``1:16:x2``) runs a closed-loop concurrency sweep,
``--rate 100,200,400`` (with ``--load-model constant|poisson``) an open-loop rate sweep: one target start,
one measured run per point, a sweep folder with one record per point and ``sweep.json`` (the curve and its
knee, ``deploybench.sweep``); prints one line per point and the knee. One value is one ordinary run.

Your own API: ``--url`` with ``--path``, ``--method``, ``--header`` (repeatable) and ``--payload`` (a JSON
lines file or a folder of images) runs the ``api`` scenario; ``--locustfile`` runs your own
DeployBenchUser scenario. Relative paths are relative to the current working directory.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from deploybench.commands.args import cpu_list, host_port
from deploybench.commands.model_options import add_model_file_arguments, model_file_options
from deploybench.commands.serve import add_runtime_arguments
from deploybench.errors import UsageError
from deploybench.loadtests.payloads import parse_headers
from deploybench.loadtests.runner import (
    API_OPTIONS,
    RUNNER_SCENARIOS,
    format_summary,
    run_load_to_file,
    run_sweep,
)
from deploybench.progress import PendingPhase, Progress, add_progress_argument, progress_from_args
from deploybench.record import RunRecord
from deploybench.sweep import Sweep, parse_points, point_line
from deploybench.targets.serve import TargetConfig, inspect_model_file
from deploybench.thresholds import EXIT_THRESHOLD, parse_thresholds
from deploybench.thresholds import apply as apply_thresholds
from deploybench.vocabulary import ENGINES, FRAMEWORKS, HANDLER_STYLES, LOAD_MODELS, MODEL_FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    t = parser.add_argument_group("target (start one, or give --url of a running server)")
    t.add_argument(
        "--url",
        help="an already running HTTP service, e.g. http://127.0.0.1:8000 or https://host/prefix "
        "(checked to accept connections before the load starts)",
    )
    t.add_argument(
        "--framework",
        choices=FRAMEWORKS,
        help="the target's web framework (a target needs --framework, --server, and --model/--format or "
        "--model-file)",
    )
    t.add_argument("--server", help="gunicorn-sync | gunicorn-gthread (flask); uvicorn | gunicorn-uvicorn")
    t.add_argument(
        "--handler",
        choices=HANDLER_STYLES,
        help="fastapi: inline (inference in the event loop), threadpool, or auto (default: by the model)",
    )
    t.add_argument("--model", help="iris-rf, iris-mlp, resnet18, resnet50")
    t.add_argument("--format", help=", ".join(MODEL_FORMATS))
    t.add_argument("--workers", type=int, default=1, help="the target's worker processes")
    t.add_argument("--threads", type=int, default=1, help="threads per worker (gunicorn-gthread)")
    t.add_argument("--intra-op-threads", type=int, default=1, help="model threads per worker")
    add_runtime_arguments(t)
    t.add_argument("--cpus", type=cpu_list, help="CPU affinity of the target, e.g. 1 or 0-1")
    t.add_argument("--zoo", help="model zoo folder (default artifacts/zoo)")
    t.add_argument(
        "--inject-delay-ms",
        type=float,
        default=0.0,
        help="a deliberate extra service time in the target (e.g. to check that a gate catches it)",
    )
    t.add_argument(
        "--inject-stall-at-s",
        type=float,
        metavar="AT",
        help="a deliberate whole-process stall in the target (e.g. to see it in the over-time plots): each "
        "worker stalls once, at the first request AT s or more after its first one (needs --inject-stall-s)",
    )
    t.add_argument(
        "--inject-stall-s",
        type=float,
        default=0.0,
        metavar="FOR",
        help="how long the target's injected stall lasts: it answers nothing for FOR s (needs "
        "--inject-stall-at-s)",
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--scenario",
        choices=RUNNER_SCENARIOS,
        help="tabular (default), image, health, oip (the Open Inference Protocol v2 infer route of any OIP "
        "server: the model name from --model, else the target's /health), or api (your own endpoint: the "
        "default when --path, --method or --payload is given)",
    )
    load.add_argument("--duration", type=float, default=10.0, help="measured seconds (after warm-up)")
    load.add_argument("--warmup", type=float, default=2.0, help="seconds excluded from the measurement")
    load.add_argument(
        "--users",
        metavar="N|LIST|RANGE",
        help="closed loop: users; open loop: senders (default derived). A list (1,2,4,8) or a range "
        "(START:END[:STEP], e.g. 1:16:4, or START:END:xFACTOR, e.g. 1:16:x2) runs a concurrency sweep",
    )
    load.add_argument(
        "--rate",
        metavar="RPS|LIST|RANGE",
        help="open loop: arrival rate, requests/s. A list (100,200,400) or a range (100:400:100, "
        "100:800:x2) runs a rate sweep",
    )
    load.add_argument(
        "--load-model",
        choices=LOAD_MODELS,
        default="closed",
        help="closed: --users send back-to-back; constant / poisson: an open loop at --rate, evenly spaced / "
        "Poisson arrivals",
    )
    load.add_argument("--max-lag", type=float, default=5.0, help="open loop: drop sends later than this (s)")
    load.add_argument(
        "--engine",
        choices=ENGINES,
        help="load generator: lean (default for the built-in scenarios and your --url/--path runs: "
        "~1/3-1/4 of Locust's CPU per request) or locust (the only one for --locustfile)",
    )
    load.add_argument(
        "--processes",
        type=int,
        default=0,
        help="generator processes: lean engine processes, or Locust worker processes (0 = one process)",
    )
    load.add_argument("--generator-cpus", type=cpu_list, help="CPU affinity of the generator, e.g. 0")
    dist = parser.add_argument_group(
        "beyond one machine (Locust master/worker): this run is the master, `deploybench worker` the workers"
    )
    dist.add_argument(
        "--expect-workers",
        type=int,
        default=0,
        help="wait (up to 5 min) for N remote workers, then run the load on them (implies --engine locust)",
    )
    dist.add_argument(
        "--master-bind",
        type=host_port,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="where the master accepts workers (default 127.0.0.1:0, a free port; 0.0.0.0:5557 for other "
        "machines)",
    )
    dist.add_argument("--master-port-file", help="write the port the master bound to this file")
    load.add_argument("--seed", type=int, default=0, help="seed of the request payloads and Poisson arrivals")
    load.add_argument("--batch-size", type=int, help="tabular: rows per request")
    load.add_argument("--payload-mix", help="image: e.g. multipart=3,base64=1")
    load.add_argument("--image-size", help="image: WIDTHxHEIGHT (default 224x224)")
    load.add_argument("--out", help="results folder (default ./results)")
    load.add_argument("--record", help="record path (default OUT/RUN_ID.json)")
    api = parser.add_argument_group("your own API (scenario api; --header works with every scenario)")
    api.add_argument("--path", help="request path appended to the URL, e.g. /v1/predict (default /)")
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="EXPR",
        help='an absolute limit on every endpoint, repeatable: "p99<50ms", "p95<=800us", "error_ratio<1%%", '
        f'"throughput>200"; a crossing is a warning in the record and exit code {EXIT_THRESHOLD}',
    )
    api.add_argument("--method", help="HTTP method (default POST with --payload, else GET)")
    api.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="header sent with every request, repeatable (e.g. an auth token); the record keeps names only",
    )
    api.add_argument(
        "--payload",
        help="a JSON lines file (one request body per line, sent as JSON) or a folder of images (each sent "
        "as a multipart upload); cycled in order",
    )
    api.add_argument("--multipart-field", help="form field of the image uploads (default file)")
    api.add_argument(
        "--locustfile",
        help="your own Locust file (users subclass deploybench.loadtests.user.DeployBenchUser) "
        "instead of --scenario",
    )
    add_model_file_arguments(parser)
    add_progress_argument(parser)


def _target_from_args(args: argparse.Namespace) -> Any:
    file_options = model_file_options(args)  # {} without --model-file; a bad file is a UsageError (exit 2)
    if args.url:
        tuned = (
            args.max_batch_size
            or args.max_queue_delay_us
            or args.inter_op_threads != 1
            or args.ort_opt_level != "all"
        )
        if args.framework or args.server or args.format or args.handler or file_options or tuned:
            raise UsageError(
                "give either --url or target options (--framework/--server/--format/--handler/--model-file, "
                "--max-batch-size/--max-queue-delay-us/--inter-op-threads/--ort-opt-level), not both"
            )
        return args.url
    needed = ("framework", "server") if file_options else ("framework", "server", "model", "format")
    missing = [o for o in needed if not getattr(args, o)]
    if missing:
        raise UsageError(
            "no target: give --url, or --framework, --server and --model/--format or --model-file "
            f"(missing: {missing})"
        )
    kwargs: dict[str, Any] = dict(
        framework=args.framework, server=args.server, model=args.model, format=args.format,
        workers=args.workers, threads=args.threads, intra_op_threads=args.intra_op_threads, cpus=args.cpus,
        inject_delay_ms=args.inject_delay_ms, handler=args.handler or "auto",
        inject_stall_at_s=args.inject_stall_at_s, inject_stall_s=args.inject_stall_s,
        inter_op_threads=args.inter_op_threads, ort_opt_level=args.ort_opt_level,
        max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us,
    )  # fmt: skip
    if file_options:
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        kwargs.update(file_options)
    if args.zoo:
        kwargs["zoo_dir"] = Path(os.path.abspath(args.zoo))  # the caller's; the record keeps it absolute
    try:
        config = TargetConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad target options: {exc}") from None
    config.validate()  # a combination that cannot be served: exit 2 before anything starts or prints
    if config.model_file is not None:
        info = inspect_model_file(config)  # a bad file, shape or refused pickle: exit 2 before any start
        if args.scenario is None and args.locustfile is None and not _api_options_given(args):
            args.scenario = info.task  # your model's task: tabular or image
    return config


def _api_options_given(args: argparse.Namespace) -> list[str]:
    return [o for o in API_OPTIONS if getattr(args, o) is not None]


def _scenario(args: argparse.Namespace) -> str | None:
    """The scenario asked for: --locustfile (None), --scenario, else api when an api option is given."""
    api_given = _api_options_given(args)
    if args.locustfile:
        clash = [f"--{o.replace('_', '-')}" for o in api_given] + (["--scenario"] if args.scenario else [])
        if clash:
            raise UsageError(f"--locustfile runs your own scenario: drop {', '.join(clash)}")
        return None
    scenario = args.scenario or ("api" if api_given else "tabular")
    if api_given and scenario != "api":
        names = ", ".join(f"--{o.replace('_', '-')}" for o in api_given)
        raise UsageError(f"{names}: only for --scenario api (your own endpoint), not {scenario}")
    return scenario


def _sweep_axis(args: argparse.Namespace) -> tuple[str, list[float]] | None:
    """Parse --users and --rate (each one value, a list or a range): the sweep (axis, points) asked for, or
    None for one run (then ``args.users``/``args.rate`` hold the single values). UsageError on bad input."""
    users = None if args.users is None else parse_points(str(args.users), "users")
    rate = None if args.rate is None else parse_points(str(args.rate), "rate")
    args.users = None if users is None else int(users[0])
    args.rate = None if rate is None else float(rate[0])
    if users is not None and rate is not None and len(users) > 1 and len(rate) > 1:
        raise UsageError("sweep one axis at a time: a list or range for --users or for --rate, not both")
    if users is not None and len(users) > 1:
        if args.load_model != "closed":
            raise UsageError(
                f"a --users sweep is a closed-loop sweep; with --load-model {args.load_model} sweep --rate"
            )
        return "users", users
    if rate is not None and len(rate) > 1:
        if args.load_model == "closed":
            raise UsageError("a --rate sweep is an open-loop sweep: add --load-model constant or poisson")
        return "rate", rate
    return None


def _check_sweep_args(args: argparse.Namespace) -> None:
    refused = [
        (args.record, "--record (a sweep writes one record per point into its folder: use --out)"),
        (args.threshold, "--threshold (the points past the knee are meant to cross limits)"),
        (args.expect_workers, "--expect-workers (a sweep runs on local generators)"),
        (args.master_port_file, "--master-port-file"),
    ]
    for given, what in refused:
        if given:
            raise UsageError(f"a sweep cannot take {what}")


def run(args: argparse.Namespace) -> int:
    sweep_axis = _sweep_axis(args)  # bad lists: exit 2 before anything starts
    if sweep_axis is not None:
        _check_sweep_args(args)
    limits = parse_thresholds(args.threshold)  # a malformed one: exit 2 before anything starts
    target = _target_from_args(args)
    scenario = _scenario(args)
    headers = parse_headers(args.header)
    opts = {
        k: v
        for k, v in (
            ("batch_size", args.batch_size),
            ("payload_mix", args.payload_mix),
            ("image_size", args.image_size),
            *((o, getattr(args, o)) for o in API_OPTIONS),
        )
        if v is not None
    }
    where = args.url or f"{args.framework} {args.server} {args.model or ''} {args.format or ''}".strip()
    # announced once the run starts (not when it is refused for bad input)
    what = scenario or Path(args.locustfile).name
    progress = PendingPhase(progress_from_args(args), f"load {what} ({args.load_model}) -> {where}")
    if sweep_axis is not None:
        return _run_sweep(args, target, scenario, headers, opts, progress, *sweep_axis)
    try:
        record, path = _run_load(args, target, scenario, headers, opts, progress)
    finally:
        progress.close()
    outcomes, held = [], True
    if limits:
        outcomes, held = apply_thresholds(record, limits)
        record.save(path)
    print(format_summary(record))
    for outcome in outcomes:
        print(f"  threshold {outcome.describe()}")
    print(f"record: {path}")
    if record.status != "complete":
        return 1
    return 0 if held else EXIT_THRESHOLD


def _run_load(
    args: argparse.Namespace, target: Any, scenario: str | None, headers: dict[str, str],
    opts: dict[str, Any], progress: Progress,
) -> tuple[RunRecord, Path]:  # fmt: skip
    return run_load_to_file(
        target, scenario or "", duration_s=args.duration, warmup_s=args.warmup, users=args.users,
        rate_rps=args.rate, load_model=args.load_model, results_dir=args.out, record_path=args.record,
        generator_cpus=args.generator_cpus, processes=args.processes, model=args.model if args.url else None,
        seed=args.seed, max_lag_s=args.max_lag, scenario_options=opts, locustfile=args.locustfile,
        headers=headers or None, check_url=True, engine=args.engine, expect_workers=args.expect_workers,
        master_bind=args.master_bind, master_port_file=args.master_port_file, progress=progress,
    )  # fmt: skip


def _run_sweep(
    args: argparse.Namespace, target: Any, scenario: str | None, headers: dict[str, str],
    opts: dict[str, Any], progress: Progress, axis: str, values: list[float],
) -> int:  # fmt: skip
    try:
        sweep, path = run_sweep(
            target, scenario or "", axis=axis, values=values, duration_s=args.duration, warmup_s=args.warmup,
            users=args.users if axis == "rate" else None, load_model=args.load_model, results_dir=args.out,
            generator_cpus=args.generator_cpus, processes=args.processes,
            model=args.model if args.url else None, seed=args.seed, max_lag_s=args.max_lag,
            scenario_options=opts, locustfile=args.locustfile, headers=headers or None, check_url=True,
            engine=args.engine, progress=progress,
        )  # fmt: skip
    finally:
        progress.close()
    print(format_sweep(sweep))
    print(f"records: {path.parent}")
    print(f"sweep: {path}")
    complete = sweep.status == "complete" and all(p.status == "complete" for p in sweep.points)
    return 0 if complete else 1


def format_sweep(sweep: Sweep) -> str:
    """The console summary of a sweep: a heading, one line per point, the knee."""
    asked = sweep.config.get("values") or [p.value for p in sweep.points]  # all asked for, even if not run
    values = ",".join(f"{v:g}" for v in asked)
    lines = [f"sweep {sweep.axis}={values}  status={sweep.status}  ({sweep.load_model})"]
    if sweep.error:
        lines.append(f"  error: {sweep.error}")
    lines += [point_line(sweep, i) for i in range(len(sweep.points))]
    k = sweep.knee
    if k is not None:
        lines.append(
            f"  knee: {sweep.label(k.index)} ({k.throughput_rps:,.1f} rps at p99 {k.p99_us / 1000:.2f} ms): "
            f"{sweep.knee_note}"
        )
    else:
        lines.append(f"  {sweep.knee_note}")
    return "\n".join(lines)
