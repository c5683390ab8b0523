"""Your own model file, end to end, on models this test creates at run time (none of them in the zoo): a
scikit-learn RandomForest on load_digits (64 features) as joblib and ONNX, and a small torch CNN on the 8x8
digit images (3 channels) as TorchScript, ONNX and .pt2 (tests/support/user_models.py). Each file is served
under FastAPI + uvicorn and Flask + gunicorn-sync and answers what the same file answers in-process; each
model is load-tested (Locust), micro-benchmarked (``deploybench bench --model-file``) and its formats ranked
in a compare run (``[[models]]`` in a matrix file, and ``--model-file`` on the command line). Bad files get
a one-line error and exit code 2 from the real entry point."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from deploybench.commands.cli import main
from deploybench.compare_doc import load_compare
from deploybench.loadtests.runner import run_load
from deploybench.record import load_record, load_records
from deploybench.targets.modelfile import UserModel, image_transform, inspect_user_model
from deploybench.targets.serve import ServerProcess, TargetConfig
from tests.support.servers import started_together
from tests.support.tiny_matrix import compare_finished
from tests.support.user_models import DigitsModels, shared_digits_models

pytestmark = pytest.mark.e2e  # starts real targets, Locust, pytest children and the CLI

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def digits_models(tmp_path_factory: pytest.TempPathFactory) -> DigitsModels:
    return shared_digits_models(tmp_path_factory)


FRAMEWORKS = [("fastapi", "uvicorn"), ("flask", "gunicorn-sync")]
DIGITS = [str(d) for d in range(10)]

TINY_MEASURE = """
[slo]
p99_ms = 500.0

[measure]
users = 2
warmup_s = 0.5
window_s = 1.0
stability_windows = 1
max_windows = 1
max_stability_s = 5.0
common_rate_rps = 20.0
common_duration_s = 1.0
load_model = "constant"
pin = false  # no CPU pinning, no repeats, no minimum step: tiny and fast

[search]
step_s = 1.0
step_warmup_s = 0.0
max_probes = 2
max_expansions = 0
min_step_requests = 0
repeats = 0
"""


def file_options(m: DigitsModels, which: str) -> dict[str, Any]:
    """TargetConfig keyword arguments serving one of the test's files."""
    return {
        "rf-pickle": {
            "model": "digits-rf",
            "model_file": str(m.rf_joblib),
            "trust_pickle": m.rf_joblib_sha256,
        },
        "rf-onnx": {"model": "digits-rf", "model_file": str(m.rf_onnx)},
        "cnn-torchscript": {
            "model": "digits-cnn",
            "model_file": str(m.cnn_torchscript),
            "input_shape": [3, 8, 8],
        },
        "cnn-onnx": {"model": "digits-cnn", "model_file": str(m.cnn_onnx)},
    }[which]


def multipart(png: bytes) -> tuple[bytes, str]:
    boundary = "deploybench-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("which", ["rf-pickle", "rf-onnx", "cnn-torchscript", "cnn-onnx"])
def test_each_file_is_served_on_both_frameworks_and_answers_like_the_file_in_process(
    digits_models: DigitsModels,
    which: str,
) -> None:
    m = digits_models
    opts = file_options(m, which)
    cfg0 = TargetConfig(**opts)
    um = cfg0.user_model()
    info, predictors = inspect_user_model(um)
    local = predictors[cfg0.format]
    servers = {fw: ServerProcess(TargetConfig(framework=fw, server=srv, **opts), ready_timeout_s=180)
               for fw, srv in FRAMEWORKS}  # fmt: skip
    answers: dict[str, Any] = {}
    with started_together(servers) as urls:
        for fw, url in urls.items():
            with httpx.Client(base_url=url, timeout=60) as client:
                health = client.get("/health").json()
                assert (health["model"], health["format"], health["framework"]) == (
                    cfg0.model,
                    cfg0.format,
                    fw,
                )
                assert health["model_file"]["sha256"] == info.files[cfg0.format].sha256
                assert health["model_file"]["pickle_trusted"] is (cfg0.format == "pickle")
                assert health["n_classes"] == 10
                if info.task == "tabular":
                    assert health["input"] == {"kind": "tabular", "n_features": 64}
                    r = client.post("/predict", json={"instances": m.rows.tolist()})
                    assert r.status_code == 200, r.text
                    got = np.asarray([list(p["probabilities"].values()) for p in r.json()["predictions"]])
                    assert (
                        list(r.json()["predictions"][0]["probabilities"]) == DIGITS
                    )  # classes_ of the model
                    np.testing.assert_allclose(got, local.predict(m.rows), atol=1e-5)
                    predicted = [int(p["prediction"]) for p in r.json()["predictions"]]
                else:
                    assert health["input"] == {"kind": "image", "shape": [3, 8, 8]}
                    transform = image_transform(um, info.input_shape)
                    batch = np.stack([transform(Image.open(io.BytesIO(png))) for png in m.images])
                    want = local.predict(batch)
                    predicted = []
                    for png, probs in zip(m.images, want, strict=True):
                        body, ctype = multipart(png)
                        r = client.post("/predict/image", content=body, headers={"Content-Type": ctype})
                        assert r.status_code == 200, r.text
                        top = r.json()["top_5"]
                        assert top[0]["class_id"] == int(np.argmax(probs))
                        assert top[0]["probability"] == pytest.approx(float(probs.max()), abs=1e-5)
                        predicted.append(top[0]["class_id"])
                answers[fw] = predicted
                assert client.get("/health").json()["internal_errors"] == 0
    assert answers["fastapi"] == answers["flask"]
    assert sum(p == y for p, y in zip(answers["flask"], m.labels, strict=True)) >= 16  # a trained model


def test_pt2_declares_its_input_and_agrees_with_the_onnx_file(digits_models: DigitsModels) -> None:
    m = digits_models
    um = UserModel(
        "digits-cnn", {"pt2": str(m.cnn_pt2), "onnx": str(m.cnn_onnx), "torchscript": str(m.cnn_torchscript)}
    )
    info, predictors = inspect_user_model(um)
    assert (info.task, info.input_shape, info.shape_source) == ("image", [3, 8, 8], "model")
    assert info.files["pt2"].declared_input_shape == [3, 8, 8]
    assert info.files["torchscript"].declared_input_shape is None  # it took its siblings' shape
    assert {f.output for f in info.files.values()} == {"logits"}
    batch = np.random.default_rng(0).random((5, 3, 8, 8), dtype=np.float32)
    want = predictors["onnx"].predict(batch)
    for fmt in ("pt2", "torchscript"):
        np.testing.assert_allclose(predictors[fmt].predict(batch), want, atol=1e-5)


def test_each_model_is_load_tested(digits_models: DigitsModels, tmp_path: Path) -> None:
    """The runner starts the model-file target itself; tabular requests carry the model's 64 features (the
    api scenario with digit rows), image requests real PNG/JPEG images of the model's size."""
    m = digits_models
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"features": r}) + "\n" for r in m.rows.tolist()))
    runs = [
        (TargetConfig(framework="flask", **file_options(m, "rf-onnx")), "api",
         {"path": "/predict", "payload": str(rows)}, "/predict"),
        (TargetConfig(framework="fastapi", **file_options(m, "cnn-torchscript")), "image",
         {"image_size": "8x8"}, "/predict/image"),
        # the stock tabular scenario reads the width from /health: 64-feature rows, no 422s
        (TargetConfig(framework="fastapi", **file_options(m, "rf-onnx")), "tabular", {}, "/predict"),
    ]  # fmt: skip
    for config, scenario, options, route in runs:
        record = run_load(config, scenario, duration_s=1.5, warmup_s=0.5, users=2, results_dir=tmp_path,
                          record_path=tmp_path / f"{config.model}-{scenario}.json", scenario_options=options,
                          ready_timeout_s=180)  # fmt: skip
        assert record.status == "complete", record.error
        assert record.config["target"]["model_file"] == config.model_file
        assert record.config["target_health"]["model"] == config.model
        ok = [s for s in record.series if s.name.endswith(route) or route in s.name]
        assert ok and sum(s.count for s in ok) > 0, [s.name for s in record.series]
        assert all(not s.errors for s in record.series), [s.errors for s in record.series]


def test_each_model_is_micro_benchmarked(digits_models: DigitsModels, tmp_path: Path) -> None:
    m = digits_models
    runs = [
        ("digits-rf", ["--model-file", str(m.rf_joblib), "--model-file", str(m.rf_onnx),
                       "--trust-pickle", m.rf_joblib_sha256], {"pickle", "onnx"}),
        # the TorchScript file records no input shape: it takes the ONNX sibling's
        ("digits-cnn", ["--model-file", str(m.cnn_torchscript), "--model-file", str(m.cnn_onnx)],
         {"torchscript", "onnx"}),
    ]  # fmt: skip
    for name, args, formats in runs:
        out = tmp_path / name
        rc = main(
            ["bench", "--profile", "tiny", *args, "--model-name", name, "--out", str(out), "--no-report"]
        )
        assert rc == 0
        (record,) = [r for r in load_records([out]) if r.config.get("model") == name]
        assert record.status == "complete" and set(record.config["model_files"]) == formats
        predict = {s.params["format"] for s in record.series if s.params.get("case") == "predict"}
        load = {s.params["format"] for s in record.series if s.params.get("case") == "load"}
        assert predict == formats == load
        for s in record.series:  # tiny profile: >= 5 rounds per predict case, 2 timed loads per file
            assert s.count >= (5 if s.params["case"] == "predict" else 2) and s.latency_us["p50"] > 0, s.name


def _check_ranked(out: Path, model: str, formats: set[str]) -> None:
    doc = load_compare(out)
    assert doc.status == "complete"
    assert {r.choice.format for r in doc.results} == formats and {r.choice.model for r in doc.results} == {
        model
    }
    for r in doc.results:
        assert r.status == "complete", r.error
        assert r.common is not None and r.common["count"] > 0 and r.common["error_count"] == 0
        assert r.saturation and r.saturation["points"]
        for path in sorted((out / r.choice.id).glob("*.json")):
            assert load_record(path).config["target_health"]["model"] == model
    md = (out / "report.md").read_text()
    ranked = [line for line in md.splitlines() if re.match(r"\| [12]=? \|", line)]  # "1=": a tie
    assert len(ranked) == 2 and all(model in line for line in ranked)
    assert "## Your model files" in md


def test_each_model_is_ranked_in_a_compare_run(
    digits_models: DigitsModels,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    m = digits_models
    # the tabular model's two formats from a matrix file ([[models]], pickle opted in) ...
    rf = tmp_path / "digits-rf.toml"
    rf.write_text(
        'name = "digits-rf"\n[matrix]\nframework = ["fastapi"]\nserver = ["uvicorn"]\n' + TINY_MEASURE
        + f'\n[[models]]\nname = "digits-rf"\nfiles = ["{m.rf_onnx}", "{m.rf_joblib}"]\n'
        + f'trust_pickle = "{m.rf_joblib_sha256}"\n'
    )  # fmt: skip
    rc = main(["compare", "-c", str(rf), "--out", str(tmp_path / "rf"), "-q"])
    err = capsys.readouterr().err
    assert compare_finished(rc, err), err
    _check_ranked(tmp_path / "rf", "digits-rf", {"onnx", "pickle"})
    # ... and the CNN's from the command line (--model-file twice), on the other framework
    base = tmp_path / "tiny.toml"
    base.write_text(
        'name = "digits-cnn"\n[matrix]\nframework = ["flask"]\nserver = ["gunicorn-sync"]\n' + TINY_MEASURE
    )
    rc = main(["compare", "-c", str(base), "--model-file", str(m.cnn_torchscript),
               "--model-file", str(m.cnn_onnx), "--model-name", "digits-cnn", "--out", str(tmp_path / "cnn"),
               "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert compare_finished(rc, err), err
    _check_ranked(tmp_path / "cnn", "digits-cnn", {"torchscript", "onnx"})
    assert load_compare(tmp_path / "cnn").scenario == "image"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model-file", "README.md", "--format", "onnx"],
            "README.md is not a model file deploybench can read",
        ),
        (["--model-file", "{rf_onnx}", "--format", "pt2"], "is an ONNX model, not the pt2 format given"),
        (["--model-file", "{cnn_torchscript}"], "cannot infer the input shape of model digits-cnn"),
        (["--model-file", "{rf_joblib}"], "refusing to unpickle"),
    ],
)
def test_bad_model_files_exit_2_with_one_line(
    digits_models: DigitsModels,
    args: list[str],
    message: str,
) -> None:
    m = digits_models
    paths = {"rf_onnx": m.rf_onnx, "cnn_torchscript": m.cnn_torchscript, "rf_joblib": m.rf_joblib}
    argv = [a.format(**paths) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "deploybench", "serve", "--port", "0", *argv],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("deploybench serve: error:"), lines
    assert proc.stdout == ""  # nothing was served
