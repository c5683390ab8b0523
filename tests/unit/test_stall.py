"""The injected stall (``--inject-stall-at-s AT --inject-stall-s FOR``) in-process: the request that starts
it takes at least FOR, a request arriving during it waits until it ends (a whole-process pause), it comes
once per process, its start is counted from the first prediction request; and the options' validation
(TargetConfig, `deploybench serve`, `deploybench load`: a one-line error, exit code 2)."""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from deploybench.commands import load as load_cmd
from deploybench.commands import serve as serve_cmd
from deploybench.commands.cli import main
from deploybench.errors import UsageError
from deploybench.targets import fastapi_app, flask_app, service
from deploybench.targets.serve import TargetConfig
from deploybench.targets.service import Service
from tests.support.waiting import wait_until

ROW = [5.1, 3.5, 1.4, 0.2]
STALL_S = 0.3


class StubPredictor:
    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.tile(np.array([[0.7, 0.2, 0.1]], dtype=np.float32), (len(batch), 1))


def make(framework: str, **config: Any) -> tuple[Any, Service]:
    cfg = TargetConfig(framework=framework, model="iris-rf", format="onnx", **config)
    svc = Service(cfg, StubPredictor(), task="tabular", class_names=["a", "b", "c"])
    if framework == "fastapi":
        return TestClient(fastapi_app.create_app(cfg, svc)), svc
    return flask_app.create_app(cfg, svc).test_client(), svc


def timed(call: Any) -> tuple[int, float]:
    t0 = time.perf_counter()
    status = call().status_code
    return status, time.perf_counter() - t0


@pytest.mark.parametrize("framework", ["flask", "fastapi"])
def test_the_triggering_request_stalls_and_others_wait_for_the_end(framework: str) -> None:
    client, svc = make(framework, inject_stall_at_s=0.0, inject_stall_s=STALL_S)
    assert svc.stalls
    # FastAPI: one event loop (the client's portal) for both requests; Flask: each thread calls the app
    with client if framework == "fastapi" else contextlib.nullcontext():
        done: dict[str, tuple[int, float]] = {}
        trigger = threading.Thread(
            target=lambda: done.setdefault(
                "predict", timed(lambda: client.post("/predict", json={"features": ROW}))
            )
        )
        trigger.start()
        wait_until(lambda: svc._stall_until_ns, 10, "the stall to start")
        stall_end_ns = svc._stall_until_ns
        status, _ = timed(lambda: client.get("/health"))  # arrives during the stall: waits for its end
        health_done_ns = time.perf_counter_ns()
        trigger.join(timeout=30)
        assert status == 200 and health_done_ns >= stall_end_ns
        status, elapsed_s = done["predict"]
        assert status == 200 and elapsed_s >= STALL_S, elapsed_s
        # once per process: the next prediction does not stall
        status, elapsed_s = timed(lambda: client.post("/predict", json={"features": ROW}))
        assert status == 200 and elapsed_s < STALL_S, elapsed_s


@pytest.mark.parametrize("framework", ["flask", "fastapi"])
def test_no_stall_configured_no_gate(framework: str) -> None:
    client, svc = make(framework)
    assert not svc.stalls
    assert client.post("/predict", json={"features": ROW}).status_code == 200
    assert svc._stall_until_ns == 0


def test_the_stall_starts_at_the_first_request_at_or_after_at(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted from the first prediction request (a /health before it starts nothing); a fake clock."""
    clock = {"ns": 1_000_000_000_000}
    slept: list[int] = []

    def sleep_until_ns(deadline_ns: int) -> None:
        slept.append(deadline_ns - clock["ns"])
        clock["ns"] = deadline_ns

    monkeypatch.setattr(service.time, "perf_counter_ns", lambda: clock["ns"])
    monkeypatch.setattr(service, "sleep_until_ns", sleep_until_ns)
    cfg = TargetConfig(framework="flask", model="iris-rf", inject_stall_at_s=2.0, inject_stall_s=0.5)
    svc = Service(cfg, StubPredictor(), task="tabular", class_names=["a", "b", "c"])
    svc.stall_gate(predict=False)  # not a prediction: the clock has not started
    clock["ns"] += 10 * 10**9
    svc.stall_gate(predict=True)  # the first prediction: t = 0
    clock["ns"] += 1_999_999_999
    svc.stall_gate(predict=True)  # 1 ns before AT: no stall
    svc.stall_gate(predict=False)
    assert slept == []
    clock["ns"] += 1
    svc.stall_gate(predict=True)  # at AT: the stall, FOR long
    assert slept == [500_000_000]
    svc.stall_gate(predict=True)  # once per process
    clock["ns"] += 100 * 10**9
    svc.stall_gate(predict=True)
    assert slept == [500_000_000]


def test_during_a_stall_a_request_waits_only_for_what_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"ns": 5 * 10**9}
    slept: list[int] = []

    def sleep_until_ns(deadline_ns: int) -> None:
        slept.append(deadline_ns - clock["ns"])  # the clock stays: the stall is still on for the next one

    monkeypatch.setattr(service.time, "perf_counter_ns", lambda: clock["ns"])
    monkeypatch.setattr(service, "sleep_until_ns", sleep_until_ns)
    cfg = TargetConfig(framework="flask", model="iris-rf", inject_stall_at_s=0.0, inject_stall_s=1.0)
    svc = Service(cfg, StubPredictor(), task="tabular", class_names=["a", "b", "c"])
    svc.stall_gate(predict=True)
    clock["ns"] += 400_000_000
    svc.stall_gate(predict=False)  # /health during the stall
    svc.stall_gate(predict=True)
    assert slept == [1_000_000_000, 600_000_000, 600_000_000]


def test_sleep_until_reaches_its_deadline() -> None:
    deadline = time.perf_counter_ns() + 20_000_000
    service.sleep_until_ns(deadline)
    assert time.perf_counter_ns() >= deadline


# -- validation and the command line ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("at_s", "for_s", "message"),
    [
        (None, 1.0, "inject_stall_s needs inject_stall_at_s"),
        (2.0, 0.0, "inject_stall_at_s needs inject_stall_s > 0"),
        (-1.0, 1.0, "inject_stall_at_s must be a finite number of seconds >= 0"),
        (1.0, -0.5, "inject_stall_s must be a finite number of seconds >= 0"),
        (float("nan"), 1.0, "inject_stall_at_s must be"),
        (1.0, float("inf"), "inject_stall_s must be"),
        (True, 1.0, "inject_stall_at_s must be"),
    ],
)
def test_bad_stall_options_are_usage_errors(at_s: Any, for_s: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        TargetConfig(framework="flask", inject_stall_at_s=at_s, inject_stall_s=for_s).validate()


def test_good_stall_options_and_the_round_trip() -> None:
    for at_s, for_s in ((None, 0.0), (0.0, 0.5), (3, 2)):
        cfg = TargetConfig(framework="fastapi", inject_stall_at_s=at_s, inject_stall_s=for_s)
        cfg.validate()
        assert TargetConfig.from_dict(cfg.to_dict()) == cfg


def test_serve_and_load_take_and_pass_the_options() -> None:
    p = argparse.ArgumentParser()
    serve_cmd.add_arguments(p)
    cfg = serve_cmd.config_from_args(p.parse_args([]))
    assert (cfg.inject_stall_at_s, cfg.inject_stall_s) == (None, 0.0)
    cfg = serve_cmd.config_from_args(p.parse_args(["--inject-stall-at-s", "5", "--inject-stall-s", "1.5"]))
    assert (cfg.inject_stall_at_s, cfg.inject_stall_s) == (5.0, 1.5)

    lp = argparse.ArgumentParser()
    load_cmd.add_arguments(lp)
    base = ["--framework", "flask", "--server", "gunicorn-sync", "--model", "iris-rf", "--format", "onnx"]
    cfg = load_cmd._target_from_args(lp.parse_args(base))
    assert (cfg.inject_stall_at_s, cfg.inject_stall_s) == (None, 0.0)
    cfg = load_cmd._target_from_args(
        lp.parse_args([*base, "--inject-stall-at-s", "4", "--inject-stall-s", "2"])
    )
    assert (cfg.inject_stall_at_s, cfg.inject_stall_s) == (4.0, 2.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--inject-stall-s", "1", "--port", "0"], "inject_stall_s needs inject_stall_at_s"),
        (["serve", "--inject-stall-at-s", "-2", "--inject-stall-s", "1", "--port", "0"], "must be a finite"),
        (["serve", "--inject-stall-at-s", "3", "--port", "0"], "needs inject_stall_s > 0"),
        (
            ["load", "--framework", "flask", "--server", "gunicorn-sync", "--model", "iris-rf", "--format",
             "onnx", "--inject-stall-s", "1", "--duration", "1"],
            "inject_stall_s needs inject_stall_at_s",
        ),
    ],
)  # fmt: skip
def test_the_cli_refuses_bad_stall_options_with_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before any server process starts (this is an in-process test). `load` may print progress
    lines first; its error is one line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith(f"deploybench {argv[0]}: error:")]
    assert len(errors) == 1 and message in errors[0], err
