"""Reference targets as real server processes: every route on both frameworks and all four server modes,
Server-Timing, OpenAPI, the launcher (bind-then-report ports, readiness, affinity, failures, clean stop) and
`deploybench serve`. Tests that start processes are marked e2e; the rest run in-process."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from deploybench import paths
from deploybench.errors import TargetError, UsageError
from deploybench.targets.predictors import load_predictor
from deploybench.targets.preprocess import CROP_PX, IMAGENET_MEAN, IMAGENET_STD, preprocess_image
from deploybench.targets.serve import (
    FRAMEWORK_SERVERS,
    Limits,
    ServerProcess,
    TargetConfig,
    bind_listener,
    server_command,
)
from deploybench.targets.zoo import build_zoo
from tests.support.servers import started_together
from tests.support.waiting import wait_until

NEEDED = {"iris-rf": ["pickle", "onnx"], "iris-mlp": ["torchscript"], "resnet18": ["onnx"]}
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
TIMING_RE = re.compile(r"^decode;dur=(\d+\.\d{3}), preprocess;dur=(\d+\.\d{3}), infer;dur=(\d+\.\d{3})$")
INJECT_MS = 20.0
e2e = pytest.mark.e2e


@pytest.fixture(scope="module")
def zoo() -> Path:
    """The artifacts these tests serve (built once; a no-op when `deploybench build` already ran)."""
    root = paths.zoo_dir()
    for model, fmts in NEEDED.items():
        build_zoo(root, models=[model], formats=fmts)
    return root.resolve()


def server_timing_ms(resp: httpx.Response) -> tuple[float, float, float]:
    m = TIMING_RE.match(resp.headers["server-timing"])
    assert m, resp.headers["server-timing"]
    decode, pre, infer = (float(x) for x in m.groups())
    return decode, pre, infer


def group_pids(pid: int) -> list[int]:
    proc = psutil.Process(pid)
    return [pid, *(c.pid for c in proc.children(recursive=True))]


def assert_all_gone(pids: list[int]) -> None:
    for p in pids:
        if psutil.pid_exists(p):
            assert psutil.Process(p).status() == psutil.STATUS_ZOMBIE, f"pid {p} survived stop()"


def listening(pid: int) -> set[tuple[str, int]]:
    """(ip, port) of every listening TCP socket held by ``pid`` or its descendants."""
    out = set()
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        out |= {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return out


def workers_of(server: ServerProcess) -> list[psutil.Process]:
    """The worker processes of a target: the master's children (not multiprocessing's resource tracker), or
    the server process itself when it is its own (only) worker."""
    master = psutil.Process(server.pid)
    children = [p for p in master.children() if "resource_tracker" not in " ".join(p.cmdline())]
    return children or [master]


# -- tabular targets: the four server modes -------------------------------------------------------------
TABULAR_MODES = [
    TargetConfig(framework="flask", server="gunicorn-sync", model="iris-rf", format="pickle", workers=2),
    TargetConfig(
        framework="flask", server="gunicorn-gthread", model="iris-mlp", format="torchscript", threads=2,
        inject_delay_ms=INJECT_MS,
    ),
    TargetConfig(framework="fastapi", server="uvicorn", model="iris-rf", format="onnx", workers=2),
    TargetConfig(
        framework="fastapi", server="gunicorn-uvicorn", model="iris-mlp", format="torchscript", cpus=[0],
        intra_op_threads=1,
    ),
]  # fmt: skip


@pytest.fixture(
    scope="module", params=TABULAR_MODES, ids=lambda c: f"{c.framework}-{c.server}-{c.model}-{c.format}"
)
def tabular(request: pytest.FixtureRequest, zoo: Path):
    config = TargetConfig.from_dict({**request.param.to_dict(), "zoo_dir": str(zoo)})
    server = ServerProcess(config, ready_timeout_s=120)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield server, client
    finally:
        pids = group_pids(server.pid) if server.is_alive() else [server.pid]
        server.stop()
        server.cleanup()
        assert not server.is_alive()
        assert server.returncode is not None
        assert_all_gone(pids)


@e2e
def test_health(tabular) -> None:
    server, client = tabular
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    cfg = server.config
    assert body["status"] == "ok"
    assert (body["framework"], body["server"], body["model"], body["format"]) == (
        cfg.framework, cfg.server, cfg.model, cfg.format,
    )  # fmt: skip
    assert body["version"] and body["internal_errors"] == 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.port > 0
    assert server.returncode is None  # running
    # the port in url is the one the target listens on, and the launcher kept no copy of the socket
    assert {port for _, port in listening(server.pid)} == {server.port}
    assert server.port not in {c.laddr.port for c in psutil.Process().net_connections(kind="tcp")
                               if c.status == psutil.CONN_LISTEN}  # fmt: skip


@e2e
def test_head_health_answers_200_with_an_empty_body(tabular) -> None:
    _, client = tabular
    r = client.head("/health")
    assert r.status_code == 200
    assert r.content == b""


@e2e
def test_every_worker_serves_from_the_inherited_socket(tabular) -> None:
    """With workers > 1 all of them accept on the one listening socket: freeze all workers but one and a new
    connection must be answered by that one (/health names the worker's pid)."""
    server, _ = tabular
    workers = workers_of(server)
    assert len(workers) == server.config.workers
    for serving in workers:
        frozen = [w for w in workers if w.pid != serving.pid]
        try:
            for w in frozen:
                w.suspend()  # SIGSTOP
            wait_until(
                lambda frozen=frozen: all(w.status() == psutil.STATUS_STOPPED for w in frozen), 30, "SIGSTOP"
            )
            r = httpx.get(server.url + "/health", timeout=30)  # a new connection
            assert r.status_code == 200 and r.json()["pid"] == serving.pid
        finally:
            for w in frozen:
                w.resume()  # SIGCONT


@e2e
def test_predict_single_matches_in_process_model(tabular, zoo: Path) -> None:
    server, client = tabular
    r = client.post("/predict", json={"features": IRIS_ROW})
    assert r.status_code == 200, r.text
    body = r.json()
    want = load_predictor(server.config.model, server.config.format, zoo).predict(
        np.asarray([IRIS_ROW], dtype=np.float32)
    )[0]
    assert list(body["probabilities"]) == ["setosa", "versicolor", "virginica"]
    assert np.allclose(list(body["probabilities"].values()), want, atol=1e-6)
    assert body["class_id"] == int(np.argmax(want))
    assert body["prediction"] == ["setosa", "versicolor", "virginica"][body["class_id"]]
    assert body["prediction"] == "setosa"  # a textbook setosa row; both iris models are trained
    assert body["confidence"] == pytest.approx(float(np.max(want)), abs=1e-6)
    decode, pre, infer = server_timing_ms(r)
    assert min(decode, pre, infer) >= 0
    if server.config.inject_delay_ms:
        assert infer >= server.config.inject_delay_ms  # the injected service time shows up as model time


@e2e
def test_predict_batch(tabular) -> None:
    _, client = tabular
    rows = [IRIS_ROW, [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    r = client.post("/predict", json={"instances": rows})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["prediction"] for p in preds] == ["setosa", "virginica", "versicolor"]
    singles = [client.post("/predict", json={"features": row}).json() for row in rows]
    for batch_item, single in zip(preds, singles, strict=True):
        assert batch_item["class_id"] == single["class_id"]
        assert batch_item["confidence"] == pytest.approx(single["confidence"], abs=1e-5)
    server_timing_ms(r)


@e2e
def test_image_routes_refused_on_tabular_target(tabular) -> None:
    _, client = tabular
    for path in ("/predict/image", "/predict/image/base64"):
        r = client.post(path, json={"image": "aGVsbG8="})
        assert r.status_code == 409
        assert r.json()["error"] == "wrong-model-kind"


@e2e
def test_openapi(tabular) -> None:
    server, client = tabular
    r = client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert {"/health", "/predict", "/predict/image", "/predict/image/base64"} <= set(doc["paths"])
    predict = doc["paths"]["/predict"]["post"]
    assert {"200", "400", "413", "415", "422"} <= set(predict["responses"])
    inst = doc["components"]["schemas"]["InstancesRequest"]["properties"]["instances"]
    assert inst["maxItems"] == server.config.limits.max_batch
    assert set(doc["paths"]["/predict/image"]["post"]["responses"]) == {"409"}  # not served here
    docs = client.get("/docs")
    if server.config.framework == "fastapi":
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
    else:
        assert docs.status_code == 404 and docs.json()["error"] == "not-found"


@e2e
def test_workers_affinity_and_threads(tabular) -> None:
    server, _ = tabular
    cfg = server.config
    master = psutil.Process(server.pid)
    workers = [p for p in master.children(recursive=True) if "resource_tracker" not in " ".join(p.cmdline())]
    if cfg.server != "uvicorn" or cfg.workers > 1:
        assert len(workers) >= cfg.workers  # gunicorn / uvicorn supervisor: one child per worker
    for proc in [master, *workers]:
        if cfg.cpus:
            assert proc.cpu_affinity() == cfg.cpus
        assert proc.environ().get("OMP_NUM_THREADS") == str(cfg.intra_op_threads)


# -- image targets ----------------------------------------------------------------------------------------
def make_image(width: int, height: int, mode: str = "RGB", fmt: str = "PNG", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


IMAGE_MODES = [
    TargetConfig(framework="flask", server="gunicorn-gthread", model="resnet18", format="onnx", threads=2),
    TargetConfig(framework="fastapi", server="uvicorn", model="resnet18", format="onnx"),
]


@pytest.fixture(scope="module")
def resnet18_onnx(zoo: Path):
    return load_predictor("resnet18", "onnx", zoo)


@pytest.fixture(scope="module", params=IMAGE_MODES, ids=lambda c: f"{c.framework}-{c.server}")
def image_target(request: pytest.FixtureRequest, zoo: Path):
    config = TargetConfig.from_dict({**request.param.to_dict(), "zoo_dir": str(zoo)})
    with (
        ServerProcess(config, ready_timeout_s=120) as server,
        httpx.Client(base_url=server.url, timeout=60) as c,
    ):
        yield server, c
    assert not server.is_alive()


def expected_top5(png: bytes, predictor) -> list[int]:
    x = preprocess_image(Image.open(io.BytesIO(png)).convert("RGB"))[np.newaxis]
    return [int(i) for i in np.argsort(-predictor.predict(x)[0], kind="stable")[:5]]


@e2e
@pytest.mark.parametrize(
    "size,mode,fmt",
    [
        ((320, 240), "RGB", "JPEG"),
        ((64, 500), "L", "PNG"),
        ((1, 1), "RGBA", "PNG"),
        ((2000, 3), "RGB", "PNG"),
    ],
)
def test_image_multipart(image_target, resnet18_onnx, size, mode, fmt) -> None:
    _, client = image_target
    data = make_image(*size, mode=mode, fmt=fmt)
    r = client.post("/predict/image", files={"file": (f"x.{fmt.lower()}", data, f"image/{fmt.lower()}")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [t["class_id"] for t in body["top_5"]] == expected_top5(data, resnet18_onnx)
    probs = [t["probability"] for t in body["top_5"]]
    assert probs == sorted(probs, reverse=True) and len(probs) == 5
    assert (body["class_id"], body["top_class"], body["confidence"]) == (
        body["top_5"][0]["class_id"], body["top_5"][0]["class"], probs[0],
    )  # fmt: skip
    assert body["top_class"] and isinstance(body["top_class"], str)
    _, _, infer = server_timing_ms(r)
    assert body["inference_time_ms"] == pytest.approx(infer, abs=0.0015)


@e2e
def test_image_base64_plain_and_data_url(image_target, resnet18_onnx) -> None:
    _, client = image_target
    data = make_image(300, 200, fmt="PNG", seed=3)
    b64 = base64.b64encode(data).decode()
    want = expected_top5(data, resnet18_onnx)
    for payload in (b64, f"data:image/png;base64,{b64}"):
        r = client.post("/predict/image/base64", json={"image": payload})
        assert r.status_code == 200, r.text
        assert [t["class_id"] for t in r.json()["top_5"]] == want
        server_timing_ms(r)
    r = client.post("/predict", json={"features": IRIS_ROW})
    assert r.status_code == 409 and r.json()["error"] == "wrong-model-kind"


def test_openapi_identical_on_both_frameworks(zoo: Path) -> None:
    """Both frameworks publish the same document (only the title differs)."""
    from fastapi.testclient import TestClient

    from deploybench.targets import fastapi_app, flask_app
    from deploybench.targets.service import Service

    docs = []
    for module in (flask_app, fastapi_app):
        cfg = TargetConfig(model="iris-rf", format="onnx", zoo_dir=str(zoo))
        svc = Service(cfg, StubPredictor(), task="tabular", class_names=["a", "b", "c"])
        app = module.create_app(cfg, svc)
        client = app.test_client() if module is flask_app else TestClient(app)
        doc = json.loads(
            client.get("/openapi.json").data if module is flask_app else client.get("/openapi.json").text
        )
        doc["info"].pop("title")
        docs.append(doc)
    assert docs[0] == docs[1]


# -- the catch-all: an unexpected exception is a JSON 500, counted -----------------------------------------
class StubPredictor:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if self.fail:
            raise RuntimeError("boom")
        return np.tile(np.array([[0.7, 0.2, 0.1]], dtype=np.float32), (len(batch), 1))


def test_catch_all_turns_unexpected_errors_into_json_500() -> None:
    from fastapi.testclient import TestClient

    from deploybench.targets import fastapi_app, flask_app
    from deploybench.targets.service import Service

    for module in (flask_app, fastapi_app):
        cfg = TargetConfig(framework="flask" if module is flask_app else "fastapi", model="iris-rf")
        svc = Service(cfg, StubPredictor(fail=True), task="tabular", class_names=["a", "b", "c"])
        app = module.create_app(cfg, svc)
        if module is flask_app:
            r = app.test_client().post("/predict", json={"features": IRIS_ROW})
            status, body = r.status_code, r.get_json()
        else:
            r = TestClient(app, raise_server_exceptions=False).post("/predict", json={"features": IRIS_ROW})
            status, body = r.status_code, r.json()
        assert status == 500
        assert body == {"error": "internal-error", "detail": "unexpected RuntimeError in the target"}
        assert svc.internal_errors == 1


def test_head_health_is_answered_by_both_frameworks() -> None:
    from fastapi.testclient import TestClient

    from deploybench.targets import fastapi_app, flask_app
    from deploybench.targets.service import Service

    for module in (flask_app, fastapi_app):
        cfg = TargetConfig(framework="flask" if module is flask_app else "fastapi", model="iris-rf")
        app = module.create_app(
            cfg, Service(cfg, StubPredictor(), task="tabular", class_names=["a", "b", "c"])
        )
        client = app.test_client() if module is flask_app else TestClient(app)
        assert client.head("/health").status_code == 200, module.__name__


def test_fastapi_client_disconnect_mid_body_is_not_an_internal_error() -> None:
    """A client that goes away mid-upload (e.g. Locust stopping users) must not count as a server error."""
    import asyncio

    from deploybench.targets import fastapi_app
    from deploybench.targets.service import Service

    cfg = TargetConfig(framework="fastapi", model="iris-rf")
    svc = Service(cfg, StubPredictor(), task="tabular", class_names=["a", "b", "c"])
    app = fastapi_app.create_app(cfg, svc)
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    messages = iter([
        {"type": "http.request", "body": b'{"features": [1', "more_body": True},
        {"type": "http.disconnect"},
    ])  # fmt: skip
    sent: list[dict] = []

    async def receive() -> dict:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert svc.internal_errors == 0
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [400]


# -- preprocessing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(640, 480), (224, 224), (100, 900), (37, 23)])
def test_preprocess_matches_resize_then_crop(size) -> None:
    img = Image.open(io.BytesIO(make_image(*size, fmt="PNG", seed=1))).convert("RGB")
    got = preprocess_image(img)
    assert got.shape == (3, CROP_PX, CROP_PX) and got.dtype == np.float32
    # the torchvision recipe done naively: resize the shorter side to 256, then center-crop 224
    w, h = img.size
    s = 256 / min(w, h)
    nw, nh = (256, int(h * s)) if w <= h else (int(w * s), 256)
    big = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = round((nw - 224) / 2), round((nh - 224) / 2)
    ref = (
        np.asarray(big.crop((left, top, left + 224, top + 224)), np.float32) / 255 - IMAGENET_MEAN
    ) / IMAGENET_STD
    diff = np.abs(got - ref.transpose(2, 0, 1))
    # identical recipe; only the resampler's rounding differs (1/255 of a pixel step ≈ 0.017 after /std)
    assert float(np.mean(diff)) < 0.02
    assert float(np.percentile(diff, 99)) < 0.2


# -- launcher ------------------------------------------------------------------------------------------
def test_config_round_trip_and_validation() -> None:
    cfg = TargetConfig(framework="flask", model="iris-mlp", format="torchscript", workers=3, cpus=[0],
                       limits=Limits(max_batch=4), inject_delay_ms=1.5)  # fmt: skip
    assert cfg.server == "gunicorn-sync"
    again = TargetConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    bad = [
        {"framework": "flask", "server": "uvicorn"},
        {"framework": "bottle"},
        {"workers": 0},
        {"framework": "fastapi", "threads": 4},
        {"model": "nope"},
        {"model": "iris-rf", "format": "torchscript"},
        {"cpus": [10_000]},
        {"port": 70000},
        {"limits": Limits(max_body_bytes=0)},
    ]
    for overrides in bad:
        with pytest.raises(UsageError):
            TargetConfig(**overrides).validate()
    with pytest.raises(UsageError, match="unknown target config"):
        TargetConfig.from_dict({"framwork": "flask"})


def test_bind_listener_binds_listens_and_reports_the_real_port() -> None:
    with bind_listener("127.0.0.1", 0) as sock:
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port > 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1  # listening already
        # Linux copies TCP_NODELAY to accepted connections; uvicorn --fd would leave Nagle on otherwise
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass  # the OS completes the handshake from the backlog
        with pytest.raises(TargetError, match=rf"port 127\.0\.0\.1:{port} is already in use"):
            bind_listener("127.0.0.1", port)


def test_server_command_serves_the_inherited_socket() -> None:
    for server in ("uvicorn", "gunicorn-uvicorn", "gunicorn-sync", "gunicorn-gthread"):
        cfg = TargetConfig(framework="fastapi" if "uvicorn" in server else "flask", server=server)
        cmd = server_command(cfg, 43210, fd=7)
        assert "43210" not in " ".join(cmd)  # it serves the socket, it does not bind the port itself
        if server == "uvicorn":
            assert cmd[cmd.index("--fd") + 1] == "7" and "--port" not in cmd and "--host" not in cmd
        else:
            assert cmd[cmd.index("--bind") + 1] == "fd://7"
        bound = server_command(cfg, 43210)  # without fd: binds host:port itself
        assert "43210" in " ".join(bound) and "--fd" not in bound and "fd://" not in " ".join(bound)


def test_gunicorn_gets_whole_seconds() -> None:
    """gunicorn's --timeout and --keep-alive take integers: a fractional limit is rounded up, never 0."""
    cfg = TargetConfig(framework="flask", limits=Limits(request_timeout_s=0.5, keep_alive_s=2.2))
    cmd = server_command(cfg, 43210, fd=7)
    assert cmd[cmd.index("--timeout") + 1] == "1" and cmd[cmd.index("--keep-alive") + 1] == "3"
    cmd = server_command(TargetConfig(framework="flask"), 43210, fd=7)
    assert cmd[cmd.index("--timeout") + 1] == "30" and cmd[cmd.index("--keep-alive") + 1] == "5"


def test_port_already_bound_fails_fast_naming_it(zoo: Path) -> None:
    """The launcher's own bind fails: a TargetError naming host:port before any process is started (this
    test is not e2e, so starting one would fail it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = TargetConfig(framework="fastapi", model="iris-rf", format="onnx", port=port, zoo_dir=str(zoo))
        server = ServerProcess(cfg)
        with pytest.raises(TargetError, match=rf"port 127\.0\.0\.1:{port} is already in use"):
            server.start()
        assert server.pid is None and server.returncode is None and not server.is_alive()


# -- several targets at once: distinct ports, same API ----------------------------------------------------
ALL_MODES = {
    server: TargetConfig(framework=fw, server=server, model="iris-rf", format="onnx")
    for fw, servers in FRAMEWORK_SERVERS.items()
    for server in servers
}


@pytest.fixture(scope="module")
def together(zoo: Path):
    """The four server modes, started concurrently (bind-then-report: no two can end up on one port)."""
    procs = {
        name: ServerProcess(
            TargetConfig.from_dict({**cfg.to_dict(), "zoo_dir": str(zoo)}), ready_timeout_s=120
        )
        for name, cfg in ALL_MODES.items()
    }
    with started_together(procs) as urls:
        yield procs, urls


@e2e
def test_targets_started_together_get_distinct_working_ports(together) -> None:
    procs, urls = together
    ports = {name: server.port for name, server in procs.items()}
    assert len(set(ports.values())) == len(procs), ports
    for name, server in procs.items():
        assert urls[name] == server.url == f"http://127.0.0.1:{server.port}"
        assert listening(server.pid) == {("127.0.0.1", server.port)}  # url names the port really listening
        r = httpx.get(server.url + "/health", timeout=30)
        assert r.status_code == 200
        body = r.json()
        assert (body["framework"], body["server"]) == (server.config.framework, name)
        assert body["pid"] in group_pids(server.pid)  # answered by this target's own process group


@e2e
def test_head_health_over_every_server_mode(together) -> None:
    procs, _ = together
    for name, server in procs.items():
        r = httpx.head(server.url + "/health", timeout=30)
        assert (r.status_code, r.content) == (200, b""), name


@e2e
def test_openapi_document_is_the_same_from_every_server_mode(together) -> None:
    """The FastAPI targets serve the very document the Flask targets serve (only the title names the
    framework)."""
    procs, _ = together
    docs = {}
    for name, server in procs.items():
        r = httpx.get(server.url + "/openapi.json", timeout=30)
        assert r.status_code == 200, name
        doc = r.json()
        title = doc["info"].pop("title")
        assert ("Flask" if server.config.framework == "flask" else "FastAPI") in title
        docs[name] = doc
    reference = docs.pop("gunicorn-sync")  # Flask
    assert {"/health", "/predict"} <= set(reference["paths"])
    for name, doc in docs.items():
        assert doc == reference, name


@e2e
def test_returncode_says_how_the_target_died(zoo: Path) -> None:
    cfg = TargetConfig(
        framework="flask", server="gunicorn-sync", model="iris-rf", format="onnx", zoo_dir=str(zoo)
    )
    server = ServerProcess(cfg, ready_timeout_s=120)
    assert server.returncode is None  # never started
    with server:
        assert server.returncode is None  # running
        pids = group_pids(server.pid)
        os.kill(server.pid, signal.SIGKILL)  # the master only: its worker is left behind for stop()
        wait_until(lambda: not server.is_alive(), 30, "the killed master to be seen dead")
        assert server.returncode == -signal.SIGKILL
    assert server.returncode == -signal.SIGKILL  # stop() keeps it
    assert_all_gone(pids)


@e2e
def test_missing_artifact_fails_fast_with_log_tail(tmp_path: Path) -> None:
    for framework in ("flask", "fastapi"):
        cfg = TargetConfig(
            framework=framework, model="iris-rf", format="onnx", zoo_dir=str(tmp_path / "empty")
        )
        t0 = time.perf_counter()
        with pytest.raises(TargetError) as info:
            ServerProcess(cfg, ready_timeout_s=60).start()
        elapsed = time.perf_counter() - t0
        msg = str(info.value)
        assert "command:" in msg and "targets." in msg
        assert "ArtifactError" in msg or "manifest" in msg
        assert elapsed < 45, f"a start failure took {elapsed:.1f}s to report (deadline 60s)"


@e2e
def test_ready_timeout_kills_the_server(zoo: Path) -> None:
    cfg = TargetConfig(framework="fastapi", model="iris-rf", format="onnx", zoo_dir=str(zoo))
    server = ServerProcess(cfg, ready_timeout_s=0.01)
    with pytest.raises(TargetError, match="not ready after"):
        server.start()
    assert not server.is_alive()
    assert server.returncode is not None
    assert_all_gone([server.pid])


@e2e
def test_serve_cli_foreground_and_sigterm(zoo: Path, tmp_path: Path) -> None:
    """`deploybench serve --port N` serves on exactly that port and prints its URL."""
    log = tmp_path / "serve.log"
    # Reserve a port without a race: a bound, not listening SO_REUSEADDR socket keeps every other process off
    # it, while the server (which also sets SO_REUSEADDR) can still bind it and listen.
    reserve = socket.socket()
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserve.bind(("127.0.0.1", 0))
    port = reserve.getsockname()[1]
    cmd = [sys.executable, "-m", "deploybench", "serve", "--framework", "flask",
           "--server", "gunicorn-gthread", "--threads", "2", "--model", "iris-rf",
           "--format", "onnx", "--port", str(port), "--zoo", str(zoo), "--log", str(log)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        line = proc.stdout.readline()  # blocks until the URL line (or EOF if it failed)
        m = re.search(rf"at (http://127\.0\.0\.1:{port}) ", line)
        assert m, line + proc.stderr.read()
        server_pids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert server_pids
        r = httpx.get(m.group(1) + "/health", timeout=10)
        assert r.status_code == 200 and r.json()["framework"] == "flask"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert_all_gone(server_pids)
        assert log.exists()
    finally:
        reserve.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@e2e
def test_serve_cli_bad_input_exits_2() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "deploybench", "serve", "--framework", "flask", "--server", "uvicorn"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert "cannot run flask" in r.stderr


# -- FastAPI handler styles (inline in the event loop vs the threadpool) -------------------------------------
@e2e
@pytest.mark.parametrize("server_mode", ["uvicorn", "gunicorn-uvicorn"])
@pytest.mark.parametrize("handler", ["inline", "threadpool"])
def test_fastapi_handler_styles_serve_report_and_keep_the_deadline(
    zoo: Path, tmp_path: Path, handler: str, server_mode: str
) -> None:
    """Both styles on real servers: the same reply with Server-Timing, /health naming the style, and a 503
    request-timeout past the deadline — at the deadline from the threadpool, when the inference ends inline
    (nothing interrupts an inference running in the event loop)."""
    base = dict(framework="fastapi", server=server_mode, model="iris-rf", format="onnx", zoo_dir=str(zoo),
                handler=handler)  # fmt: skip
    inject_ms, timeout_s = 2500.0, 0.5
    normal = ServerProcess(TargetConfig(**base), log_path=tmp_path / "normal.log", ready_timeout_s=120)
    slow = ServerProcess(
        TargetConfig(**base, inject_delay_ms=inject_ms, limits=Limits(request_timeout_s=timeout_s)),
        log_path=tmp_path / "slow.log", ready_timeout_s=120,
    )  # fmt: skip
    with started_together({"normal": normal, "slow": slow}):
        r = httpx.post(f"{normal.url}/predict", json={"features": IRIS_ROW}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["prediction"] in ("setosa", "versicolor", "virginica")
        server_timing_ms(r)
        for server in (normal, slow):
            health = httpx.get(f"{server.url}/health", timeout=10).json()
            assert health["handler"] == handler == server.config.resolved_handler()

        t0 = time.perf_counter_ns()
        try:
            r: httpx.Response | None = httpx.post(
                f"{slow.url}/predict", json={"features": IRIS_ROW}, timeout=60
            )
        except httpx.TransportError:
            r = None  # documented for inline under gunicorn: the blocked worker is killed by gunicorn
        elapsed_s = (time.perf_counter_ns() - t0) / 1e9
        if handler == "inline" and server_mode == "gunicorn-uvicorn":
            assert r is None or r.status_code == 503
        else:
            assert r is not None and r.status_code == 503, r
            assert r.json()["error"] == "request-timeout" and "request_timeout_s" in r.json()["detail"]
        if handler == "threadpool":
            assert elapsed_s < inject_ms / 1000, f"answered after {elapsed_s:.2f} s, not at the deadline"
        elif server_mode == "uvicorn":
            assert elapsed_s >= inject_ms / 1000  # documented: the 503 comes when the inference ends

        # the target still answers afterwards (under gunicorn, possibly from a replacement worker)
        def healthy() -> bool:
            try:
                return httpx.get(f"{slow.url}/health", timeout=10).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, 60, "the slow target to answer /health again")
        assert slow.is_alive()


@e2e
def test_auto_handler_is_inline_for_tabular_and_threadpool_for_image(zoo: Path) -> None:
    configs = [
        TargetConfig(framework="fastapi", model="iris-rf", format="onnx", zoo_dir=str(zoo)),
        TargetConfig(framework="fastapi", model="resnet18", format="onnx", zoo_dir=str(zoo)),
        TargetConfig(framework="flask", model="iris-rf", format="onnx", zoo_dir=str(zoo)),
    ]
    servers = {i: ServerProcess(c, ready_timeout_s=120) for i, c in enumerate(configs)}
    with started_together(servers) as urls:
        got = [httpx.get(f"{urls[i]}/health", timeout=10).json()["handler"] for i in range(len(configs))]
    assert got == ["inline", "threadpool", ""]
