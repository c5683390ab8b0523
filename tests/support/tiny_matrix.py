"""The smallest compare matrix the e2e tests run: one FastAPI + uvicorn iris-rf ONNX choice, one short
stability window, at most 2 search steps, no repeats and no minimum step (a run takes seconds)."""

from __future__ import annotations

_TEMPLATE = """
name = "{name}"

[matrix]
framework = ["fastapi"]
server = ["uvicorn"]
model = ["iris-rf"]
format = ["onnx"]
workers = [1]

[slo]
p99_ms = 200.0

[measure]
users = 2
warmup_s = 0.5
window_s = 1.0
stability_windows = 1
max_windows = 1
max_stability_s = 4.0
common_rate_rps = 20.0
common_duration_s = 1.0
{measure_extra}
[search]
step_s = 1.0
step_warmup_s = 0.0
max_probes = 2
max_expansions = 0
min_step_requests = 0
repeats = 0
"""


def tiny_matrix(name: str, measure_extra: str = "") -> str:
    """The matrix file's text; ``measure_extra``: more ``[measure]`` lines, e.g. ``pin = false``."""
    return _TEMPLATE.format(name=name, measure_extra=measure_extra + "\n" if measure_extra else "")


NOTHING_MET = "deploybench compare: no choice met the SLO at any rate tried (exit 1)"


def compare_finished(rc: int, stderr: str) -> bool:
    """A compare that ran to its end: exit 0, or exit 1 only because no choice met the SLO. A tiny matrix on a
    loaded machine may miss its SLO at the few rates it tries; what these tests check does not depend on that
    (an error, a failed choice or an interrupt is still a failure)."""
    return rc == 0 or (rc == 1 and NOTHING_MET in stderr)
