"""End-to-end load tests: real Locust subprocesses against the known-latency test server and a real target.

Tolerances (stated): with a 20 ms fixed service time, closed loop, 1 user on loopback, our P50 must lie in
[20 ms, 23 ms] and P99 in [20 ms, server-reported service P99 + 15 ms]: the lower bound is the sleep (latency
can't be less); the upper bounds allow loopback + Python HTTP-server overhead, and the P99 bound follows the
server's own measured service time because a shared 2-core machine can oversleep the server's 20 ms.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploybench.commands.cli import main as cli_main
from deploybench.loadtests.runner import run_load, run_load_to_file
from deploybench.record import load_record
from deploybench.stats import decode_histogram
from tests.support.known_latency import KnownLatencyServer
from tests.support.waiting import kill_leftovers, wait_until

pytestmark = pytest.mark.e2e  # every test here starts a server and Locust

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server_20ms() -> Iterator[KnownLatencyServer]:
    with KnownLatencyServer(service_ms=20.0) as srv:
        yield srv


@pytest.mark.parametrize("engine", ["lean", "locust"])
def test_accuracy_against_known_service_time(
    server_20ms: KnownLatencyServer, tmp_path: Path, engine: str
) -> None:
    # 5 s (~240 requests): the P99 is then the 3rd-highest sample, so one scheduling hiccup of the 2 shared
    # cores (the server, the generator and this process each want one) cannot set it alone
    rec = run_load(
        server_20ms.url, "tabular", duration_s=5, warmup_s=0, users=1, record_path=tmp_path / "r.json",
        engine=engine,
    )  # fmt: skip
    assert rec.status == "complete" and rec.config["loop"] == "closed-loop"
    assert rec.config["engine"] == engine and rec.config["generator"]["engine"] == engine
    (s,) = rec.series
    assert s.name == "POST /predict" and s.count >= 30 and not s.errors
    lat = s.latency_us
    # against the known truth (20 ms sleep)
    assert 20_000 <= lat["p50"] <= 23_000
    assert 20_000 <= lat["p90"] <= 35_000
    assert lat["p99"] >= 20_000 and lat["min"] >= 20_000
    # upper P99 bound from the docstring: the server's own measured service P99 (it may oversleep on a shared
    # machine) plus 15 ms of loopback + HTTP-server overhead
    service_p99 = s.server_timing_us["infer"]["p99"]
    assert lat["p99"] <= service_p99 + 15_000, (lat, s.server_timing_us["infer"])
    if engine == "locust":
        # against an independent computation on the same requests: Locust's own stats (1 ms buckets below
        # 100 ms, 10 ms below 1 s) must agree with our exact figures within its rounding.
        loc = s.extra["locust_reported"]
        assert loc["num_requests"] == s.count
        for key, pct in (("p50_ms", 50), ("p99_ms", 99)):
            if (s.count * pct) % 100 == 0:
                continue  # n*p integer: Locust takes the next rank up, inverted_cdf this one
            ours_ms = lat[f"p{pct}"] / 1000
            bucket_ms = 0.5 if ours_ms < 100 else 5.0 if ours_ms < 1000 else 50.0
            assert abs(ours_ms - loc[key]) <= bucket_ms + ours_ms * 0.001, (key, ours_ms, loc[key])
    # the generator's own cost is measured in every run
    head = rec.config["generator_headroom"]
    assert head["requests"] >= s.count and head["cpu_s"] > 0 and head["cpu_us_per_request"] > 0
    assert s.uncorrected_latency_us is None  # closed loop: one histogram
    assert s.server_timing_us["infer"]["p50"] >= 20_000  # Server-Timing parsed
    assert decode_histogram(s.histogram).get_total_count() == s.count
    assert s.throughput_rps == pytest.approx(1e6 / lat["mean"], rel=0.15)
    assert load_record(tmp_path / "r.json").to_dict() == rec.to_dict()


def test_coordinated_omission_stall_shows_in_corrected_p99_only(tmp_path: Path) -> None:
    # 100 rps open loop, 2 senders, 2 ms service; the server stalls 1 s, 2 s after the first request.
    with KnownLatencyServer(service_ms=2.0, stall_at_s=2.0, stall_s=1.0) as srv:
        rec = run_load(srv.url, "tabular", duration_s=4, warmup_s=1, users=2, rate_rps=100.0,
                       load_model="constant", record_path=tmp_path / "co.json")  # fmt: skip
    assert rec.status == "complete" and rec.config["loop"] == "open-loop"
    (s,) = rec.series
    assert s.count > 100 and s.offered_rps == pytest.approx(100.0)
    assert s.latency_us["p99"] >= 500_000  # corrected: the ~100 requests due during the stall waited
    assert s.uncorrected_latency_us["p99"] < 200_000  # uncorrected: only the 2 in-flight ones saw it
    assert s.latency_us["max"] >= 900_000
    assert rec.config["pacing"]["late_sends"] >= 50
    assert rec.config["pacing"]["dropped_sends"] == 0
    assert s.extra["warmup_count"] > 0 and rec.config["warmup_s"] == 1  # warm-up excluded and recorded


def test_open_loop_without_stall_adds_no_harness_latency(tmp_path: Path) -> None:
    """The generator must not delay its own sends: periodic record saves once blocked the event loop for
    ~150 ms (hdrh's Python-loop mean), which showed as a corrected P99 of 215 ms against a 3 ms server.
    Tolerance: corrected P99 within 50 ms of the 5 ms service time, with a save every 0.5 s."""
    with KnownLatencyServer(service_ms=5.0) as srv:
        rec = run_load(srv.url, "tabular", duration_s=4, warmup_s=1, users=4, rate_rps=50.0,
                       load_model="constant", record_path=tmp_path / "quiet.json",
                       scenario_options={"save_interval": 0.5})  # fmt: skip
    (s,) = rec.series
    assert rec.status == "complete" and s.count >= 150
    assert s.latency_us["p50"] >= 5_000
    assert s.latency_us["p99"] < 55_000, (s.latency_us, rec.config["pacing"])


def test_master_and_two_workers_write_one_merged_record(
    server_20ms: KnownLatencyServer, tmp_path: Path
) -> None:
    """The master binds a free port itself (``--master-bind-port 0``) and reports it in --master-port-file;
    the workers are started with that port: no port is picked before it is bound."""
    record = tmp_path / "dist.json"
    port_file = tmp_path / "master.port"
    common = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "health.py")]
    master_cmd = [*common, "--master", "--headless", "--expect-workers", "2",
                  "--master-bind-host", "127.0.0.1", "--master-bind-port", "0",
                  "--master-port-file", str(port_file),
                  "--host", server_20ms.url, "-u", "4", "-r", "4", "-t", "4s", "--record", str(record),
                  "--only-summary"]  # fmt: skip
    master_log = tmp_path / "master.log"
    procs: list[subprocess.Popen[bytes]] = []
    with open(master_log, "wb") as log:
        try:
            procs.append(subprocess.Popen(master_cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))

            def port_or_master_gone() -> str | bool:
                if port_file.exists():
                    return port_file.read_text().strip()
                return procs[0].poll() is not None and "exited"

            port = wait_until(port_or_master_gone, 60, "the master to write its port")
            assert port != "exited", master_log.read_text()[-2000:]
            assert int(port) > 0
            worker_cmd = [*common, "--worker", "--master-host", "127.0.0.1", "--master-port", port]
            procs += [subprocess.Popen(worker_cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL) for _ in range(2)]  # fmt: skip
            procs[0].wait(timeout=90)
            for p in procs[1:]:
                p.wait(timeout=30)
        finally:
            kill_leftovers(procs)
    assert procs[0].returncode == 0, master_log.read_text()[-2000:]
    rec = load_record(record)
    assert rec.status == "complete" and rec.config["generator"]["mode"] == "master"
    assert rec.config["generator"]["master_port"] == int(port)
    (s,) = rec.series
    gens = rec.config["generators"]
    assert len(gens) == 2 and {g["role"] for g in gens} == {"worker"}
    assert {g["worker_index"] for g in gens} == {0, 1} and len({g["pid"] for g in gens}) == 2
    assert decode_histogram(s.histogram).get_total_count() == s.count > 0
    per_worker = [g["window_s"] for g in gens]
    assert all(w > 2 for w in per_worker)
    assert s.throughput_rps > 0


def test_cli_load_with_worker_processes_writes_one_merged_record(
    server_20ms: KnownLatencyServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``deploybench load --processes 2``: Locust as a master with two forked worker processes; the record is
    the merge of both workers' histograms (counts add up, histogram total == series count)."""
    record = tmp_path / "procs.json"
    rc = cli_main(["load", "--url", server_20ms.url, "--scenario", "tabular", "--processes", "2",
                   "--duration", "3", "--warmup", "0.5", "--users", "4", "--record", str(record),
                   "--out", str(tmp_path), "--engine", "locust"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"record: {record}" in out
    rec = load_record(record)
    assert rec.status == "complete" and rec.config["locust_processes"] == 2
    assert rec.config["generator"]["mode"] == "master" and rec.config["generator"]["workers"] == 2
    gens = rec.config["generators"]
    assert len(gens) == 2 and {g["role"] for g in gens} == {"worker"}
    assert {g["worker_index"] for g in gens} == {0, 1} and len({g["pid"] for g in gens}) == 2
    (s,) = rec.series
    assert s.name == "POST /predict" and s.count > 0 and not s.errors
    assert decode_histogram(s.histogram).get_total_count() == s.count
    # 4 users at >= 20 ms per request cannot exceed 200 rps in all (a bound from the known service time)
    assert 0 < s.throughput_rps <= 4 * 1000 / 20 * 1.05
    assert s.latency_us["min"] >= 20_000


def test_open_loop_rate_is_shared_by_the_workers_actually_running(
    server_20ms: KnownLatencyServer, tmp_path: Path
) -> None:
    """Open loop over two Locust worker processes: the master assigns each connected worker its index and
    half the rate (before: --rate / --expect-workers, whatever connected), the record's offered rate is the
    sum of the shares that ran, and the merged blocks and ``scheduled`` add up exactly. 40 rps against a 20 ms
    server with 8 senders is far below capacity: nothing may be dropped."""
    record = tmp_path / "open-procs.json"
    rc = cli_main(["load", "--url", server_20ms.url, "--scenario", "tabular", "--processes", "2",
                   "--load-model", "poisson", "--rate", "40", "--seed", "5", "--duration", "3",
                   "--warmup", "0.5", "--users", "8", "--record", str(record),
                   "--out", str(tmp_path), "--engine", "locust"])  # fmt: skip
    assert rc == 0
    rec = load_record(record)
    assert rec.status == "complete" and rec.config["generator"]["workers"] == 2
    gens = rec.config["generators"]
    assert sorted(g["worker_index"] for g in gens) == [0, 1] and {g["worker_count"] for g in gens} == {2}
    assert [g["rate_rps"] for g in gens] == [20.0, 20.0] and not any(g["refused"] for g in gens)
    assert len({g["generation"] for g in gens}) == 1
    (s,) = rec.series
    assert s.offered_rps == pytest.approx(40.0) and not s.errors
    pacing = rec.config["pacing"]  # summed over the workers
    assert s.scheduled == s.count == pacing["scheduled_in_window"] > 0
    assert sum(b["count"] for b in s.blocks) == s.count
    merged = sum(decode_histogram(b["histogram"]).get_total_count() for b in s.blocks)
    assert merged == decode_histogram(s.histogram).get_total_count() == s.count
    assert not [w for w in rec.warnings if w.code in ("worker-refused", "dropped-sends", "not-sent")]


@pytest.mark.parametrize("engine", ["lean", "locust"])
def test_generator_bound_warning_is_recorded(tmp_path: Path, engine: str) -> None:
    """Each generator process reports its CPU time over its run; a busy share above
    --generator-bound-percent gives the ``generator-bound`` warning. With the threshold at 0 % any generator
    that does work trips it — no reliance on how busy the shared machine is."""
    with KnownLatencyServer(service_ms=1.0) as srv:
        rec = run_load(srv.url, "tabular", duration_s=3, warmup_s=0, users=4, record_path=tmp_path / "g.json",
                       generator_bound_percent=0, engine=engine)  # fmt: skip
    assert rec.status == "complete"
    assert rec.config["generator"]["generator_bound_percent"] == 0
    (gen,) = rec.config["generators"]
    assert gen["cpu_s"] > 0 and gen["wall_s"] >= 3 and gen["requests"] > 0
    bound = [w for w in rec.warnings if w.code == "generator-bound"]
    assert len(bound) == 1, rec.warnings
    assert str(gen["pid"]) in bound[0].message and "(> 0%)" in bound[0].message
    assert load_record(tmp_path / "g.json").to_dict() == rec.to_dict()


def test_poisson_open_loop_end_to_end(tmp_path: Path) -> None:
    """Seeded Poisson arrivals at 100 rps against a 5 ms server (far below capacity: 8 senders). The number
    of measured requests in a window of T s is Poisson(100 T) (arrivals are counted by intended time), so it
    lies within 5 standard deviations of 100 T (a false alarm about once in 1.7 million runs), less the few
    requests still in flight when the window closed. The seeded schedule itself is checked exactly in
    tests/test_load_units.py (same seed -> same arrival times)."""
    rate = 100.0
    with KnownLatencyServer(service_ms=5.0) as srv:
        rec = run_load(srv.url, "tabular", duration_s=4, warmup_s=1, rate_rps=rate, load_model="poisson",
                       seed=7, record_path=tmp_path / "p.json")  # fmt: skip
    assert rec.status == "complete", rec.error
    assert rec.config["load_model"] == "poisson" and rec.config["loop"] == "open-loop"
    assert rec.config["rate_rps"] == rate and rec.config["seed"] == 7
    (s,) = rec.series
    assert s.offered_rps == pytest.approx(rate)
    assert s.duration_s == pytest.approx(4.0, abs=0.5)
    expected = rate * s.duration_s
    # the requests in flight when the window closed are waited for: every slot of the window is measured
    assert expected - 5 * math.sqrt(expected) <= s.count <= expected + 5 * math.sqrt(expected)
    assert not s.errors
    pacing = rec.config["pacing"]
    assert pacing["scheduled"] == pacing["taken"] + pacing["dropped_sends"]
    assert pacing["dropped_sends"] == 0 and pacing["sent"] >= s.count
    assert s.scheduled == s.count == pacing["scheduled_in_window"]
    assert sum(b["count"] for b in s.blocks) == s.count and len(s.blocks) == 4
    assert s.uncorrected_latency_us is not None and s.latency_us["p50"] >= 5_000
    assert decode_histogram(s.histogram).get_total_count() == s.count


def test_open_loop_past_capacity_drops_late_sends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A server that handles one request at a time in 10 ms serves at most 100 rps. Offered 300 rps (3x) with
    10 senders and --max-lag 0.2, the senders fall behind the schedule by more than 0.2 s within about a
    second, and every slot that stale is dropped (never sent). Each slot of the window is in the record: a
    success, or an error of kind "dropped" / "not-sent" (pending at the close) / "unfinished", so the error
    ratio shows the overload (before issue 12 it was 0.0 %: dropped sends were only a warning, and P99 was
    capped near max-lag) and ``scheduled`` is the exact number of slots the constant schedule put in the
    window. The bounds below follow from the known capacity only (never from how fast this machine is)."""
    with KnownLatencyServer(service_ms=10.0, max_concurrency=1) as srv:
        record = tmp_path / "drop.json"
        rc = cli_main(["load", "--url", srv.url, "--scenario", "tabular", "--load-model", "constant",
                       "--rate", "300", "--users", "10", "--max-lag", "0.2", "--duration", "3",
                       "--warmup", "0.5", "--record", str(record), "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    rec = load_record(record)
    assert rec.status == "complete" and rec.config["max_lag_s"] == 0.2
    pacing = rec.config["pacing"]
    assert pacing["dropped_sends"] > 0, pacing
    assert pacing["scheduled"] == pacing["taken"] + pacing["dropped_sends"]
    # capacity is at most 100 rps, so of ~300 slots a second at least half must have been dropped
    assert pacing["dropped_sends"] >= pacing["sent"], pacing
    (s,) = rec.series
    assert s.throughput_rps < 150  # capacity 100 rps (one request at a time, >= 10 ms each), offered 300
    # every slot of the window is accounted for, and the schedule's own count agrees
    assert s.scheduled == s.count + s.error_count == pacing["scheduled_in_window"], (s.errors, pacing)
    assert abs(s.scheduled - 300 * s.duration_s) <= 1  # constant schedule: 300/s over the window, +-1 slot
    assert s.errors["dropped"] == pacing["dropped_in_window"] > 0
    assert s.errors.get("not-sent", 0) == pacing["not_sent"]
    assert set(s.errors) <= {"dropped", "not-sent", "unfinished"}, s.errors  # the server answered all it got
    # at most 100 answers/s over the window, plus the <= 10 in flight when it closed (they are waited for)
    assert s.count <= 100 * s.duration_s * 1.01 + 10
    assert s.error_ratio == s.error_count / s.scheduled >= 1 - (100 * s.duration_s * 1.01 + 10) / s.scheduled
    assert s.error_ratio > 0.5
    assert s.offered_rps == pytest.approx(300.0)
    # the blocks add up to the series
    assert [b["start_s"] for b in s.blocks] == [0.0, 1.0, 2.0]
    assert sum(b["count"] for b in s.blocks) == s.count
    assert sum(b["errors"] for b in s.blocks) == s.error_count
    hist = decode_histogram(s.histogram)
    assert sum(decode_histogram(b["histogram"]).get_total_count() for b in s.blocks) == hist.get_total_count()
    codes = [w.code for w in rec.warnings]
    assert codes.count("dropped-sends") == 1 and "errors" in codes
    assert "[dropped-sends]" in out and "'dropped':" in out


def test_locust_image_headless_against_a_real_target(tmp_path: Path) -> None:
    from deploybench.targets.serve import ServerProcess, TargetConfig

    cfg = TargetConfig(framework="fastapi", server="uvicorn", model="resnet18", format="onnx")
    with ServerProcess(cfg, log_path=tmp_path / "server.log") as srv:
        cmd = [sys.executable, "-m", "locust", "-f", "loadtests/image.py", "--headless",
               "--host", srv.url, "-u", "1", "-r", "1", "-t", "3s", "--results-dir", str(tmp_path),
               "--only-summary"]  # fmt: skip
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = [p for p in tmp_path.glob("*.json") if not p.name.startswith(".")]
    rec = load_record(path)
    assert rec.status == "complete" and rec.config["scenario"] == "image"
    assert rec.config["model"] == "resnet18" and rec.config["format"] == "onnx"  # read from /health
    names = {s.name for s in rec.series}
    assert names <= {"POST /predict/image", "POST /predict/image/base64"} and names
    for s in rec.series:
        assert s.count > 0 and not s.errors
        assert set(s.server_timing_us) == {"decode", "preprocess", "infer"}
        assert s.latency_us["p50"] >= s.server_timing_us["infer"]["p50"]


def test_runner_marks_a_run_failed_when_the_target_dies(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "x.json"
    srv = KnownLatencyServer(service_ms=5.0)
    stop = threading.Event()

    def kill_once_measuring() -> None:  # kill the target once the record shows measured requests
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                if json.loads(path.read_text())["series"][0]["count"] > 0:
                    srv.kill()
                    return
            except (OSError, ValueError, KeyError, IndexError):
                pass
            time.sleep(0.1)

    killer = threading.Thread(target=kill_once_measuring, daemon=True)
    try:
        killer.start()
        t0 = time.monotonic()
        rec, _ = run_load_to_file(srv, "tabular", duration_s=60, users=2, record_path=path)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        killer.join(5)
        srv.stop()
    assert rec.status == "failed" and "the target process exited" in rec.error, rec.error
    assert elapsed < 40  # ended promptly, not after the 60 s duration
    assert rec.series[0].count > 0  # the data measured before the crash is kept
    assert load_record(path).status == "failed"


def test_cli_load_against_a_url_and_bad_input(server_20ms: KnownLatencyServer, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    rc = cli_main(["load", "--url", server_20ms.url, "--scenario", "health", "--duration", "2",
                   "--warmup", "0", "--users", "2", "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "GET /health" in out and "record: " in out
    path = Path(out.strip().splitlines()[-1].removeprefix("record: "))
    assert json.loads(path.read_text())["status"] == "complete"
    bad_cases = [
        (["--load-model", "poisson"], "--load-model poisson needs --rate > 0"),
        (["--rate", "10"], "--rate is for open-loop runs"),
        (["--duration", "0"], "--duration must be > 0 seconds"),
        (["--users", "0"], "--users must be >= 1"),
        (["--scenario", "nope"], "argument --scenario: invalid choice: 'nope'"),  # argparse: SystemExit(2)
    ]
    for bad, message in bad_cases:
        try:
            rc = cli_main(["load", "--url", server_20ms.url, *bad, "--out", str(tmp_path)])
        except SystemExit as exc:
            rc = exc.code
        captured = capsys.readouterr()
        assert rc == 2, (bad, rc, captured.err)
        assert "error:" in captured.err and message in captured.err, (bad, captured.err)
        assert not captured.out.strip(), (bad, captured.out)  # nothing ran
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".json") == [path.name]


def test_runner_starts_and_stops_a_target_config_with_pinned_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The headless runner path the other commands use: start a TargetConfig, wait for health, run, stop.
    The generator runs on CPU 0 only and the record says so; the target's process group is gone after."""
    import psutil

    from deploybench.targets.serve import TargetConfig
    from deploybench.targets.zoo import build_zoo

    zoo = build_zoo(models=["iris-rf"], formats=["onnx"])["zoo_dir"]
    config = TargetConfig(framework="fastapi", server="uvicorn", model="iris-rf", format="onnx",
                          zoo_dir=str(Path(zoo).resolve()), cpus=[1])  # fmt: skip
    # Processes this test starts inherit a mark in their environment: only they are checked afterwards
    # (other suites' servers on the same machine are not this test's business).
    mark = f"{os.getpid()}-{tmp_path.name}"
    monkeypatch.setenv("DEPLOYBENCH_TEST_MARK", mark)

    def started_here(p: psutil.Process) -> bool:
        try:
            return p.pid != os.getpid() and p.environ().get("DEPLOYBENCH_TEST_MARK") == mark
        except psutil.Error:  # gone meanwhile, or not ours to read
            return False

    rec = run_load(config, "tabular", duration_s=2, warmup_s=0.5, users=2, generator_cpus=[0],
                   results_dir=tmp_path)  # fmt: skip
    assert rec.status == "complete"
    assert rec.config["framework"] == "fastapi" and rec.config["format"] == "onnx"
    (s,) = rec.series
    assert s.count > 0 and not s.errors and s.server_timing_us is not None
    assert [g["affinity"] for g in rec.config["generators"]] == [[0]]
    leftovers = [p for p in psutil.process_iter() if started_here(p)]
    assert not leftovers, leftovers


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--generator-bound-percent", "-1"], "--generator-bound-percent must be >= 0"),
        (["--load-model", "constant"], "--load-model constant needs --rate > 0"),
        (["--threshold", "p99<50"], "threshold 'p99<50': missing unit"),
    ],
)
def test_locust_rejects_bad_deploybench_options(option: list[str], message: str, tmp_path: Path) -> None:
    """Our options given to Locust directly are checked before any request: exit code 2 and a message naming
    the option (nothing is sent: the host is a closed port's URL, and no record is written)."""
    cmd = [sys.executable, "-m", "locust", "-f", "loadtests/health.py", "--headless", "--host",
           "http://127.0.0.1:9", "-u", "1", "-t", "5s", "--results-dir", str(tmp_path), *option]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"deploybench: error: {message}" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_locusts_own_csv_and_html_reports_work_with_our_scenarios(tmp_path: Path) -> None:
    """Locust's --csv and --html still write their files next to deploybench's record."""
    with KnownLatencyServer(service_ms=2.0) as srv:
        cmd = [sys.executable, "-m", "locust", "-f", "loadtests/tabular.py", "--headless", "--host", srv.url,
               "-u", "2", "-r", "2", "-t", "20s", "--duration", "1", "--warmup", "0.2", "--only-summary",
               "--results-dir", str(tmp_path), "--csv", str(tmp_path / "locust"),
               "--html", str(tmp_path / "locust.html")]  # fmt: skip
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = (tmp_path / "locust_stats.csv").read_text().splitlines()
    assert stats[0].startswith("Type,Name,Request Count")
    row = next(line.split(",") for line in stats[1:] if line.startswith("POST,/predict,"))
    assert int(row[2]) > 0
    assert (tmp_path / "locust_stats_history.csv").is_file() and (tmp_path / "locust_failures.csv").is_file()
    html = (tmp_path / "locust.html").read_text()
    assert "/predict" in html and "<html" in html.lower()
    (record,) = [p for p in tmp_path.glob("*.json") if not p.name.startswith(".")]
    rec = load_record(record)
    assert rec.status == "complete" and rec.series[0].count > 0
