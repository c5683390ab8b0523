"""Per-CPU busy time from /proc/stat: which core spent how much, whoever ran there (kernel network work
included)."""

from __future__ import annotations

from pathlib import Path


def cpu_ticks() -> dict[int, tuple[int, int]]:
    """{cpu: (busy ticks, total ticks)} since boot (busy = all but idle and iowait)."""
    out: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            v = [int(x) for x in fields]
            out[int(name[3:])] = (sum(v) - v[3] - v[4], sum(v))
    return out


def busy_share(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cpu: int) -> float:
    """Share of ``cpu``'s time that was busy between two ``cpu_ticks()`` readings (0..1)."""
    busy = after[cpu][0] - before[cpu][0]
    total = after[cpu][1] - before[cpu][1]
    return busy / total if total > 0 else 0.0


def busy_since(before: dict[int, tuple[int, int]], cpus: tuple[int, ...] = (0, 1)) -> dict[str, float]:
    """``{"cpu0_busy": ..., ...}``: each CPU's busy share from the ``cpu_ticks()`` reading ``before``
    to now."""
    after = cpu_ticks()
    return {f"cpu{c}_busy": round(busy_share(before, after, c), 3) for c in cpus}
