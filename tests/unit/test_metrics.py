"""The targets' Prometheus /metrics (``deploybench.targets.metrics``) in-process: what both apps count and
label, that /metrics itself is not counted, that it is a 404 without --metrics; the launcher's part (the
gunicorn hook, the private multiprocess folder in the environment); and prometheus_client's multiprocess
mode across real processes (values summed, a dead worker's in-flight gauge dropped by the child_exit hook)."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gunicorn.config
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from deploybench.commands import serve as serve_cmd
from deploybench.targets import fastapi_app, flask_app, gunicorn_conf
from deploybench.targets.metrics import MULTIPROC_DIR_ENV
from deploybench.targets.serve import GUNICORN_CONF_MODULE, TargetConfig, server_command, server_env
from deploybench.targets.service import Service

ROW = [5.1, 3.5, 1.4, 0.2]


class StubPredictor:
    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.tile(np.array([[0.7, 0.2, 0.1]], dtype=np.float32), (len(batch), 1))


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def names(text: str) -> set[str]:
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


class Client:
    """One in-process app of either framework behind a tiny common interface."""

    def __init__(self, framework: str, **config: Any) -> None:
        cfg = TargetConfig(framework=framework, model="iris-rf", format="onnx", **config)
        self.service = Service(cfg, StubPredictor(), task="tabular", class_names=["a", "b", "c"])
        module = fastapi_app if framework == "fastapi" else flask_app
        app = module.create_app(cfg, self.service)
        self.fastapi = framework == "fastapi"
        self.client: Any = (
            TestClient(app, raise_server_exceptions=False) if self.fastapi else app.test_client()
        )

    def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, str, dict[str, str]]:
        if self.fastapi:
            r = self.client.request(method, path, **kwargs)
            return r.status_code, r.text, {k.lower(): v for k, v in r.headers.items()}
        resp = self.client.open(path, method=method, **kwargs)
        return resp.status_code, resp.get_data(as_text=True), {k.lower(): v for k, v in resp.headers.items()}


@pytest.mark.parametrize("framework", ["flask", "fastapi"])
def test_both_apps_count_requests_by_method_route_and_status(framework: str) -> None:
    c = Client(framework, metrics=True)
    for _ in range(3):
        assert c.request("POST", "/predict", json={"features": ROW})[0] == 200
    assert c.request("POST", "/predict", json={"features": [1, 2]})[0] == 422
    assert c.request("GET", "/predict")[0] == 405
    assert c.request("GET", "/health")[0] == 200
    assert c.request("GET", "/no/such/path")[0] == 404
    assert c.request("GET", "/another-one")[0] == 404
    for _ in range(2):  # reading /metrics is never counted
        status, text, headers = c.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")

    def count(**labels: str) -> float:
        return value(text, "deploybench_http_requests_total", **labels)

    assert count(method="POST", route="/predict", status="200") == 3
    assert count(method="POST", route="/predict", status="422") == 1
    assert count(method="GET", route="/predict", status="405") == 1
    assert count(method="GET", route="/health", status="200") == 1
    assert count(method="GET", route="unmatched", status="404") == 2  # random paths add no series
    assert count(route="/metrics") == 0
    assert count() == 8
    hist = "deploybench_http_request_duration_seconds_count"
    assert value(text, hist, method="POST", route="/predict", status="200") == 3
    assert value(text, "deploybench_http_request_duration_seconds_sum", route="/predict") > 0
    assert value(text, "deploybench_http_requests_in_flight") == 0
    # the inference histogram: the 3 predictions only (the 422 was refused before the model), with labels
    assert value(text, "deploybench_inference_duration_seconds_count", model="iris-rf", format="onnx") == 3
    assert value(text, "deploybench_inference_duration_seconds_sum", model="iris-rf", format="onnx") > 0
    info = [
        s.labels
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "deploybench_target_info"
    ]
    assert info == [
        {"framework": framework, "server": c.service.config.server, "handler": c.service.handler,
         "model": "iris-rf", "format": "onnx", "version": info[0]["version"]}
    ]  # fmt: skip
    assert c.request("HEAD", "/metrics")[0] == 200
    assert c.request("POST", "/metrics")[0] == 405


@pytest.mark.parametrize("framework", ["flask", "fastapi"])
def test_the_in_flight_gauge_counts_a_request_while_it_runs(framework: str) -> None:
    c = Client(framework, metrics=True)
    seen: list[str] = []
    predict = c.service.predictor.predict

    def predict_and_look(batch: np.ndarray) -> np.ndarray:
        # inside a request: what /metrics would say now (the app's own exposition, no second request)
        if c.fastapi:
            metrics = c.client.app.state.metrics
        else:
            metrics = c.client.application.extensions["deploybench_metrics"]
        seen.append(metrics.exposition().decode())
        return predict(batch)

    c.service.predictor.predict = predict_and_look  # type: ignore[method-assign]
    assert c.request("POST", "/predict", json={"features": ROW})[0] == 200
    assert value(seen[0], "deploybench_http_requests_in_flight") == 1
    assert value(c.request("GET", "/metrics")[1], "deploybench_http_requests_in_flight") == 0


@pytest.mark.parametrize("framework", ["flask", "fastapi"])
def test_without_metrics_the_route_is_a_json_404_and_nothing_is_counted(framework: str) -> None:
    c = Client(framework)  # the default: off
    assert c.service.on_infer_ns is None
    status, text, headers = c.request("GET", "/metrics")
    assert status == 404 and headers["content-type"] == "application/json"
    assert text == '{"error":"not-found","detail":"no route GET /metrics"}'
    assert c.request("POST", "/predict", json={"features": ROW})[0] == 200


def test_a_fresh_app_per_test_never_clashes() -> None:
    """Each app has its own registry: two apps in one process count apart (no duplicated series)."""
    a, b = Client("flask", metrics=True), Client("flask", metrics=True)
    a.request("POST", "/predict", json={"features": ROW})
    text = b.request("GET", "/metrics")[1]
    assert value(text, "deploybench_http_requests_total") == 0


# -- the launcher -------------------------------------------------------------------------------------------
def test_config_cli_and_the_gunicorn_command() -> None:
    assert TargetConfig().metrics is False
    cfg = TargetConfig(framework="flask", metrics=True, workers=1)
    assert TargetConfig.from_dict(cfg.to_dict()) == cfg
    p = argparse.ArgumentParser()
    serve_cmd.add_arguments(p)
    assert serve_cmd.config_from_args(p.parse_args([])).metrics is False
    assert serve_cmd.config_from_args(p.parse_args(["--metrics"])).metrics is True
    hook = ["--config", f"python:{GUNICORN_CONF_MODULE}"]
    for server in ("gunicorn-sync", "gunicorn-gthread"):
        on = server_command(TargetConfig(framework="flask", server=server, metrics=True), 8000)
        off = server_command(TargetConfig(framework="flask", server=server), 8000)
        assert " ".join(hook) in " ".join(on) and "--config" not in off
    uvicorn = server_command(TargetConfig(framework="fastapi", server="uvicorn", metrics=True), 8000)
    assert "--config" not in uvicorn
    # multiprocess mode: any gunicorn, or several uvicorn workers; never without --metrics
    assert TargetConfig(framework="flask", server="gunicorn-sync", metrics=True).multiprocess_metrics()
    assert TargetConfig(framework="fastapi", server="gunicorn-uvicorn", metrics=True).multiprocess_metrics()
    assert TargetConfig(framework="fastapi", server="uvicorn", workers=2, metrics=True).multiprocess_metrics()
    assert not TargetConfig(framework="fastapi", server="uvicorn", metrics=True).multiprocess_metrics()
    assert not TargetConfig(framework="flask", server="gunicorn-sync").multiprocess_metrics()


def test_server_env_sets_the_private_folder_and_never_inherits_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_DIR_ENV, "/somewhere/else")
    monkeypatch.setenv(MULTIPROC_DIR_ENV.lower(), "/somewhere/else")
    cfg = TargetConfig(framework="flask", metrics=True)
    env = server_env(cfg, metrics_dir=tmp_path)
    assert env[MULTIPROC_DIR_ENV] == str(tmp_path) and MULTIPROC_DIR_ENV.lower() not in env
    env = server_env(TargetConfig(framework="fastapi"))
    assert MULTIPROC_DIR_ENV not in env and MULTIPROC_DIR_ENV.lower() not in env


def test_the_gunicorn_config_module_sets_only_the_child_exit_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = set(gunicorn.config.Config().settings)
    assert {n for n in vars(gunicorn_conf) if n in settings} == {"child_exit"}
    for name in ("gauge_livesum_111.db", "gauge_livesum_222.db", "counter_111.db", "gauge_max_111.db"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))
    gunicorn_conf.child_exit(None, SimpleNamespace(pid=111))
    # the dead worker's live gauge goes; its counters (and the other worker's files) stay
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["counter_111.db", "gauge_livesum_222.db", "gauge_max_111.db"]
