"""Server-side dynamic batching in real server processes: FastAPI (uvicorn) batching 8 rows, Flask on
gunicorn-gthread (4 threads) batching 4, each against an unbatched target serving the same model.

Deterministic: the queue delay is 5 s, so a batch closes when it holds max_batch_size rows (all the
requests, sent at once from threads behind a barrier), not on a timer; the only timing assumption is that
the requests, all in flight together, arrive within those 5 s. The answers must equal the unbatched
target's for the same input, and every Server-Timing must show the full batch."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from deploybench import paths
from deploybench.targets.serve import ServerProcess, TargetConfig
from deploybench.targets.zoo import build_zoo
from tests.support.servers import started_together

pytestmark = pytest.mark.e2e

DELAY_US = 5_000_000  # 5 s: the batches below close by size, not by this delay
# iris rows of all three species (and in between), so that each answer shows whose row it was
ROWS = [
    [5.1, 3.5, 1.4, 0.2],
    [7.0, 3.2, 4.7, 1.4],
    [6.3, 3.3, 6.0, 2.5],
    [4.9, 3.0, 1.4, 0.2],
    [6.4, 3.2, 4.5, 1.5],
    [5.8, 2.7, 5.1, 1.9],
    [5.9, 3.0, 5.1, 1.8],
    [6.0, 2.2, 4.0, 1.0],
]


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = paths.zoo_dir()
    build_zoo(root, models=["iris-rf"], formats=["onnx"])  # a no-op when `deploybench build` already ran
    zoo = str(root.resolve())
    logs = tmp_path_factory.mktemp("batching-logs")
    servers = {
        "fastapi": TargetConfig(
            framework="fastapi", server="uvicorn", max_batch_size=8, max_queue_delay_us=DELAY_US, zoo_dir=zoo
        ),
        "flask": TargetConfig(
            framework="flask",
            server="gunicorn-gthread",
            threads=4,
            max_batch_size=4,
            max_queue_delay_us=DELAY_US,
            zoo_dir=zoo,
        ),
        "plain": TargetConfig(framework="fastapi", server="uvicorn", zoo_dir=zoo),
    }
    procs = {k: ServerProcess(c, log_path=Path(logs) / f"{k}.log") for k, c in servers.items()}
    with started_together(procs) as started:
        yield started


def send_together(url: str, rows: list[list[float]]) -> list[httpx.Response]:
    """One single-row request per row, all released at once from their own threads."""
    barrier = threading.Barrier(len(rows))

    def one(row: list[float]) -> httpx.Response:
        with httpx.Client(timeout=60) as client:
            barrier.wait(30)
            return client.post(f"{url}/predict", json={"features": row})

    with ThreadPoolExecutor(len(rows)) as pool:
        return list(pool.map(one, rows))


@pytest.mark.parametrize(("target", "n"), [("fastapi", 8), ("flask", 4)])
def test_concurrent_requests_run_as_one_batch_with_their_own_answers(
    urls: dict[str, str], target: str, n: int
) -> None:
    rows = ROWS[:n]
    with httpx.Client(timeout=30) as client:
        expected = [client.post(f"{urls['plain']}/predict", json={"features": r}).json() for r in rows]
        health = client.get(f"{urls[target]}/health").json()
    assert health["batching"] == {"max_batch_size": n, "max_queue_delay_us": DELAY_US}
    assert health["onnxruntime"]["ort_opt_level"] == "all"
    replies = send_together(urls[target], rows)
    for row, want, got in zip(rows, expected, replies, strict=True):
        assert got.status_code == 200, got.text
        assert got.json() == want, f"row {row}: batched answer differs from the unbatched one"
        timing = got.headers["server-timing"]
        assert timing.startswith("decode;dur="), timing
        assert f'batch;desc="{n}"' in timing and "queue;dur=" in timing, timing
    assert len({got.json()["prediction"] for got in replies}) > 1  # rows of several classes came back apart


def test_a_bad_request_beside_a_batch_fails_alone(urls: dict[str, str]) -> None:
    """A bad body is answered (4xx) before it could join a batch; the good requests still fill theirs."""
    url = urls["flask"]
    barrier = threading.Barrier(5)

    def one(body: object) -> httpx.Response:
        with httpx.Client(timeout=60) as client:
            barrier.wait(30)
            return client.post(f"{url}/predict", json=body)

    bodies: list[object] = [{"features": r} for r in ROWS[:4]]
    bodies.insert(2, {"features": [1.0, 2.0]})
    with ThreadPoolExecutor(5) as pool:
        replies = list(pool.map(one, bodies))
    bad = replies.pop(2)
    assert bad.status_code == 422 and bad.json()["error"], bad.text
    assert [r.status_code for r in replies] == [200] * 4
    assert all('batch;desc="4"' in r.headers["server-timing"] for r in replies)


@pytest.mark.parametrize(("target", "n"), [("fastapi", 8), ("flask", 4)])
def test_oip_infer_requests_are_batched_too(urls: dict[str, str], target: str, n: int) -> None:
    """Open Inference Protocol v2 requests go through the same batcher: n concurrent single-row requests
    run as one batch, each answered with its own row's probabilities (those of the unbatched target)."""
    rows = ROWS[:n]

    def body(row: list[float]) -> dict[str, object]:
        return {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]}

    with httpx.Client(timeout=30) as client:
        infer = f"{urls['plain']}/v2/models/iris-rf/infer"
        expected = [client.post(infer, json=body(r)).json() for r in rows]
    barrier = threading.Barrier(n)

    def one(row: list[float]) -> httpx.Response:
        with httpx.Client(timeout=60) as client:
            barrier.wait(30)
            return client.post(f"{urls[target]}/v2/models/iris-rf/infer", json=body(row))

    with ThreadPoolExecutor(n) as pool:
        replies = list(pool.map(one, rows))
    for row, want, got in zip(rows, expected, replies, strict=True):
        assert got.status_code == 200, got.text
        assert got.json()["outputs"] == want["outputs"], f"row {row}: batched OIP answer differs"
        assert f'batch;desc="{n}"' in got.headers["server-timing"], got.headers["server-timing"]
