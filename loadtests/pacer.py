"""Open-loop arrival schedules. Pure code: no clock of its own, no Locust, no I/O.

vegeta's ``pace(elapsed, hits) -> (wait, stop)`` idea: the schedule knows *when* request ``i`` is meant to be
sent; a pool of senders (Locust users) takes the next slot, sleeps until its intended time and sends. A slot
picked up after its intended time is sent late (counted) and its latency is measured from the intended time
(coordinated-omission correction). A slot more than ``max_lag_s`` in the past is dropped (counted) rather than
queued forever.

Times are integer nanoseconds on the ``time.perf_counter_ns()`` clock; callers pass ``now_ns`` in, so tests
use a fake clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from deploybench.vocabulary import OPEN_LOOP_MODELS

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class Slot:
    """One scheduled send."""

    index: int  # 0-based slot number in this generator's schedule
    intended_ns: int  # absolute time (perf_counter_ns clock) the request is meant to be sent
    lag_ns: int  # how far in the past the slot was when a sender took it (0 when on time / early)


class ArrivalSchedule:
    """The shared schedule of one load-generator process (all its users take slots from it).

    ``rate_rps`` is this process's share of the total rate. With ``worker_count`` generators each running
    ``rate / worker_count``, ``worker_index`` offsets the constant schedule so the merged arrivals are evenly
    spaced; Poisson schedules are seeded with ``seed + worker_index`` (a superposition of independent Poisson
    processes is Poisson with the summed rate).
    """

    def __init__(
        self,
        rate_rps: float,
        model: str = "constant",
        *,
        seed: int = 0,
        worker_index: int = 0,
        worker_count: int = 1,
        max_lag_s: float = 5.0,
        max_requests: int = 0,
        late_tolerance_us: int = 1000,
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
        self._offset = worker_index / worker_count  # constant: fraction of one gap
        self._rng = random.Random(seed + worker_index)
        self._poisson_t_ns = 0.0  # running sum of exponential gaps (float ns, rounded per slot)
        self.start_ns: int | None = None
        self.next_index = 0
        self.taken = 0
        self.late = 0
        self.dropped = 0
        self.max_lag_seen_ns = 0

    def _offset_ns(self, i: int) -> int:
        """Intended send time of slot ``i`` relative to the schedule start. Called with i = 0, 1, 2, ..."""
        if self.model == "constant":
            return round((i + self._offset) * NS_PER_S / self.rate_rps)
        self._poisson_t_ns += self._rng.expovariate(self.rate_rps) * NS_PER_S
        return round(self._poisson_t_ns)

    def start(self, now_ns: int) -> None:
        if self.start_ns is None:
            self.start_ns = now_ns

    @property
    def exhausted(self) -> bool:
        return bool(self.max_requests) and self.next_index >= self.max_requests

    def take(self, now_ns: int) -> Slot | None:
        """The next slot for a free sender, or None when ``max_requests`` slots are used up.

        Slots already more than ``max_lag_s`` in the past are skipped and counted as dropped.
        """
        self.start(now_ns)
        assert self.start_ns is not None
        while not self.exhausted:
            i = self.next_index
            self.next_index += 1
            intended = self.start_ns + self._offset_ns(i)
            lag = now_ns - intended
            if lag > self.max_lag_ns:
                self.dropped += 1
                continue
            self.taken += 1
            if lag > self.late_tolerance_ns:
                self.late += 1
            self.max_lag_seen_ns = max(self.max_lag_seen_ns, lag)
            return Slot(i, intended, max(0, lag))
        return None

    def counters(self) -> dict[str, int]:
        return {
            "scheduled": self.taken + self.dropped,
            "sent": self.taken,
            "late_sends": self.late,
            "dropped_sends": self.dropped,
            "max_send_lag_us": max(0, self.max_lag_seen_ns) // 1000,
        }
