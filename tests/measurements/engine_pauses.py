"""How long the lean engine's own chores hold its event loop (the 4 Hz flush into the histograms, the periodic
save of its state file), and how many paced sends leave late: the engine in a child process on CPU 0, open
loop at a constant rate against FastAPI + uvicorn or Flask + gunicorn-sync serving iris-mlp ONNX on CPU 1.

    .nox/tests/bin/python -m tests.measurements.engine_pauses [--framework fastapi] [--rate 2000]
        [--duration 8] [--rounds 4] [--baseline DIR] > pauses.json

``--baseline DIR``: a checkout of another commit (``git worktree add /tmp/base HEAD~1``), run alternately with
this one (the order flips every round), so that both see the same minutes of this VM, whose speed drifts.
Each child reports: the flushes' and saves' wall time (median, max) and count, the sends that left more than
1 ms after their intended time (the pacer's ``late_sends``) and the largest lag, and the engine process's CPU
per answered request over the window (warm-up excluded). The children are started as
``python <this file> --child`` with ``PYTHONPATH`` set to the tree under test, so the baseline tree needs no
copy of this script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BODY = b'{"features": [5.1, 3.5, 1.4, 0.2]}'
CLIENT_CPU, SERVER_CPU = 0, 1
WARMUP_S = 1.0
CONNECTIONS = 64


def child(url: str, rate: float, duration_s: float, tmp: str) -> dict[str, Any]:
    """One engine run in this process (imports from ``PYTHONPATH``'s tree), its chores timed."""
    from deploybench.loadtests import lean

    os.sched_setaffinity(0, {CLIENT_CPU})
    spans: dict[str, list[int]] = {"flush": [], "save": []}
    marks: dict[str, float] = {}

    def timed(name: str) -> None:
        orig = getattr(lean.Engine, name)

        def run(self: Any, *a: Any, **k: Any) -> Any:
            t = time.perf_counter_ns()
            out = orig(self, *a, **k)
            spans[name].append(time.perf_counter_ns() - t)
            return out

        setattr(lean.Engine, name, run)

    orig_start, orig_finish = lean.Engine.start, lean.Engine.finish

    def start(self: Any, now_ns: int, timer: Any = None) -> None:
        orig_start(self, now_ns, timer)

        def mark() -> None:
            self.flush()
            marks["cpu0"], marks["n0"] = time.process_time(), self.measurement.answered()

        self.loop.call_later(WARMUP_S, mark)

    def finish(self: Any) -> None:
        if "cpu1" not in marks and self.measurement is not None:
            self.flush()
            marks["cpu1"], marks["n1"] = time.process_time(), self.measurement.answered()
        orig_finish(self)

    lean.Engine.start, lean.Engine.finish = start, finish  # type: ignore[method-assign]
    for name in spans:
        timed(name)
    payload = Path(tmp, "payload.json")
    payload.write_bytes(BODY)
    options = {"path": "/predict", "method": "POST", "payload": str(payload)}
    plan = lean.build_plan("api", url, options=options)
    spec = lean.EngineSpec(url=url, scenario="api", load_model="constant", connections=CONNECTIONS,
                           rate_rps=rate, warmup_s=WARMUP_S, duration_s=duration_s,
                           state_path=str(Path(tmp, f"state-{os.getpid()}.json")))  # fmt: skip
    snap = lean.run_engine(spec, plan)
    pacing = snap.get("pacing") or {}
    n = marks["n1"] - marks["n0"]

    def summary(ns: list[int]) -> dict[str, Any]:
        us = [v / 1000 for v in ns]
        return {"count": len(us), "median_us": round(statistics.median(us), 1) if us else None,
                "max_us": round(max(us), 1) if us else None}  # fmt: skip

    return {
        "flush": summary(spans["flush"]), "save": summary(spans["save"]),
        "sent": pacing.get("sent"), "late_sends": pacing.get("late_sends"),
        "max_send_lag_us": pacing.get("max_send_lag_us"),
        "cpu_us_per_request": round((marks["cpu1"] - marks["cpu0"]) * 1e6 / n, 1) if n > 0 else None,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.measurements.engine_pauses", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--framework", choices=("fastapi", "flask"), default="fastapi")
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--baseline", help="a checkout of another commit, run alternately with this one")
    p.add_argument("--child", nargs=4, metavar=("URL", "RATE", "DURATION", "TMP"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        url, rate, duration, tmp = args.child
        print(json.dumps(child(url, float(rate), float(duration), tmp)))
        return 0
    from deploybench.targets.serve import ServerProcess, TargetConfig

    here = str(Path(__file__).resolve().parents[2])
    trees = {"this": here, **({"baseline": str(Path(args.baseline).resolve())} if args.baseline else {})}
    server = "uvicorn" if args.framework == "fastapi" else "gunicorn-sync"
    cfg = TargetConfig(framework=args.framework, server=server, model="iris-mlp", format="onnx",
                       cpus=[SERVER_CPU])  # fmt: skip
    rows: list[dict[str, Any]] = []
    with ServerProcess(cfg) as srv, tempfile.TemporaryDirectory(prefix="deploybench-pauses-") as tmp:
        for rnd in range(args.rounds):
            order = list(trees) if rnd % 2 == 0 else list(reversed(trees))
            for name in order:
                env = {**os.environ, "PYTHONPATH": trees[name]}
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", srv.url, str(args.rate),
                       str(args.duration), tmp]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=trees[name],
                                     check=True)  # fmt: skip
                rows.append({"round": rnd, "tree": name, **json.loads(out.stdout.strip().splitlines()[-1])})
    json.dump({"args": {k: v for k, v in vars(args).items() if k != "child"}, "rows": rows}, sys.stdout,
              indent=1)  # fmt: skip
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
