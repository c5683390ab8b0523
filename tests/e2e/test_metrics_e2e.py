"""`deploybench serve --metrics` under gunicorn with 2 workers (prometheus_client's multiprocess mode):
after a `deploybench load` run, /metrics counts exactly the requests the run sent (summed over both
workers), the in-flight gauge is back at 0, the inference histogram carries the model and format, and the
private PROMETHEUS_MULTIPROC_DIR exists while the server runs and is gone once it stops."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from deploybench import paths
from deploybench.targets import gunicorn_conf
from deploybench.targets.metrics import MULTIPROC_DIR_ENV
from deploybench.targets.serve import ServerProcess, TargetConfig
from deploybench.targets.zoo import build_zoo
from tests.support.waiting import wait_until

e2e = pytest.mark.e2e


@pytest.fixture(scope="module")
def zoo() -> Path:
    root = paths.zoo_dir()
    build_zoo(root, models=["iris-rf"], formats=["onnx"])
    return root.resolve()


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(v for n, lab, v in samples(text) if n == name and labels.items() <= lab.items())


def per_file(db: Path, folder: Path) -> float:
    """POST /predict as counted in one worker's counter file alone."""
    folder.mkdir()
    shutil.copy(db, folder / db.name)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    text = generate_latest(registry).decode()
    return value(text, "deploybench_http_requests_total", method="POST", route="/predict")


@e2e
@pytest.mark.parametrize(
    ("framework", "server"), [("flask", "gunicorn-sync"), ("fastapi", "gunicorn-uvicorn")]
)
def test_metrics_count_exactly_what_the_load_sent(
    zoo: Path, tmp_path: Path, framework: str, server: str
) -> None:
    tmpdir = tmp_path / "tmp"  # the server's TMPDIR: where its PROMETHEUS_MULTIPROC_DIR is made
    tmpdir.mkdir()
    cmd = [sys.executable, "-m", "deploybench", "serve", "--framework", framework, "--server", server,
           "--workers", "2", "--model", "iris-rf", "--format", "onnx", "--port", "0", "--zoo", str(zoo),
           "--metrics", "--log", str(tmp_path / "serve.log")]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "TMPDIR": str(tmpdir)},
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # blocks until the URL line (or EOF if it failed)
        m = re.search(r"at (http://127\.0\.0\.1:\d+) ", line)
        assert m, line + proc.stderr.read()
        url = m.group(1)
        dirs = list(tmpdir.glob("deploybench-metrics-*"))
        assert len(dirs) == 1, dirs

        before = httpx.get(f"{url}/metrics", timeout=10)
        assert before.status_code == 200, before.text
        assert before.headers["content-type"].startswith("text/plain")
        assert value(before.text, "deploybench_http_requests_total", route="/predict") == 0
        info = [lab for n, lab, _ in samples(before.text) if n == "deploybench_target_info"]
        assert info == [
            {"framework": framework, "server": server, "handler": "inline" if framework == "fastapi" else "",
             "model": "iris-rf", "format": "onnx", "version": info[0]["version"]}
        ]  # fmt: skip

        # Both workers count something before the load, so that /metrics is checked as a sum over two
        # workers' files: the load's few keep-alive connections may all land on one worker (the kernel
        # balances accepts, not requests). Each GET /health here is a new connection.
        def both_workers_counted() -> bool:
            httpx.get(f"{url}/health", timeout=10, headers={"connection": "close"})
            return len(list(dirs[0].glob("counter_*.db"))) == 2

        wait_until(both_workers_counted, 60, "both workers answering a request", interval_s=0.01)

        record_path = tmp_path / "run.json"
        load = subprocess.run(
            [sys.executable, "-m", "deploybench", "load", "--url", url, "--scenario", "tabular",
             "--duration", "2", "--warmup", "0", "--users", "4", "--out", str(tmp_path / "results"),
             "--record", str(record_path)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert load.returncode == 0, load.stdout + load.stderr
        record = json.loads(record_path.read_text())
        series = [s for s in record["series"] if s["count"]]
        assert len(series) == 1, record["series"]
        assert not series[0]["errors"], series[0]["errors"]  # every request the run sent was answered
        # Every request the generator sent and got an answer to: the measured window's and those sent after
        # it closed (closed loop, a connection answered at the window's end sends once more); no warm-up here
        sent = record["config"]["generator_headroom"]["requests"]
        assert series[0]["count"] <= sent <= series[0]["count"] + 4 * 2, (series[0]["count"], sent)
        assert sent > 20

        def settled() -> str | None:
            text = httpx.get(f"{url}/metrics", timeout=10).text
            return text if value(text, "deploybench_http_requests_in_flight") == 0 else None

        text = wait_until(settled, 10, "the in-flight gauge back at 0")
        counted = value(
            text, "deploybench_http_requests_total", method="POST", route="/predict", status="200"
        )
        assert counted == sent, f"/metrics counted {counted} POST /predict, the load sent {sent}"
        assert value(text, "deploybench_http_requests_total", route="/predict") == sent  # no other status
        assert value(text, "deploybench_http_requests_total", route="/metrics") == 0
        assert (
            value(text, "deploybench_http_request_duration_seconds_count", method="POST", route="/predict")
            == sent
        )
        # the inference histogram: every prediction (+ nothing else), with the model and format
        assert (
            value(text, "deploybench_inference_duration_seconds_count", model="iris-rf", format="onnx")
            == sent
        )
        assert value(text, "deploybench_inference_duration_seconds_sum", model="iris-rf", format="onnx") > 0
        # one counter file per worker (pid), and /metrics is their sum (a worker may have served no
        # POST /predict of the load: it counted GET /health above)
        files = sorted(dirs[0].glob("counter_*.db"))
        assert len(files) == 2, files
        per_worker = [per_file(f, tmp_path / f.stem) for f in files]
        assert sum(per_worker) == counted, per_worker

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not list(tmpdir.glob("deploybench-metrics-*")), "the multiprocess folder outlived the server"
    finally:
        if proc.poll() is None:  # a failed assertion: serve stops the server it started on SIGTERM
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@e2e
def test_serve_without_metrics_has_no_metrics_route(zoo: Path, tmp_path: Path) -> None:
    """Off by default: /metrics is a 404 with the targets' JSON error body, and no multiprocess folder."""
    cfg = TargetConfig(
        framework="flask", server="gunicorn-sync", model="iris-rf", format="onnx", zoo_dir=str(zoo)
    )
    with ServerProcess(cfg, log_path=tmp_path / "serve.log") as server:
        assert server.metrics_dir is None
        r = httpx.get(f"{server.url}/metrics", timeout=10)
        assert r.status_code == 404
        assert r.json() == {"error": "not-found", "detail": "no route GET /metrics"}


# -- multiprocess mode across plain processes (no server) ------------------------------------------------
WORKER = """
import sys
from deploybench.targets.metrics import TargetMetrics, multiprocess_mode
assert multiprocess_mode()
m = TargetMetrics(framework="flask", server="gunicorn-sync", handler="", model="iris-rf", format="onnx",
                  routes={"/predict"})
for _ in range(int(sys.argv[1])):
    m.in_flight.inc()
    m.observe_inference_ns(100_000)
    m.observe_request("POST", "/predict", 200, 0.001)
    m.in_flight.dec()
if sys.argv[2] == "die-mid-request":
    m.in_flight.inc()  # a worker killed in the middle of a request
if sys.argv[2] == "expose":
    sys.stdout.write(m.exposition().decode())
"""


@e2e
def test_multiprocess_mode_sums_the_workers_and_drops_a_dead_ones_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, MULTIPROC_DIR_ENV: str(tmp_path)}

    def worker(n: int, mode: str) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([sys.executable, "-c", WORKER, str(n), mode], env=env, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r

    dead = subprocess.Popen([sys.executable, "-c", WORKER, "5", "die-mid-request"], env=env)
    assert dead.wait(timeout=60) == 0
    worker(7, "-")
    text = worker(0, "expose").stdout
    assert value(text, "deploybench_http_requests_total", route="/predict", status="200") == 12
    assert value(text, "deploybench_inference_duration_seconds_count", model="iris-rf") == 12
    assert value(text, "deploybench_http_requests_in_flight") == 1  # the one the dead worker left
    info = [(lab, v) for n, lab, v in samples(text) if n == "deploybench_target_info"]
    assert len(info) == 1 and info[0][1] == 1  # multiprocess mode "max": one series over all processes
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))  # as in the gunicorn master
    gunicorn_conf.child_exit(None, SimpleNamespace(pid=dead.pid))
    text = worker(0, "expose").stdout
    assert value(text, "deploybench_http_requests_in_flight") == 0
    assert value(text, "deploybench_http_requests_total", route="/predict") == 12  # counters stay
