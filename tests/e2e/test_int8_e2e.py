"""The onnx-int8 format end to end: `deploybench build` as a process quantizes iris-mlp into a fresh zoo
(dynamic quantization; fast), the manifest carries its accuracy cost, and a real target serves it.

The ResNets' int8 (static quantization with calibration) is not built here: it takes ~10-40 s per model on
a 2-core machine. It is checked in tests/unit/test_zoo.py on the default zoo, which CI builds anyway
(`deploybench build`), by test_manifest_describes_every_artifact and test_int8_agrees_with_its_float32_source.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from deploybench.targets.predictors import load_predictor
from deploybench.targets.serve import ServerProcess, TargetConfig
from deploybench.targets.zoo import INT8_TOP1_FLOOR

pytestmark = pytest.mark.e2e

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]  # setosa, virginica, versicolor


def build(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploybench.commands.cli", "build", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def int8_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("int8-zoo")
    proc = build("--models", "iris-mlp,iris-rf", "--formats", "onnx-int8", "--zoo-dir", str(root))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    # iris-rf has no int8: listed with the reason, not built, not a silent fallback to its float32 onnx
    assert "not built  iris-rf/onnx-int8: model iris-rf has no onnx-int8 format" in proc.stdout
    assert not (root / "iris-rf").exists()
    return root


def test_build_records_the_accuracy_cost(int8_zoo: Path) -> None:
    import onnx

    manifest = json.loads((int8_zoo / "manifest.json").read_text())
    assert set(manifest["artifacts"]) == {"iris-mlp/onnx", "iris-mlp/onnx-int8"}  # its source came too
    fp32, int8 = manifest["artifacts"]["iris-mlp/onnx"], manifest["artifacts"]["iris-mlp/onnx-int8"]
    agreement = int8["agreement"]
    assert agreement["top1_agreement"] >= agreement["top1_floor"] == INT8_TOP1_FLOOR
    assert agreement["n_samples"] == 150
    assert int8["quantization"]["method"] == "dynamic"
    # iris-mlp is tiny (4-16-3): the file shrinks only a little, but it does shrink
    assert (int8_zoo / int8["path"]).stat().st_size == int8["size_bytes"] < fp32["size_bytes"]
    assert int8["size_ratio"] == pytest.approx(int8["size_bytes"] / fp32["size_bytes"])
    ops = {node.op_type for node in onnx.load(str(int8_zoo / int8["path"])).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops  # really quantized
    assert "Gemm" not in ops and "MatMulInteger" not in {
        node.op_type for node in onnx.load(str(int8_zoo / fp32["path"])).graph.node
    }


def test_iris_rf_int8_alone_is_a_usage_error(tmp_path: Path) -> None:
    proc = build("--models", "iris-rf", "--formats", "onnx-int8", "--zoo-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "nothing to build" in proc.stderr and "TreeEnsembleClassifier" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "manifest.json").exists()


def test_int8_is_served(int8_zoo: Path) -> None:
    want = load_predictor("iris-mlp", "onnx-int8", int8_zoo).predict(np.asarray(ROWS, dtype=np.float32))
    config = TargetConfig(
        framework="fastapi", server="uvicorn", model="iris-mlp", format="onnx-int8", zoo_dir=str(int8_zoo)
    )
    target = ServerProcess(config, ready_timeout_s=120)
    try:
        target.start()
        with httpx.Client(base_url=target.url, timeout=30) as client:
            health = client.get("/health").json()
            assert (health["model"], health["format"]) == ("iris-mlp", "onnx-int8")
            r = client.post("/predict", json={"instances": ROWS})
            assert r.status_code == 200, r.text
            preds = r.json()["predictions"]
            assert [p["prediction"] for p in preds] == ["setosa", "virginica", "versicolor"]
            got = np.asarray([list(p["probabilities"].values()) for p in preds])
            np.testing.assert_allclose(got, want, atol=1e-5)  # the int8 artifact answered
            assert client.get("/health").json()["internal_errors"] == 0
    finally:
        target.stop()
        target.cleanup()
    assert not target.is_alive()


def test_bench_measures_int8_beside_fp32(int8_zoo: Path, tmp_path: Path) -> None:
    """`deploybench bench --formats onnx,onnx-int8` runs both (a few rounds; no figures are checked), and
    the records carry each artifact's size and the int8 one's top-1 agreement."""
    proc = subprocess.run(
        [sys.executable, "-m", "deploybench", "bench", "--profile", "tiny", "--models", "iris-mlp",
         "--formats", "onnx,onnx-int8", "--zoo", str(int8_zoo), "--out", str(tmp_path), "--no-report",
         "--progress", "off"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (record_path,) = tmp_path.glob("*-micro-iris-mlp.json")
    series = {s["name"]: s for s in json.loads(record_path.read_text())["series"]}
    manifest = json.loads((int8_zoo / "manifest.json").read_text())["artifacts"]
    for fmt in ("onnx", "onnx-int8"):
        load = series[f"load/iris-mlp/{fmt}"]
        predict = series[f"predict/iris-mlp/{fmt}/b1/t1"]
        assert load["extra"]["size_bytes"] == predict["extra"]["size_bytes"]
        assert predict["extra"]["size_bytes"] == manifest[f"iris-mlp/{fmt}"]["size_bytes"]
        assert predict["count"] > 0 and predict["latency_us"]["p50"] > 0
    agreement = manifest["iris-mlp/onnx-int8"]["agreement"]["top1_agreement"]
    assert series["predict/iris-mlp/onnx-int8/b1/t1"]["extra"]["top1_agreement"] == agreement
    assert "top1_agreement" not in series["predict/iris-mlp/onnx/b1/t1"]["extra"]
