"""`deploybench serve`: start one target (``deploybench.targets.serve.ServerProcess``) in the foreground
until Ctrl-C or SIGTERM. The model is a zoo model (``--model``, ``--format``) or your own file
(``--model-file``, see ``deploybench.commands.model_options``); a model file is loaded and inspected here
first, so a bad one is a one-line error (exit code 2) before any server starts."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from deploybench.commands.args import cpu_list
from deploybench.commands.model_options import add_model_file_arguments, model_file_options
from deploybench.errors import TargetError
from deploybench.targets.modelfile import UserModelInfo
from deploybench.targets.serve import Limits, ServerProcess, TargetConfig, inspect_model_file
from deploybench.vocabulary import FRAMEWORK_SERVERS, HANDLER_STYLES, MODEL_FORMATS, ORT_OPT_LEVELS, SERVERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d, lim = TargetConfig(), Limits()
    parser.add_argument(
        "--framework",
        choices=sorted(FRAMEWORK_SERVERS),
        default=d.framework,
        help="the web framework of the target",
    )
    parser.add_argument(
        "--server",
        choices=SERVERS,
        help="flask: gunicorn-sync (default), gunicorn-gthread; fastapi: uvicorn (default), gunicorn-uvicorn",
    )
    parser.add_argument(
        "--handler",
        choices=HANDLER_STYLES,
        default=d.handler,
        help="fastapi: where the inference runs — inline (in the event loop, as an async def endpoint), "
        "threadpool (as a def endpoint) or auto (default: inline for a tabular model, threadpool for an "
        "image model)",
    )
    parser.add_argument("--model", help="a zoo model: iris-rf (default) | iris-mlp | resnet18 | resnet50")
    parser.add_argument(
        "--format", help=" | ".join(MODEL_FORMATS) + " (zoo default onnx; a model file: its extension's)"
    )
    parser.add_argument(
        "--workers", type=int, default=d.workers, help="worker processes (each loads the model)"
    )
    parser.add_argument(
        "--threads", type=int, default=d.threads, help="threads per worker (gunicorn-gthread)"
    )
    parser.add_argument(
        "--intra-op-threads", type=int, default=d.intra_op_threads, help="model threads per worker"
    )
    add_runtime_arguments(parser)
    parser.add_argument("--cpus", type=cpu_list, help="CPU affinity of the server, e.g. '0-1' or '0,2'")
    parser.add_argument("--host", default=d.host, help="bind address (default 127.0.0.1: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="0 = pick a free port (default 8000)")
    parser.add_argument("--zoo", type=Path, default=None, help="model zoo folder (default artifacts/zoo)")
    parser.add_argument(
        "--max-body-bytes", type=int, default=lim.max_body_bytes, help="larger request bodies get a 413"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=lim.max_pixels,
        help="larger images get a 413, checked from the header before any pixel is decoded",
    )
    parser.add_argument(
        "--max-batch", type=int, default=lim.max_batch, help='most rows in one {"instances": [...]} request'
    )
    parser.add_argument(
        "--request-timeout-s",
        type=float,
        default=lim.request_timeout_s,
        help="a request running longer gets a 503; under gunicorn also its --timeout (a worker silent this "
        "long is restarted)",
    )
    parser.add_argument(
        "--keep-alive-s",
        type=float,
        default=lim.keep_alive_s,
        help="idle keep-alive of a connection (gunicorn --keep-alive, uvicorn --timeout-keep-alive)",
    )
    parser.add_argument("--inject-delay-ms", type=float, default=0.0, help="deliberate extra service time")
    _add_stall_arguments(parser)
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="serve Prometheus metrics at GET /metrics (requests, latency, in-flight, inference time; "
        "merged over all workers). Off by default, so that benchmark figures measure the lean app; "
        "without it /metrics is a 404",
    )
    parser.add_argument(
        "--ready-timeout-s",
        type=float,
        default=120.0,
        help="give up when /health is not ready after this long",
    )
    parser.add_argument("--log", type=Path, default=None, help="server log file (default: a temporary file)")
    add_model_file_arguments(parser)


def add_runtime_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--inter-op-threads / --ort-opt-level (onnxruntime) and --max-batch-size / --max-queue-delay-us
    (server-side dynamic batching, Triton's dynamic batcher); `deploybench load` has them for its target."""
    d = TargetConfig()
    parser.add_argument(
        "--inter-op-threads",
        type=int,
        default=d.inter_op_threads,
        help="onnxruntime inter-op threads per worker (onnx formats; > 1 runs independent nodes in parallel)",
    )
    parser.add_argument(
        "--ort-opt-level",
        choices=ORT_OPT_LEVELS,
        default=d.ort_opt_level,
        help="onnxruntime graph optimisation level (onnx formats; default all)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=0,
        metavar="N",
        help="dynamic batching: requests arriving together run as one model call of up to N rows (a request "
        "of k instances counts k; one larger than N runs alone) and are answered separately; 0 = off "
        "(default). fastapi, or flask on gunicorn-gthread with --threads >= 2",
    )
    parser.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=0,
        metavar="D",
        help="dynamic batching: how long the first request of a batch waits for more rows, in µs (default 0: "
        "a batch holds what is already queued)",
    )


def _add_stall_arguments(parser: argparse.ArgumentParser) -> None:
    """--inject-stall-at-s / --inject-stall-s (`deploybench load` has the same two for its target)."""
    parser.add_argument(
        "--inject-stall-at-s",
        type=float,
        default=None,
        metavar="AT",
        help="a deliberate whole-process stall (demos of the over-time plots): each worker process stalls "
        "once, at the first request arriving AT s or more after its first prediction request "
        "(needs --inject-stall-s)",
    )
    parser.add_argument(
        "--inject-stall-s",
        type=float,
        default=0.0,
        metavar="FOR",
        help="how long the injected stall lasts: the worker answers nothing for FOR s, every request waits "
        "(needs --inject-stall-at-s)",
    )


def config_from_args(args: argparse.Namespace) -> TargetConfig:
    model: dict[str, Any] = {"model": args.model or "", "format": args.format or ""}
    file_options = model_file_options(args)
    model.update(file_options)
    return TargetConfig(
        framework=args.framework,
        server=args.server or "",
        handler=args.handler,
        **model,
        workers=args.workers,
        threads=args.threads,
        intra_op_threads=args.intra_op_threads,
        inter_op_threads=args.inter_op_threads,
        ort_opt_level=args.ort_opt_level,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        cpus=args.cpus,
        host=args.host,
        port=args.port,
        zoo_dir=str(args.zoo) if args.zoo else None,
        limits=Limits(
            max_body_bytes=args.max_body_bytes,
            max_pixels=args.max_pixels,
            max_batch=args.max_batch,
            request_timeout_s=args.request_timeout_s,
            keep_alive_s=args.keep_alive_s,
        ),
        inject_delay_ms=args.inject_delay_ms,
        inject_stall_at_s=args.inject_stall_at_s,
        inject_stall_s=args.inject_stall_s,
        metrics=args.metrics,
    )


class _Stop(Exception):
    pass


def describe_model_file(info: UserModelInfo, fmt: str) -> str:
    """One line about a served model file: path, sha256, what it takes and returns."""
    f = info.files[fmt]
    spec = info.input_spec()
    takes = (
        f"{spec['n_features']} features"
        if info.task == "tabular"
        else "images " + "x".join(map(str, spec["shape"]))
    )
    trusted = ", pickle trusted by --trust-pickle" if f.pickle_trusted else ""
    return (
        f"model file {f.path} (sha256 {f.sha256}{trusted}): {info.task}, {takes} ({info.shape_source}), "
        f"{len(info.class_names)} classes ({info.class_names_source}), outputs {f.output}"
        + (" (softmax applied)" if f.output == "logits" else "")
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    config.validate()
    if config.model_file is not None:
        print(describe_model_file(inspect_model_file(config), config.format), flush=True)
    server = ServerProcess(config, log_path=args.log, ready_timeout_s=args.ready_timeout_s)

    def on_signal(signum: int, frame: object) -> None:
        raise _Stop(signal.Signals(signum).name)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            server.start()
        except TargetError as exc:
            print(f"deploybench serve: {exc}", file=sys.stderr)
            return 1
        style = config.resolved_handler()
        handler = f", handler {style}" if style else ""
        if config.batching():
            handler += (
                f", dynamic batching up to {config.max_batch_size} rows within {config.max_queue_delay_us} µs"
            )
        print(
            f"serving {config.model}/{config.format} with {config.framework} on {config.server}{handler} "
            f"({config.workers} worker(s)) at {server.url}  (pid {server.pid}, log {server.log_path})",
            flush=True,
        )
        if config.metrics:
            print(f"Prometheus metrics at {server.url}/metrics", flush=True)
        print("press Ctrl-C or send SIGTERM to stop", flush=True)
        while server.is_alive():
            time.sleep(0.2)
        print(
            f"deploybench serve: the server exited on its own; log tail:\n{server.log_tail()}",
            file=sys.stderr,
        )
        return 1
    except _Stop as why:
        print(f"stopping ({why}) ...", file=sys.stderr, flush=True)
        return 0
    finally:
        # Stop the server while our handlers still catch a second Ctrl-C / SIGTERM: restoring the default
        # handlers first would let it kill only this process and orphan the server's process group.
        stopped = False
        while not stopped:
            try:
                server.stop()
                stopped = True
            except _Stop:
                continue
        for s, h in previous.items():
            signal.signal(s, h)
        if args.log is None:
            server.cleanup()
