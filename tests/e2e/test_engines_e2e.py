"""The two load engines end to end: lean generator processes merged exactly, the refusal of what an engine
cannot run, and remote Locust workers (`deploybench worker`) for a `deploybench load --expect-workers`
master and for a `deploybench compare --expect-workers` run, all started as separate processes on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from deploybench.commands.cli import main as cli_main
from deploybench.record import load_record
from deploybench.stats import decode_histogram
from tests.support.known_latency import KnownLatencyServer
from tests.support.tiny_matrix import compare_finished, tiny_matrix
from tests.support.waiting import kill_leftovers, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DEPLOYBENCH = [sys.executable, "-m", "deploybench"]


@pytest.fixture
def server_20ms() -> Iterator[KnownLatencyServer]:
    with KnownLatencyServer(service_ms=20.0) as srv:
        yield srv


def test_lean_processes_share_the_rate_and_merge_exactly(
    server_20ms: KnownLatencyServer, tmp_path: Path
) -> None:
    """``--processes 2`` with the lean engine: two generator processes, each half the rate with its own
    Poisson stream; the record merges both (counts, blocks and histograms add up; nothing unsent)."""
    record = tmp_path / "lean2.json"
    rc = cli_main(["load", "--url", server_20ms.url, "--scenario", "tabular", "--processes", "2",
                   "--load-model", "poisson", "--rate", "40", "--seed", "5", "--duration", "3",
                   "--warmup", "0.5", "--users", "8", "--record", str(record),
                   "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0
    rec = load_record(record)
    assert rec.status == "complete" and rec.config["engine"] == "lean"
    assert rec.config["generator"]["processes"] == 2
    gens = rec.config["generators"]
    assert sorted(g["worker_index"] for g in gens) == [0, 1] and len({g["pid"] for g in gens}) == 2
    assert [g["rate_rps"] for g in gens] == [20.0, 20.0] and [g["connections"] for g in gens] == [4, 4]
    (s,) = rec.series
    assert s.offered_rps == pytest.approx(40.0) and not s.errors
    assert s.scheduled == s.count == rec.config["pacing"]["scheduled_in_window"] > 0
    assert sum(b["count"] for b in s.blocks) == s.count == decode_histogram(s.histogram).get_total_count()
    assert s.latency_us["min"] >= 20_000
    assert not (tmp_path / "lean2.lean").exists()  # the processes' states were merged, then removed


@pytest.mark.parametrize("reads", ["deferred", "on-arrival"])
def test_an_open_loop_times_each_answer_by_its_arrival_not_by_when_it_is_read(
    server_20ms: KnownLatencyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads: str
) -> None:
    """4 rps against a 20 ms server: with deferred reads an answer waits in the socket until the next slot
    (250 ms later) but is timed by the kernel's receive timestamp, so P50 stays near 20 ms, as when every
    answer wakes the generator; the record says which reads ran."""
    monkeypatch.setenv("DEPLOYBENCH_LEAN_READS", reads)
    record = tmp_path / f"{reads}.json"
    rc = cli_main(["load", "--url", server_20ms.url, "--scenario", "tabular", "--load-model", "constant",
                   "--rate", "4", "--duration", "3", "--warmup", "0", "--users", "2", "--record", str(record),
                   "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0
    rec = load_record(record)
    (gen,) = rec.config["generators"]
    assert gen["reads"] == reads
    (s,) = rec.series
    assert s.count == s.scheduled == 12 and not s.errors
    assert 20_000 <= s.latency_us["p50"] < 150_000  # read at the next slot it would be >= 250 ms


def test_a_bad_reads_setting_is_a_one_line_error(
    server_20ms: KnownLatencyServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("DEPLOYBENCH_LEAN_READS", "sometimes")
    rc = cli_main(["load", "--url", server_20ms.url, "--load-model", "constant", "--rate", "4",
                   "--duration", "1", "--out", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "DEPLOYBENCH_LEAN_READS='sometimes': use deferred or on-arrival" in err, err
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "lean", "--locustfile", "LOCUSTFILE"], "--engine lean cannot run a locustfile"),
        (["--engine", "lean", "--expect-workers", "2"], "use --engine locust"),
        (["--engine", "fast"], "invalid choice: 'fast'"),
    ],
)
def test_an_engine_refuses_what_it_cannot_run(
    server_20ms: KnownLatencyServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
    message: str,
) -> None:  # fmt: skip
    locustfile = tmp_path / "mine.py"
    locustfile.write_text("from deploybench.loadtests.user import DeployBenchUser\n")
    argv = ["load", "--url", server_20ms.url, "--duration", "1", "--out", str(tmp_path)]
    argv += [str(locustfile) if a == "LOCUSTFILE" else a for a in args]
    try:
        rc = cli_main(argv)
    except SystemExit as exc:  # argparse's own refusal
        rc = int(exc.code or 0)
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert len([line for line in err.splitlines() if "error" in line]) == 1  # one line, no traceback
    assert not list(tmp_path.glob("*.json"))  # nothing ran, nothing was written


def test_remote_workers_join_a_master_started_by_deploybench_load(
    server_20ms: KnownLatencyServer, tmp_path: Path
) -> None:
    """`deploybench load --expect-workers 2` is a Locust master on a free port (written to
    --master-port-file); two `deploybench worker --master HOST:PORT` processes join it; the record is the
    exact merge of both workers' histograms."""
    record, port_file = tmp_path / "dist.json", tmp_path / "master.port"
    master_cmd = [*DEPLOYBENCH, "load", "--url", server_20ms.url, "--scenario", "tabular", "--expect-workers",
                  "2", "--master-port-file", str(port_file), "--duration", "3", "--warmup", "0.5",
                  "--users", "4", "--record", str(record), "--out", str(tmp_path)]  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "master.out"
    try:
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(master_cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))

        def port_or_gone() -> str | bool:
            if port_file.exists() and port_file.read_text().strip():
                return port_file.read_text().strip()
            return procs[0].poll() is not None and "exited"

        port = wait_until(port_or_gone, 90, "the master to write its port")
        assert port != "exited", log.read_text()[-2000:]
        worker = [*DEPLOYBENCH, "worker", "--master", f"127.0.0.1:{port}", "--scenario", "tabular",
                  "--timeout", "120"]  # fmt: skip
        procs += [subprocess.Popen(worker, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for _ in range(2)]  # fmt: skip
        assert procs[0].wait(timeout=150) == 0, log.read_text()[-2000:]
        for p in procs[1:]:
            p.wait(timeout=60)
    finally:
        kill_leftovers(procs)
    rec = load_record(record)
    assert rec.status == "complete" and rec.config["engine"] == "locust"
    assert rec.config["generator"]["mode"] == "master" and rec.config["generator"]["workers"] == 2
    gens = rec.config["generators"]
    assert len(gens) == 2 and {g["role"] for g in gens} == {"worker"}
    (s,) = rec.series
    assert s.count > 0 and not s.errors and s.latency_us["min"] >= 20_000
    assert decode_histogram(s.histogram).get_total_count() == s.count


TINY_REMOTE = tiny_matrix("tiny-remote", "pin = false")


def test_compare_is_the_master_of_remote_workers_for_every_run(tmp_path: Path, zoo_dir: Path) -> None:
    """`deploybench compare --expect-workers 2 --master-bind 127.0.0.1:PORT`: every load run of the compare
    (stability window, common rate, search steps) is a Locust master on that one address; two `deploybench
    worker --keep` processes, started once, serve them all, and every record merges both."""
    with socket.socket() as s:  # a free port for the master's fixed address
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg, out = tmp_path / "tiny.toml", tmp_path / "out"
    cfg.write_text(TINY_REMOTE)
    worker = [*DEPLOYBENCH, "worker", "--master", f"127.0.0.1:{port}", "--scenario", "tabular", "--keep",
              "--timeout", "400"]  # fmt: skip
    workers = [subprocess.Popen(worker, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]  # fmt: skip
    try:
        done = subprocess.run(
            [*DEPLOYBENCH, "compare", "--config", str(cfg), "--zoo", str(zoo_dir), "--out", str(out),
             "--expect-workers", "2", "--master-bind", f"127.0.0.1:{port}", "-q"],
            cwd=ROOT, capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        assert compare_finished(done.returncode, done.stderr), done.stderr[-3000:]
        assert all(w.poll() is None for w in workers)  # --keep: still waiting for the next master
        children = [c for w in workers for c in psutil.Process(w.pid).children(recursive=True)]
    finally:
        kill_leftovers(workers)
    # a SIGTERM ends a --keep worker (exit 143, no SIGKILL needed) and the Locust worker it runs
    assert [w.returncode for w in workers] == [143, 143]
    assert children and not [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    doc = json.loads((out / "compare.json").read_text())
    assert doc["config"]["measure"]["engine"] == "locust" and doc["config"]["measure"]["expect_workers"] == 2
    (result,) = doc["results"]
    assert result["status"] == "complete", result.get("error")
    paths = sorted((out / result["id"]).glob("*.json"))
    assert len(paths) >= 3  # stability window, common rate, >= 1 search step: one master each
    for path in paths:
        rec = load_record(path)
        assert rec.status == "complete", (path.name, rec.error)
        assert rec.config["generator"]["mode"] == "master" and rec.config["generator"]["workers"] == 2
        assert sorted(g["role"] for g in rec.config["generators"]) == ["worker", "worker"], path.name
    assert f"2 remote workers (master on 127.0.0.1:{port})" in (out / "report.md").read_text()
