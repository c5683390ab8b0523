"""The Open Inference Protocol v2 routes (deploybench.targets.oip) in-process on both frameworks, with a stub
model: metadata, health, infer request parsing (flat / nested data, datatypes, shapes), outputs selection,
errors; and the oip load scenario's pure parts (deploybench.loadtests.payloads)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from deploybench.errors import UsageError
from deploybench.loadtests import payloads
from deploybench.loadtests.lean import build_plan
from deploybench.targets import fastapi_app, flask_app, oip
from deploybench.targets.preprocess import ImageTransform
from deploybench.targets.serve import Limits, TargetConfig
from deploybench.targets.service import Service

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]]
PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=np.float32)


class StubPredictor:
    """Row i of a batch scores PROBS[i % 2]; remembers the last batch."""

    def __init__(self) -> None:
        self.last: np.ndarray | None = None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.last = np.array(batch)
        return np.stack([PROBS[i % 2] for i in range(len(batch))])


class Client:
    """The same calls on a FastAPI TestClient and a Flask test client: (status, JSON body, headers)."""

    def __init__(self, framework: str, task: str = "tabular", handler: str = "auto") -> None:
        model = "iris-rf" if task == "tabular" else "resnet18"
        self.cfg = TargetConfig(
            framework=framework, model=model, format="onnx", handler=handler, limits=Limits()
        )
        self.predictor = StubPredictor()
        shape = (4,) if task == "tabular" else (3, 8, 8)
        self.svc = Service(
            self.cfg, self.predictor, task=task, class_names=["a", "b", "c"], input_shape=shape,
            transform=ImageTransform(height=8, width=8, resize_px=None),
        )  # fmt: skip
        if framework == "fastapi":
            self.http: Any = TestClient(fastapi_app.create_app(self.cfg, self.svc))
        else:
            self.http = flask_app.create_app(self.cfg, self.svc).test_client()
        self.framework = framework

    def _out(self, r: Any) -> tuple[int, Any, dict[str, str]]:
        raw = r.content if self.framework == "fastapi" else r.get_data()
        return r.status_code, json.loads(raw) if raw else None, {k.lower(): v for k, v in r.headers.items()}

    def get(self, path: str) -> tuple[int, Any, dict[str, str]]:
        return self._out(self.http.get(path))

    def post(
        self, path: str, body: Any, content_type: str = "application/json"
    ) -> tuple[int, Any, dict[str, str]]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if content_type else {}
        if self.framework == "fastapi":
            return self._out(self.http.post(path, content=data, headers=headers))
        return self._out(self.http.post(path, data=data, headers=headers))

    def infer(self, body: Any, name: str = "iris-rf", **kw: Any) -> tuple[int, Any, dict[str, str]]:
        return self.post(f"/v2/models/{name}/infer", body, **kw)


@pytest.fixture(params=["fastapi", "flask"])
def client(request: pytest.FixtureRequest) -> Client:
    return Client(request.param)


def tensor(data: Any, shape: list[int], datatype: str = "FP32", name: str = "input") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


# -- health and metadata -------------------------------------------------------------------------------------
def test_health_server_and_model_metadata(client: Client) -> None:
    assert client.get("/v2/health/live")[:2] == (200, {"live": True})
    assert client.get("/v2/health/ready")[:2] == (200, {"ready": True})
    status, body, _ = client.get("/v2")
    assert status == 200 and body["name"] == "deploybench" and body["extensions"] == []
    assert client.get("/v2/models/iris-rf/ready")[:2] == (200, {"name": "iris-rf", "ready": True})
    status, meta, _ = client.get("/v2/models/iris-rf")
    assert status == 200 and meta["name"] == "iris-rf" and meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
        "probabilities": ("FP32", [-1, 3]), "label": ("INT64", [-1]), "class_name": ("BYTES", [-1]),
    }  # fmt: skip
    assert client.get("/v2/models/iris-rf/versions/1")[1] == meta


def test_unknown_model_or_version_is_404_json(client: Client) -> None:
    for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/models/iris-rf/versions/7/ready"):
        status, body, _ = client.get(path)
        assert status == 404 and isinstance(body["error"], str), (path, body)
    status, body, _ = client.infer({"inputs": [tensor(ROWS[0], [1, 4])]}, name="resnet18")
    assert status == 404 and "'resnet18'" in body["error"] and "'iris-rf'" in body["error"]


def test_image_model_metadata_has_the_image_shape() -> None:
    c = Client("fastapi", task="image")
    meta = c.get("/v2/models/resnet18")[1]
    assert meta["inputs"][0]["shape"] == [-1, 3, 8, 8] and meta["parameters"]["task"] == "image"


# -- inference -----------------------------------------------------------------------------------------------
def test_infer_flat_and_nested_give_the_same_answer(client: Client) -> None:
    flat = [v for row in ROWS for v in row]
    s1, b1, h1 = client.infer({"id": "req-1", "inputs": [tensor(flat, [2, 4])]})
    s2, b2, _ = client.infer({"inputs": [tensor(ROWS, [2, 4])]})
    assert s1 == s2 == 200
    assert b1["model_name"] == "iris-rf" and b1["id"] == "req-1" and "id" not in b2
    assert b1["outputs"] == b2["outputs"]
    out = {o["name"]: o for o in b1["outputs"]}
    assert [o["name"] for o in b1["outputs"]] == list(oip.OUTPUTS)
    assert out["probabilities"]["shape"] == [2, 3] and out["probabilities"]["datatype"] == "FP32"
    assert out["probabilities"]["data"] == PROBS.ravel().tolist()
    assert out["label"] == {"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 2]}
    assert out["class_name"]["data"] == ["a", "c"]
    assert h1["server-timing"].startswith("decode;dur=")
    np.testing.assert_array_equal(client.predictor.last, np.asarray(ROWS, dtype=np.float32))


def test_infer_matches_predict(client: Client) -> None:
    _, pred, _ = client.post("/predict", {"instances": ROWS})
    _, body, _ = client.infer({"inputs": [tensor(ROWS, [2, 4])]})
    probs = np.asarray(body["outputs"][0]["data"]).reshape(2, 3)
    for row, item in zip(probs, pred["predictions"], strict=True):
        assert row.tolist() == list(item["probabilities"].values())


@pytest.mark.parametrize("datatype", ["FP64", "FP16", "INT32", "INT64", "UINT8"])
def test_other_numeric_datatypes_are_accepted(client: Client, datatype: str) -> None:
    data = [5, 3, 1, 0] if datatype[0] in "IU" else [5.1, 3.5, 1.4, 0.2]
    status, body, _ = client.infer({"inputs": [tensor(data, [1, 4], datatype)]})
    assert status == 200, body
    assert client.predictor.last is not None and client.predictor.last.dtype == np.float32


def test_outputs_selection(client: Client) -> None:
    req = {"inputs": [tensor(ROWS[0], [1, 4])], "outputs": [{"name": "label"}]}
    status, body, _ = client.infer(req)
    assert status == 200 and [o["name"] for o in body["outputs"]] == ["label"]
    req["outputs"] = [{"name": "class_name"}, {"name": "probabilities", "parameters": {"binary_data": False}}]
    assert [o["name"] for o in client.infer(req)[1]["outputs"]] == ["class_name", "probabilities"]


@pytest.mark.parametrize(
    ("request_body", "fragment"),
    [
        ({"inputs": [tensor([1.0, 2.0, 3.0], [1, 4])]}, "has 4 elements, data has 3"),
        ({"inputs": [tensor([[1.0, 2.0], [3.0, 4.0]], [1, 4])]}, "nested as [2, 2], the shape says [1, 4]"),
        ({"inputs": [tensor([[1.0, 2.0, 3.0, 4.0], [1.0]], [2, 4])]}, "ragged"),
        ({"inputs": [tensor([1.0, 2.0, 3.0], [1, 3])]}, "must be [N, 4]"),
        ({"inputs": [tensor([1.0, 2.0, 3.0, 4.0], [4])]}, "must be [N, 4]"),
        ({"inputs": [tensor([1.0, 2.0, 3.0, 4.0], [1, 4], "BOOL")]}, "not accepted by this model"),
        ({"inputs": [tensor([1.0, 2.0, 3.0, 4.0], [1, 4], "FP8")]}, "not an OIP datatype"),
        ({"inputs": [tensor([1.5, 2.0, 3.0, 4.0], [1, 4], "INT32")]}, "integers for datatype INT32"),
        ({"inputs": [tensor([1, 2, 3, 300], [1, 4], "UINT8")]}, "out of the UINT8 range"),
        ({"inputs": [tensor([1.0, "2", 3.0, 4.0], [1, 4])]}, "found a string"),
        ({"inputs": [tensor([1.0, True, 3.0, 4.0], [1, 4])]}, "found a boolean"),
        ({"inputs": [tensor([1.0, None, 3.0, 4.0], [1, 4])]}, "found null"),
        ({"inputs": [tensor([1.0, 2.0, 3.0, -4.0], [1, 4])]}, "data[3] is -4.0"),
        ({"inputs": [tensor([1.0, 2.0, 3.0, 1e300], [1, 4], "FP64")]}, "data[3]"),
        (
            b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 1e400]}]}',
            "not a finite number",
        ),
        ({"inputs": [tensor([], [0, 4])]}, "at least one item"),
        ({"inputs": [tensor([1.0] * 12, [3, 4])]}, "at most 2 (max_batch)"),
        ({"inputs": [tensor([1.0] * 4, [1, -4])]}, "non-negative integers"),
        ({"inputs": [tensor(ROWS[0], [1, 4]), tensor(ROWS[1], [1, 4])]}, "one input tensor"),
        ({"inputs": []}, "one input tensor"),
        ({"inputs": [{"name": "input", "shape": [1, 4], "data": ROWS[0]}]}, "lacks 'datatype'"),
        ({"inputs": [tensor("1,2,3,4", [1, 4])]}, "data must be an array"),
        ({"inputs": [tensor(ROWS[0], [1, 4])], "outputs": [{"name": "logits"}]}, "no output 'logits'"),
        ({"inputs": [tensor(ROWS[0], [1, 4])], "outputs": [{"name": "label"}, {"name": "label"}]}, "twice"),
        (
            {
                "inputs": [tensor(ROWS[0], [1, 4])],
                "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
            },
            "binary tensor extension",
        ),
        ({"inputs": [tensor(ROWS[0], [1, 4])], "id": 7}, "'id' must be a string"),
        ({"inputs": [tensor(ROWS[0], [1, 4])], "extra": 1}, "unknown key(s) 'extra'"),
        ([1, 2], "must be a JSON object"),
        (b"{not json", "not valid JSON"),
    ],
)
def test_bad_requests_are_400_naming_the_problem(client: Client, request_body: Any, fragment: str) -> None:
    client.svc.limits.max_batch = 2
    status, body, _ = client.infer(request_body)
    assert status == 400, body
    assert set(body) == {"error", "code"} and fragment in body["error"], body["error"]


def test_media_type_and_size_limits(client: Client) -> None:
    req = {"inputs": [tensor(ROWS[0], [1, 4])]}
    status, body, _ = client.infer(req, content_type="application/octet-stream")
    assert status == 415 and "binary tensor extension" in body["error"]
    assert client.infer(req, content_type="")[0] == 200  # OIP clients often send no Content-Type
    client.svc.limits.max_body_bytes = 50
    status, body, _ = client.infer({"inputs": [tensor([1.0] * 400, [100, 4])]})
    assert status == 413 and "max_body_bytes" in body["error"]


def test_wrong_method_is_405_json(client: Client) -> None:
    status, body, _ = client.get("/v2/models/iris-rf/infer")
    assert status == 405 and body["error"] == "method-not-allowed"


# -- image models --------------------------------------------------------------------------------------------
def _png(color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("framework", ["fastapi", "flask"])
def test_image_tensor_and_bytes_inputs(framework: str) -> None:
    c = Client(framework, task="image")
    x = np.linspace(-2, 2, 2 * 3 * 8 * 8, dtype=np.float32)
    status, body, _ = c.infer({"inputs": [tensor(x.tolist(), [2, 3, 8, 8])]}, name="resnet18")
    assert status == 200 and body["outputs"][0]["shape"] == [2, 3]
    np.testing.assert_array_equal(c.predictor.last, x.reshape(2, 3, 8, 8))
    status, body, _ = c.infer({"inputs": [tensor([_png((255, 0, 0)), _png((0, 0, 255))], [2], "BYTES")]},
                              name="resnet18")  # fmt: skip
    assert status == 200 and body["outputs"][1]["data"] == [0, 2]
    expected = c.svc.transform(Image.new("RGB", (12, 10), (255, 0, 0)))
    np.testing.assert_allclose(c.predictor.last[0], expected)
    for req, fragment in [
        ({"inputs": [tensor([0.0] * 3 * 4 * 4, [1, 3, 4, 4])]}, "must be [N, 3, 8, 8]"),
        ({"inputs": [tensor(["not base64!"], [1], "BYTES")]}, "data[0]"),
        ({"inputs": [tensor([_png((1, 2, 3))], [2], "BYTES")]}, "has 2 elements, data has 1"),
        ({"inputs": [tensor([1, 2], [2], "INT64")]}, "not accepted"),
    ]:
        status, body, _ = c.infer(req, name="resnet18")
        assert status == 400 and fragment in body["error"], body


# -- the oip load scenario's requests ------------------------------------------------------------------------
META_TABULAR = {"name": "iris", "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]}


def test_oip_bodies_for_a_tabular_model() -> None:
    bodies = payloads.oip_bodies(META_TABULAR, payloads.payload_rng(0), count=8)
    assert len(bodies) == 8
    req = json.loads(bodies[0])
    (t,) = req["inputs"]
    assert t["name"] == "input-0" and t["datatype"] == "FP32" and t["shape"] == [1, 4]
    assert tuple(t["data"]) in payloads.IRIS_ROWS
    batch = json.loads(payloads.oip_bodies(META_TABULAR, payloads.payload_rng(0), count=1, batch_size=3)[0])
    assert batch["inputs"][0]["shape"] == [3, 4] and len(batch["inputs"][0]["data"]) == 12
    wide = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [-1, 6]}]}
    data = json.loads(payloads.oip_bodies(wide, payloads.payload_rng(0), count=1)[0])["inputs"][0]["data"]
    assert len(data) == 6 and all(type(v) is int for v in data)


def test_oip_bodies_for_an_image_model_and_without_declared_inputs() -> None:
    meta = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 8, 8]}]}
    (body,) = payloads.oip_bodies(meta, payloads.payload_rng(0), count=1)
    t = json.loads(body)["inputs"][0]
    assert t["shape"] == [1, 3, 8, 8] and len(t["data"]) == 192
    # MLServer's sklearn runtime declares no inputs: iris rows, FP32 [1, 4]
    t = json.loads(payloads.oip_bodies({"name": "m"}, payloads.payload_rng(0), count=1)[0])["inputs"][0]
    assert t["shape"] == [1, 4] and t["datatype"] == "FP32"
    with pytest.raises(UsageError, match="BYTES"):
        payloads.oip_bodies(
            {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [-1]}]}, payloads.payload_rng(0)
        )


def test_oip_model_name_needs_model_or_health() -> None:
    assert payloads.oip_model_name("m1", {"model": "iris-rf"}) == "m1"
    assert payloads.oip_model_name("", {"model": "iris-rf"}) == "iris-rf"
    with pytest.raises(UsageError, match="--model"):
        payloads.oip_model_name("", None)
    assert payloads.oip_infer_path("my model") == "/v2/models/my%20model/infer"


@pytest.mark.parametrize("handler", ["inline", "threadpool"])
@pytest.mark.parametrize("task", ["tabular", "image"])
def test_scenario_bodies_are_answered_in_both_fastapi_handler_styles(task: str, handler: str) -> None:
    c = Client("fastapi", task=task, handler=handler)
    assert c.svc.handler == handler
    _, meta, _ = c.get(f"/v2/models/{c.cfg.model}")
    for body in payloads.oip_bodies(meta, payloads.payload_rng(1), count=2, batch_size=2):
        status, reply, headers = c.infer(body, name=c.cfg.model)
        assert status == 200 and reply["outputs"][0]["shape"] == [2, 3], reply
        assert "infer;dur=" in headers["server-timing"]
    assert c.infer({"inputs": []}, name=c.cfg.model)[0] == 400


def test_lean_plan_of_the_oip_scenario() -> None:
    resolved = {"oip_model": "iris", "oip_metadata": META_TABULAR, "batch_size": 2}
    plan = build_plan("oip", "http://127.0.0.1:9/base", options=resolved, seed=3)
    assert plan.labels == ["POST /v2/models/iris/infer"]
    head, _, body = plan.picks[0][1].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /base/v2/models/iris/infer HTTP/1.1\r\n")
    assert b"Content-Type: application/json" in head
    assert json.loads(body)["inputs"][0]["shape"] == [2, 4]
    again = build_plan("oip", "http://127.0.0.1:9/base", options=resolved, seed=3)
    assert again.picks == plan.picks  # seeded: a rerun sends the same bodies


def test_a_record_of_an_oip_server_without_health_reads_its_v2_metadata_instead() -> None:
    """MLServer has no /health: an oip run's record takes the server's OIP metadata (GET /v2), no warning;
    another scenario against it warns that /health did not answer."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from deploybench.loadtests.core import LoadOptions, new_record

    class OipOnly(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"name": "mlserver", "version": "1.7.1", "extensions": []}).encode()
            self.send_response(200 if self.path == "/v2" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) if self.path == "/v2" else 0))
            self.end_headers()
            if self.path == "/v2":
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), OipOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"http://127.0.0.1:{server.server_address[1]}"
        rec = new_record({"host": host, "scenario": "oip"}, {}, LoadOptions())
        assert rec.config["target_health"]["oip_server"]["name"] == "mlserver" and not rec.warnings
        other = new_record({"host": host, "scenario": "tabular"}, {}, LoadOptions())
        assert [w.code for w in other.warnings] == ["target-health-unavailable"]
    finally:
        server.shutdown()
        server.server_close()
