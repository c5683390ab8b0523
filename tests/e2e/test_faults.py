"""Faults in the harness, nothing lost:

- a real target killed (SIGKILL, whole process group) in the middle of a load run: the run ends promptly,
  the record says "failed" and why, and what was measured so far is on disk and readable;
- a target that never becomes healthy: a TargetError naming the command and the tail of its log, within the
  ready timeout, and no process left behind;
- Ctrl-C (SIGINT to the process group, as a terminal sends it) during ``deploybench bench --profile tiny`` and
  during ``deploybench compare`` on a tiny matrix: exit 130, the finished results kept, readable and marked
  "interrupted", the report still written.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from deploybench import paths
from deploybench.errors import TargetError
from deploybench.loadtests.runner import run_load
from deploybench.record import load_record
from deploybench.targets import serve
from deploybench.targets.serve import ServerProcess, TargetConfig
from deploybench.targets.zoo import build_zoo
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e  # every test here starts a server, Locust or the CLI


@pytest.fixture(scope="module")
def zoo() -> Path:
    root = paths.zoo_dir()
    build_zoo(root, models=["iris-rf"], formats=["onnx"])
    return root.resolve()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# -- a target killed mid-run -----------------------------------------------------------------------------
class KillableTarget:
    """A real ServerProcess handed to run_load as a target object (start/stop/is_alive/url), so the test
    knows its PID and can kill it."""

    def __init__(self, config: TargetConfig, log_path: Path) -> None:
        self.server = ServerProcess(config, log_path=log_path, ready_timeout_s=60)
        self.started = threading.Event()

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()
        self.started.set()

    def is_alive(self) -> bool:
        return self.server.is_alive()

    @property
    def returncode(self) -> int | None:
        return self.server.returncode

    def log_tail(self, n_chars: int = 4000) -> str:
        return self.server.log_tail(n_chars)

    def stop(self) -> None:
        self.server.stop()
        self.server.cleanup()

    def kill(self) -> None:
        assert self.server.pid is not None
        os.killpg(self.server.pid, signal.SIGKILL)  # the group we started (start_new_session)


def _measured_count(record_path: Path) -> int:
    doc = _read_json(record_path) or {}
    return sum(int(s.get("count") or 0) for s in doc.get("series") or [])


def test_target_killed_mid_run_ends_promptly_and_keeps_the_record(zoo: Path, tmp_path: Path) -> None:
    """Two paths notice a dead target: the Locust plugin (N consecutive connection errors) and the runner
    (it polls the target process). Whichever ends the run, the record names the real cause: the target's
    exit, with the signal that killed it."""
    config = TargetConfig(framework="fastapi", server="uvicorn", model="iris-rf", format="onnx", zoo_dir=zoo)
    target = KillableTarget(config, tmp_path / "server.log")
    record_path = tmp_path / "load.json"
    duration_s = 120.0  # far longer than the run may take once the target is dead
    killed = threading.Event()

    def killer() -> None:
        # kill once the run is under way and a save shows measured requests
        if target.started.wait(120):
            with contextlib.suppress(AssertionError):
                wait_until(lambda: _measured_count(record_path) > 0, 120, "a saved record with requests")
            target.kill()
            killed.set()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    started = time.monotonic()
    record = run_load(
        target, "tabular", duration_s=duration_s, warmup_s=0.0, users=2, model="iris-rf",
        results_dir=tmp_path, record_path=record_path, scenario_options={"save_interval": 0.5},
    )  # fmt: skip
    elapsed_s = time.monotonic() - started
    thread.join(5)
    assert killed.is_set(), "the killer thread never fired"
    assert elapsed_s < duration_s, "the run went on for its whole duration after the target died"
    assert record.status == "failed"
    assert (record.error or "").startswith("the target process exited during the run (killed by SIGKILL)"), (
        record.error
    )
    on_disk = load_record(record_path)  # readable, and the same verdict
    assert on_disk.status == "failed" and on_disk.error == record.error
    assert sum(s.count for s in on_disk.series) > 0, "the requests measured before the kill were lost"
    assert not target.is_alive()


# -- a target that never becomes healthy ------------------------------------------------------------------
NEVER_HEALTHY = textwrap.dedent(
    """
    import sys, time
    print("fake target: listening nowhere, never healthy", flush=True)
    time.sleep(600)
    """
)


def test_never_healthy_target_times_out_naming_command_and_log(
    zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_command(config: TargetConfig, port: int, *, fd: int | None = None) -> list[str]:
        return [sys.executable, "-c", NEVER_HEALTHY, "--port", str(port)]

    monkeypatch.setattr(serve, "server_command", fake_command)
    config = TargetConfig(framework="fastapi", server="uvicorn", model="iris-rf", format="onnx", zoo_dir=zoo)
    started = time.monotonic()
    with pytest.raises(TargetError) as info:
        run_load(config, "health", duration_s=2, results_dir=tmp_path, ready_timeout_s=3.0)
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert "not ready after 3 s" in message
    assert "command:" in message and "--port" in message
    assert "fake target: listening nowhere, never healthy" in message  # the log tail
    assert elapsed < 120, "the ready timeout did not end the wait (the fake target sleeps 600 s)"
    stray = [
        p.pid
        for p in psutil.Process().children(recursive=True)
        if "never healthy" in " ".join(p.cmdline() if p.is_running() else [])
    ]
    assert not stray, f"processes left behind: {stray}"


# -- Ctrl-C keeps finished results -------------------------------------------------------------------------
@contextlib.contextmanager
def cli(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`deploybench ARGS` in its own process group; always stopped."""
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploybench", *args], cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,
            # SIGINT back to its default: a test run started in the background (`cmd &` in a script)
            # ignores SIGINT, and an ignored signal stays ignored across exec, so Ctrl-C would never arrive.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def ctrl_c(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground group
    return proc.wait(timeout_s)


def test_ctrl_c_during_bench_keeps_finished_cases(zoo: Path, tmp_path: Path) -> None:
    out, log = tmp_path / "bench", tmp_path / "bench.log"
    args = ["bench", "--profile", "tiny", "--models", "iris-rf", "--zoo", str(zoo), "--out", str(out)]
    with cli(args, log) as proc:
        # interrupt once at least two benchmark cases have passed (pytest -v prints one line per case)
        wait_until(
            lambda: log.read_text(errors="replace").count("PASSED") >= 2 or proc.poll() is not None,
            120,
            "two finished benchmark cases",
        )
        assert proc.poll() is None, f"bench finished before it could be interrupted:\n{log.read_text()}"
        rc = ctrl_c(proc, 60)
    text = log.read_text(errors="replace")
    assert rc == 130, text
    assert "interrupted; results written so far are kept" in text
    records = [load_record(p) for p in sorted(out.glob("*.json"))]
    assert records, f"no record kept:\n{text}"
    assert {r.status for r in records} == {"interrupted"}
    measured = [s for r in records for s in r.series if s.count > 0]
    assert len(measured) >= 2, "the finished cases' samples were lost"
    assert (out / "report.md").is_file()


TINY_COMPARE = """
name = "tiny-faults"
description = "two iris-rf ONNX choices, very short steps (fault tests)"

[matrix]
framework = ["fastapi"]
server = ["uvicorn"]
model = ["iris-rf"]
format = ["onnx"]
workers = [1, 2]

[slo]
p99_ms = 200.0

[measure]
users = 2
warmup_s = 0.5
window_s = 2.0
stability_windows = 1
max_windows = 1
max_stability_s = 4.0
common_rate_rps = 20.0
common_duration_s = 2.0

[search]
step_s = 2.0
step_warmup_s = 0.0
max_probes = 2
max_expansions = 0
min_step_requests = 0  # no repeats, no minimum step: tiny and fast (pinning stays "auto": the
repeats = 0            # pinned target is spawned through the affinity shim while Ctrl-C may arrive)
"""


def test_ctrl_c_during_compare_keeps_finished_choices(zoo: Path, tmp_path: Path) -> None:
    cfg, out, log = tmp_path / "tiny.toml", tmp_path / "compare", tmp_path / "compare.log"
    cfg.write_text(TINY_COMPARE)
    summary = out / "compare.json"

    def first_choice_done() -> bool:
        doc = _read_json(summary) or {}
        results = doc.get("results") or []
        return bool(results) and results[0].get("status") == "complete"

    def second_choice_running() -> bool:
        results = (_read_json(summary) or {}).get("results") or []
        return len(results) > 1 and results[1].get("status") == "running"

    with cli(["compare", "--config", str(cfg), "--zoo", str(zoo), "--out", str(out)], log) as proc:
        wait_until(lambda: first_choice_done() or proc.poll() is not None, 180, "the first choice to finish")
        assert proc.poll() is None, f"compare finished before it could be interrupted:\n{log.read_text()}"
        wait_until(
            lambda: second_choice_running() or proc.poll() is not None, 180, "the second choice to start"
        )
        assert proc.poll() is None, f"compare finished before it could be interrupted:\n{log.read_text()}"
        rc = ctrl_c(proc, 90)
    text = log.read_text(errors="replace")
    assert rc == 130, text
    doc = json.loads(summary.read_text())
    assert doc["status"] == "interrupted"
    first, second = doc["results"]
    assert first["status"] == "complete" and first["saturation"] is not None
    assert second["status"] == "interrupted"
    assert (out / "report.md").is_file()
    # the finished choice's load records are on disk and readable
    records = [load_record(p) for p in (out / first["id"]).rglob("*.json") if ".server" not in p.name]
    assert records and all(r.status == "complete" for r in records)
