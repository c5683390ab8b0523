"""Seldon MLServer and LitServe as real processes from their own virtualenvs (deploybench.targets.external):
the envs are made on first use (pip, slow once; then reused), each server answers one request with the zoo
model's probabilities, a server that cannot start fails with its log tail, and stop() leaves no process."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnxruntime as ort
import psutil
import pytest

from deploybench import paths
from deploybench.errors import TargetError
from deploybench.targets.catalog import IRIS_CLASSES, artifact_entry
from deploybench.targets.external import (
    EXTERNAL_SERVERS,
    ExternalServerProcess,
    ensure_env,
    env_info,
    env_versions,
)
from deploybench.targets.zoo import build_zoo

# making an env downloads and installs ~75 packages the first time (about a minute each here)
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 3.0, 5.0, 2.0], [5.9, 2.8, 4.3, 1.3]]
NEEDED = {"iris-rf": ["pickle", "onnx"], "iris-mlp": ["onnx"]}


@pytest.fixture(scope="module")
def zoo() -> Path:
    root = paths.zoo_dir()
    for model, fmts in NEEDED.items():
        build_zoo(root, models=[model], formats=fmts)
    return root.resolve()


@pytest.fixture(scope="module")
def envs() -> dict[str, Path]:
    """Both envs, in the shared cache (artifacts/model-servers or $DEPLOYBENCH_MODEL_SERVERS)."""
    return {server: ensure_env(server) for server in EXTERNAL_SERVERS}


def zoo_probabilities(zoo: Path, model: str, fmt: str) -> np.ndarray:
    """What the zoo artifact itself says for ROWS, computed in this process."""
    _, path = artifact_entry(model, fmt, zoo)
    batch = np.asarray(ROWS, dtype=np.float32)
    if fmt == "pickle":
        return np.asarray(joblib.load(path).predict_proba(batch))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    out = "probabilities" if "probabilities" in names else names[-1]
    return np.asarray(session.run([out], {session.get_inputs()[0].name: batch})[0])


def post_json(url: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def assert_all_gone(pid: int) -> None:
    """Neither the server nor anything of its process group lives on (zombies awaiting a reaper aside)."""
    left = []
    for p in psutil.process_iter(["status"]):
        try:
            if (p.pid == pid or os.getpgid(p.pid) == pid) and p.info["status"] != psutil.STATUS_ZOMBIE:
                left.append(p.pid)
        except (OSError, psutil.Error):
            continue
    assert not left, f"processes left by server {pid}: {left}"


def test_the_envs_are_made_once_and_record_their_versions(envs: dict[str, Path]) -> None:
    for server, env in envs.items():
        assert (env / "bin" / "python").exists()
        info = env_info(server)
        assert info["create_s"] > 0 and info["versions"]["python"].startswith("3.")
        assert "torch" not in info["versions"]
        assert ensure_env(server) == env  # the marker matches: reused, not made again
    assert env_versions("mlserver")["mlserver"] == "1.7.1"
    assert env_versions("mlserver")["fastapi"].startswith("0.115.")  # MLServer's own, not our 0.165
    assert env_versions("litserve")["litserve"] == "0.2.19"


@pytest.mark.parametrize(("model", "fmt"), [("iris-rf", "pickle"), ("iris-mlp", "onnx")])
def test_mlserver_answers_v2_infer_with_the_zoo_models_probabilities(
    envs: dict[str, Path], zoo: Path, model: str, fmt: str
) -> None:
    server = ExternalServerProcess("mlserver", model, fmt, zoo_dir=zoo)
    try:
        server.start()
        assert server.is_alive() and server.scenario == "oip"
        with urllib.request.urlopen(f"{server.url}/v2/models/{model}", timeout=10) as resp:
            metadata = json.loads(resp.read())  # what the oip scenario reads to build its requests
        assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
        body = {"inputs": [{"name": "input-0", "shape": [len(ROWS), 4], "datatype": "FP32", "data": ROWS}]}
        status, reply = post_json(f"{server.url}/v2/models/{model}/infer", body)
        assert status == 200, reply
        (output,) = reply["outputs"]
        assert output["name"] == "predict_proba" and output["shape"] == [len(ROWS), len(IRIS_CLASSES)]
        got = np.asarray(output["data"], dtype=np.float64).reshape(output["shape"])
        np.testing.assert_allclose(got, zoo_probabilities(zoo, model, fmt), rtol=0, atol=1e-6)
    finally:
        server.stop()
        server.cleanup()
    assert server.pid is not None and not server.is_alive()
    assert_all_gone(server.pid)


def test_litserve_answers_our_api_with_the_zoo_models_probabilities(envs: dict[str, Path], zoo: Path) -> None:
    with ExternalServerProcess("litserve", "iris-rf", "onnx", zoo_dir=zoo, workers=1) as server:
        assert server.scenario == "tabular"
        with urllib.request.urlopen(f"{server.url}/health", timeout=10) as resp:
            health = json.loads(resp.read())
        assert health == {
            "status": "ok",
            "framework": "litserve",
            "model": "iris-rf",
            "format": "onnx",
            "workers": 1,
        }
        status, reply = post_json(f"{server.url}/predict", {"instances": ROWS})
        assert status == 200, reply
        want = zoo_probabilities(zoo, "iris-rf", "onnx")
        items = reply["predictions"]
        assert len(items) == len(ROWS)
        for item, probs in zip(items, want, strict=True):
            assert set(item) == {"prediction", "class_id", "probabilities", "confidence"}
            assert list(item["probabilities"]) == IRIS_CLASSES
            np.testing.assert_allclose(list(item["probabilities"].values()), probs, rtol=0, atol=1e-6)
            assert (
                item["class_id"] == int(np.argmax(probs))
                and item["prediction"] == IRIS_CLASSES[item["class_id"]]
            )
            assert item["confidence"] == max(item["probabilities"].values())
        status, one = post_json(f"{server.url}/predict", {"features": ROWS[0]})
        assert status == 200 and one["class_id"] == items[0]["class_id"]  # one item, not a list
        status, bad = post_json(f"{server.url}/predict", {"features": [1.0, 2.0]})
        assert status == 422 and "4 numbers" in bad["detail"]
        pid = server.pid
    assert pid is not None and not server.is_alive()
    assert_all_gone(pid)


def test_a_server_that_cannot_start_fails_with_its_log_tail(envs: dict[str, Path], zoo: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ExternalServerProcess("litserve", "iris-rf", "pickle", zoo_dir=zoo, port=port)
        with pytest.raises(TargetError) as info:
            server.start()
    message = str(info.value)
    assert "litserve: exited with code" in message and "last lines:" in message
    assert "address already in use" in message.lower()
    assert server.pid is not None
    assert_all_gone(server.pid)
