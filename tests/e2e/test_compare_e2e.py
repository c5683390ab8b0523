"""`deploybench compare` end to end with real servers and real (short) load: two tiny choices are measured and
ranked; a third whose server cannot start (its zoo folder is empty) is reported as failed and the rest run.
`--pin` puts the server and the load generator on cores of their own (2 CPUs: server CPU 1, generator CPU 0),
and the records and the report say so."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import psutil
import pytest

from deploybench.commands.cli import main
from deploybench.compare_doc import Choice, describe_split, load_compare
from deploybench.decisions.compare.config import CompareConfig, expand, zoo_catalog
from deploybench.decisions.compare.driver import RealDriver, core_split
from deploybench.decisions.compare.run import run_matrix
from deploybench.record import load_record
from deploybench.reports.compare_render import write_report
from tests.support.tiny_matrix import compare_finished, tiny_matrix

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
        "pin": False,
    },
    "search": {"step_s": 1.0, "step_warmup_s": 0.5, "max_probes": 2, "max_expansions": 0,
               "min_step_requests": 0, "rel_tolerance": 0.5, "repeats": 2, "repeat_probes": 1,
               "repeat_extra_probes": 0},
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
        # coarse: at most 2 probes; then 2 repeated searches of 1 probe (up to 2 more: a wide coarse bracket)
        assert 1 <= len(r.saturation["points"]) <= 2 + 2 * 3
        assert all((out / p["extra"]["record"]).is_file() for p in r.saturation["points"])
        assert all("scheduled" in p["extra"] for p in r.saturation["points"])  # the exact throughput rule
        if r.saturation["max_rps"] is not None:  # the coarse search passed somewhere: an interval
            assert r.interval is not None and r.interval.n == 2
            assert r.interval.lo_rps <= r.max_rps <= r.interval.hi_rps
        assert (out / r.choice.id / "server.log").is_file()
        assert r.server_affinity == sorted(os.sched_getaffinity(0))  # not pinned: every CPU we may use

    # the report ranks the two that ran, lists the failure, and can be re-rendered from the saved document
    write_report(run, out)
    md = (out / "report.md").read_text()
    ranked = [line for line in md.splitlines() if re.match(r"\| [12]=? \|", line)]
    assert len(ranked) == 2 and all("onnx" in line for line in ranked)
    assert run.verdict and run.verdict in md
    assert f"`{broken}`: failed" in md
    assert main(["compare", "--report", str(out), "-q"]) == 0
    assert "report.html" in capsys.readouterr().out
    assert load_compare(out).status == "complete"


TINY_PIN = tiny_matrix("tiny-pin")


def tree_affinities(pid: int) -> dict[int, list[int]]:
    proc = psutil.Process(pid)
    return {p.pid: sorted(p.cpu_affinity()) for p in (proc, *proc.children(recursive=True))}


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="--pin needs 2 CPUs (the UsageError is unit-tested)"
)
def test_pin_runs_the_server_and_the_generator_on_their_cores(
    tmp_path: Path, zoo_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On 2 CPUs: the server on CPU 1, the generator on CPU 0 (``core_split`` for one worker)."""
    server_cpus, generator_cpus = core_split(os.sched_getaffinity(0), 1)
    seen: list[dict[int, list[int]]] = []
    real_start = RealDriver.start

    @contextlib.contextmanager
    def start(self: RealDriver, choice: Choice, log_path: Path):
        with real_start(self, choice, log_path) as target:
            seen.append(tree_affinities(target.pid))  # the server's processes, as the OS runs them
            yield target

    monkeypatch.setattr(RealDriver, "start", start)
    cfg = tmp_path / "pin.toml"
    cfg.write_text(TINY_PIN)
    out = tmp_path / "out"
    rc = main(["compare", "--config", str(cfg), "--pin", "--zoo", str(zoo_dir), "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert compare_finished(rc, err), err

    # the server really ran on its CPU only (the master and any worker)
    assert len(seen) == 1 and seen[0] and all(cpus == server_cpus for cpus in seen[0].values()), seen
    doc = json.loads((out / "compare.json").read_text())
    assert doc["status"] == "complete" and doc["config"]["measure"]["pin"] is True
    assert doc["env"]["affinity"] == server_cpus  # the summary's environment is the server's
    (result,) = doc["results"]
    assert result["status"] == "complete", result.get("error")
    assert result["server_affinity"] == server_cpus  # recorded from the OS, like `seen`
    assert result["generator_cpus"] == generator_cpus
    split = describe_split(server_cpus, generator_cpus)
    assert f"{split}; load generator:" in (out / "report.md").read_text()  # the method states the split
    # every load record: asked for the generator's CPU, and the generator itself ran there
    paths = sorted((out / result["id"]).glob("*.json"))
    assert len(paths) >= 3  # stability window, common rate, >= 1 search step
    for path in paths:
        rec = load_record(path)
        assert rec.status == "complete", (path.name, rec.error)
        assert rec.config["generator_cpus"] == generator_cpus, path.name
        assert rec.config["generator"]["affinity"] == generator_cpus, path.name  # asked at its start
        assert rec.env["affinity"] == generator_cpus, path.name
        # read by the generator process itself at its end
        assert [g["affinity"] for g in rec.config["generators"]] == [generator_cpus], path.name
        assert rec.config["target_health"]["pid"] in seen[0]  # the load went to the pinned server
