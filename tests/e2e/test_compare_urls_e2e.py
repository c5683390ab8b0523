"""`deploybench compare` with already-running services as choices ("my current deployment vs a candidate"):
the test serves the run-time digits RandomForest (tests/support/user_models.py) as the "current"
deployment (joblib, Flask + gunicorn-sync, started by the test), and compare measures it by URL next to a
candidate it starts itself (the ONNX file of the same model, FastAPI + uvicorn) and a URL where nothing
answers. The same measurement and ranking apply; compare never starts or stops a URL choice; one that does
not answer fails alone."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import httpx
import pytest

from deploybench.commands.cli import main
from deploybench.compare_doc import load_compare
from deploybench.record import load_record
from deploybench.targets.serve import ServerProcess, TargetConfig
from tests.support.tiny_matrix import compare_finished
from tests.support.user_models import DigitsModels, shared_digits_models

pytestmark = pytest.mark.e2e  # starts a real target, compare's targets and Locust

MATRIX = """
name = "current-vs-candidate"

[matrix]
framework = ["fastapi"]
server = ["uvicorn"]

[slo]
p99_ms = 500.0

[measure]
users = 2
warmup_s = 0.5
window_s = 1.0
stability_windows = 1
max_windows = 1
max_stability_s = 5.0
common_rate_rps = 20.0
common_duration_s = 1.0
load_model = "constant"

[search]
step_s = 1.0
step_warmup_s = 0.0
max_probes = 2
max_expansions = 0
min_step_requests = 0
repeats = 1
repeat_probes = 1
"""


@pytest.fixture(scope="session")
def digits_models(tmp_path_factory: pytest.TempPathFactory) -> DigitsModels:
    return shared_digits_models(tmp_path_factory)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released without listening)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_running_services_are_choices_measured_and_ranked_but_never_started_or_stopped(
    digits_models: DigitsModels, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = digits_models
    current = ServerProcess(
        TargetConfig(framework="flask", model="digits-rf", model_file=str(m.rf_joblib),
                     trust_pickle=m.rf_joblib_sha256),
        ready_timeout_s=120,
    )  # fmt: skip
    toml = tmp_path / "matrix.toml"
    toml.write_text(MATRIX)
    out = tmp_path / "out"
    down = f"http://127.0.0.1:{closed_port()}"
    with current:
        pid_before = httpx.get(current.url + "/health", timeout=10).json()["pid"]
        rc = main(["compare", "-c", str(toml), "--model-file", str(m.rf_onnx), "--model-name", "digits-rf",
                   "--url", f"current={current.url}", "--url", f"gone={down}",
                   "--out", str(out), "-q"])  # fmt: skip
        err = capsys.readouterr().err
        assert compare_finished(rc, err), err
        # compare did not stop (or restart) the running service
        assert current.is_alive()
        health = httpx.get(current.url + "/health", timeout=10).json()
        assert health["pid"] == pid_before and health["internal_errors"] == 0

    doc = load_compare(out)
    assert doc.scenario == "tabular" and doc.status == "complete"
    by_id = {r.choice.id: r for r in doc.results}
    assert list(by_id) == ["fastapi-uvicorn-digits-rf-onnx-w1", "url-current", "url-gone"]
    cur, cand, gone = by_id["url-current"], by_id["fastapi-uvicorn-digits-rf-onnx-w1"], by_id["url-gone"]
    # the URL choice gets the same measurement as the started one: windows, common rate, saturation search
    for r in (cur, cand):
        assert r.status == "complete", r.error
        assert r.common is not None and r.common["count"] > 0 and r.common["error_count"] == 0
        assert r.stability and r.saturation and r.saturation["points"]
    assert cur.choice.external and cur.choice.url == current.url
    assert cur.target_health and (cur.target_health["model"], cur.target_health["format"]) == (
        "digits-rf",
        "pickle",
    )
    assert cur.server_log is None and cur.server_affinity is None
    assert cur.common is not None and cur.common["server_cpu_percent"] is None  # not ours to measure
    assert cand.common is not None and cand.common["server_cpu_percent"] is not None
    # every load run against the URL went to the running service (its worker answered /health)
    records = sorted((out / "url-current").glob("*.json"))
    assert len(records) >= 3
    for path in records:
        rec = load_record(path)
        assert rec.config["target_health"]["pid"] == pid_before and rec.config["host"] == current.url
    # a URL that does not answer fails alone, with a message saying compare does not start it
    assert gone.status == "failed" and gone.error and "does not answer GET /health" in gone.error
    # ranked together; the report marks the external choices
    md = (out / "report.md").read_text()
    ranked = [line for line in md.splitlines() if re.match(r"\| [12]=? \|", line)]
    assert len(ranked) == 2 and any("current (external" in line for line in ranked)
    assert "## External choices" in md and f"`url-current`: {current.url} — already running" in md
    assert "`url-gone`: failed" in md
    saved = json.loads((out / "compare.json").read_text())
    assert [u["name"] for u in saved["config"]["urls"]] == ["current", "gone"]
