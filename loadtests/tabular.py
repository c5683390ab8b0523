"""Tabular scenario: POST /predict with feature rows (the single form, or the batch form with --batch-size N).

The rows fit the target: iris rows for the zoo's iris models; for any other tabular model (your own
``--model-file``), seeded uniform [0, 1) rows of the width its ``/health`` reports (``input.n_features``).

    locust -f loadtests/tabular.py --host http://127.0.0.1:8000 [--load-model poisson --rate 200]
        [--batch-size 8]
"""

from __future__ import annotations

import functools
import random
from typing import Any

from locust import events, task

from loadtests.common import PLUGIN, DeployBenchUser, fetch_health
from loadtests.payloads import payload_rng

# Representative iris rows (sepal length/width, petal length/width in cm), one per class and some between.
IRIS_ROWS: tuple[tuple[float, float, float, float], ...] = (
    (5.1, 3.5, 1.4, 0.2),
    (4.9, 3.0, 1.4, 0.2),
    (7.0, 3.2, 4.7, 1.4),
    (6.4, 3.2, 4.5, 1.5),
    (6.3, 3.3, 6.0, 2.5),
    (5.8, 2.7, 5.1, 1.9),
    (5.9, 3.0, 4.2, 1.5),
    (6.1, 2.8, 4.0, 1.3),
)


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kw: Any) -> None:
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="rows per request: 1 sends {'features': [...]}, N > 1 sends {'instances': [...]}",
    )


IRIS_MODELS = ("iris-rf", "iris-mlp")


def make_payload(rng: random.Random, batch_size: int, n_features: int | None = None) -> dict[str, Any]:
    """One request body: iris rows (``n_features`` None), else ``n_features`` seeded uniform [0, 1) values."""

    def row() -> list[float]:
        if n_features is None:
            return list(rng.choice(IRIS_ROWS))
        return [round(rng.random(), 6) for _ in range(n_features)]

    if batch_size <= 1:
        return {"features": row()}
    return {"instances": [row() for _ in range(batch_size)]}


def row_width(health: dict[str, Any] | None) -> int | None:
    """None (iris rows) for the zoo's iris models or an unknown target; else the width /health reports."""
    if not health or health.get("model") in IRIS_MODELS:
        return None
    spec = health.get("input") or {}
    n = spec.get("n_features") if spec.get("kind") == "tabular" else None
    return int(n) if isinstance(n, int) and n > 0 else None


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
        _ = PLUGIN  # the listener is registered on import

    @task
    def predict(self) -> None:
        payload = self.payloads[self.i % len(self.payloads)]
        self.i += 1
        self.send("POST", "/predict", json=payload, name="/predict")
