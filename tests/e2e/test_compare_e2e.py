"""`deploybench compare` end to end with real servers and real (short) load: two tiny choices are measured and
ranked; a third whose server cannot start (its zoo folder is empty) is reported as failed and the rest run."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from commands.cli import main
from decisions.compare.config import CompareConfig, expand, zoo_catalog
from decisions.compare.driver import RealDriver
from decisions.compare.run import run_matrix
from deploybench.compare_doc import Choice, load_compare
from reports.compare_render import write_report

pytestmark = pytest.mark.e2e  # starts real targets and Locust

TINY = {
    "name": "tiny",
    "matrix": {
        "framework": ["fastapi", "flask"],
        "server": ["uvicorn", "gunicorn-sync"],
        "model": ["iris-rf"],
        "format": ["onnx", "pickle"],
    },
    "slo": {"p99_ms": 200.0},
    "measure": {
        "users": 4, "warmup_s": 0.5, "window_s": 1.0, "stability_windows": 2, "max_windows": 2,
        "max_stability_s": 10.0, "common_rate_rps": 20.0, "common_duration_s": 1.0, "load_model": "constant",
    },
    "search": {"step_s": 1.0, "step_warmup_s": 0.5, "max_probes": 2, "max_expansions": 0},
}  # fmt: skip


class OneBrokenDriver(RealDriver):
    """The real driver, except that one choice gets an empty zoo folder, so its server fails to start."""

    def __init__(self, *args, broken: str, empty_zoo: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.broken, self.empty_zoo = broken, empty_zoo

    @contextlib.contextmanager
    def start(self, choice: Choice, log_path: Path):
        real_zoo = self.zoo_dir
        if choice.id == self.broken:
            self.zoo_dir = self.empty_zoo
        try:
            with super().start(choice, log_path) as target:
                yield target
        finally:
            self.zoo_dir = real_zoo


def test_two_tiny_choices_run_end_to_end_and_rank_and_a_failed_start_is_reported(tmp_path, zoo_dir, capsys):
    cfg = CompareConfig.from_dict(TINY)
    choices, skipped, scenario = expand(cfg, zoo_catalog())
    # keep two real choices + one that cannot start
    keep = ["fastapi-uvicorn-iris-rf-onnx-w1", "flask-gunicorn-sync-iris-rf-pickle-w1",
            "flask-gunicorn-sync-iris-rf-onnx-w1"]  # fmt: skip
    choices = [c for c in choices if c.id in keep]
    broken = "flask-gunicorn-sync-iris-rf-pickle-w1"
    empty = tmp_path / "empty-zoo"
    empty.mkdir()
    out = tmp_path / "cmp"
    driver = OneBrokenDriver(cfg, scenario, zoo_dir, out / "_runner", broken=broken, empty_zoo=empty)

    run = run_matrix(cfg, choices, skipped, scenario, driver, out)

    by_id = {r.choice.id: r for r in run.results}
    assert by_id[broken].status == "failed" and by_id[broken].error
    ok = [by_id["fastapi-uvicorn-iris-rf-onnx-w1"], by_id["flask-gunicorn-sync-iris-rf-onnx-w1"]]
    for r in ok:
        assert r.status == "complete", r.error
        assert r.stability and len(r.stability["windows"]) >= 1
        assert r.common and r.common["count"] > 0 and r.common["latency_us"]["p99"] is not None
        assert r.common["server_cpu_percent"] is not None and r.common["server_cpu_percent"] > 0
        assert 1 <= len(r.saturation["points"]) <= 2
        assert all((out / p["extra"]["record"]).is_file() for p in r.saturation["points"])
        assert (out / r.choice.id / "server.log").is_file()

    # the report ranks the two that ran, lists the failure, and can be re-rendered from the saved document
    write_report(run, out)
    md = (out / "report.md").read_text()
    ranked = [line for line in md.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(ranked) == 2 and all("onnx" in line for line in ranked)
    assert f"`{broken}`: failed" in md
    assert main(["compare", "--report", str(out), "-q"]) == 0
    assert "report.html" in capsys.readouterr().out
    assert load_compare(out).status == "complete"
