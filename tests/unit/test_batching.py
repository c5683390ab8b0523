"""Server-side dynamic batching (deploybench.targets.batching) and the onnxruntime options, in-process: the
batchers (rows split back, closing by size or by delay, requests never split, one bad input failing alone,
cancelled requests), the services' batched path (Server-Timing, /health, bad input answered before the
queue, Flask's threads meeting in one batch), the validation errors and listed skips, the CLI options, and
the onnxruntime session options.

Deterministic: a batch that must close by size gets a delay of a minute, so that only the size can close it;
a model call is held on an event where a test needs it to be in progress. No timing assertions (a queue wait
of at least the delay is a lower bound the batcher guarantees, not a measurement)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from deploybench.commands import serve as serve_cmd
from deploybench.commands.cli import build_parser, main
from deploybench.errors import UsageError
from deploybench.targets import flask_app
from deploybench.targets.batching import AsyncBatcher, BatchResult, ThreadBatcher
from deploybench.targets.predictors import OnnxPredictor
from deploybench.targets.serve import TargetConfig, batching_unsupported, ort_options_unsupported
from deploybench.targets.service import PREDICT, Service, Timings
from deploybench.vocabulary import ORT_OPT_LEVELS

T = TypeVar("T")
MINUTE_US = 60_000_000  # a delay no test waits for: such a batch closes by size only
ROW = [5.1, 3.5, 1.4, 0.2]


class Model:
    """Records every call; scores = 10 x the first feature, so a row's answer shows which row it was. Rows
    with a negative first feature make the call raise (the model rejecting an input)."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.calls: list[int] = []
        self.hold = hold
        self.started = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        with self.lock:
            self.calls.append(len(rows))
        self.started.set()
        if self.hold is not None:
            assert self.hold.wait(30), "the test never released the model"
        if (rows[:, 0] < 0).any():
            raise ValueError("negative feature")
        return rows[:, :1] * 10


def rows(*values: float) -> np.ndarray:
    return np.array([[v, 0.0] for v in values], dtype=np.float32)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))  # 30 s: a hang fails the test instead of blocking it


# -- AsyncBatcher ------------------------------------------------------------------------------------------
def test_async_rows_are_split_back_to_their_requests() -> None:
    model = Model()

    async def go() -> list[BatchResult]:
        b = AsyncBatcher(model, max_batch_size=6, max_queue_delay_us=MINUTE_US)
        out = await asyncio.gather(b.submit(rows(1)), b.submit(rows(2, 3)), b.submit(rows(4, 5, 6)))
        await b.close()
        return out

    one, two, three = run(go())
    assert model.calls == [6]  # one model call for the three requests (6 rows: closed by size)
    assert one.scores.tolist() == [[10.0]]
    assert two.scores.tolist() == [[20.0], [30.0]]
    assert three.scores.tolist() == [[40.0], [50.0], [60.0]]
    assert {r.batch_rows for r in (one, two, three)} == {6}
    assert len({r.infer_ns for r in (one, two, three)}) == 1  # the one call's time, shared


def test_async_requests_are_never_split_and_a_large_one_runs_alone() -> None:
    model = Model()

    async def go() -> list[BatchResult]:
        b = AsyncBatcher(model, max_batch_size=4, max_queue_delay_us=MINUTE_US)
        # 3 + 2 > 4: the 3-row request runs without the next; the two 2-row requests fill the next batch
        first = await asyncio.gather(b.submit(rows(1, 1, 1)), b.submit(rows(2, 2)), b.submit(rows(3, 3)))
        big = await b.submit(rows(*range(7)))  # over the size: alone, at once (no one-minute wait)
        await b.close()
        return [*first, big]

    a, b2, c, big = run(go())
    assert model.calls == [3, 4, 7]
    assert (a.batch_rows, b2.batch_rows, c.batch_rows, big.batch_rows) == (3, 4, 4, 7)
    assert big.scores[:, 0].tolist() == [10.0 * i for i in range(7)]


def test_async_a_lone_request_waits_the_delay_then_runs_alone() -> None:
    model = Model()
    delay_us = 2000

    async def go() -> BatchResult:
        b = AsyncBatcher(model, max_batch_size=8, max_queue_delay_us=delay_us)
        res = await b.submit(rows(1))
        await b.close()
        return res

    res = run(go())
    assert model.calls == [1] and res.batch_rows == 1
    assert res.queue_ns >= delay_us * 1000  # the batch cannot close before the delay: a bound, not a timing


def test_async_zero_delay_runs_what_is_queued() -> None:
    model = Model()

    async def go() -> BatchResult:
        b = AsyncBatcher(model, max_batch_size=8, max_queue_delay_us=0)
        res = await b.submit(rows(1))
        await b.close()
        return res

    assert run(go()).batch_rows == 1


def test_async_one_bad_input_does_not_fail_the_others() -> None:
    model = Model()

    async def go() -> list[BatchResult | BaseException]:
        b = AsyncBatcher(model, max_batch_size=3, max_queue_delay_us=MINUTE_US)
        out = await asyncio.gather(
            b.submit(rows(1)), b.submit(rows(-1)), b.submit(rows(3)), return_exceptions=True
        )
        await b.close()
        return out

    good1, bad, good2 = run(go())
    assert isinstance(bad, ValueError) and "negative" in str(bad)
    assert isinstance(good1, BatchResult) and good1.scores.tolist() == [[10.0]]
    assert isinstance(good2, BatchResult) and good2.scores.tolist() == [[30.0]]
    assert model.calls == [3, 1, 1, 1]  # the batch, then each request alone


def test_async_a_request_cancelled_in_the_queue_leaves_it() -> None:
    model = Model()

    async def go() -> list[BatchResult]:
        b = AsyncBatcher(model, max_batch_size=2, max_queue_delay_us=MINUTE_US)
        gone = asyncio.ensure_future(b.submit(rows(9)))
        await asyncio.sleep(0)  # let it enqueue
        gone.cancel()
        out = await asyncio.gather(b.submit(rows(1)), b.submit(rows(2)))
        await b.close()
        return out

    one, two = run(go())
    assert model.calls == [2]  # the cancelled row never reached the model
    assert (one.scores.tolist(), two.scores.tolist()) == ([[10.0]], [[20.0]])


def test_async_the_next_batch_fills_while_one_runs() -> None:
    hold = threading.Event()
    model = Model(hold)

    async def go() -> list[BatchResult]:
        b = AsyncBatcher(model, max_batch_size=2, max_queue_delay_us=MINUTE_US)
        first = asyncio.gather(b.submit(rows(1)), b.submit(rows(2)))
        while not model.started.is_set():  # the first batch is in the model (held)
            await asyncio.sleep(0.01)
        second = asyncio.gather(b.submit(rows(3)), b.submit(rows(4)))
        await asyncio.sleep(0)  # both enqueued while the model is busy: the loop reads on
        hold.set()
        out = [*(await first), *(await second)]
        await b.close()
        return out

    results = run(go())
    assert model.calls == [2, 2]
    assert [r.scores[0, 0] for r in results] == [10.0, 20.0, 30.0, 40.0]


def test_batcher_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        ThreadBatcher(Model(), max_batch_size=1, max_queue_delay_us=0)
    with pytest.raises(ValueError, match="max_queue_delay_us"):
        AsyncBatcher(Model(), max_batch_size=2, max_queue_delay_us=-1)


# -- ThreadBatcher -----------------------------------------------------------------------------------------
def submit_together(b: ThreadBatcher, requests: list[np.ndarray]) -> list[BatchResult | BaseException]:
    barrier = threading.Barrier(len(requests))

    def one(r: np.ndarray) -> BatchResult | BaseException:
        barrier.wait(30)
        try:
            return b.submit(r)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


def test_threads_meet_in_one_batch_and_get_their_own_rows() -> None:
    model = Model()
    b = ThreadBatcher(model, max_batch_size=4, max_queue_delay_us=MINUTE_US)
    out = submit_together(b, [rows(1), rows(2), rows(3), rows(4)])
    assert model.calls == [4] and b.batches == 1
    assert [r.scores.tolist() for r in out] == [[[10.0]], [[20.0]], [[30.0]], [[40.0]]]
    assert {r.batch_rows for r in out} == {4}


def test_threads_one_bad_input_does_not_fail_the_others() -> None:
    model = Model()
    b = ThreadBatcher(model, max_batch_size=3, max_queue_delay_us=MINUTE_US)
    good1, bad, good2 = submit_together(b, [rows(1), rows(-1), rows(3)])
    assert isinstance(bad, ValueError)
    assert isinstance(good1, BatchResult) and good1.scores.tolist() == [[10.0]]
    assert isinstance(good2, BatchResult) and good2.scores.tolist() == [[30.0]]
    assert sorted(model.calls) == [1, 1, 1, 3]


def test_threads_a_lone_request_waits_the_delay_and_a_large_one_runs_alone() -> None:
    model = Model()
    b = ThreadBatcher(model, max_batch_size=4, max_queue_delay_us=2000)
    res = b.submit(rows(1))
    assert res.batch_rows == 1 and res.queue_ns >= 2_000_000
    big = ThreadBatcher(model, max_batch_size=4, max_queue_delay_us=MINUTE_US).submit(rows(*range(6)))
    assert big.batch_rows == 6 and model.calls == [1, 6]


# -- the services' batched path ----------------------------------------------------------------------------
class StubPredictor:
    """Iris-shaped: 3 classes; the first feature decides the class, NaN scores for a feature of 7.7."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        out = np.zeros((len(batch), 3), dtype=np.float32)
        out[np.arange(len(batch)), np.clip(batch[:, 0].astype(int) % 3, 0, 2)] = 1.0
        out[batch[:, 0] == np.float32(7.7)] = np.nan
        return out


def service(**kw: object) -> tuple[Service, StubPredictor]:
    pred = StubPredictor()
    config = TargetConfig(model="iris-rf", format="onnx", **kw)  # type: ignore[arg-type]
    return Service(config, pred, task="tabular", class_names=["a", "b", "c"]), pred


def test_timings_header_gains_queue_and_batch_only_when_batched() -> None:
    t = Timings(decode_ns=1000, preprocess_ns=2000, infer_ns=3000)
    assert t.header() == "decode;dur=0.001, preprocess;dur=0.002, infer;dur=0.003"
    t.queue_ns, t.batch_rows = 123_000, 8
    assert (
        t.header()
        == 'decode;dur=0.001, preprocess;dur=0.002, infer;dur=0.003, queue;dur=0.123, batch;desc="8"'
    )


def test_service_batched_reply_equals_the_unbatched_one() -> None:
    svc, _ = service(framework="fastapi", max_batch_size=4, max_queue_delay_us=MINUTE_US)
    body = b'{"features": [1.0, 3.5, 1.4, 0.2]}'
    plain = svc.handle(PREDICT, "application/json", body)
    b = ThreadBatcher(svc.model_call, 4, 0)
    batched = svc.handle_batched(PREDICT, "application/json", body, b.submit)
    assert batched.status == plain.status == 200
    assert batched.body == plain.body
    assert 'batch;desc="1"' in batched.headers["Server-Timing"]
    assert "batch" not in plain.headers["Server-Timing"]


def test_service_bad_input_is_answered_before_the_queue() -> None:
    svc, _ = service(framework="fastapi", max_batch_size=4)

    def never(rows: np.ndarray) -> BatchResult:
        raise AssertionError("a bad input reached the batcher")

    reply = svc.handle_batched(PREDICT, "application/json", b'{"features": [1, 2]}', never)
    assert reply.status == 422 and reply.body["error"]
    nan = svc.handle_batched(
        PREDICT,
        "application/json",
        b'{"features": [7.7, 1, 1, 1]}',
        ThreadBatcher(svc.model_call, 2, 0).submit,
    )
    assert nan.status == 422 and nan.body["error"] == "non-finite-output"


def test_image_routes_batch_too() -> None:
    import base64
    import io
    import json

    from PIL import Image

    class ImageStub:
        def predict(self, batch: np.ndarray) -> np.ndarray:
            # class from the image's mean red value: each request's own image decides its answer
            red = batch[:, 0].mean(axis=(1, 2))
            out = np.zeros((len(batch), 3), dtype=np.float32)
            out[:, 0], out[:, 1], out[:, 2] = red, -red, 0.0
            e = np.exp(out - out.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)

    config = TargetConfig(model="resnet18", format="onnx", framework="fastapi", max_batch_size=2)
    svc = Service(config, ImageStub(), task="image", class_names=["red", "cyan", "grey"])

    def body(color: tuple[int, int, int]) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), color).save(buf, format="PNG")
        return json.dumps({"image": base64.b64encode(buf.getvalue()).decode()}).encode()

    route = "/predict/image/base64"
    bodies = [body((250, 0, 0)), body((0, 250, 250))]
    plain = [svc.handle(route, "application/json", b) for b in bodies]
    b = ThreadBatcher(svc.model_call, max_batch_size=2, max_queue_delay_us=MINUTE_US)
    with ThreadPoolExecutor(2) as pool:
        batched = list(pool.map(lambda x: svc.handle_batched(route, "application/json", x, b.submit), bodies))
    assert b.batches == 1
    for p, q in zip(plain, batched, strict=True):
        assert q.status == p.status == 200
        assert {k: v for k, v in q.body.items() if k != "inference_time_ms"} == {
            k: v for k, v in p.body.items() if k != "inference_time_ms"
        }
        assert q.headers["Server-Timing"].endswith('batch;desc="2"')
    assert [q.body["top_class"] for q in batched] == ["red", "cyan"]


def test_health_shows_batching_and_onnxruntime_options() -> None:
    svc, _ = service(framework="fastapi", max_batch_size=8, max_queue_delay_us=500)
    health = svc.health().body
    assert health["batching"] == {"max_batch_size": 8, "max_queue_delay_us": 500}
    assert "onnxruntime" not in health  # a stub predictor is no onnxruntime session
    off, _ = service(framework="fastapi")
    assert off.health().body["batching"] == {"max_batch_size": 0, "max_queue_delay_us": 0}


def test_flask_threads_meet_in_one_batch() -> None:
    svc, pred = service(framework="flask", server="gunicorn-gthread", threads=4, max_batch_size=4)
    svc.config.max_queue_delay_us = MINUTE_US  # closes by size only
    app = flask_app.create_app(svc.config, svc)
    barrier = threading.Barrier(4)

    def one(first: int) -> tuple[int, dict, str]:
        client = app.test_client()
        barrier.wait(30)
        r = client.post(PREDICT, json={"features": [float(first), 1.0, 1.0, 1.0]})
        return r.status_code, r.get_json(), r.headers["Server-Timing"]

    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(one, [0, 1, 2, 3]))
    assert pred.calls == [4]
    for first, (status, body, timing) in zip([0, 1, 2, 3], out, strict=True):
        assert status == 200
        assert body["class_id"] == first % 3  # its own row's answer
        assert timing.endswith('batch;desc="4"') and "queue;dur=" in timing


# -- validation: errors and listed skips -------------------------------------------------------------------
def test_batching_on_a_server_that_cannot_batch_is_a_usage_error() -> None:
    sync = TargetConfig(framework="flask", server="gunicorn-sync", max_batch_size=8)
    why = batching_unsupported(sync)
    assert why is not None and "gunicorn-gthread" in why
    with pytest.raises(UsageError, match=r"gunicorn-sync.*one request at a time.*--server gunicorn-gthread"):
        sync.validate()
    one_thread = TargetConfig(framework="flask", server="gunicorn-gthread", threads=1, max_batch_size=8)
    with pytest.raises(UsageError, match="--threads N"):
        one_thread.validate()


def test_servers_that_can_batch_validate() -> None:
    for cfg in (
        TargetConfig(framework="fastapi", server="uvicorn", max_batch_size=8, max_queue_delay_us=1000),
        TargetConfig(framework="fastapi", server="gunicorn-uvicorn", max_batch_size=2),
        TargetConfig(framework="flask", server="gunicorn-gthread", threads=4, max_batch_size=4),
        TargetConfig(framework="flask", server="gunicorn-sync"),  # batching off: nothing to refuse
    ):
        assert batching_unsupported(cfg) is None
        cfg.validate()


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"max_batch_size": 1}, "batches nothing"),
        ({"max_batch_size": -2}, "max_batch_size must be an integer"),
        ({"max_batch_size": 10**6}, "max_batch_size must be an integer"),
        ({"max_queue_delay_us": 100}, "needs max_batch_size"),
        ({"max_batch_size": 4, "max_queue_delay_us": -1}, "max_queue_delay_us must be an integer"),
        ({"ort_opt_level": "fast"}, "ort_opt_level must be one of"),
        ({"inter_op_threads": 0}, "inter_op_threads must be an integer >= 1"),
    ],
)
def test_bad_batching_and_ort_values_are_usage_errors(fields: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        TargetConfig(framework="fastapi", **fields).validate()


def test_ort_options_on_a_format_onnxruntime_does_not_serve_are_a_usage_error() -> None:
    pickle = TargetConfig(model="iris-rf", format="pickle", ort_opt_level="basic")
    why = ort_options_unsupported(pickle)
    assert why is not None and "ort_opt_level 'basic'" in why and "--format onnx" in why
    with pytest.raises(UsageError, match="onnxruntime options"):
        pickle.validate()
    with pytest.raises(UsageError, match="inter_op_threads 2"):
        TargetConfig(model="iris-mlp", format="torchscript", inter_op_threads=2).validate()
    assert ort_options_unsupported(TargetConfig(model="iris-rf", format="pickle")) is None  # defaults
    for fmt in ("onnx", "onnx-int8"):
        cfg = TargetConfig(model="iris-rf", format=fmt, ort_opt_level="disable", inter_op_threads=2)
        assert ort_options_unsupported(cfg) is None


def test_config_round_trips_the_new_fields() -> None:
    cfg = TargetConfig(max_batch_size=8, max_queue_delay_us=250, ort_opt_level="extended", inter_op_threads=2)
    again = TargetConfig.from_dict(cfg.to_dict())
    assert (again.max_batch_size, again.max_queue_delay_us, again.ort_opt_level, again.inter_op_threads) == (
        8,
        250,
        "extended",
        2,
    )
    assert ORT_OPT_LEVELS == ("disable", "basic", "extended", "all")


# -- CLI ---------------------------------------------------------------------------------------------------
def test_serve_options_reach_the_config() -> None:
    args = build_parser("serve")[0].parse_args(
        [
            "serve",
            "--max-batch-size",
            "8",
            "--max-queue-delay-us",
            "5000",
            "--ort-opt-level",
            "basic",
            "--inter-op-threads",
            "2",
        ]
    )
    cfg = serve_cmd.config_from_args(args)
    assert (cfg.max_batch_size, cfg.max_queue_delay_us, cfg.ort_opt_level, cfg.inter_op_threads) == (
        8,
        5000,
        "basic",
        2,
    )
    defaults = serve_cmd.config_from_args(build_parser("serve")[0].parse_args(["serve"]))
    assert (defaults.max_batch_size, defaults.ort_opt_level, defaults.inter_op_threads) == (0, "all", 1)


def test_serve_refuses_batching_on_gunicorn_sync_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--framework", "flask", "--max-batch-size", "4", "--port", "0"])
    assert code == 2
    assert "gunicorn-gthread" in capsys.readouterr().err


# -- onnxruntime session options ---------------------------------------------------------------------------
def tiny_onnx(path: Path) -> Path:
    """A 4-feature, 3-class ONNX model: probabilities = softmax(x @ W)."""
    import onnx  # the onnx package writes the file; onnxruntime serves it
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, name="W")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["z"]),
            helper.make_node("Softmax", ["z"], ["probabilities"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_session_gets_the_options(tmp_path: Path) -> None:
    import onnxruntime as ort

    from deploybench.targets.modelfile import open_model_file

    pred = open_model_file("tiny", "onnx", tiny_onnx(tmp_path / "tiny.onnx"), intra_op_threads=1)
    assert isinstance(pred, OnnxPredictor)
    x = np.array([ROW], dtype=np.float32)
    before = pred.raw_predict(x)
    opts = pred._session.get_session_options()
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.inter_op_num_threads == 1
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    for level, expected in levels.items():
        pred = open_model_file("tiny", "onnx", tmp_path / "tiny.onnx", intra_op_threads=1,
                               ort_opt_level=level, inter_op_threads=2)  # fmt: skip
        assert isinstance(pred, OnnxPredictor)
        opts = pred._session.get_session_options()
        assert opts.graph_optimization_level == expected
        assert opts.inter_op_num_threads == 2
        assert opts.execution_mode == ort.ExecutionMode.ORT_PARALLEL
        np.testing.assert_allclose(pred.raw_predict(x), before, rtol=1e-5)
    assert pred.session_options() == {"ort_opt_level": "all", "inter_op_threads": 2, "intra_op_threads": 1}


def test_a_user_onnx_file_is_served_with_the_options(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    cfg = TargetConfig(framework="fastapi", model_file=str(model), ort_opt_level="basic", inter_op_threads=2)
    svc = Service.load(cfg)
    assert svc.health().body["onnxruntime"] == {
        "ort_opt_level": "basic",
        "inter_op_threads": 2,
        "intra_op_threads": 1,
    }
