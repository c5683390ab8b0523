"""Open-loop arrival schedules. Pure code: no clock of its own, no Locust, no I/O.

vegeta's ``pace(elapsed, hits) -> (wait, stop)`` idea: the schedule knows *when* request ``i`` is meant to be
sent; a pool of senders (Locust users) takes the next slot, sleeps until its intended time and sends. Every
slot ends in exactly one of these states, so nothing is hidden under overload:

* sent (``sent(slot, send_ns)``): late when the *actual* send left more than ``late_tolerance_us`` after the
  intended time (a sender that took its slot on time but overslept its sleep is late too); its latency is
  measured from the intended time (coordinated-omission correction);
* dropped: taken more than ``max_lag_s`` after its intended time, never sent (``pop_dropped()`` hands the
  intended times to the caller, which counts them as errors of kind "dropped");
* not sent: still pending when the window closed (``close(end_ns)`` returns their intended times; the caller
  counts them as errors of kind "not-sent"). After ``close`` no slot is handed out.

``window_start_ns`` (the measured window's start, e.g. test start + warm-up) lets the schedule count exactly
how many slots fall in ``[window_start_ns, end_ns)``: ``counters()["scheduled_in_window"]``. With
``window_end_ns`` (start + ``--duration``) the window's end is known in advance: no slot due at or after it is
handed out, and ``close`` takes the earlier of the two ends, so the window is exactly as long as asked even
when the timer that closes it fires late.

Times are integer nanoseconds on the ``time.perf_counter_ns()`` clock; callers pass ``now_ns`` in, so tests
use a fake clock.
"""

from __future__ import annotations

import random
from collections import deque
from typing import NamedTuple

from deploybench.vocabulary import OPEN_LOOP_MODELS

NS_PER_S = 1_000_000_000


class Slot(NamedTuple):
    """One scheduled send (a named tuple: the lean engine makes one per paced request)."""

    index: int  # 0-based slot number in this generator's schedule
    intended_ns: int  # absolute time (perf_counter_ns clock) the request is meant to be sent
    lag_ns: int  # how far in the past the slot was when a sender took it (0 when on time / early)


def schedule_seed(seed: int, generation: int = 0, worker_index: int = 0, worker_count: int = 1) -> str:
    """The Poisson RNG seed of one generator: the run's ``--seed``, the master's assignment generation and the
    generator's place among the workers. A string seed is hashed with SHA-512 by ``random.Random`` (the same
    in every process, whatever PYTHONHASHSEED), and two generators of one assignment never share it. (The
    old ``seed + worker_index`` made run seed 1 / worker 0 replay run seed 0 / worker 1, and a restarted
    worker whose Locust index wrapped around replayed another worker's schedule exactly.)"""
    return f"deploybench-arrivals:{seed}:{generation}:{worker_index}/{worker_count}"


class ArrivalSchedule:
    """The shared schedule of one load-generator process (all its users take slots from it).

    ``rate_rps`` is this process's share of the total rate. With ``worker_count`` generators each running
    ``rate / worker_count``, ``worker_index`` offsets the constant schedule so the merged arrivals are evenly
    spaced; Poisson schedules are seeded with ``schedule_seed(seed, generation, worker_index, worker_count)``
    (a superposition of independent Poisson processes is Poisson with the summed rate).
    """

    def __init__(
        self,
        rate_rps: float,
        model: str = "constant",
        *,
        seed: int = 0,
        worker_index: int = 0,
        worker_count: int = 1,
        generation: int = 0,
        max_lag_s: float = 5.0,
        max_requests: int = 0,
        late_tolerance_us: int = 1000,
        window_start_ns: int | None = None,
        window_end_ns: int | None = None,
    ) -> None:
        if model not in OPEN_LOOP_MODELS:
            raise ValueError(f"load model {model!r} is not open-loop (expected one of {OPEN_LOOP_MODELS})")
        if not rate_rps > 0:
            raise ValueError("rate_rps must be > 0")
        if max_lag_s <= 0:
            raise ValueError("max_lag_s must be > 0")
        if worker_count < 1 or not 0 <= worker_index < worker_count:
            raise ValueError("need 0 <= worker_index < worker_count")
        self.rate_rps = float(rate_rps)
        self.model = model
        self.max_lag_ns = round(max_lag_s * NS_PER_S)
        self.max_requests = int(max_requests)
        self.late_tolerance_ns = late_tolerance_us * 1000
        self.window_start_ns = window_start_ns
        self.window_end_ns = window_end_ns  # planned end: slots due at or after it are never handed out
        self._offset = worker_index / worker_count  # constant: fraction of one gap
        self._rng = random.Random(schedule_seed(seed, generation, worker_index, worker_count))
        self._poisson_t_ns = 0.0  # running sum of exponential gaps (float ns, rounded per slot)
        self.start_ns: int | None = None
        self.end_ns: int | None = None  # set by close(): no slot is handed out after it
        self.next_index = 0
        self.taken = 0
        self.sent_count = 0
        self.late = 0
        self.dropped = 0
        self.dropped_in_window = 0
        self.not_sent = 0  # pending in the window when it closed
        self.max_lag_seen_ns = 0
        self._in_window = 0  # generated slots (taken or dropped) with intended time >= window start
        self._taken_times: deque[int] = deque()  # intended times of taken slots not yet known to be past
        self._dropped: list[int] = []  # intended times of dropped slots not yet popped by the caller
        self._next_intended: int | None = None  # intended time of slot next_index, once computed

    def _offset_ns(self, i: int) -> int:
        """Intended send time of slot ``i`` relative to the schedule start. Called with i = 0, 1, 2, ..."""
        if self.model == "constant":
            return round((i + self._offset) * NS_PER_S / self.rate_rps)
        self._poisson_t_ns += self._rng.expovariate(self.rate_rps) * NS_PER_S
        return round(self._poisson_t_ns)

    def _peek(self) -> int:
        """Intended time of slot ``next_index`` (computed once: the Poisson gaps are drawn in order)."""
        assert self.start_ns is not None
        if self._next_intended is None:
            self._next_intended = self.start_ns + self._offset_ns(self.next_index)
        return self._next_intended

    def _consume(self) -> None:
        self.next_index += 1
        self._next_intended = None

    def _in(self, intended_ns: int) -> bool:
        return self.window_start_ns is None or intended_ns >= self.window_start_ns

    def start(self, now_ns: int) -> None:
        if self.start_ns is None:
            self.start_ns = now_ns

    @property
    def exhausted(self) -> bool:
        return bool(self.max_requests) and self.next_index >= self.max_requests

    @property
    def closed(self) -> bool:
        return self.end_ns is not None

    def next_due_ns(self) -> int | None:
        """Intended time of the next slot a sender would take (after ``start``), or None when the schedule is
        closed, used up, or its next slot falls after the planned window end."""
        if self.closed or self.exhausted or self.start_ns is None:
            return None
        due = self._peek()
        if self.window_end_ns is not None and due >= self.window_end_ns:
            return None
        return due

    def take(self, now_ns: int) -> Slot | None:
        """The next slot for a free sender, or None when ``max_requests`` slots are used up or the schedule
        is closed.

        Slots already more than ``max_lag_s`` in the past are skipped and counted as dropped (their intended
        times wait in ``pop_dropped()``).
        """
        if self.closed:
            return None
        self.start(now_ns)
        assert self.start_ns is not None
        while self._taken_times and self._taken_times[0] < now_ns:
            self._taken_times.popleft()  # sent by now or due: inside any window that closes from now on
        while not self.exhausted:
            i = self.next_index
            intended = self._peek()
            if self.window_end_ns is not None and intended >= self.window_end_ns:
                return None  # the planned window is over: this slot and the later ones are not part of it
            self._consume()
            lag = now_ns - intended
            if self._in(intended):
                self._in_window += 1
            if lag > self.max_lag_ns:
                self.dropped += 1
                self.dropped_in_window += self._in(intended)
                self._dropped.append(intended)
                continue
            self.taken += 1
            self._taken_times.append(intended)
            return Slot(i, intended, max(0, lag))
        return None

    def pop_dropped(self) -> list[int]:
        """Intended times of the slots dropped since the last call (the caller counts them as errors)."""
        out = self._dropped
        if not out:
            return []
        self._dropped = []
        return out

    def sent(self, slot: Slot, send_ns: int) -> int:
        """A sender sends ``slot`` now (``send_ns``, after its sleep): counted late when it leaves more than
        the tolerance after the intended time, whether it took the slot late or overslept. Returns the lag."""
        lag = send_ns - slot.intended_ns
        self.sent_count += 1
        if lag > self.late_tolerance_ns:
            self.late += 1
        self.max_lag_seen_ns = max(self.max_lag_seen_ns, lag)
        return max(0, lag)

    def close(self, end_ns: int) -> list[int]:
        """Close the window at ``end_ns``: returns the intended times of the slots scheduled in
        ``[window_start_ns, end_ns)`` that no sender took (the caller counts them as "not-sent"). Idempotent:
        a second call returns []. Slots taken early and due at or after ``end_ns`` are outside the window
        (their senders must not send them: ``outside(slot)``). ``end_ns`` after a planned ``window_end_ns`` is
        taken as the planned end (the timer that closed the window fired late)."""
        if self.closed:
            return []
        if self.window_end_ns is not None:
            end_ns = min(end_ns, self.window_end_ns)
        self.end_ns = end_ns
        pending: list[int] = []
        if self.start_ns is not None:
            while not self.exhausted:
                intended = self._peek()
                if intended >= end_ns:
                    break
                self._consume()
                if self._in(intended):
                    self._in_window += 1
                    pending.append(intended)
        # taken slots due at or after the end were counted when generated: they are not in the window
        self._in_window -= sum(1 for t in self._taken_times if t >= end_ns and self._in(t))
        self._taken_times.clear()
        self.not_sent = len(pending)
        return pending

    def outside(self, slot: Slot) -> bool:
        """Is ``slot`` due at or after the end of a closed window (taken early, not to be sent)?"""
        return self.end_ns is not None and slot.intended_ns >= self.end_ns

    def counters(self) -> dict[str, int]:
        out = {
            "scheduled": self.taken + self.dropped,  # every slot handed out or dropped, warm-up included
            "taken": self.taken,
            "sent": self.sent_count,
            "late_sends": self.late,
            "dropped_sends": self.dropped,
            "max_send_lag_us": max(0, self.max_lag_seen_ns) // 1000,
        }
        if self.closed:
            out["scheduled_in_window"] = self._in_window
            out["dropped_in_window"] = self.dropped_in_window
            out["not_sent"] = self.not_sent
        return out
