"""Tabular scenario: POST /predict with feature rows (the single form, or the batch form with --batch-size N).

The rows fit the target: iris rows for the zoo's iris models; for any other tabular model (your own
``--model-file``), seeded uniform [0, 1) rows of the width its ``/health`` reports (``input.n_features``).

    locust -f loadtests/tabular.py --host http://127.0.0.1:8000 [--load-model poisson --rate 200]
        [--batch-size 8]
"""

from __future__ import annotations

import functools
from typing import Any

from locust import events, task

from deploybench.loadtests.common import DeployBenchUser, fetch_health, register
from deploybench.loadtests.payloads import make_payload, payload_rng, row_width

PLUGIN = register()  # deploybench's options and measurement hooks on Locust's events


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kw: Any) -> None:
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="rows per request: 1 sends {'features': [...]}, N > 1 sends {'instances': [...]}",
    )


@functools.cache
def _target_row_width(host: str, headers: tuple[tuple[str, str], ...]) -> int | None:
    return row_width(fetch_health(host, headers=dict(headers)))  # once per generator process


class TabularUser(DeployBenchUser):
    scenario = "tabular"

    def on_start(self) -> None:
        parsed = self.environment.parsed_options
        self.batch_size = max(1, int(getattr(parsed, "batch_size", 1) or 1))
        seed = int(getattr(parsed, "seed", 0) or 0)
        self.rng = payload_rng(seed, *PLUGIN.next_user_stream())
        headers = tuple(sorted((getattr(PLUGIN.options, "headers", None) or {}).items()))
        width = _target_row_width(self.host or "", headers)
        self.payloads = [make_payload(self.rng, self.batch_size, width) for _ in range(16)]
        self.i = 0

    @task
    def predict(self) -> None:
        payload = self.payloads[self.i % len(self.payloads)]
        self.i += 1
        self.send("POST", "/predict", json=payload, name="/predict")
