"""deploybench.progress (the reporter of long runs) and the parent-side monitor that feeds it and samples CPU
per block (``loadtests.lean.RunMonitor``), in-process: no process is started here."""

from __future__ import annotations

import argparse
import io
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from deploybench.loadtests.lean import RunMonitor
from deploybench.progress import (
    LiveProgress,
    LoadFigures,
    NullProgress,
    PendingPhase,
    PlainProgress,
    Ticker,
    add_progress_argument,
    figures_from_series,
    format_figures,
    make_progress,
    progress_from_args,
    resolve_mode,
)
from deploybench.record import RunRecord, Series


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_format_figures_names_stage_time_rate_p99_and_errors() -> None:
    f = LoadFigures(elapsed_s=4.2, planned_s=12.0, stage="measuring", rate_rps=1812.4, p99_us=3210, errors=2)
    assert format_figures(f) == "measuring 4/12 s (8 s left)  1,812 rps  p99 3.21 ms  2 errors"
    warm = LoadFigures(elapsed_s=1.0, planned_s=12.0, stage="warm-up")
    assert format_figures(warm) == "warm-up 1/12 s (11 s left)"  # nothing measured yet: no figures
    assert format_figures(LoadFigures(elapsed_s=3.0, stage="measuring", errors=1)) == "measuring 3 s  1 error"


def test_plain_prints_each_phase_and_at_most_every_interval_or_on_a_stage_change() -> None:
    out, clock = io.StringIO(), FakeClock()
    p = PlainProgress(out, every_s=5.0, clock=clock)
    p.phase("choice 1/2 a")
    fig = LoadFigures(elapsed_s=0.0, planned_s=10.0, stage="warm-up")
    p.update(fig)  # the first figures of a phase: printed
    clock.t = 1.0
    p.update(LoadFigures(elapsed_s=1.0, planned_s=10.0, stage="warm-up"))  # too soon, same stage: not
    clock.t = 2.0
    p.update(LoadFigures(elapsed_s=2.0, planned_s=10.0, stage="measuring", rate_rps=100.0, p99_us=1500))
    clock.t = 3.0
    p.update(LoadFigures(elapsed_s=3.0, planned_s=10.0, stage="measuring", rate_rps=101.0, p99_us=1500))
    clock.t = 7.5
    p.update(LoadFigures(elapsed_s=7.5, planned_s=10.0, stage="measuring", rate_rps=99.0, p99_us=1600))
    p.phase("choice 2/2 b")
    p.close()
    assert out.getvalue().splitlines() == [
        "progress: choice 1/2 a",
        "progress: [choice 1/2 a] warm-up 0/10 s (10 s left)",
        "progress: [choice 1/2 a] measuring 2/10 s (8 s left)  100 rps  p99 1.50 ms  0 errors",
        "progress: [choice 1/2 a] measuring 8/10 s (2 s left)  99 rps  p99 1.60 ms  0 errors",
        "progress: choice 2/2 b",
    ]


def test_auto_is_plain_off_a_terminal_and_live_on_one() -> None:
    assert resolve_mode("auto", io.StringIO()) == "plain"
    assert resolve_mode("auto", Tty()) == "live"
    assert resolve_mode("live", io.StringIO()) == "live"
    assert resolve_mode("plain", Tty(), quiet=True) == "off"  # --quiet implies off
    assert resolve_mode("off", Tty()) == "off"
    assert isinstance(make_progress("auto", io.StringIO()), PlainProgress)
    assert isinstance(make_progress("auto", Tty()), LiveProgress)
    assert isinstance(make_progress("off", Tty()), NullProgress)
    with pytest.raises(ValueError, match="progress mode"):
        resolve_mode("loud", io.StringIO())


def test_progress_argument_and_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    add_progress_argument(parser)
    parser.add_argument("--quiet", action="store_true")
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    assert parser.parse_args([]).progress == "auto"
    assert isinstance(progress_from_args(parser.parse_args([])), PlainProgress)
    assert isinstance(progress_from_args(parser.parse_args(["--quiet"])), NullProgress)
    assert isinstance(progress_from_args(parser.parse_args(["--progress", "off"])), NullProgress)
    with pytest.raises(SystemExit):
        parser.parse_args(["--progress", "loud"])


def test_live_draws_on_the_stream_and_ends_cleanly() -> None:
    out = Tty()
    p = LiveProgress(out)
    p.phase("probe 1: 100 rps")
    p.update(LoadFigures(elapsed_s=2.0, planned_s=5.0, stage="measuring", rate_rps=99.0, p99_us=2000))
    p.phase("probe 2: 200 rps")
    p.close()
    text = out.getvalue()
    assert "probe 1: 100 rps" in text and "99 rps" in text and "probe 2: 200 rps" in text


def _series(blocks: list[tuple[float, float, int]], count: int, p99: int, errors: int = 0) -> Series:
    return Series(
        name="GET /health", count=count, latency_us={"p99": p99},
        errors={"http-500": errors} if errors else {},
        duration_s=sum(b[1] for b in blocks),
        blocks=[{"start_s": s, "duration_s": d, "count": n} for s, d, n in blocks],
    )  # fmt: skip


def test_figures_from_series_rate_of_the_last_complete_block_and_stage() -> None:
    a = _series([(0.0, 1.0, 100), (1.0, 1.0, 120), (2.0, 0.4, 30)], 250, 2000, errors=3)
    b = _series([(0.0, 1.0, 10), (1.0, 1.0, 20), (2.0, 0.4, 3)], 33, 5000)
    f = figures_from_series([a, b], elapsed_s=4.4, planned_s=7.0, warmup_s=2.0)
    assert f.stage == "measuring" and f.rate_rps == pytest.approx(140.0)  # block 1, the last complete one
    assert f.p99_us == 5000 and f.errors == 3 and f.requests == 283
    assert figures_from_series([], 1.0, 7.0, 2.0).stage == "warm-up"
    assert figures_from_series([], 7.5, 7.0, 2.0).stage == "finishing"
    one = _series([(0.0, 0.5, 50)], 50, 1000)  # no complete block yet: the window so far
    assert figures_from_series([one], 2.5, 7.0, 2.0).rate_rps == pytest.approx(100.0)


def test_monitor_cpu_blocks_on_the_series_block_edges_with_warmup_blocks() -> None:
    """CPU% per block from cumulative CPU samples interpolated at the edges: a generator busy 50 % of a core
    and a server 150 %, sampled every 0.5 s from 2.2 s before the window."""
    clock = FakeClock(100.0)
    m = RunMonitor(warmup_s=2.0, duration_s=3.0, clock=clock)
    m.anchor(mtime=103.0, window_elapsed_s=0.8)  # the window started at 102.2
    m.anchor(mtime=110.0, window_elapsed_s=0.0)  # later estimates are ignored
    assert m.window_start == pytest.approx(102.2)
    m.samples = [(100.0 + 0.5 * i, 0.5 * 0.5 * i, 1.5 * 0.5 * i) for i in range(13)]  # 100.0 .. 106.0
    rec = RunRecord(kind="load", config={}, env={})
    rec.series = [_series([(0.0, 1.0, 1), (1.0, 1.0, 1), (2.0, 1.0, 1)], 3, 1000)]
    blocks = m.cpu_blocks(rec.series)
    assert blocks is not None
    assert [(b["start_s"], b["duration_s"]) for b in blocks] == [(-2.0, 1.0), (-1.0, 1.0), (0.0, 1.0),
                                                                 (1.0, 1.0), (2.0, 1.0)]  # fmt: skip
    assert all(b["generator_cpu_percent"] == pytest.approx(50.0) for b in blocks)
    assert all(b["server_cpu_percent"] == pytest.approx(150.0) for b in blocks)
    # a block past the last sample is left out; without a server, its figure is None
    m.samples = [(t, g, None) for t, g, _ in m.samples[:10]]  # up to 104.5: block 2 (104.2-105.2) uncovered
    blocks = m.cpu_blocks(rec.series)
    assert blocks is not None and [b["start_s"] for b in blocks] == [-2.0, -1.0, 0.0, 1.0]
    assert all(b["server_cpu_percent"] is None for b in blocks)


def test_monitor_without_a_window_clock_has_no_cpu_blocks() -> None:
    m = RunMonitor(warmup_s=0.0, duration_s=1.0, clock=FakeClock())
    m.samples = [(0.0, 0.0, None), (1.0, 0.5, None)]
    assert m.cpu_blocks([]) is None


def test_monitor_reports_to_its_sink_at_most_once_a_second() -> None:
    seen: list[LoadFigures] = []

    class Sink:
        def phase(self, text: str) -> None: ...

        def update(self, figures: LoadFigures) -> None:
            seen.append(figures)

        def close(self) -> None: ...

    clock = FakeClock(0.0)
    m = RunMonitor(warmup_s=1.0, duration_s=2.0, progress=Sink(), clock=clock)
    m.report([])
    clock.t = 0.5
    m.report([])
    clock.t = 1.5
    m.report([])
    m.report([], finishing=True, force=True)
    assert [f.stage for f in seen] == ["warm-up", "measuring", "finishing"]


def test_cpu_blocks_round_trip_and_stay_absent_when_not_sampled(tmp_path: Any) -> None:
    rec = RunRecord(kind="load", config={}, env={})
    assert "cpu_blocks" not in rec.to_dict()  # old-format records stay byte-identical
    assert RunRecord.from_dict(rec.to_dict()).cpu_blocks is None
    rec.cpu_blocks = [{"start_s": -1.0, "duration_s": 1.0, "generator_cpu_percent": 12.5,
                       "server_cpu_percent": None}]  # fmt: skip
    back = RunRecord.from_dict(rec.to_dict())
    assert back.cpu_blocks == rec.cpu_blocks
    from deploybench.errors import UsageError

    with pytest.raises(UsageError, match="cpu_blocks"):
        RunRecord.from_dict({**rec.to_dict(), "cpu_blocks": "nope"})


def test_pending_phase_is_announced_only_when_the_run_reports() -> None:
    out = io.StringIO()
    p = PendingPhase(PlainProgress(out), "load health (closed) -> http://x")
    p.close()  # refused before the run: nothing printed
    assert out.getvalue() == ""
    p = PendingPhase(PlainProgress(out), "load health (closed) -> http://x")
    p.update(LoadFigures(elapsed_s=0.0, planned_s=3.0, stage="starting"))
    assert out.getvalue().splitlines() == [
        "progress: load health (closed) -> http://x",
        "progress: [load health (closed) -> http://x] starting 0/3 s (3 s left)",
    ]


def test_ticker_reports_elapsed_time_until_it_ends() -> None:
    seen: list[LoadFigures] = []
    done = threading.Event()

    class Sink(NullProgress):
        def update(self, figures: LoadFigures) -> None:
            seen.append(figures)
            if len(seen) >= 2:
                done.set()

    with Ticker(Sink(), every_s=0.01):
        assert done.wait(10)
    n = len(seen)
    assert n >= 2 and all(f.stage == "running" for f in seen) and seen[1].elapsed_s >= seen[0].elapsed_s
    assert len(seen) == n  # the thread has ended: nothing more comes


def _write_record(path: Path, status: str, kind: str = "load") -> None:
    rec = RunRecord(kind=kind, config={"warmup_s": 1.0, "duration_s": 4.0}, env={})
    rec.series = [_series([(0.0, 1.0, 50), (1.0, 1.0, 60), (2.0, 0.2, 5)], 115, 2500)]
    rec.status = status
    rec.save(path)


def test_ab_watches_the_running_record_of_a_measurement(tmp_path: Path) -> None:
    """While the measurement runs, ab's sink gets its running record's figures (read, nothing decoded)."""
    from deploybench.decisions import ab

    assert ab._running_record(tmp_path) is None
    _write_record(tmp_path / "done.json", "complete")
    assert ab._running_record(tmp_path) is None
    _write_record(tmp_path / "sub" / "now.json", "running")
    rec = ab._running_record(tmp_path)
    assert rec is not None and rec.status == "running"

    class Proc:  # answers "still running" twice, then exits 0
        args = ["measure"]
        waits = 0

        def wait(self, timeout: float | None = None) -> int:
            self.waits += 1
            if self.waits <= 2:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            return 0

    out = io.StringIO()
    sink = PlainProgress(out, every_s=0.0)
    sink.phase("round 1/3: base")
    assert ab._wait_watching(Proc(), 60.0, tmp_path, sink) == 0  # type: ignore[arg-type]
    lines = out.getvalue().splitlines()
    assert lines[0] == "progress: round 1/3: base"
    assert lines[1] == "progress: [round 1/3: base] measuring 3/5 s (2 s left)  60 rps  p99 2.50 ms  0 errors"
