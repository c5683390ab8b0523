"""Every limit is configurable and enforced where it is set: just under it is served, just over it is a clear
4xx (413 / 415 / 422) whose detail names the limit and its configured value, on both frameworks.

- max_body_bytes: 413, declared (Content-Length) and chunked bodies alike;
- max_pixels: 413, from the image header (the pixels are never decoded);
- max_batch: 422 batch-too-large;
- media type: 415 naming the type the route takes;
- request_timeout_s: gunicorn --timeout (sync workers): a request that runs past it is cut off with a JSON
  503 "request-timeout" naming the limit (not gunicorn's HTML 500), the worker is replaced, the target
  serves again. uvicorn and threaded workers do not enforce it per request (a documented limit).

Also through the CLI: `deploybench serve --max-batch ...` passes the limits to the running server.
Tests that start servers are marked e2e.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

from deploybench import paths
from deploybench.targets.serve import Limits, ServerProcess, TargetConfig
from deploybench.targets.zoo import build_zoo
from tests.support.servers import started_together
from tests.support.waiting import wait_until

ROW = [5.1, 3.5, 1.4, 0.2]
TAB_LIMITS = Limits(max_body_bytes=2000, max_batch=3)
IMG_LIMITS = Limits(max_body_bytes=60_000, max_pixels=10_000)
FRAMEWORKS = {"flask": "gunicorn-gthread", "fastapi": "uvicorn"}
e2e = pytest.mark.e2e


@pytest.fixture(scope="module")
def targets() -> Iterator[dict[tuple[str, str], str]]:
    """(framework, kind) -> URL: four targets with small, distinct limits."""
    zoo = paths.zoo_dir()
    build_zoo(zoo, models=["iris-rf", "resnet18"], formats=["onnx"])
    procs = {
        (fw, kind): ServerProcess(
            TargetConfig(
                framework=fw,
                server=srv,
                model=model,
                format="onnx",
                zoo_dir=str(zoo.resolve()),
                limits=limits,
                threads=2 if fw == "flask" else 1,
            ),
            ready_timeout_s=120,
        )
        for fw, srv in FRAMEWORKS.items()
        for kind, model, limits in (("tabular", "iris-rf", TAB_LIMITS), ("image", "resnet18", IMG_LIMITS))
    }
    with started_together(procs) as urls:
        yield urls


def padded_json(obj: object, size: int) -> bytes:
    """``obj`` as JSON, padded with whitespace to exactly ``size`` bytes."""
    raw = json.dumps(obj).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 60, 30)).save(buf, format="PNG")
    return buf.getvalue()


def assert_limit_error(r: httpx.Response, status: int, code: str, *named: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["error"] == code, body
    for word in named:
        assert word in body["detail"], (word, body)


@e2e
@pytest.mark.parametrize("fw", list(FRAMEWORKS))
def test_max_body_bytes(targets: dict[tuple[str, str], str], fw: str) -> None:
    url, limit = targets[(fw, "tabular")], TAB_LIMITS.max_body_bytes
    hdr = {"Content-Type": "application/json"}
    with httpx.Client(base_url=url, timeout=30) as c:
        assert (
            c.post("/predict", content=padded_json({"features": ROW}, limit), headers=hdr).status_code == 200
        )
        over = padded_json({"features": ROW}, limit + 1)
        assert_limit_error(c.post("/predict", content=over, headers=hdr), 413, "payload-too-large",
                           "max_body_bytes", str(limit))  # fmt: skip
        # chunked (no Content-Length): refused once the stream passes the limit
        r = c.post("/predict", content=iter([over[:1000], over[1000:]]), headers=hdr)
        assert_limit_error(r, 413, "payload-too-large", "max_body_bytes", str(limit))
        r = c.post("/predict", content=iter([b'{"features": ', json.dumps(ROW).encode(), b"}"]), headers=hdr)
        assert r.status_code == 200, r.text


@e2e
@pytest.mark.parametrize("fw", list(FRAMEWORKS))
def test_max_batch(targets: dict[tuple[str, str], str], fw: str) -> None:
    url, limit = targets[(fw, "tabular")], TAB_LIMITS.max_batch
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/predict", json={"instances": [ROW] * limit})
        assert r.status_code == 200 and len(r.json()["predictions"]) == limit
        r = c.post("/predict", json={"instances": [ROW] * (limit + 1)})
        assert_limit_error(r, 422, "batch-too-large", "max_batch", str(limit), str(limit + 1))


@e2e
@pytest.mark.parametrize("fw", list(FRAMEWORKS))
def test_max_pixels_and_image_body(targets: dict[tuple[str, str], str], fw: str) -> None:
    url, limit = targets[(fw, "image")], IMG_LIMITS.max_pixels
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/predict/image", files={"file": ("a.png", png(100, 100), "image/png")})  # = limit
        assert r.status_code == 200, r.text
        r = c.post("/predict/image", files={"file": ("a.png", png(101, 100), "image/png")})
        assert_limit_error(r, 413, "image-too-large", "max_pixels", str(limit), "101x100")
        big = b"\x89PNG" + b"\0" * IMG_LIMITS.max_body_bytes
        r = c.post("/predict/image", files={"file": ("a.png", big, "image/png")})
        assert_limit_error(r, 413, "payload-too-large", "max_body_bytes", str(IMG_LIMITS.max_body_bytes))


@e2e
@pytest.mark.parametrize("fw", list(FRAMEWORKS))
def test_media_type(targets: dict[tuple[str, str], str], fw: str) -> None:
    with httpx.Client(timeout=30) as c:
        r = c.post(targets[(fw, "tabular")] + "/predict", content=json.dumps({"features": ROW}),
                   headers={"Content-Type": "text/plain"})  # fmt: skip
        assert_limit_error(r, 415, "unsupported-media-type", "application/json", "text/plain")
        r = c.post(targets[(fw, "image")] + "/predict/image", content=png(10, 10),
                   headers={"Content-Type": "image/png"})  # fmt: skip
        assert_limit_error(r, 415, "unsupported-media-type", "multipart/form-data", "image/png")


def test_limits_from_the_serve_cli() -> None:
    import argparse

    from deploybench.commands import serve as serve_cli
    from deploybench.targets import serve

    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    args = parser.parse_args(
        ["--max-body-bytes", "1234", "--max-pixels", "999", "--max-batch", "7", "--request-timeout-s", "4"]
    )
    cfg = serve_cli.config_from_args(args)
    assert cfg.limits == Limits(max_body_bytes=1234, max_pixels=999, max_batch=7, request_timeout_s=4.0)
    cmd = serve.server_command(TargetConfig(framework="flask", limits=cfg.limits), 8000)
    assert cmd[cmd.index("--timeout") + 1] == "4"


def health_pid(url: str) -> int | None:
    """The pid of the worker that answered /health, or None if the target did not answer."""
    try:
        r = httpx.get(f"{url}/health", timeout=10)
    except httpx.TransportError:
        return None
    return int(r.json()["pid"]) if r.status_code == 200 else None


@e2e
def test_request_timeout_cuts_off_a_slow_request_and_the_target_recovers(tmp_path: Path) -> None:
    zoo = paths.zoo_dir()
    build_zoo(zoo, models=["iris-rf"], formats=["onnx"])
    timeout_s = 1.0
    # The injected service time is far past the limit, so "cut off" is told apart from "finished" with a
    # generous margin; a worker is aborted at the limit, so the rest of it is never spent.
    config = TargetConfig(
        framework="flask", server="gunicorn-sync", model="iris-rf", format="onnx", zoo_dir=str(zoo.resolve()),
        inject_delay_ms=30_000.0, limits=Limits(request_timeout_s=timeout_s),
    )  # fmt: skip
    with ServerProcess(config, log_path=tmp_path / "server.log", ready_timeout_s=60) as server:
        assert server.pid is not None
        worker_before = health_pid(server.url)
        assert worker_before is not None
        t0 = time.perf_counter_ns()
        r = httpx.post(f"{server.url}/predict", json={"features": ROW}, timeout=60)
        elapsed_s = (time.perf_counter_ns() - t0) / 1e9
        assert elapsed_s < 20.0, f"the request ran {elapsed_s:.1f} s, past request_timeout_s={timeout_s}"
        assert_limit_error(r, 503, "request-timeout", "request_timeout_s", "1 s")

        # a new worker takes over and the target answers again: wait for a worker other than the aborted one
        # to answer /health
        def replacement_answers() -> int | None:
            pid = health_pid(server.url)
            return pid if pid not in (None, worker_before) else None

        new_worker = wait_until(replacement_answers, 60, "a replacement worker to answer /health")
        assert server.is_alive()
        assert new_worker in {p.pid for p in psutil.Process(server.pid).children()}
        assert (
            not psutil.pid_exists(worker_before)
            or psutil.Process(worker_before).status() == psutil.STATUS_ZOMBIE
        )
        assert "WORKER TIMEOUT" in server.log_tail()


@e2e
def test_fastapi_request_timeout_answers_at_the_deadline(tmp_path: Path) -> None:
    """uvicorn has no worker timeout: the FastAPI app (threadpool handler) puts a deadline on inference."""
    zoo = paths.zoo_dir()
    build_zoo(zoo, models=["iris-rf"], formats=["onnx"])
    # The inference itself runs on (busy-waiting a CPU) after the 503, so its injected time is kept moderate:
    # long enough that answering at the 1 s deadline is told apart from answering when it ends, with margin.
    config = TargetConfig(
        framework="fastapi", server="uvicorn", model="iris-rf", format="onnx", zoo_dir=str(zoo.resolve()),
        inject_delay_ms=8000.0, limits=Limits(request_timeout_s=1.0),
        handler="threadpool",  # inline (the tabular default) cannot answer before the inference ends
    )  # fmt: skip
    with ServerProcess(config, log_path=tmp_path / "server.log", ready_timeout_s=60) as server:
        t0 = time.perf_counter_ns()
        r = httpx.post(f"{server.url}/predict", json={"features": ROW}, timeout=60)
        elapsed_s = (time.perf_counter_ns() - t0) / 1e9
        assert elapsed_s < 6.0, f"the request ran {elapsed_s:.1f} s, past request_timeout_s=1"
        assert_limit_error(r, 503, "request-timeout", "request_timeout_s", "1 s")
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
        assert server.is_alive()
