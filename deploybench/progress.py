"""Progress of long runs (``load``, ``compare``, ``bench``, ``ab``) on stderr: a reporter, never measuring
code.

The measuring code (``deploybench.loadtests.runner``, ``loadtests.lean``, the compare driver) prints nothing:
it calls an optional ``Progress`` sink with ``phase(text)`` when a step starts (a target, a probe, a round)
and ``update(LoadFigures)`` as a load run goes (the figures it already has: the lean engine's merged state
snapshots, the Locust record it rewrites every ~2 s). The commands layer picks the sink:

- ``LiveProgress``: on a terminal, live lines (``rich``) redrawn in place: the step, elapsed/remaining
  seconds, the current rate, P99, errors;
- ``PlainProgress``: when stderr is not a terminal (CI logs), one plain line at each phase change and at
  most every ``every_s`` (5 s) while a run goes;
- ``NullProgress``: nothing (``--progress off``, or ``--quiet``).

``--progress auto`` (the default) is live on a terminal, plain otherwise.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol

PROGRESS_MODES: tuple[str, ...] = ("auto", "live", "plain", "off")
PLAIN_EVERY_S = 5.0  # a plain progress line at most this often while a load runs (and at each phase change)
LIVE_REFRESH_PER_S = 4


@dataclass(frozen=True)
class LoadFigures:
    """Where one load run stands. ``rate_rps``: successes per second over the last complete 1 s block (the
    window so far before one completes); ``p99_us``: the window so far (the slowest endpoint's);
    ``errors``: errors in the window so far, every kind."""

    elapsed_s: float
    planned_s: float | None = None  # warm-up + duration
    stage: str = "starting"  # "starting" | "warm-up" | "measuring" | "finishing"
    rate_rps: float | None = None
    p99_us: int | None = None
    errors: int = 0
    requests: int = 0  # successes in the window so far

    @property
    def remaining_s(self) -> float | None:
        if self.planned_s is None:
            return None
        return max(0.0, self.planned_s - self.elapsed_s)


class Progress(Protocol):
    """A progress sink: what measurement code may call (it never prints itself)."""

    def phase(self, text: str) -> None:
        """A step starts: e.g. 'choice 2/6 fastapi-uvicorn-onnx', 'probe 3: 400 rps', 'round 1/10 base'."""
        ...

    def update(self, figures: LoadFigures) -> None:
        """The running load's figures (called a few times a second at most)."""
        ...

    def close(self) -> None:
        """The command is done: end any live display."""
        ...


def format_figures(f: LoadFigures) -> str:
    """'measuring 4/12 s (8 s left)  812 rps  p99 3.21 ms  0 errors' (fields unknown yet are left out)."""
    parts = [f.stage]
    if f.planned_s is not None:
        parts[0] += f" {f.elapsed_s:.0f}/{f.planned_s:.0f} s ({f.remaining_s:.0f} s left)"
    else:
        parts[0] += f" {f.elapsed_s:.0f} s"
    if f.rate_rps is not None:
        parts.append(f"{f.rate_rps:,.0f} rps")
    if f.p99_us is not None:
        parts.append(f"p99 {f.p99_us / 1000:.2f} ms")
    if f.stage in ("measuring", "finishing") or f.errors:
        parts.append(f"{f.errors} error{'s' if f.errors != 1 else ''}")
    return "  ".join(parts)


class NullProgress:
    """No progress (``--progress off``, ``--quiet``)."""

    def phase(self, text: str) -> None:
        pass

    def update(self, figures: LoadFigures) -> None:
        pass

    def close(self) -> None:
        pass


class PlainProgress:
    """Plain lines for logs: one at each phase (and stage) change, else at most every ``every_s``."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        every_s: float = PLAIN_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        prefix: str = "progress: ",
    ) -> None:
        self.stream = stream
        self.every_s = every_s
        self.clock = clock
        self.prefix = prefix
        self.context = ""
        self._last_at: float | None = None
        self._last_stage: str | None = None

    def _write(self, line: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        print(self.prefix + line, file=stream, flush=True)

    def phase(self, text: str) -> None:
        self.context = text
        self._last_at, self._last_stage = None, None
        self._write(text)

    def update(self, figures: LoadFigures) -> None:
        now = self.clock()
        due = self._last_at is None or now - self._last_at >= self.every_s
        if not due and figures.stage == self._last_stage:
            return
        self._last_at, self._last_stage = now, figures.stage
        self._write(plain_line(self.context, figures))

    def close(self) -> None:
        pass


def plain_line(context: str, figures: LoadFigures) -> str:
    """One plain progress line: '[context] figures'."""
    text = format_figures(figures)
    return f"[{context}] {text}" if context else text


class LiveProgress:
    """Two live lines on a terminal, the step and the figures (``rich.live.Live`` on stderr), redrawn in
    place; a finished step leaves one dim line with its last figures, and the live lines go when closed."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        from rich.console import Console  # import cost: rich only where a live display is drawn
        from rich.live import Live  # import cost: as above

        self.console = Console(file=stream if stream is not None else sys.stderr)
        self.context = ""
        self.figures: LoadFigures | None = None
        self.live = Live(
            self._render(), console=self.console, refresh_per_second=LIVE_REFRESH_PER_S, transient=True
        )
        self._started = False

    def _render(self) -> Any:
        from rich.text import Text  # import cost: rich only where a live display is drawn

        text = Text()
        if self.context:
            text.append(self.context, style="bold")
        if self.figures is not None:
            if self.context:
                text.append("\n  ")  # the figures on a line of their own: no wrap mid-figure
            f = self.figures
            text.append(format_figures(f), style="red" if f.errors else "")
        return text

    def _refresh(self) -> None:
        if not self._started:
            self.live.start()
            self._started = True
        self.live.update(self._render(), refresh=True)

    def phase(self, text: str) -> None:
        if self.context and self._started:
            # a trail of the finished steps in the scrollback
            last = f"  {format_figures(self.figures)}" if self.figures is not None else ""
            self.console.print(f"done: {self.context}{last}", style="dim", highlight=False, markup=False)
        self.context = text
        self.figures = None
        self._refresh()

    def update(self, figures: LoadFigures) -> None:
        self.figures = figures
        self._refresh()

    def close(self) -> None:
        if self._started:
            self.live.stop()
            self._started = False


class PendingPhase:
    """Forwards to ``inner``, announcing ``text`` as its phase only when the run first reports (its first
    ``update`` or ``phase``): a run refused for bad input (exit 2) prints no progress."""

    def __init__(self, inner: Progress, text: str) -> None:
        self.inner = inner
        self.text: str | None = text

    def _announce(self) -> None:
        if self.text is not None:
            text, self.text = self.text, None
            self.inner.phase(text)

    def phase(self, text: str) -> None:
        self.text = None
        self.inner.phase(text)

    def update(self, figures: LoadFigures) -> None:
        self._announce()
        self.inner.update(figures)

    def close(self) -> None:
        self.inner.close()


class Ticker:
    """Tells ``progress`` the elapsed time every ``every_s`` from a background thread while a step with no
    figures of its own runs (e.g. bench's pytest child): ``with Ticker(progress): ...``."""

    def __init__(self, progress: Progress, every_s: float = 1.0, planned_s: float | None = None) -> None:
        self.progress = progress
        self.every_s = every_s
        self.planned_s = planned_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deploybench-progress", daemon=True)
        self._start = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            elapsed = time.monotonic() - self._start
            self.progress.update(LoadFigures(elapsed_s=elapsed, planned_s=self.planned_s, stage="running"))

    def __enter__(self) -> Ticker:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def resolve_mode(mode: str, stream: IO[str] | None = None, quiet: bool = False) -> str:
    """'live', 'plain' or 'off': ``auto`` is live when ``stream`` (stderr) is a terminal, plain otherwise;
    ``quiet`` is off."""
    if quiet or mode == "off":
        return "off"
    if mode == "auto":
        stream = stream if stream is not None else sys.stderr
        isatty = getattr(stream, "isatty", None)
        try:
            return "live" if callable(isatty) and isatty() else "plain"
        except ValueError:  # a closed stream
            return "plain"
    if mode not in PROGRESS_MODES:
        raise ValueError(f"progress mode must be one of {', '.join(PROGRESS_MODES)} (got {mode!r})")
    return mode


def make_progress(mode: str = "auto", stream: IO[str] | None = None, quiet: bool = False) -> Progress:
    """The sink for ``--progress MODE`` on ``stream`` (default stderr)."""
    resolved = resolve_mode(mode, stream, quiet)
    if resolved == "live":
        return LiveProgress(stream)
    if resolved == "plain":
        return PlainProgress(stream)
    return NullProgress()


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="auto",
        help="progress on stderr: live (a line redrawn in place, on a terminal), plain (a line every "
        f"{PLAIN_EVERY_S:g} s and at each step, for logs), off; auto (default): live on a terminal, else "
        "plain",
    )


def progress_from_args(args: argparse.Namespace) -> Progress:
    """The sink a command's ``--progress`` (and ``--quiet``, where it has one) asks for."""
    return make_progress(getattr(args, "progress", "auto"), quiet=bool(getattr(args, "quiet", False)))


def figures_from_series(
    series: list[Any], elapsed_s: float, planned_s: float | None, warmup_s: float, finishing: bool = False
) -> LoadFigures:
    """Figures from a running record's series (``RunRecord.series``: percentiles already computed, block
    counts; no histogram is decoded here)."""
    done = finishing or (planned_s is not None and elapsed_s >= planned_s)
    stage = "finishing" if done else ("warm-up" if elapsed_s < warmup_s else "measuring")
    requests = sum(int(s.count or 0) for s in series)
    errors = sum(int(s.error_count) for s in series)
    p99s = [s.latency_us.get("p99") for s in series if s.latency_us and s.latency_us.get("p99") is not None]
    rate = _recent_rate(series)
    if rate is None:
        window = max((float(s.duration_s or 0.0) for s in series), default=0.0)
        rate = requests / window if window > 0 else None
    return LoadFigures(
        elapsed_s=elapsed_s, planned_s=planned_s, stage=stage, rate_rps=rate,
        p99_us=max(p99s) if p99s else None, errors=errors, requests=requests,
    )  # fmt: skip


def _recent_rate(series: list[Any]) -> float | None:
    """Successes per second in the last complete block (blocks of the same index summed over the series)."""
    counts: dict[float, int] = {}
    length: dict[float, float] = {}
    for s in series:
        blocks = s.blocks or []
        for b in blocks[:-1]:  # the last one is still filling
            start = float(b.get("start_s", 0.0))
            counts[start] = counts.get(start, 0) + int(b.get("count") or 0)
            length[start] = float(b.get("duration_s") or 0.0)
    if not counts:
        return None
    last = max(counts)
    return counts[last] / length[last] if length[last] > 0 else None
