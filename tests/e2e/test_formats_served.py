"""Formats the other server tests do not serve, served for real: iris-mlp as `pt2` (torch.export) and
resnet50 (ONNX), each under FastAPI + uvicorn and Flask + gunicorn-sync, answering real HTTP predictions that
agree with the same artifact loaded in-process."""

from __future__ import annotations

import base64
import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from deploybench import paths
from deploybench.targets.predictors import load_predictor
from deploybench.targets.preprocess import preprocess_image
from deploybench.targets.serve import ServerProcess, TargetConfig
from deploybench.targets.zoo import MODELS, build_zoo

pytestmark = pytest.mark.e2e

FRAMEWORKS = [("fastapi", "uvicorn"), ("flask", "gunicorn-sync")]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]  # setosa, virginica, versicolor
IRIS_CLASSES = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def zoo() -> Path:
    """Only the artifacts served here (a no-op when `deploybench build` already ran)."""
    root = paths.zoo_dir()
    build_zoo(root, models=["iris-mlp"], formats=["pt2"])
    build_zoo(root, models=["resnet50"], formats=["onnx"])
    return root.resolve()


@contextlib.contextmanager
def serve(zoo: Path, framework: str, server: str, model: str, fmt: str) -> Iterator[httpx.Client]:
    config = TargetConfig(framework=framework, server=server, model=model, format=fmt, zoo_dir=str(zoo))
    target = ServerProcess(config, ready_timeout_s=180)
    try:
        target.start()
        with httpx.Client(base_url=target.url, timeout=60) as client:
            health = client.get("/health")
            assert health.status_code == 200, health.text
            body = health.json()
            assert (body["status"], body["framework"], body["server"]) == ("ok", framework, server)
            assert (body["model"], body["format"], body["task"]) == (model, fmt, MODELS[model].task)
            yield client
            assert client.get("/health").json()["internal_errors"] == 0
    finally:
        target.stop()
        target.cleanup()
    assert not target.is_alive()


def server_timing_ok(resp: httpx.Response) -> None:
    assert [part.split(";")[0] for part in resp.headers["server-timing"].split(", ")] == [
        "decode", "preprocess", "infer",
    ]  # fmt: skip


@pytest.mark.parametrize(("framework", "server"), FRAMEWORKS)
def test_iris_mlp_pt2_is_served(zoo: Path, framework: str, server: str) -> None:
    want = load_predictor("iris-mlp", "pt2", zoo).predict(np.asarray(ROWS, dtype=np.float32))
    with serve(zoo, framework, server, "iris-mlp", "pt2") as client:
        r = client.post("/predict", json={"features": ROWS[0]})
        assert r.status_code == 200, r.text
        server_timing_ok(r)
        body = r.json()
        assert list(body["probabilities"]) == IRIS_CLASSES  # 3 classes, named
        probs = np.asarray(list(body["probabilities"].values()))
        assert probs.sum() == pytest.approx(1.0, abs=1e-5) and np.all(probs >= 0)
        np.testing.assert_allclose(probs, want[0], atol=1e-5)  # the pt2 artifact answered, not another
        assert (body["prediction"], body["class_id"]) == ("setosa", 0)
        assert body["confidence"] == pytest.approx(float(probs.max()), abs=1e-6)

        r = client.post("/predict", json={"instances": ROWS})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert [p["prediction"] for p in preds] == ["setosa", "virginica", "versicolor"]
        got = np.asarray([list(p["probabilities"].values()) for p in preds])
        assert got.shape == (3, 3)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(got, want, atol=1e-5)


def png_image(width: int, height: int, seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def resnet50_case(zoo: Path) -> tuple[bytes, np.ndarray]:
    """A test image and resnet50's probabilities for it, in-process, from the same ONNX artifact."""
    png = png_image(320, 240, seed=11)
    x = preprocess_image(Image.open(io.BytesIO(png)).convert("RGB"))[np.newaxis]
    probs = load_predictor("resnet50", "onnx", zoo, intra_op_threads=1).predict(x)
    assert probs.shape == (1, 1000)
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-4)
    return png, probs[0]


def check_top5(body: dict, probs: np.ndarray) -> None:
    names = MODELS["resnet50"].class_names
    top = body["top_5"]
    assert len(top) == 5
    ids = [t["class_id"] for t in top]
    got = np.asarray([t["probability"] for t in top])
    assert all(0 <= i < 1000 for i in ids) and len(set(ids)) == 5
    assert [t["class"] for t in top] == [names[i] for i in ids]
    assert list(got) == sorted(got, reverse=True) and 0 < got.sum() <= 1.0 + 1e-6
    np.testing.assert_allclose(got, probs[ids], atol=1e-5)  # the same probabilities as in-process
    sixth = np.sort(probs)[-6]
    assert np.all(got >= sixth - 1e-5)  # really the five largest of 1000 (ties aside)
    assert (body["class_id"], body["top_class"], body["confidence"]) == (ids[0], names[ids[0]], got[0])


@pytest.mark.parametrize(("framework", "server"), FRAMEWORKS)
def test_resnet50_onnx_is_served(zoo: Path, resnet50_case: tuple[bytes, np.ndarray], framework: str,
                                 server: str) -> None:  # fmt: skip
    png, probs = resnet50_case
    with serve(zoo, framework, server, "resnet50", "onnx") as client:
        r = client.post("/predict/image", files={"file": ("cat.png", png, "image/png")})
        assert r.status_code == 200, r.text
        server_timing_ok(r)
        check_top5(r.json(), probs)
        r = client.post("/predict/image/base64", json={"image": base64.b64encode(png).decode()})
        assert r.status_code == 200, r.text
        check_top5(r.json(), probs)
        r = client.post("/predict", json={"features": ROWS[0]})
        assert r.status_code == 409 and r.json()["error"] == "wrong-model-kind"
