"""The FastAPI handler style (TargetConfig.handler: inline | threadpool | auto) in-process: how "auto" is
resolved, validation, the CLI options, /health, identical replies in both styles, the request deadline of
each style, and the overhead benchmark's pure parts (request bodies, Markdown)."""

from __future__ import annotations

import argparse
import re
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from deploybench.bench.overhead.__main__ import _modes, parse_args
from deploybench.bench.overhead.report import handler_styles_markdown, overhead_markdown
from deploybench.bench.overhead.runner import DEFAULT_MODES, model_request
from deploybench.commands import load as load_cmd
from deploybench.commands import serve as serve_cmd
from deploybench.errors import UsageError
from deploybench.targets import fastapi_app
from deploybench.targets.serve import AUTO_HANDLER, Limits, TargetConfig
from deploybench.targets.service import Service
from deploybench.vocabulary import HANDLER_STYLES

ROW = [5.1, 3.5, 1.4, 0.2]
TIMING_RE = re.compile(r"^decode;dur=\d+\.\d{3}, preprocess;dur=\d+\.\d{3}, infer;dur=\d+\.\d{3}$")


class StubPredictor:
    def __init__(self, sleep_s: float = 0.0) -> None:
        self.sleep_s = sleep_s

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return np.tile(np.array([[0.7, 0.2, 0.1]], dtype=np.float32), (len(batch), 1))


# -- resolution and validation -----------------------------------------------------------------------------
def test_auto_resolves_by_the_model_task() -> None:
    assert TargetConfig(framework="fastapi", model="iris-rf").resolved_handler() == AUTO_HANDLER["tabular"]
    assert TargetConfig(framework="fastapi", model="resnet18").resolved_handler() == AUTO_HANDLER["image"]
    assert AUTO_HANDLER == {"tabular": "inline", "image": "threadpool"}


def test_an_explicit_style_wins_and_flask_has_none() -> None:
    for style in ("inline", "threadpool"):
        for model in ("iris-rf", "resnet18"):
            assert TargetConfig(framework="fastapi", model=model, handler=style).resolved_handler() == style
    assert TargetConfig(framework="flask", model="iris-rf").resolved_handler() == ""


def test_a_model_file_resolves_by_its_shape_or_the_known_task(tmp_path) -> None:
    f = tmp_path / "m.onnx"
    f.write_bytes(b"x")
    assert (
        TargetConfig(framework="fastapi", model_file=str(f), input_shape=[4]).resolved_handler() == "inline"
    )
    image = TargetConfig(framework="fastapi", model_file=str(f), input_shape=[3, 32, 32])
    assert image.resolved_handler() == "threadpool"
    unknown = TargetConfig(framework="fastapi", model_file=str(f))
    assert unknown.task() is None
    assert unknown.resolved_handler() == "threadpool"  # a cost we cannot tell: never block the loop
    assert unknown.resolved_handler(task="tabular") == "inline"  # the loaded model told


def test_validation_and_round_trip() -> None:
    assert HANDLER_STYLES == ("auto", "inline", "threadpool")
    with pytest.raises(UsageError, match="handler must be one of"):
        TargetConfig(framework="fastapi", handler="fast").validate()
    with pytest.raises(UsageError, match="FastAPI option"):
        TargetConfig(framework="flask", handler="inline").validate()
    TargetConfig(framework="flask", handler="auto").validate()
    cfg = TargetConfig(framework="fastapi", handler="threadpool")
    assert TargetConfig.from_dict(cfg.to_dict()) == cfg


# -- the CLI ------------------------------------------------------------------------------------------------
def test_serve_and_load_take_handler() -> None:
    p = argparse.ArgumentParser()
    serve_cmd.add_arguments(p)
    assert serve_cmd.config_from_args(p.parse_args([])).handler == "auto"
    cfg = serve_cmd.config_from_args(p.parse_args(["--framework", "fastapi", "--handler", "threadpool"]))
    assert cfg.handler == "threadpool"
    with pytest.raises(SystemExit):
        p.parse_args(["--handler", "sideways"])

    lp = argparse.ArgumentParser()
    load_cmd.add_arguments(lp)
    base = ["--framework", "fastapi", "--server", "uvicorn", "--model", "iris-rf", "--format", "onnx"]
    assert load_cmd._target_from_args(lp.parse_args(base)).handler == "auto"
    assert load_cmd._target_from_args(lp.parse_args([*base, "--handler", "inline"])).handler == "inline"
    with pytest.raises(UsageError, match="not both"):
        load_cmd._target_from_args(lp.parse_args(["--url", "http://127.0.0.1:1", "--handler", "inline"]))


# -- the app in both styles ---------------------------------------------------------------------------------
def _client(handler: str, sleep_s: float = 0.0, timeout_s: float = 30.0) -> tuple[TestClient, Service]:
    cfg = TargetConfig(framework="fastapi", model="iris-rf", handler=handler,
                       limits=Limits(request_timeout_s=timeout_s))  # fmt: skip
    svc = Service(cfg, StubPredictor(sleep_s), task="tabular", class_names=["a", "b", "c"])
    return TestClient(fastapi_app.create_app(cfg, svc), raise_server_exceptions=False), svc


@pytest.mark.parametrize("handler", ["auto", "inline", "threadpool"])
def test_both_styles_answer_alike_and_health_reports_the_style(handler: str) -> None:
    client, svc = _client(handler)
    with client:
        r = client.post("/predict", json={"features": ROW})
        assert r.status_code == 200
        assert r.json() == {
            "prediction": "a", "class_id": 0, "confidence": pytest.approx(0.7),
            "probabilities": {"a": pytest.approx(0.7), "b": pytest.approx(0.2), "c": pytest.approx(0.1)},
        }  # fmt: skip
        assert TIMING_RE.match(r.headers["server-timing"])
        health = client.get("/health").json()
        assert health["handler"] == (handler if handler != "auto" else "inline") == svc.handler
        bad = client.post("/predict", json={"features": [1, 2]})
        assert bad.status_code == 422 and bad.json()["error"] == "invalid-features"


def test_threadpool_deadline_answers_at_the_deadline() -> None:
    client, _ = _client("threadpool", sleep_s=1.5, timeout_s=0.3)
    with client:
        t0 = time.perf_counter()
        r = client.post("/predict", json={"features": ROW})
        elapsed_s = time.perf_counter() - t0
    assert r.status_code == 503 and r.json()["error"] == "request-timeout"
    assert "request_timeout_s" in r.json()["detail"]
    assert elapsed_s < 1.2, f"answered after {elapsed_s:.2f} s, not at the 0.3 s deadline"


def test_inline_deadline_answers_503_when_the_inference_ends() -> None:
    """Inline, nothing interrupts the inference: the late result is replaced by the 503 when it ends."""
    client, _ = _client("inline", sleep_s=0.5, timeout_s=0.2)
    with client:
        t0 = time.perf_counter()
        r = client.post("/predict", json={"features": ROW})
        elapsed_s = time.perf_counter() - t0
    assert r.status_code == 503 and r.json()["error"] == "request-timeout"
    assert "finished too late" in r.json()["detail"]
    assert elapsed_s >= 0.5


# -- the overhead benchmark's pure parts --------------------------------------------------------------------
def test_overhead_modes_and_requests() -> None:
    assert _modes("fastapi:uvicorn:inline,flask:gunicorn-sync") == (
        ("fastapi", "uvicorn", "inline"), ("flask", "gunicorn-sync", ""),
    )  # fmt: skip
    assert _modes(None) == DEFAULT_MODES
    servers = {(fw, srv) for fw, srv, _ in DEFAULT_MODES}
    assert servers == {("fastapi", "uvicorn"), ("fastapi", "gunicorn-uvicorn"),
                       ("flask", "gunicorn-sync"), ("flask", "gunicorn-gthread")}  # fmt: skip
    assert parse_args([]).duration == 8.0
    tab, img = model_request("iris-rf"), model_request("resnet18")
    assert tab.path == "/predict" and tab.content_type == "application/json"
    assert img.path == "/predict/image" and img.content_type.startswith("multipart/form-data; boundary=")
    assert b"\xff\xd8" in img.body  # a JPEG inside
    assert tab.raw("127.0.0.1", 80).startswith(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:80\r\n")


def _side(rps: float, p99_us: float) -> dict:
    return {"throughput_rps": rps, "p50_us": p99_us / 3, "p99_us": p99_us, "errors": 0, "runs": [],
            "server_cpu_us_per_request": 1e6 / rps}  # fmt: skip


def test_overhead_markdown_flags_rows_below_the_threshold() -> None:
    result = {
        "command": "wrk -t1 -c8 -d8s (closed loop)", "rounds": 2,
        "rows": [
            {"framework": "fastapi", "server": "uvicorn", "handler": "inline", "model": "iris-rf",
             "minimal": _side(9000, 1500), "target": _side(8800, 1600), "ratio_throughput": 8800 / 9000,
             "ratio_p99": 1600 / 1500},
            {"framework": "flask", "server": "gunicorn-sync", "handler": "", "model": "iris-rf",
             "minimal": _side(3800, 3200), "target": _side(3000, 4000), "ratio_throughput": 3000 / 3800,
             "ratio_p99": 4000 / 3200},
        ],
    }  # fmt: skip
    md = overhead_markdown(result, threshold=0.9)
    rows = [line for line in md.splitlines() if line.startswith("| fastapi") or line.startswith("| flask")]
    assert len(rows) == 2
    assert "| 0.98 |" in rows[0] and "⚠" not in rows[0]
    assert "0.79 ⚠" in rows[1]
    assert "| 1.50 / 1.60 |" not in md and "| 0.50 / 1.50 | 0.53 / 1.60 |" in md
    assert "| 111 / 114 |" in md  # server CPU µs per request, minimal / target


def test_handler_styles_markdown() -> None:
    result = {
        "sweep_connections": [1, 2], "generator": "wrk", "duration_s": 1.0, "open_loop_generator": "python",
        "rows": [
            {"model": "iris-rf", "handler": "inline", "slo_p99_ms": 10.0, "throughput_under_slo_rps": 5000.0,
             "connections_at_best": 2, "max_throughput_rps": 5100.0, "common_rate_rps": 1000.0,
             "at_common_rate": {"p50_us": 500.0, "p99_us": 2000.0, "errors": 0}},
        ],
    }  # fmt: skip
    md = handler_styles_markdown(result)
    assert "| iris-rf | inline | 10 | 5,000 (2) | 5,100 | 1000.0 | 0.50 / 2.00 | 0 |" in md
