"""Fuzz both reference targets against the OpenAPI schema they publish (schemathesis 4, positive + negative
data): zero 5xx, every answer documented, and no worker crashed or restarted.

Each framework runs a tabular (iris-rf) and an image (resnet18) target; every operation of each schema is
fuzzed. On a target serving the other model kind the image (or tabular) routes document only 409, so the
"valid data must be accepted" check is run only where a route is served and takes data the schema can fully
describe (iris JSON) — a schema-valid random string is not a decodable image.

The short run (unmarked) sends up to 10 examples per operation and generation mode (fewer if
DEPLOYBENCH_FUZZ_EXAMPLES says so); the slow variant sends DEPLOYBENCH_FUZZ_EXAMPLES (default 25;
``nox -s fuzz`` runs ``pytest -m slow tests/e2e/test_fuzz.py`` with 500). Each target's counts (cases tried,
5xx seen, statuses) are written to ``<target>.json`` when its fixture tears down: into a temporary folder of
the test session, or into DEPLOYBENCH_FUZZ_OUT when that is set (the long ``nox -s fuzz`` run can keep them,
e.g. in results/fuzz/); the suite never writes into the repository.

Every test here starts real servers (marked ``e2e``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from deploybench import paths
from deploybench.targets.serve import Limits, ServerProcess, TargetConfig
from deploybench.targets.zoo import build_zoo

pytestmark = pytest.mark.e2e

_ENV_EXAMPLES = os.environ.get("DEPLOYBENCH_FUZZ_EXAMPLES", "")
SHORT_EXAMPLES = min(int(_ENV_EXAMPLES or 10), 10)  # per operation and generation mode
LONG_EXAMPLES = int(_ENV_EXAMPLES or 25)  # `nox -s fuzz` sets 500
TARGETS = {
    "flask-tabular": ("flask", "gunicorn-sync", "iris-rf"),
    "flask-image": ("flask", "gunicorn-sync", "resnet18"),
    "fastapi-tabular": ("fastapi", "uvicorn", "iris-rf"),
    "fastapi-image": ("fastapi", "uvicorn", "resnet18"),
}
# small limits so that fuzzed bodies can reach them; request timeout generous (no fuzz case should be slow)
LIMITS = Limits(max_body_bytes=64 * 1024, max_pixels=4_000_000, max_batch=16)
BASE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


class FuzzTarget:
    """A running target plus the tally of what the fuzzer sent it."""

    def __init__(self, name: str, server: ServerProcess) -> None:
        self.name = name
        self.server = server
        self.statuses: Counter[int] = Counter()
        self.per_operation: Counter[str] = Counter()
        self.server_errors: list[str] = []

    def health(self) -> dict[str, Any]:
        r = httpx.get(f"{self.server.url}/health", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def tally(self) -> dict[str, Any]:
        return {
            "target": self.name,
            "config": self.server.config.to_dict(),
            "examples_per_operation": {"short": SHORT_EXAMPLES, "long": LONG_EXAMPLES},
            "cases": sum(self.statuses.values()),
            "server_errors_5xx": sum(n for s, n in self.statuses.items() if s >= 500),
            "statuses": {str(s): n for s, n in sorted(self.statuses.items())},
            "cases_per_operation": dict(self.per_operation),
            "first_5xx": self.server_errors[:5],
        }


def _worker_pids(server: ServerProcess) -> set[int]:
    import psutil

    return {c.pid for c in psutil.Process(server.pid).children(recursive=True)}


@pytest.fixture(scope="module")
def fuzz_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the per-target tallies go: DEPLOYBENCH_FUZZ_OUT, else a temporary folder (never the repo)."""
    env = os.environ.get("DEPLOYBENCH_FUZZ_OUT", "")
    out = Path(env) if env else tmp_path_factory.mktemp("fuzz")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module", params=list(TARGETS))
def fuzz_target(request: pytest.FixtureRequest, fuzz_out: Path) -> Iterator[FuzzTarget]:
    framework, server_kind, model = TARGETS[request.param]
    zoo = paths.zoo_dir()
    build_zoo(zoo, models=[model], formats=["onnx"])
    config = TargetConfig(
        framework=framework,
        server=server_kind,
        model=model,
        format="onnx",
        zoo_dir=str(zoo.resolve()),
        limits=LIMITS,
    )
    server = ServerProcess(config, ready_timeout_s=120)
    server.start()
    target = FuzzTarget(request.param, server)
    try:
        before = target.health()
        workers_before = _worker_pids(server)
        yield target
        # no crashed worker: same serving process, no restarted gunicorn worker, nothing hit the catch-all
        after = target.health()
        assert server.is_alive(), f"{request.param}: the server died under fuzzing\n{server.log_tail()}"
        assert after["pid"] == before["pid"], f"{request.param}: worker restarted\n{server.log_tail()}"
        assert _worker_pids(server) == workers_before, f"{request.param}: worker processes changed"
        assert after["internal_errors"] == 0, f"{request.param}: {after['internal_errors']} internal errors"
    finally:
        server.stop()
        (fuzz_out / f"{request.param}.json").write_text(json.dumps(target.tally(), indent=2) + "\n")
        server.cleanup()


OPERATIONS = [("GET", "/health"), ("POST", "/predict"), ("POST", "/predict/image"),
              ("POST", "/predict/image/base64")]  # fmt: skip
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
FUZZ_SETTINGS: dict[str, Any] = dict(
    deadline=None,
    database=None,  # no .hypothesis/ folder in the repository
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same cases every run: a failure is reproducible
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)


def checks_for(path: str, target: FuzzTarget) -> list[Any]:
    served_tabular = target.server.config.model == "iris-rf"
    if path == "/predict" and served_tabular:
        return [*BASE_CHECKS, positive_data_acceptance]
    return BASE_CHECKS


def fuzz_operation(
    target: FuzzTarget, method: str, path: str, mode: schemathesis.GenerationMode, examples: int
) -> None:
    """Send ``examples`` generated cases of one operation to the target; fail on the first violation."""
    schema = schemathesis.openapi.from_url(f"{target.server.url}/openapi.json")
    operation = schema[path][method]
    checks = checks_for(path, target)
    if mode == schemathesis.GenerationMode.NEGATIVE and method == "GET":
        return  # /health takes no input: nothing to make invalid

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, **FUZZ_SETTINGS)
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=target.server.url, timeout=30)
        target.statuses[response.status_code] += 1
        target.per_operation[f"{method} {path} {mode.value}"] += 1
        if response.status_code >= 500:
            target.server_errors.append(f"{method} {path} -> {response.status_code}: {response.text[:300]}")
        case.validate_response(response, checks=checks)
        body = response.json()  # every answer is JSON, errors included
        if response.status_code >= 400:
            assert set(body) == {"error", "detail"} and body["detail"], body

    run()


@pytest.mark.e2e
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz_short(
    fuzz_target: FuzzTarget, method: str, path: str, mode: schemathesis.GenerationMode
) -> None:
    fuzz_operation(fuzz_target, method, path, mode, SHORT_EXAMPLES)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz_long(
    fuzz_target: FuzzTarget, method: str, path: str, mode: schemathesis.GenerationMode
) -> None:
    fuzz_operation(fuzz_target, method, path, mode, LONG_EXAMPLES)


def test_fuzz_target_survives_and_the_server_agrees(fuzz_target: FuzzTarget) -> None:
    """Independent of the other tests here (any order, or alone): fuzz the routes of this target's model kind
    in both modes, then ask the server itself. No answer may be a 5xx, the server's own count of requests
    that reached its catch-all handler must not have moved, and the serving process and its workers must be
    the ones from before (no crash, no restart)."""
    before = fuzz_target.health()
    workers_before = _worker_pids(fuzz_target.server)
    cases_before = sum(fuzz_target.statuses.values())
    served = ["/predict"] if fuzz_target.server.config.model == "iris-rf" else ["/predict/image/base64"]
    for path in served:
        for mode in MODES:
            fuzz_operation(fuzz_target, "POST", path, mode, min(SHORT_EXAMPLES, 5))
    tally = fuzz_target.tally()
    assert tally["cases"] > cases_before, "the fuzzer sent nothing"
    assert tally["server_errors_5xx"] == 0, tally["first_5xx"]
    assert all(400 <= int(code) < 500 for code in tally["statuses"] if int(code) >= 300), tally["statuses"]
    after = fuzz_target.health()
    assert after["internal_errors"] == before["internal_errors"] == 0, (before, after)
    assert after["pid"] == before["pid"], fuzz_target.server.log_tail()
    assert fuzz_target.server.is_alive() and _worker_pids(fuzz_target.server) == workers_before
