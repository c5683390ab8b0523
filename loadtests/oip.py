"""Open Inference Protocol v2 scenario: POST /v2/models/NAME/infer with JSON tensors, to any OIP server
(KServe, Triton, Seldon MLServer, or a deploybench target, which answers OIP v2 too).

The model's name is ``--model`` (OIP has no list of models), else the one a deploybench target's ``/health``
names; its input (name, datatype, shape) comes from ``GET /v2/models/NAME``: iris rows for an input of 4
features, seeded values otherwise (an image model gets a preprocessed FP32 tensor). A server that declares no
inputs (MLServer's sklearn runtime without a signature) gets iris rows, FP32 [N, 4].

    locust -f loadtests/oip.py --host http://127.0.0.1:8080 --model iris [--batch-size 8]
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from locust import events, task

from deploybench.errors import UsageError
from deploybench.loadtests.common import DeployBenchUser, register
from deploybench.loadtests.payloads import oip_options, oip_plan, payload_rng

PLUGIN = register()  # deploybench's options and measurement hooks on Locust's events
BODIES = 16  # distinct request bodies per user


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kw: Any) -> None:
    parser.add_argument(
        "--batch-size", type=int, default=1, help="items per request where the batch dim is -1"
    )


@functools.cache
def _resolved(host: str, model: str, headers: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return oip_options(host, model, dict(headers))  # once per generator process


def _headers() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((getattr(PLUGIN.options, "headers", None) or {}).items()))


@events.init.add_listener
def _validate(environment: Any, **_kw: Any) -> None:
    """The model's name and metadata, read before the run starts: a clear error (exit 2) when unknown."""
    parsed = environment.parsed_options
    if parsed is None or getattr(parsed, "worker", False) or not getattr(parsed, "host", None):
        return
    try:
        _resolved(parsed.host, str(getattr(parsed, "model", "") or ""), _headers())
    except UsageError as exc:
        print(f"deploybench: error: {exc}", file=sys.stderr)
        sys.exit(2)


class OipUser(DeployBenchUser):
    scenario = "oip"

    def on_start(self) -> None:
        parsed = self.environment.parsed_options
        resolved = _resolved(self.host or "", str(getattr(parsed, "model", "") or ""), _headers())
        batch = max(1, int(getattr(parsed, "batch_size", 1) or 1))
        seed = int(getattr(parsed, "seed", 0) or 0)
        rng = payload_rng(seed, *PLUGIN.next_user_stream())
        self.path, self.bodies = oip_plan({**resolved, "batch_size": batch}, rng, BODIES)
        self.headers = {"Content-Type": "application/json"}
        self.i = 0

    @task
    def infer(self) -> None:
        body = self.bodies[self.i % len(self.bodies)]
        self.i += 1
        self.send("POST", self.path, data=body, headers=self.headers, name=self.path)
