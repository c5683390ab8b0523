"""Server-side dynamic batching, Triton's dynamic batcher as the model (``TargetConfig.max_batch_size``,
``max_queue_delay_us``).

A request hands its validated rows (float32 ``(k, *input_shape)``) to the batcher of its worker process. The
first request of a batch waits at most ``max_queue_delay_us`` for more; the batch closes as soon as it holds
``max_batch_size`` rows (rows, like Triton: a request of k instances takes k) or that delay has passed.
Requests are never split: one that would overflow the batch waits for the next, and a single request larger
than ``max_batch_size`` runs alone. The batch runs as ONE model call (``run(rows) -> scores``) and each
request gets back its own rows, with its queue wait and the batch's size and inference time
(``BatchResult``).

A model call that raises fails no request that did not cause it: the batch is then run again one request
at a time, so only the request whose input the model rejects gets the exception. (The services validate
every input before it is enqueued; this is the net under that.)

Two flavours, one per concurrency model:

- ``AsyncBatcher`` (FastAPI, per worker process): requests await a future on the event loop; one collector
  task forms the batches and runs each in one dedicated thread, so the loop keeps reading requests (and
  the next batch fills) while the model runs; batches run one at a time, like one Triton model instance.
- ``ThreadBatcher`` (Flask under gunicorn-gthread, per worker process): request threads meet under a
  condition variable; the thread whose request heads the queue leads the batch: it waits up to the delay
  (or until the batch is full), takes the batch and runs the model call itself, then wakes the others. While
  it runs, the next batch forms behind it; several batches can be in the model at once, at most one per
  gunicorn thread (as without batching).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

RunBatch = Callable[[np.ndarray], np.ndarray]
ReplyT = TypeVar("ReplyT")  # what a request's finish makes of its share of a batch (a Reply)


@dataclass(frozen=True)
class BatchResult:
    """One request's share of a batch: its rows' scores, its wait in the queue (enqueued -> the batch's
    model call started), the rows in the whole batch, and that model call's duration."""

    scores: np.ndarray
    queue_ns: int
    batch_rows: int
    infer_ns: int


@dataclass
class _Item:
    rows: np.ndarray
    enqueued_ns: int
    future: Any = None  # AsyncBatcher: an asyncio.Future
    result: BatchResult | None = None  # ThreadBatcher: set by the leader
    error: BaseException | None = None
    done: bool = False
    started_ns: int = 0

    @property
    def n(self) -> int:
        return len(self.rows)


def _check_settings(max_batch_size: int, max_queue_delay_us: int) -> None:
    if max_batch_size < 2:
        raise ValueError(f"max_batch_size must be >= 2, got {max_batch_size}")
    if max_queue_delay_us < 0:
        raise ValueError(f"max_queue_delay_us must be >= 0, got {max_queue_delay_us}")


def _take(pending: deque[_Item], max_rows: int) -> list[_Item]:
    """Pop the head of the queue and whatever follows it while the batch stays within ``max_rows`` (the
    head always: a request larger than the batch runs alone)."""
    batch = [pending.popleft()]
    rows = batch[0].n
    while pending and rows + pending[0].n <= max_rows:
        item = pending.popleft()
        rows += item.n
        batch.append(item)
    return batch


def _run_items(run: RunBatch, items: list[_Item]) -> list[BatchResult | BaseException]:
    """The model call of one batch, split back per request; if it raises, each request alone (so that one
    bad request does not fail the others). Called in the thread that runs the model."""
    started_ns = time.perf_counter_ns()
    for item in items:
        item.started_ns = started_ns
    try:
        return _split(run, items)
    except Exception as exc:
        if len(items) == 1:
            return [exc]
    out: list[BatchResult | BaseException] = []
    for item in items:
        try:
            out.extend(_split(run, [item]))
        except Exception as exc:
            out.append(exc)
    return out


def _split(run: RunBatch, items: list[_Item]) -> list[BatchResult | BaseException]:
    rows = items[0].rows if len(items) == 1 else np.concatenate([item.rows for item in items])
    t0 = time.perf_counter_ns()
    scores = np.asarray(run(rows))
    infer_ns = time.perf_counter_ns() - t0
    if scores.ndim < 1 or len(scores) != len(rows):
        raise ValueError(f"the model returned {scores.shape[:1]} rows of scores for a batch of {len(rows)}")
    out: list[BatchResult | BaseException] = []
    start = 0
    for item in items:
        out.append(
            BatchResult(
                scores[start : start + item.n], item.started_ns - item.enqueued_ns, len(rows), infer_ns
            )
        )
        start += item.n
    return out


@dataclass
class AsyncBatcher:
    """The dynamic batcher of an asyncio worker (FastAPI). ``await submit(rows)`` -> ``BatchResult``; the
    model exception of this request re-raised. A request cancelled while queued (its deadline) leaves the
    queue; one cancelled while its batch runs is dropped from the answers."""

    run: RunBatch
    max_batch_size: int
    max_queue_delay_us: int
    _pending: deque[_Item] = field(default_factory=deque, init=False, repr=False)
    _wake: asyncio.Event | None = field(default=None, init=False, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _executor: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    batches: int = field(default=0, init=False)  # model calls of whole batches so far

    def __post_init__(self) -> None:
        _check_settings(self.max_batch_size, self.max_queue_delay_us)

    async def submit(self, rows: np.ndarray) -> BatchResult:
        loop = asyncio.get_running_loop()
        item = _Item(rows, time.perf_counter_ns(), future=loop.create_future())
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._executor = self._executor or ThreadPoolExecutor(1, thread_name_prefix="deploybench-batch")
            self._task = loop.create_task(self._collect())
        assert self._wake is not None
        self._pending.append(item)
        self._wake.set()
        return await item.future

    async def close(self) -> None:
        """Stop the collector (queued requests are cancelled) and the model thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in self._pending:
            item.future.cancel()
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def _live_rows(self) -> int:
        """Drop requests cancelled while queued; the rows still waiting."""
        if any(item.future.done() for item in self._pending):
            self._pending = deque(item for item in self._pending if not item.future.done())
        return sum(item.n for item in self._pending)

    async def _collect(self) -> None:
        assert self._wake is not None
        delay_ns = self.max_queue_delay_us * 1000
        while True:
            rows = self._live_rows()
            if rows == 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            left_ns = self._pending[0].enqueued_ns + delay_ns - time.perf_counter_ns()
            if rows < self.max_batch_size and left_ns > 0:
                self._wake.clear()
                try:
                    async with asyncio.timeout(left_ns / 1e9):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            items = _take(self._pending, self.max_batch_size)
            self.batches += 1
            loop = asyncio.get_running_loop()
            try:
                results = await loop.run_in_executor(self._executor, _run_items, self.run, items)
            except BaseException:  # cancelled (shutdown): nobody will answer these requests now
                for item in items:
                    item.future.cancel()
                raise
            for item, res in zip(items, results, strict=True):
                if item.future.done():  # cancelled (its deadline) while the batch ran
                    continue
                if isinstance(res, BaseException):
                    item.future.set_exception(res)
                else:
                    item.future.set_result(res)


class ThreadBatcher:
    """The dynamic batcher of a threaded worker (Flask under gunicorn-gthread). ``submit(rows)`` blocks the
    calling request thread until its batch ran -> ``BatchResult``; the model exception of this request
    re-raised."""

    def __init__(self, run: RunBatch, max_batch_size: int, max_queue_delay_us: int) -> None:
        _check_settings(max_batch_size, max_queue_delay_us)
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_queue_delay_us = max_queue_delay_us
        self.batches = 0  # model calls of whole batches so far
        self._cond = threading.Condition()
        self._pending: deque[_Item] = deque()
        self._rows = 0
        self._leading = False  # a thread is waiting for its batch to fill

    def submit(self, rows: np.ndarray) -> BatchResult:
        item = _Item(rows, time.perf_counter_ns())
        delay_ns = self.max_queue_delay_us * 1000
        with self._cond:
            self._pending.append(item)
            self._rows += item.n
            self._cond.notify_all()
            while not item.done:
                if not self._leading and self._pending and self._pending[0] is item:
                    self._leading = True  # this request heads the queue: it leads the next batch
                    try:
                        deadline_ns = item.enqueued_ns + delay_ns
                        while self._rows < self.max_batch_size:
                            left_ns = deadline_ns - time.perf_counter_ns()
                            if left_ns <= 0:
                                break
                            self._cond.wait(left_ns / 1e9)
                    except BaseException:  # aborted while waiting: leave the queue, let the next lead
                        self._pending.remove(item)
                        self._rows -= item.n
                        raise
                    else:
                        items = _take(self._pending, self.max_batch_size)
                        self._rows -= sum(i.n for i in items)
                        self.batches += 1
                    finally:
                        self._leading = False
                        self._cond.notify_all()  # the new head (if any) leads the next batch
                    break
                self._cond.wait()
            else:
                return self._answer(item)
        results: list[BatchResult | BaseException] | None = None
        try:
            results = _run_items(self.run, items)  # outside the lock: the next batch forms meanwhile
        finally:
            if results is None:  # aborted (e.g. gunicorn's timeout abort, SystemExit): wake the others
                results = [RuntimeError("the batch's model call was aborted")] * len(items)
            self._deliver(items, results)
        return self._answer(item)

    def _deliver(self, items: list[_Item], results: list[BatchResult | BaseException]) -> None:
        with self._cond:
            for i, res in zip(items, results, strict=True):
                if isinstance(res, BaseException):
                    i.error = res
                else:
                    i.result = res
                i.done = True
            self._cond.notify_all()

    @staticmethod
    def _answer(item: _Item) -> BatchResult:
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result


async def run_batched(
    batcher: AsyncBatcher,
    prepare: Callable[[], Any],
    finish: Callable[[Any, BatchResult], ReplyT],
    *,
    off_loop: bool,
    left_s: float,
) -> ReplyT:
    """A request through the dynamic batcher within ``left_s`` of its deadline: ``prepare()`` validates it
    into an object with ``rows`` (``off_loop``: in a worker thread, e.g. decoding an image) before it is
    enqueued, so a bad input is answered alone and never reaches a batch; ``finish`` makes the reply from
    its share of the batch. Raises InputError (the caller answers it in its protocol's shape) and
    TimeoutError. The FastAPI target's /predict and OIP infer routes use it."""
    from anyio import to_thread  # import cost: the asyncio side's (FastAPI) dependency, not Flask's

    async with asyncio.timeout(left_s):
        if off_loop:
            prepared = await to_thread.run_sync(prepare, abandon_on_cancel=True)
        else:
            prepared = prepare()
        result = await batcher.submit(prepared.rows)
    return finish(prepared, result)
