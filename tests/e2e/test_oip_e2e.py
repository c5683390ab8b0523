"""The Open Inference Protocol v2 on real targets: a FastAPI + uvicorn and a Flask + gunicorn-sync target
serving iris-mlp (ONNX) answer an OIP v2 client (plain urllib, as any OIP client sends it) with the same
probabilities as /predict; bad requests get 4xx JSON; and a short lean-engine run of the ``oip`` scenario
against each records only successes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploybench import paths
from deploybench.errors import UsageError
from deploybench.loadtests.runner import run_load
from deploybench.targets.serve import ServerProcess, TargetConfig
from deploybench.targets.zoo import build_zoo
from tests.support.servers import started_together

pytestmark = pytest.mark.e2e

FRAMEWORKS = {"fastapi": "uvicorn", "flask": "gunicorn-sync"}
MODEL = "iris-mlp"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[str, str]]:
    zoo = paths.zoo_dir()
    build_zoo(zoo, models=[MODEL], formats=["onnx"])  # a no-op when `deploybench build` already ran
    procs = {
        fw: ServerProcess(
            TargetConfig(framework=fw, server=server, model=MODEL, format="onnx", zoo_dir=str(zoo.resolve())),
            ready_timeout_s=120,
        )
        for fw, server in FRAMEWORKS.items()
    }
    with started_together(procs) as started:
        yield started


def call(url: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any, dict[str, str]]:
    """One HTTP request as an OIP client makes it: JSON in, JSON out (also for a 4xx)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url + path, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), {k.lower(): v for k, v in exc.headers.items()}


@pytest.mark.parametrize("framework", list(FRAMEWORKS))
def test_an_oip_client_is_answered_like_predict(urls: dict[str, str], framework: str) -> None:
    url = urls[framework]
    assert call(url, "/v2/health/ready")[:2] == (200, {"ready": True})
    status, meta, _ = call(url, f"/v2/models/{MODEL}")
    assert status == 200 and meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    request = {
        "id": "oip-1",
        "inputs": [
            {"name": "input", "shape": [3, 4], "datatype": "FP32", "data": [v for r in ROWS for v in r]}
        ],
    }
    status, body, headers = call(url, f"/v2/models/{MODEL}/infer", request)
    assert status == 200, body
    assert body["model_name"] == MODEL and body["id"] == "oip-1"
    out = {o["name"]: o for o in body["outputs"]}
    assert out["probabilities"]["datatype"] == "FP32" and out["probabilities"]["shape"] == [3, 3]
    assert "infer;dur=" in headers["server-timing"]
    _, pred, _ = call(url, "/predict", {"instances": ROWS})
    expected = [list(p["probabilities"].values()) for p in pred["predictions"]]
    probs = out["probabilities"]["data"]
    assert [probs[i * 3 : i * 3 + 3] for i in range(3)] == expected  # the same model, the same numbers
    assert out["label"]["data"] == [p["class_id"] for p in pred["predictions"]]
    assert out["class_name"]["data"] == [p["prediction"] for p in pred["predictions"]]
    # a nested request asking for one output
    nested = {"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP64", "data": ROWS}],
              "outputs": [{"name": "label"}]}  # fmt: skip
    status, body, _ = call(url, f"/v2/models/{MODEL}/infer", nested)
    assert status == 200 and [o["name"] for o in body["outputs"]] == ["label"]


@pytest.mark.parametrize("framework", list(FRAMEWORKS))
def test_bad_oip_requests_get_4xx_json(urls: dict[str, str], framework: str) -> None:
    url = urls[framework]
    good = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROWS[0]}
    cases = [
        (f"/v2/models/{MODEL}/infer", {"inputs": [{**good, "shape": [2, 4]}]}, None, 400, "data has 4"),
        (f"/v2/models/{MODEL}/infer", {"inputs": [{**good, "datatype": "BYTES"}]}, None, 400, "datatype"),
        (f"/v2/models/{MODEL}/infer", None, b'{"inputs": [', 400, "JSON"),
        ("/v2/models/resnet18/infer", {"inputs": [good]}, None, 404, "resnet18"),
    ]
    for path, body, raw, want, fragment in cases:
        status, reply, _ = call(url, path, body, raw)
        assert status == want and fragment in reply["error"], (path, status, reply)
    status, health, _ = call(url, "/health")
    assert health["internal_errors"] == 0


@pytest.mark.parametrize("framework", list(FRAMEWORKS))
def test_lean_oip_scenario_records_only_successes(
    urls: dict[str, str], framework: str, tmp_path: Path
) -> None:
    rec = run_load(
        urls[framework], "oip", duration_s=1.5, users=2, record_path=tmp_path / "oip.json", engine="lean"
    )
    assert rec.status == "complete", rec.error
    assert rec.config["scenario"] == "oip" and rec.config["scenario_options"]["oip_model"] == MODEL
    (s,) = rec.series
    assert s.name == f"POST /v2/models/{MODEL}/infer"
    assert s.count > 0 and s.error_count == 0 and not s.errors
    assert set(s.server_timing_us) >= {"decode", "preprocess", "infer"}


@pytest.mark.parametrize("engine", ["lean", "locust"])
def test_oip_scenario_on_an_unknown_model_is_a_usage_error(
    urls: dict[str, str], engine: str, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="no such model"):
        run_load(urls["fastapi"], "oip", duration_s=1, users=1, model="nope", record_path=tmp_path / "x.json",
                 engine=engine)  # fmt: skip
    assert not (tmp_path / "x.json").exists()


def test_locust_oip_scenario_records_only_successes(urls: dict[str, str], tmp_path: Path) -> None:
    rec = run_load(
        urls["flask"], "oip", duration_s=2, users=1, record_path=tmp_path / "l.json", engine="locust"
    )
    assert rec.status == "complete", rec.error
    (s,) = rec.series
    assert s.name == f"POST /v2/models/{MODEL}/infer" and s.count > 0 and not s.errors
