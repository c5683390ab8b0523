"""The standing overhead benchmark (``python -m deploybench.bench.overhead``, ``nox -s overhead``), run tiny:
one model, 1 s per run. Checks what it writes (JSON rows + Markdown), never a speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from deploybench import paths
from deploybench.targets.zoo import build_zoo

pytestmark = pytest.mark.e2e

SIDE_KEYS = {"throughput_rps", "p50_us", "p99_us", "errors", "server_cpu_us_per_request", "runs"}
ROW_KEYS = {"framework", "server", "model", "format", "task", "handler", "workers", "threads", "minimal",
            "target", "ratio_throughput", "ratio_p99", "ratio_cpu_per_request"}  # fmt: skip


@pytest.fixture(scope="module")
def zoo() -> Path:
    root = paths.zoo_dir()
    build_zoo(root, models=["iris-rf"], formats=["onnx"])
    return root.resolve()


def run_bench(zoo: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    r = subprocess.run(
        [sys.executable, "-m", "deploybench.bench.overhead", "--models", "iris-rf", "--duration", "1",
         "--rounds", "1", "--zoo", str(zoo), "--out", str(out), *extra],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not left, f"servers left running: {left}"
    return r


def test_overhead_rows_for_both_frameworks(zoo: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    r = run_bench(
        zoo, out, "--modes", "fastapi:uvicorn:inline,fastapi:uvicorn:threadpool,flask:gunicorn-sync"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((out / "overhead.json").read_text())
    assert result["kind"] == "overhead" and result["generator"] in ("wrk", "lean")
    rows = result["rows"]
    assert [(x["framework"], x["server"], x["handler"]) for x in rows] == [
        ("fastapi", "uvicorn", "inline"),
        ("fastapi", "uvicorn", "threadpool"),
        ("flask", "gunicorn-sync", ""),
    ]
    for row in rows:
        assert set(row) == ROW_KEYS
        assert row["model"] == "iris-rf" and row["task"] == "tabular"
        for side in ("minimal", "target"):
            assert set(row[side]) == SIDE_KEYS
            assert row[side]["throughput_rps"] > 0 and row[side]["errors"] == 0
            assert row[side]["server_cpu_us_per_request"] > 0
            assert len(row[side]["runs"]) == 1 and row[side]["runs"][0]["requests"] > 0
        assert row["ratio_throughput"] == pytest.approx(
            row["target"]["throughput_rps"] / row["minimal"]["throughput_rps"]
        )
    jsonl = (out / "overhead.rows.jsonl").read_text().splitlines()
    assert len(jsonl) == 3  # written as the run went
    md = (out / "overhead.md").read_text()
    assert md.startswith("# Target overhead") and md.count("| iris-rf |") == 3
    assert md in r.stdout


def test_lean_generator_fallback_and_the_ratio_gate(zoo: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    r = run_bench(  # "python", the in-project generator's old name, is the lean engine now
        zoo, out, "--modes", "fastapi:uvicorn:inline", "--generator", "python", "--min-ratio", "100"
    )
    assert r.returncode == 1, r.stderr[-3000:]  # no target reaches 100 x its minimal app: the gate fails
    assert "using the lean load engine" in r.stderr
    result = json.loads((out / "overhead.json").read_text())
    assert result["generator"] == "lean" and "lean load engine" in result["command"]
    run = result["rows"][0]["target"]["runs"][0]
    assert run["generator"] == "lean" and run["generator_cpu_us_per_request"] > 0
    assert "⚠" in (out / "overhead.md").read_text()


def test_handler_styles_table(zoo: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    r = run_bench(zoo, out, "--no-overhead", "--handler-styles", "--sweep", "1,2")
    assert r.returncode == 0, r.stderr[-3000:]
    styles = json.loads((out / "handler-styles.json").read_text())
    assert [x["handler"] for x in styles["rows"]] == ["inline", "threadpool"]
    for row in styles["rows"]:
        assert [s["connections"] for s in row["sweep"]] == [1, 2]
        assert row["slo_p99_ms"] == 10.0 and row["max_throughput_rps"] > 0
        if row["common_rate_rps"]:
            assert row["at_common_rate"]["load_model"] == "open"
            assert row["at_common_rate"]["rate_rps"] == row["common_rate_rps"]
    assert (out / "handler-styles.md").read_text().startswith("# FastAPI handler style")
    assert not (out / "overhead.json").exists()
