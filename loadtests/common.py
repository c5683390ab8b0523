"""Locust glue shared by every scenario: custom arguments, the exact-latency listener, the open-loop pacer,
generator-CPU sampling, master/worker histogram shipping and the RunRecord writer.

A scenario file (tabular.py, image.py, health.py) imports this module, which registers its listeners on
``locust.events``, and subclasses :class:`DeployBenchUser`.

Latency source: Locust's ``request`` event carries ``response_time`` as a float computed from
``time.perf_counter()`` around the request (FastHttpUser, body read included), i.e. sub-µs precise; only
Locust's *stats* round it (1 ms / 10 ms buckets). We take that float, convert it to integer µs and record it
into our own HdrHistogram. For open loop the task also puts the intended send time and the actual send time
(``perf_counter_ns``) into the request context; the corrected latency adds the send delay to the measured
latency. Locust's own stats are kept only as a cross-check (``extra.locust_reported``).

Roles: a local runner or the master writes the record (status "running" every ``--save-interval`` s, then
"complete" / "interrupted" / "failed"); workers send snapshots of their histograms with every report to the
master, and a final snapshot when the master stops the test. The master keeps the latest snapshot per worker
(idempotent) and merges them.

Open-loop accounting: every slot of the arrival schedule ends as a measured request or an error of its own
kind ("dropped", "not-sent", "unfinished"; see deploybench/measure.py). When the window closes (after
``--warmup`` + ``--duration``, or when Locust stops) the schedule is closed, its pending slots become
"not-sent", the senders stop taking slots, and requests still in flight get up to ``DRAIN_TIMEOUT_S`` to
answer before the counts are sealed (then "unfinished").

Master/worker shares: the rate is split among the workers *actually connected* when the test starts, not
``--expect-workers``. At test start the master numbers the connected workers 0..n-1 (in Locust's worker-index
order), bumps its assignment generation and sends each worker ``MSG_ASSIGN`` {generation, index, count}
before Locust's spawn message (same connection, so it arrives first). A worker paces ``rate / count`` with
its index's offset and a Poisson seed made of (run seed, generation, index, count): no two generators of a run
share a schedule. A worker without a fresh assignment (one that connects or restarts after the start and is
handed users by Locust's rebalancing) is refused for the open-loop test: it sends nothing and the record
carries a ``worker-refused`` warning; shares are never re-divided mid-run, so the schedule of every
generator stays exact. The record's offered rate is the sum of the rate shares of the generators that
reported (a worker that never reported offered nothing that was measured), and ``config.generator.workers``
is the number of workers assigned.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import psutil
from locust import FastHttpUser, constant, events
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from deploybench.env import capture_env
from deploybench.errors import UsageError
from deploybench.io import utc_now, write_atomic
from deploybench.loadtests import webui
from deploybench.loadtests.core import (
    DRAIN_TIMEOUT_S,
    GENERATOR_BOUND_PERCENT,
    LoadOptions,
    base_config,
    cpu_usage,
    fill_record,
    new_record,
    process_cpu_s,
    scenario_options,
)
from deploybench.loadtests.payloads import HEADERS_ENV
from deploybench.measure import (
    CONNECTION_KINDS,
    DROPPED,
    NOT_SENT,
    UNFINISHED,
    Measurement,
    error_kind,
    parse_server_timing,
)
from deploybench.pacer import ArrivalSchedule
from deploybench.paths import results_dir as default_results_dir
from deploybench.procs import fetch_health
from deploybench.record import RunRecord, make_run_id
from deploybench.thresholds import EXIT_THRESHOLD, Threshold, parse_thresholds
from deploybench.thresholds import apply as apply_thresholds
from deploybench.vocabulary import LOAD_MODELS

logger = logging.getLogger("deploybench.load")

CPU_SAMPLE_INTERVAL_S = 1.0
MSG_FLUSH = "deploybench_flush"  # master -> workers: send your snapshot now
MSG_SNAPSHOT = "deploybench_snapshot"  # worker -> master: a snapshot (final=True after the worker stopped)
MSG_ABORT = "deploybench_abort"  # worker -> master: target unreachable, end the run as failed
MSG_ASSIGN = "deploybench_assign"  # master -> worker, at test start: {generation, index, count}
MASTER_END_MARGIN_S = 1.0  # the master ends the run this long after its window, so workers close their own
REPORT_KEY = "deploybench"


# -- options --------------------------------------------------------------------------------------------
def _add_common_arguments(parser: Any, **_kw: Any) -> None:
    a = parser.add_argument
    a(
        "--load-model",
        choices=LOAD_MODELS,
        default="closed",
        help="closed: users send back to back; constant / poisson: open-loop arrivals at --rate",
    )
    a(
        "--rate",
        type=float,
        default=0.0,
        help="open loop: total arrival rate, requests/s (split across workers)",
    )
    a("--warmup", type=float, default=0.0, help="seconds at the start kept out of the measured window")
    a(
        "--duration",
        type=float,
        default=0.0,
        help="measured seconds after the warm-up; the run then ends itself (0 = until Locust stops, "
        "e.g. by --run-time, which also counts Locust's start-up)",
    )
    a("--max-lag", type=float, default=5.0, help="open loop: a send more than this many s late is dropped")
    a("--max-requests", type=int, default=0, help="open loop: stop after this many sends (0 = no bound)")
    a("--seed", type=int, default=0, help="seed for Poisson gaps and payload choice")
    a("--model", default="", help="model label for the record (the target's /health is read too)")
    a("--results-dir", default=str(default_results_dir()), help="folder for the run record")
    a("--record", default="", help="record path (default: RESULTS_DIR/RUN_ID.json)")
    a(
        "--save-interval",
        type=float,
        default=2.0,
        include_in_web_ui=False,
        help="seconds between saves of the record while the run goes",
    )
    a(
        "--abort-after-errors",
        type=int,
        default=200,
        include_in_web_ui=False,
        help="end the run as failed after this many consecutive connection errors (0 = never)",
    )
    a(
        "--header",
        action="append",
        default=[],
        include_in_web_ui=False,
        help="'Name: value' added to every request (repeatable), e.g. 'Authorization: Bearer TOKEN'; "
        f"also read from ${HEADERS_ENV} (a JSON object). The record keeps the names, never the values",
    )
    a(
        "--threshold",
        action="append",
        default=[],
        include_in_web_ui=False,
        help='an absolute limit on every endpoint, repeatable: "p99<50ms", "error_ratio<1%%", '
        '"throughput>200"; '
        f"a crossing is a warning in the record and exit code {EXIT_THRESHOLD}",
    )
    a("--extra-config", default="", include_in_web_ui=False,
      help="JSON object merged into the record's config (used by `deploybench load`)")  # fmt: skip
    a(
        "--generator-bound-percent",
        type=float,
        default=GENERATOR_BOUND_PERCENT,
        include_in_web_ui=False,
        help="warn 'generator-bound' when a Locust process's mean CPU exceeds this share of one core "
        f"(default {GENERATOR_BOUND_PERCENT:g})",
    )
    a(
        "--master-port-file",
        default="",
        include_in_web_ui=False,
        help="master: write the port it accepts workers on to this file once bound (e.g. with "
        "--master-bind-port 0, which binds a free port), so workers can be started with --master-port",
    )


# -- generator CPU -----------------------------------------------------------------------------------------
class CpuSampler:
    """psutil CPU% of this Locust process (100 = one core), sampled in a greenlet.

    The process handle follows ``os.getpid()``: ``locust --processes N`` forks its workers after this module
    was imported, and a handle made before the fork would measure the master instead of the worker."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.samples: list[float] = []
        self._greenlet: gevent.Greenlet | None = None
        self._cpu0_s = 0.0
        self._wall0_ns = 0

    @property
    def proc(self) -> psutil.Process:
        if self._proc.pid != os.getpid():  # forked since: measure this process, not the parent
            self._proc = psutil.Process()
            self.samples = []
        return self._proc

    def start(self) -> None:
        self.samples = []
        self.proc.cpu_percent(None)  # prime
        self._cpu0_s, self._wall0_ns = process_cpu_s(), time.perf_counter_ns()
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._loop)

    def _loop(self) -> None:
        while True:
            gevent.sleep(CPU_SAMPLE_INTERVAL_S)
            self.samples.append(self.proc.cpu_percent(None))

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def summary(self, requests: int = 0) -> dict[str, Any]:
        s = self.samples
        return {
            "pid": self.proc.pid,
            **cpu_usage(self._cpu0_s, self._wall0_ns, requests),
            "cpu_percent_mean": round(sum(s) / len(s), 1) if s else None,
            "cpu_percent_max": round(max(s), 1) if s else None,
            "cpu_percent_last": round(s[-1], 1) if s else None,  # the latest 1 s sample (the web UI's "now")
            "cpu_samples": len(s),
            "affinity": sorted(self.proc.cpu_affinity()) if hasattr(self.proc, "cpu_affinity") else None,
        }


# -- the plugin (one per Locust process) -------------------------------------------------------------------
class Plugin:
    def __init__(self) -> None:
        self.environment: Any = None
        self.options = LoadOptions()
        self.measurement: Measurement | None = None
        self.schedule: ArrivalSchedule | None = None
        self.cpu = CpuSampler()
        self.record: RunRecord | None = None
        self.thresholds: list[Threshold] = []  # --threshold, judged on the final record
        self.record_path: Path | None = None
        self.worker_states: dict[str, dict[str, Any]] = {}
        self.final_from: set[str] = set()
        self.stopped = False
        self.failed: str | None = None
        self.master_port: int | None = None
        self.consecutive_conn_errors = 0
        self.test_start_wall = 0.0
        self._saver: gevent.Greenlet | None = None
        self._window_reset: gevent.Greenlet | None = None
        self._window_end: gevent.Greenlet | None = None
        self._finishing: gevent.event.Event | None = None
        self.window_end_planned_ns: int | None = None
        # master/worker shares (module docstring): the master's generation counter and its assignment of the
        # current test; on a worker, the assignment received and whether this test is refused
        self.generation = 0
        self.assigned: dict[str, dict[str, int]] = {}
        self.assignment: dict[str, int] | None = None
        self._used_generation: int | None = None
        self.refused = False
        self._user_seq = 0

    # roles
    @property
    def runner(self) -> Any:
        return self.environment.runner if self.environment is not None else None

    @property
    def is_worker(self) -> bool:
        return isinstance(self.runner, WorkerRunner)

    @property
    def is_master(self) -> bool:
        return isinstance(self.runner, MasterRunner)

    def scenario(self) -> str:
        classes = getattr(self.environment, "user_classes", None) or []
        names = sorted({getattr(c, "scenario", c.__name__) for c in classes})
        return "+".join(names) or "unknown"

    def worker_share(self) -> tuple[int, int, int]:
        """(index, count, generation) of this generator: (0, 1, 0) when not distributed; on a worker, from the
        master's assignment for this test ((-1, 0, -1) when refused or not assigned)."""
        if not self.is_worker:
            return 0, 1, 0
        a = self.assignment
        if a is None or self.refused:
            return -1, 0, -1
        return int(a["index"]), int(a["count"]), int(a["generation"])

    def next_user_stream(self) -> tuple[int, int]:
        """(generator index, user number) for seeding a user's payload choice: the same for the same run
        seed, worker place and spawn order, in every process (never ``id(self)``)."""
        self._user_seq += 1
        return max(0, self.worker_share()[0]), self._user_seq

    def assign_workers(self) -> dict[str, dict[str, int]]:
        """Master, at test start: number the workers connected now 0..n-1 (Locust's index order), bump the
        generation and send each its assignment (before Locust's spawn message on the same connection)."""
        runner = self.runner
        clients = runner.clients
        nodes = [*clients.ready, *clients.running, *clients.spawning]
        ids = sorted({n.id for n in nodes}, key=lambda cid: (runner.get_worker_index(cid), cid))
        self.generation += 1
        self.assigned = assignments(ids, self.generation)
        for cid, a in self.assigned.items():
            runner.send_message(MSG_ASSIGN, a, client_id=cid)
        return self.assigned

    # events
    def on_init(self, environment: Any) -> None:
        self.environment = environment
        if self.is_master:
            environment.runner.register_message(MSG_SNAPSHOT, self._on_snapshot_msg)
            environment.runner.register_message(MSG_ABORT, self._on_abort_msg)
        if self.is_worker:
            # concurrent: the flush waits (bounded) for requests in flight; the message loop must go on
            environment.runner.register_message(MSG_FLUSH, self._on_flush_msg, concurrent=True)
            environment.runner.register_message(MSG_ASSIGN, self._on_assign_msg)
        if not self.is_worker:
            try:
                self.options = LoadOptions.from_parsed(environment.parsed_options)
                self.thresholds = parse_thresholds(getattr(environment.parsed_options, "threshold", None))
            except UsageError as exc:
                print(f"deploybench: error: {exc}", file=sys.stderr)
                sys.exit(2)
        if self.is_master:
            self._report_master_port()
        webui.install(environment, self)  # the exact figures in the web UI (none headless or on a worker)

    def _report_master_port(self) -> None:
        """The port the master actually bound (``--master-bind-port 0`` binds a free one): logged, kept for
        the record and written atomically to ``--master-port-file`` so whoever starts workers learns it
        without picking a port first."""
        port = getattr(getattr(self.runner, "server", None), "port", None)
        self.master_port = int(port) if port is not None else None
        logger.info("deploybench: the Locust master accepts workers on port %s", self.master_port)
        target = self.options.master_port_file
        if target and self.master_port is not None:
            write_atomic(target, f"{self.master_port}\n")

    def on_test_start(self, environment: Any) -> None:
        self.environment = environment
        self.options = LoadOptions.from_parsed(environment.parsed_options)
        if self.is_master:
            self.assign_workers()  # before Locust sends the spawn messages (they follow this event)
        now = time.perf_counter_ns()
        self.test_start_wall = time.time()
        self.stopped = False
        self.failed = None
        self.consecutive_conn_errors = 0
        self._finishing = None
        self._user_seq = 0
        window_start = now + round(self.options.warmup_s * 1e9)
        # open loop with --duration: the window is exactly that long, even when the timer that ends it fires
        # late (the schedule hands out no slot after it). Closed loop: it ends when the timer fires, as
        # Locust's own stats (the cross-check) do.
        self.window_end_planned_ns = (
            window_start + round(self.options.duration_s * 1e9)
            if self.options.duration_s > 0 and self.options.open_loop
            else None
        )
        self.measurement = Measurement(open_loop=self.options.open_loop, window_start_ns=window_start)
        self.schedule = self._make_schedule(window_start)
        self.cpu.start()
        if self.is_worker:
            if self.options.duration_s > 0 and not self.refused:
                # each worker closes its own window after warm-up + duration on its own clock; the master's
                # flush (at its own window end) closes it too, whichever comes first
                self._window_end = gevent.spawn_later(
                    self.options.warmup_s + self.options.duration_s, self.finish_window
                )
            return
        self.worker_states = {}
        self.final_from = set()
        self._start_record()
        if self.options.warmup_s > 0:
            self._window_reset = gevent.spawn_later(self.options.warmup_s, self._reset_locust_stats)
        if self.options.duration_s > 0:
            # The measured window is exactly warm-up + duration after the test start; Locust's own
            # --run-time (which also counts its start-up) is then only a safety bound. The master waits a
            # margin longer, so each worker ends its own window on its own clock before the flush.
            margin_s = MASTER_END_MARGIN_S if self.is_master else 0.0
            self._window_end = gevent.spawn_later(
                self.options.warmup_s + self.options.duration_s + margin_s, self._end_window
            )

    def _make_schedule(self, window_start_ns: int) -> ArrivalSchedule | None:
        """This process's arrival schedule (open loop), or None: closed loop, the master (it has no users),
        or a worker refused for this test (no fresh assignment from the master)."""
        self.refused = False
        if not self.options.open_loop or self.is_master:
            return None
        if self.is_worker:
            a = self.assignment
            if a is None or a["generation"] == self._used_generation:
                self.refused = True
                return None
            self._used_generation = a["generation"]
        index, count, generation = self.worker_share()
        o = self.options
        return ArrivalSchedule(
            o.rate_rps / count,
            o.load_model,
            seed=o.seed,
            worker_index=index,
            worker_count=count,
            generation=generation,
            max_lag_s=o.max_lag_s,
            max_requests=math.ceil(o.max_requests / count) if o.max_requests else 0,
            window_start_ns=window_start_ns,
            window_end_ns=self.window_end_planned_ns,
        )

    def close_window(self, now_ns: int) -> None:
        """End the measured window at ``now_ns`` (idempotent): the schedule closes too and its slots still
        pending in the window become "not-sent" errors."""
        m = self.measurement
        if m is None:
            return
        planned = self.window_end_planned_ns
        m.close(now_ns if planned is None else min(now_ns, planned))
        if self.schedule is not None and not self.schedule.closed:
            assert m.window_end_ns is not None
            m.distribute_not_sent(self.schedule.close(m.window_end_ns))

    def finish_window(self, drain_s: float = DRAIN_TIMEOUT_S) -> None:
        """Close the window now (if not yet) and, open loop, give the requests in flight up to ``drain_s``
        to answer, then seal the counts (the rest become "unfinished"). Another greenlet calling it while it
        drains waits for the same end."""
        m = self.measurement
        if m is None:
            return
        self.close_window(time.perf_counter_ns())
        if not m.open_loop:
            return
        if self._finishing is not None:
            self._finishing.wait(drain_s + 1.0)
            return
        self._finishing = done = gevent.event.Event()
        try:
            deadline = time.monotonic() + drain_s
            while m.in_flight() and time.monotonic() < deadline:
                gevent.sleep(0.01)
            m.seal()
        finally:
            done.set()

    def _end_window(self) -> None:
        if not self.is_master:
            self.finish_window()
        elif self.measurement is not None:  # the master measures nothing itself; the workers' windows count
            self.measurement.close(time.perf_counter_ns())
        self.environment.runner.quit()

    def _reset_locust_stats(self) -> None:
        # Only so Locust's own printed figures cover the same window as ours (a cross-check).
        self.environment.runner.stats.reset_all()

    def on_request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        response_length: int = 0,
        response: Any = None,
        context: dict[str, Any] | None = None,
        exception: BaseException | None = None,
        **_kw: Any,
    ) -> None:
        m = self.measurement
        if m is None or response_time is None:
            return
        ctx = context or {}
        latency_us = round(response_time * 1000.0)
        send_ns = ctx.get("db_send_ns")
        intended_ns = ctx.get("db_intended_ns")
        if send_ns is None:
            send_ns = time.perf_counter_ns() - latency_us * 1000
        delay_us = max(0, (send_ns - intended_ns) // 1000) if intended_ns is not None else 0
        status = getattr(response, "status_code", None)
        kind = error_kind(exception, status)
        timing: dict[str, int] = {}
        if kind is None:
            headers = getattr(response, "headers", None)
            if headers is not None:
                timing = parse_server_timing(headers.get("Server-Timing") or headers.get("server-timing"))
        m.add(
            f"{request_type} {name}",
            start_ns=intended_ns if intended_ns is not None else send_ns,
            latency_us=latency_us,
            send_delay_us=delay_us,
            error=kind,
            server_timing_us=timing,
            token=ctx.get("db_slot"),
        )
        if kind in CONNECTION_KINDS:
            self.consecutive_conn_errors += 1
            limit = self.options.abort_after_errors
            if limit and self.consecutive_conn_errors == limit:
                self._abort(f"target unreachable: {limit} consecutive connection errors (last: {kind})")
        else:
            self.consecutive_conn_errors = 0

    def _abort(self, reason: str) -> None:
        if self.is_worker:
            self.runner.send_message(MSG_ABORT, {"reason": reason})
            return
        if self.failed is None:
            self.failed = reason
            gevent.spawn(self.runner.quit)

    def generator_info(self) -> dict[str, Any]:
        """This process's share, role and CPU so far (what its snapshots carry as ``generator``)."""
        return self._generator_info()

    def _generator_info(self) -> dict[str, Any]:
        index, count, generation = self.worker_share()
        info: dict[str, Any] = {"worker_index": index, "worker_count": count, "role": self._role()}
        if self.is_worker:
            info["generation"] = generation
            info["refused"] = self.refused
        if self.schedule is not None:
            info["rate_rps"] = self.schedule.rate_rps
        m = self.measurement
        return {**info, **self.cpu.summary(m.answered() if m is not None else 0)}

    def snapshot(self) -> dict[str, Any]:
        assert self.measurement is not None
        if self.schedule is not None:
            self.measurement.pacing = self.schedule.counters()
        return self.measurement.to_wire(time.perf_counter_ns(), self._generator_info())

    def _role(self) -> str:
        return "worker" if self.is_worker else "master" if self.is_master else "local"

    def on_report_to_master(self, client_id: str, data: dict[str, Any]) -> None:
        if self.measurement is not None:
            data[REPORT_KEY] = self.snapshot()

    def on_worker_report(self, client_id: str, data: dict[str, Any]) -> None:
        snap = data.get(REPORT_KEY)
        if snap is not None and client_id not in self.final_from:
            self.worker_states[client_id] = snap

    def _on_snapshot_msg(self, environment: Any, msg: Any) -> None:
        self.worker_states[msg.node_id] = msg.data["snapshot"]
        if msg.data.get("final"):
            self.final_from.add(msg.node_id)

    def _on_abort_msg(self, environment: Any, msg: Any) -> None:
        self._abort(str(msg.data.get("reason", "a worker aborted the run")))

    def _on_flush_msg(self, environment: Any, msg: Any) -> None:
        if self.measurement is not None:
            self.finish_window()
            self.runner.send_message(MSG_SNAPSHOT, {"snapshot": self.snapshot(), "final": True})

    def _on_assign_msg(self, environment: Any, msg: Any) -> None:
        data = msg.data or {}
        self.assignment = {k: int(data[k]) for k in ("generation", "index", "count")}

    def on_test_stopping(self, environment: Any) -> None:
        if not self.is_master:
            # Locust is stopping (its --run-time, a signal, the master): close the window and let the
            # requests in flight answer (bounded) before Locust kills the users
            self.finish_window()
            return
        # Master: ask every worker for its final snapshot and wait (bounded) until they arrive, so the merged
        # record is complete even on the headless --run-time path (where the master quits without a stop).
        if self.measurement is not None:
            clients = [c.id for c in self.runner.clients.all]
            for cid in clients:
                self.runner.send_message(MSG_FLUSH, None, client_id=cid)
            deadline = time.monotonic() + DRAIN_TIMEOUT_S + 5.0
            while time.monotonic() < deadline and not set(clients) <= self.final_from:
                gevent.sleep(0.05)
            missing = set(clients) - self.final_from
            if missing and self.record is not None:
                self.record.add_warning(
                    "worker-final-missing",
                    f"{len(missing)} worker(s) did not send a final snapshot; their last report is used",
                )

    def on_test_stop(self, environment: Any) -> None:
        if self.measurement is None:
            return
        self.close_window(time.perf_counter_ns())
        if self.measurement.open_loop:
            self.measurement.seal()  # the users are stopped: nothing in flight can still answer
        if self.is_worker:
            self.runner.send_message(MSG_SNAPSHOT, {"snapshot": self.snapshot(), "final": True})
            return
        self.stopped = True
        self._save("failed" if self.failed else "complete", self.failed)

    def on_quitting(self, environment: Any) -> None:
        self.cpu.stop()
        if self.is_worker or self.record is None:
            return
        if self._saver is not None:
            self._saver.kill(block=False)
        if self.failed:
            status = "failed"
        elif self.stopped:
            status = "complete"
        else:
            status = "interrupted"
        if self.measurement is not None:
            self.close_window(time.perf_counter_ns())
            if self.measurement.open_loop:
                self.measurement.seal()
        err = self.failed or (
            None if status == "complete" else "the load generator was stopped before the run ended"
        )
        self._save(status, err)
        if self.thresholds and status == "complete" and self.record_path is not None:
            self._judge_thresholds(environment)

    def _judge_thresholds(self, environment: Any) -> None:
        """``--threshold``: judge the final record, write crossings into it as warnings, and make Locust exit
        with ``EXIT_THRESHOLD`` when one was crossed."""
        rec, path = self.record, self.record_path
        assert rec is not None and path is not None
        outcomes, held = apply_thresholds(rec, self.thresholds)
        rec.save(path)
        for outcome in outcomes:
            logger.info("deploybench: threshold %s", outcome.describe())
        if not held:
            environment.process_exit_code = EXIT_THRESHOLD

    # -- the record ----------------------------------------------------------------------------------------
    def _start_record(self) -> None:
        o = self.options
        env = capture_env()
        parsed = self.environment.parsed_options
        config = base_config(
            o, self.scenario(), self.environment.host, scenario_options(parsed), engine="locust"
        )
        config.update(
            users=getattr(parsed, "num_users", None),
            spawn_rate=getattr(parsed, "spawn_rate", None),
            run_time_s=getattr(parsed, "run_time", None),
        )
        config["generator"].update(
            tool="locust",
            user_class="FastHttpUser",
            mode=self._role(),
            workers=len(self.assigned) if self.is_master else 0,  # connected at test start
            expect_workers=int(getattr(parsed, "expect_workers", 1) or 1) if self.is_master else None,
            master_port=self.master_port if self.is_master else None,
            affinity=env.get("affinity"),
        )
        self.record = new_record(config, env, o)
        self.record_path = Path(o.record) if o.record else Path(o.results_dir) / f"{self.record.run_id}.json"
        self._save("running")
        if self._saver is None or self._saver.dead:
            self._saver = gevent.spawn(self._save_loop)

    def _save_loop(self) -> None:
        while not self.stopped:
            gevent.sleep(self.options.save_interval_s)
            if not self.stopped:
                self._save("running")

    def _merged(self) -> Measurement:
        if self.is_master:
            return Measurement.merge_wire(list(self.worker_states.values()))
        m = self.measurement
        if m is None:
            return Measurement.merge_wire([])
        if self.schedule is not None:
            m.pacing = self.schedule.counters()
        return m.local_view(time.perf_counter_ns(), self._generator_info())

    def _save(self, status: str, error: str | None = None) -> None:
        rec, path = self.record, self.record_path
        if rec is None or path is None:
            return
        try:
            fill_record(rec, self._merged(), self.options, status, error)
            self._add_locust_reported(rec)
            rec.save(path)
        except Exception:  # never let a save break the run; the next save retries
            logger.exception("deploybench: could not save the run record to %s", path)

    def _add_locust_reported(self, rec: RunRecord) -> None:
        stats = getattr(self.runner, "stats", None)
        if stats is None:
            return
        for s in rec.series:
            method, _, name = s.name.partition(" ")
            entry = stats.entries.get((name, method))
            if entry is None or not entry.num_requests:
                continue
            s.extra["locust_reported"] = {
                "note": "Locust's own rounded stats for the same window (cross-check only)",
                "num_requests": entry.num_requests,
                "num_failures": entry.num_failures,
                "p50_ms": entry.get_response_time_percentile(0.5),
                "p99_ms": entry.get_response_time_percentile(0.99),
                "avg_ms": round(entry.avg_response_time, 3),
            }


PLUGIN = Plugin()  # the one plugin of this Locust process
_registered = False


def register() -> Plugin:
    """Hook deploybench's options and ``PLUGIN`` into Locust's events (idempotent; eight listeners). Every
    locustfile of ours calls it when imported (the built-in scenarios, ``deploybench.loadtests.user`` for
    yours); importing this module alone registers nothing."""
    global _registered
    if not _registered:
        _registered = True
        events.init_command_line_parser.add_listener(_add_common_arguments)
        events.init.add_listener(lambda environment, **_kw: PLUGIN.on_init(environment))
        events.test_start.add_listener(lambda environment, **_kw: PLUGIN.on_test_start(environment))
        events.test_stopping.add_listener(lambda environment, **_kw: PLUGIN.on_test_stopping(environment))
        events.test_stop.add_listener(lambda environment, **_kw: PLUGIN.on_test_stop(environment))
        events.quitting.add_listener(lambda environment, **_kw: PLUGIN.on_quitting(environment))
        events.request.add_listener(PLUGIN.on_request)
        events.report_to_master.add_listener(PLUGIN.on_report_to_master)
        events.worker_report.add_listener(PLUGIN.on_worker_report)
    return PLUGIN


# -- the user base class ---------------------------------------------------------------------------------
class DeployBenchUser(FastHttpUser):
    """FastHttpUser with no wait. Closed loop: back-to-back requests. Open loop: each request takes the next
    slot of the process's shared arrival schedule and is sent at its intended time (or late, counted)."""

    abstract = True
    wait_time = constant(0)
    scenario = "unknown"
    network_timeout = 30.0
    connection_timeout = 10.0

    def send(self, method: str, path: str, **kwargs: Any) -> Any:
        schedule = PLUGIN.schedule
        m = PLUGIN.measurement
        if schedule is None or m is None:
            if PLUGIN.refused or (m is not None and m.open_loop):
                raise StopUser()  # open loop without a share of the rate (a late worker): send nothing
            return self._request(method, path, None, None, kwargs)
        # the endpoint label Locust's request event will carry (name=, else rename_request's, else the path)
        label = f"{method} {kwargs.get('name') or getattr(self.client, 'request_name', None) or path}"
        slot = schedule.take(time.perf_counter_ns())
        for intended in schedule.pop_dropped():
            m.add_unsent(label, start_ns=intended, kind=DROPPED)
        if slot is None:
            raise StopUser()
        token = m.begin(label, slot.intended_ns)
        sent = False
        try:
            wait_ns = slot.intended_ns - time.perf_counter_ns()
            if wait_ns > 0:
                gevent.sleep(wait_ns / 1e9)
            if schedule.outside(slot):  # taken early, due after the window closed: not part of the run
                m.cancel(token)
                raise StopUser()
            sent = True
            return self._request(method, path, slot, token, kwargs)
        finally:
            # the request event resolves the slot; without it (stopped while waiting or in flight) the slot is
            # counted here. catch_response: the event fires when the caller's `with` block ends.
            if not kwargs.get("catch_response"):
                m.abandon(token, UNFINISHED if sent else NOT_SENT)

    def _request(self, method: str, path: str, slot: Any, token: int | None, kwargs: dict[str, Any]) -> Any:
        extra = PLUGIN.options.headers
        if extra:  # --header / $DEPLOYBENCH_HEADERS; headers given to this call win
            given = kwargs.get("headers") or {}
            names = {k.lower() for k in given}
            kwargs["headers"] = {**{k: v for k, v in extra.items() if k.lower() not in names}, **given}
        send_ns = time.perf_counter_ns()
        ctx: dict[str, Any] = {"db_send_ns": send_ns}
        if slot is not None:
            ctx["db_intended_ns"] = slot.intended_ns
            ctx["db_slot"] = token
            schedule = PLUGIN.schedule
            if schedule is not None:
                schedule.sent(slot, send_ns)  # late by the actual send, not the pick-up
        return self.client.request(method, path, context=ctx, **kwargs)


def assignments(client_ids: list[str], generation: int) -> dict[str, dict[str, int]]:
    """The master's assignment of one test: the connected workers (in the given order) get indexes 0..n-1 of
    n, all with this generation."""
    n = len(client_ids)
    return {cid: {"generation": generation, "index": i, "count": n} for i, cid in enumerate(client_ids)}


def run_id_for(config: dict[str, Any]) -> str:
    """The run id a record with this config would get now (used by the runner to name files up front)."""
    return make_run_id("load", config, utc_now())


__all__ = [
    "PLUGIN",
    "DeployBenchUser",
    "LoadOptions",
    "Measurement",
    "fetch_health",
    "run_id_for",
]
