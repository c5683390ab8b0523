"""Overload and soak, bounded in seconds.

- Overload: a Flask/gunicorn-sync target with one worker and a deliberate 20 ms service time (capacity
  at most 50 rps) is driven open-loop at 300 rps (6x capacity) for 3 s. It must keep answering or refuse
  cleanly — no 5xx, no crashed worker — and answer normally right after the load stops. The record must
  show the overload: every slot of the window is a success or an error (the sends the generator dropped or
  never made count too), so the error ratio is at least the share the capacity could not serve.
- Soak: a FastAPI/uvicorn target takes a closed-loop load of valid requests while a side thread sends
  invalid and oversized ones; the server's resident memory (the whole process tree) after the soak is
  compared with the figure after a warm-up soak. The figures are written next to the test's records, in its
  own temporary folder (tmp_path/overload-*.json, tmp_path/soak-*.json), never into the repository.

Both tests start real servers and Locust (marked ``e2e``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from deploybench import paths
from deploybench.loadtests.runner import run_load
from deploybench.targets.serve import Limits, ServerProcess, TargetConfig
from deploybench.targets.zoo import build_zoo

pytestmark = pytest.mark.e2e  # starts real targets

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
SERVICE_MS = 20.0
OVERLOAD_RPS = 300.0
# Soak bound: growth over the measured soak, after a warm-up soak of the same load. A leak of a few KiB per
# request would exceed it over the ~3000 requests (valid + invalid) of the measured soak.
MAX_RSS_GROWTH_BYTES = 8 * 1024 * 1024

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def zoo() -> Path:
    root = paths.zoo_dir()
    build_zoo(root, models=["iris-rf"], formats=["onnx"])
    return root.resolve()


@pytest.fixture
def started(request: pytest.FixtureRequest) -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()
            s.cleanup()


def tree_rss_bytes(pid: int) -> int:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


def worker_pids(pid: int) -> set[int]:
    return {p.pid for p in psutil.Process(pid).children(recursive=True)}


def test_overload_is_answered_or_refused_cleanly_and_recovers(
    zoo: Path, tmp_path: Path, started: list[ServerProcess]
) -> None:
    config = TargetConfig(
        framework="flask", server="gunicorn-sync", model="iris-rf", format="onnx", zoo_dir=str(zoo),
        inject_delay_ms=SERVICE_MS, limits=Limits(request_timeout_s=30.0),
    )  # fmt: skip
    server = ServerProcess(config, ready_timeout_s=60)
    started.append(server)
    server.start()
    workers = worker_pids(server.pid or 0)
    record = run_load(
        server.url, "tabular", duration_s=3.0, warmup_s=0.0, rate_rps=OVERLOAD_RPS, load_model="constant",
        users=40, max_lag_s=1.0, model="iris-rf", results_dir=tmp_path,
    )  # fmt: skip
    assert record.status == "complete", record.error
    ok = sum(s.count for s in record.series)
    errors: Counter[str] = Counter()
    for s in record.series:
        errors.update(s.errors)
    assert ok > 0, "nothing was answered under overload"
    # far past capacity: the target cannot have served the offered rate
    assert sum(s.throughput_rps or 0 for s in record.series) < OVERLOAD_RPS * 0.8
    (series,) = record.series
    pacing = record.config["pacing"]
    assert series.scheduled == series.count + series.error_count == pacing["scheduled_in_window"]
    # no warm-up: the schedule starts with the first sender, a little after the window opens
    assert series.scheduled <= OVERLOAD_RPS * series.duration_s + 1
    # one sync worker, >= 20 ms a request: at most 50 answers/s, + the <= 40 in flight at the close
    served_max = 1000 / SERVICE_MS * series.duration_s * 1.01 + 40
    assert series.count <= served_max
    assert series.error_ratio >= 1 - served_max / series.scheduled, (series.errors, series.count)
    server_errors = {k: n for k, n in errors.items() if k.startswith("http-5")}
    figures = {"offered_rps": OVERLOAD_RPS, "answered": ok, "errors": dict(errors),
               "scheduled": series.scheduled, "error_ratio": series.error_ratio,
               "throughput_rps": sum(s.throughput_rps or 0 for s in record.series)}  # fmt: skip
    (tmp_path / "overload-flask-gunicorn-sync.json").write_text(json.dumps(figures, indent=2) + "\n")
    assert not server_errors, f"5xx under overload: {dict(errors)}"
    # still the same worker, and it answers normally once the load has stopped
    assert server.is_alive() and worker_pids(server.pid or 0) == workers
    with httpx.Client(base_url=server.url, timeout=10) as client:
        t0 = time.perf_counter_ns()
        r = client.post("/predict", json={"features": IRIS_ROW})
        recovery_ms = (time.perf_counter_ns() - t0) / 1e6
        assert r.status_code == 200 and r.json()["prediction"] == "setosa"
        assert client.get("/health").json()["internal_errors"] == 0
    # how long the first request took is a figure for the reader, not an assertion (no timed tests)
    figures["recovery_ms"] = recovery_ms
    (tmp_path / "overload-flask-gunicorn-sync.json").write_text(json.dumps(figures, indent=2) + "\n")


def _bad_requests(url: str, stop: threading.Event, sent: Counter[int]) -> None:
    """Invalid, oversized and wrong-kind requests, until ``stop``: each must get its 4xx."""
    bodies = [
        ("/predict", b'{"features": [1, 2, 3]}', "application/json"),
        ("/predict", b"{not json", "application/json"),
        ("/predict", b"x" * (70 * 1024), "application/json"),  # over max_body_bytes
        ("/predict", b'{"instances": ' + json.dumps([IRIS_ROW] * 20).encode() + b"}", "application/json"),
        ("/predict/image", b"--x--", "multipart/form-data; boundary=x"),
        ("/predict", b"{}", "text/plain"),
    ]
    with httpx.Client(base_url=url, timeout=10) as client:
        i = 0
        while not stop.is_set() and i < 5000:
            path, body, ctype = bodies[i % len(bodies)]
            r = client.post(path, content=body, headers={"Content-Type": ctype})
            sent[r.status_code] += 1
            i += 1


def test_soak_rss_does_not_grow(zoo: Path, tmp_path: Path, started: list[ServerProcess]) -> None:
    config = TargetConfig(
        framework="fastapi", server="uvicorn", model="iris-rf", format="onnx", zoo_dir=str(zoo),
        limits=Limits(max_body_bytes=64 * 1024, max_batch=16),
    )  # fmt: skip
    server = ServerProcess(config, ready_timeout_s=60)
    started.append(server)
    server.start()
    pid = server.pid or 0
    rss_start = tree_rss_bytes(pid)
    sent: Counter[int] = Counter()

    def soak(duration_s: float) -> int:
        stop = threading.Event()
        side = threading.Thread(target=_bad_requests, args=(server.url, stop, sent), daemon=True)
        side.start()
        try:
            rec = run_load(
                server.url, "tabular", duration_s=duration_s, warmup_s=0.0, users=4, model="iris-rf",
                results_dir=tmp_path,
            )  # fmt: skip
        finally:
            stop.set()
            side.join(15)
        assert rec.status == "complete", rec.error
        errors = sum(sum(s.errors.values()) for s in rec.series)
        assert errors == 0, [s.errors for s in rec.series]
        return sum(s.count for s in rec.series)

    warm_n = soak(2.0)
    rss_before = tree_rss_bytes(pid)
    soak_n = soak(6.0)
    rss_after = tree_rss_bytes(pid)
    health = httpx.get(f"{server.url}/health", timeout=10).json()
    figures = {
        "target": config.to_dict(),
        "rss_start_bytes": rss_start,
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "rss_growth_bytes": rss_after - rss_before,
        "warmup_requests": warm_n,
        "soak_requests": soak_n,
        "bad_requests_by_status": {str(k): v for k, v in sorted(sent.items())},
        "internal_errors": health["internal_errors"],
    }
    (tmp_path / "soak-fastapi-uvicorn-iris-rf-onnx.json").write_text(json.dumps(figures, indent=2) + "\n")
    assert server.is_alive() and health["internal_errors"] == 0
    assert sent and all(400 <= s < 500 for s in sent), f"bad requests got {dict(sent)}"
    assert rss_after - rss_before < MAX_RSS_GROWTH_BYTES, figures
