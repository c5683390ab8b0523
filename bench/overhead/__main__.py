"""``python -m deploybench.bench.overhead``: the standing overhead benchmark (``nox -s overhead``).

Writes ``results/overhead/<stamp>/overhead.json`` + ``overhead.md`` (and ``handler-styles.*`` with
``--handler-styles``) and prints the Markdown; each row is also appended to ``*.rows.jsonl`` as soon as it
is measured, so an interrupted run keeps what it measured. ``--min-ratio R`` exits 1 when a target's
throughput is below R x its minimal app's (a gate for CI).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploybench.bench.overhead.engines import EngineOptions, run_engines
from deploybench.bench.overhead.loadgen import default_generator, wrk_path
from deploybench.bench.overhead.report import engines_markdown, handler_styles_markdown, overhead_markdown
from deploybench.bench.overhead.runner import (
    DEFAULT_MODELS,
    DEFAULT_MODES,
    SWEEP_CONNECTIONS,
    Options,
    default_out_dir,
    run_handler_styles,
    run_overhead,
)
from deploybench.targets.catalog import MODELS


def _modes(text: str | None) -> tuple[tuple[str, str, str], ...]:
    """'fastapi:uvicorn:inline,flask:gunicorn-sync' -> the modes; None -> all."""
    if not text:
        return DEFAULT_MODES
    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) not in (2, 3):
            raise argparse.ArgumentTypeError(f"--modes item {item!r}: write framework:server[:handler]")
        out.append((parts[0], parts[1], parts[2] if len(parts) == 3 else ""))
    return tuple(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m deploybench.bench.overhead", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="zoo models (ONNX), comma-separated")
    p.add_argument(
        "--modes",
        type=_modes,
        default=DEFAULT_MODES,
        help="framework:server[:handler],... (default: every server mode, FastAPI in both handler styles)",
    )
    p.add_argument("--duration", type=float, default=8.0, help="seconds per round and side (default 8)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds per side (default 2)")
    p.add_argument("--connections", type=int, default=8, help="closed-loop connections (default 8)")
    p.add_argument("--threads", type=int, default=4, help="gunicorn-gthread threads, both sides (default 4)")
    p.add_argument(
        "--generator",
        "--engine",
        dest="generator",
        choices=("wrk", "lean", "python"),
        default=None,
        help="the load generator: wrk, or the lean engine (python: its old name); default: wrk if on PATH",
    )
    p.add_argument("--zoo", type=Path, default=None)
    p.add_argument("--cpus", default=None, help="CPU affinity of the servers, e.g. 1 or 0-1")
    p.add_argument("--out", type=Path, default=None, help="folder (default results/overhead/<stamp>)")
    p.add_argument("--handler-styles", action="store_true", help="also the inline vs threadpool table")
    p.add_argument(
        "--sweep",
        default=",".join(map(str, SWEEP_CONNECTIONS)),
        help="handler-style table: closed-loop connection counts (default %(default)s)",
    )
    p.add_argument("--no-overhead", action="store_true", help="skip the overhead table")
    p.add_argument(
        "--engines",
        action="store_true",
        help="only the load generators' own cost: lean engine vs Locust (and wrk when on PATH) driving the "
        "pinned FastAPI iris-mlp ONNX target, open loop at --rates and closed loop",
    )
    p.add_argument("--rates", default="2000", help="--engines: open-loop rates, rps (default %(default)s)")
    p.add_argument("--min-ratio", type=float, default=None, help="exit 1 if a throughput ratio is below")
    return p.parse_args(argv)


def _cpus(text: str | None) -> list[int] | None:
    if not text:
        return None
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def _appender(path: Path) -> Callable[[dict[str, Any]], None]:
    def append(row: dict[str, Any]) -> None:
        with path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    return append


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        print(f"python -m deploybench.bench.overhead: unknown model(s) {unknown}", file=sys.stderr)
        return 2
    generator = args.generator or default_generator()
    if generator == "wrk" and wrk_path() is None:
        print(
            "python -m deploybench.bench.overhead: --generator wrk, but wrk is not on PATH", file=sys.stderr
        )
        return 2
    if generator == "python":
        generator = "lean"
    if generator == "lean":
        print(
            "note: wrk is not on PATH (or --generator lean): using the lean load engine, which costs a few "
            "times wrk's CPU per request (each record says how much): install wrk for the reference figures",
            file=sys.stderr,
        )
    opts = Options(
        models=models,
        modes=args.modes,
        duration_s=args.duration,
        rounds=args.rounds,
        connections=args.connections,
        threads=args.threads,
        generator=generator,
        zoo_dir=args.zoo,
        cpus=_cpus(args.cpus),
        sweep_connections=tuple(int(c) for c in args.sweep.split(",")),
    )
    out = args.out or default_out_dir() / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    if args.engines:
        try:
            rates = tuple(float(r) for r in args.rates.split(",") if r.strip())
        except ValueError:
            print(f"python -m deploybench.bench.overhead: --rates {args.rates!r}: write rps values, "
                  "e.g. 2000,4000", file=sys.stderr)  # fmt: skip
            return 2
        eng = EngineOptions(rates_rps=rates, duration_s=args.duration, rounds=args.rounds, out_dir=out,
                            zoo_dir=str(args.zoo) if args.zoo else None, wrk=generator == "wrk")  # fmt: skip
        result = run_engines(eng, on_row=_appender(out / "engines.rows.jsonl"))
        (out / "engines.json").write_text(json.dumps(result, indent=2) + "\n")
        md = engines_markdown(result)
        (out / "engines.md").write_text(md)
        print(md)
        return 0
    status = 0
    if not args.no_overhead:
        result = run_overhead(opts, on_row=_appender(out / "overhead.rows.jsonl"))
        (out / "overhead.json").write_text(json.dumps(result, indent=2) + "\n")
        md = overhead_markdown(result, threshold=args.min_ratio)
        (out / "overhead.md").write_text(md)
        print(md)
        if args.min_ratio is not None and any(
            (r["ratio_throughput"] or 0) < args.min_ratio for r in result["rows"]
        ):
            status = 1
    if args.handler_styles:
        styles = run_handler_styles(opts, on_row=_appender(out / "handler-styles.rows.jsonl"))
        (out / "handler-styles.json").write_text(json.dumps(styles, indent=2) + "\n")
        md = handler_styles_markdown(styles)
        (out / "handler-styles.md").write_text(md)
        print(md)
    print(f"written to {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
