"""deploybench from any folder: the `deploybench` command (this environment's console script) run in a
temporary folder far from the checkout, with relative paths, writes where the user is — not in the checkout
or in the installed package's folder (issue: the record of `--out relout` landed in `<checkout>/relout`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploybench import paths
from deploybench.record import load_record
from deploybench.targets.zoo import build_zoo
from tests.support.known_latency import KnownLatencyServer

pytestmark = pytest.mark.e2e  # every test here runs the CLI, Locust and a server

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def deploybench(args: list[str], cwd: Path, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("deploybench", path=str(BIN)) or shutil.which("deploybench")
    assert exe, f"no deploybench console script next to {sys.executable} or on PATH"
    env = {k: v for k, v in os.environ.items() if k not in ("DEPLOYBENCH_RESULTS", "DEPLOYBENCH_ZOO")}
    return subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)


def record_path(out: str) -> Path:
    (line,) = [x for x in out.splitlines() if x.startswith("record: ")]
    return Path(line.removeprefix("record: "))


def test_load_a_real_target_from_another_folder_with_relative_out_and_zoo(tmp_path: Path) -> None:
    """The issue's command, run from a temporary folder: `--out relout` and a relative `--zoo` are the
    caller's; the record, the server log and the generator's log all land in ./relout."""
    zoo = Path(build_zoo(paths.zoo_dir(), models=["iris-rf"], formats=["onnx"])["zoo_dir"]).resolve()
    work = tmp_path / "some" / "other" / "folder"
    work.mkdir(parents=True)
    before = set(ROOT.iterdir())
    rel_zoo = os.path.relpath(zoo, work)
    proc = deploybench(["load", "--framework", "fastapi", "--server", "uvicorn", "--model", "iris-rf",
                        "--format", "onnx", "--scenario", "tabular", "--duration", "2", "--warmup", "0.5",
                        "--users", "2", "--zoo", rel_zoo, "--out", "relout"], cwd=work)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    path = record_path(proc.stdout)
    assert path.parent == work / "relout" and path.is_file()
    stem = path.name.removesuffix(".json")
    assert sorted(p.name.removeprefix(stem) for p in path.parent.iterdir()) == [
        ".json", ".lean.log", ".server.log"]  # fmt: skip
    rec = load_record(path)
    assert rec.status == "complete" and rec.config["record_path"] == str(path)
    assert rec.config["target"]["zoo_dir"] == str(zoo)
    (s,) = rec.series
    assert s.name == "POST /predict" and s.count > 0 and not s.errors
    assert set(ROOT.iterdir()) == before  # nothing new in the checkout (no ./relout there)


def test_results_default_to_dot_results_and_every_relative_path_is_the_callers(tmp_path: Path) -> None:
    """No --out: ./results. A relative --payload and --locustfile are read from the caller's folder; a
    relative --record is written there."""
    (tmp_path / "rows.jsonl").write_text('{"features": [5.1, 3.5, 1.4, 0.2]}\n')
    (tmp_path / "mine.py").write_text(
        "from locust import task\nfrom deploybench.loadtests.user import DeployBenchUser\n\n\n"
        "class Mine(DeployBenchUser):\n    scenario = 'mine'\n\n    @task\n    def hit(self) -> None:\n"
        "        self.send('GET', '/health', name='/health')\n"
    )
    with KnownLatencyServer(service_ms=2.0) as srv:
        common = ["--url", srv.url, "--duration", "1.5", "--warmup", "0", "--users", "1"]
        api = deploybench(["load", *common, "--path", "/predict", "--payload", "rows.jsonl"], cwd=tmp_path)
        own = deploybench(["load", *common, "--locustfile", "mine.py", "--record", "runs/mine.json"],
                          cwd=tmp_path)  # fmt: skip
    assert api.returncode == 0, api.stdout + api.stderr[-3000:]
    assert own.returncode == 0, own.stdout + own.stderr[-3000:]
    api_path = record_path(api.stdout)
    assert api_path.parent == tmp_path / "results"
    rec = load_record(api_path)
    assert rec.config["request"]["payload"] == str(tmp_path / "rows.jsonl")
    assert rec.series[0].name == "POST /predict" and rec.series[0].count > 0
    assert record_path(own.stdout) == tmp_path / "runs" / "mine.json"
    mine = load_record(tmp_path / "runs" / "mine.json")
    assert mine.status == "complete" and mine.config["scenario"] == "mine"
    assert mine.config["locustfile"] == str(tmp_path / "mine.py")


def test_locust_on_a_builtin_scenario_by_its_printed_path(tmp_path: Path) -> None:
    """`locust -f "$(deploybench locustfile health)"` from any folder (the README's way for an installed
    deploybench): the record goes to the caller's ./results."""
    printed = deploybench(["locustfile", "health"], cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    scenario = Path(printed.stdout.strip())
    assert scenario.is_absolute() and scenario.name == "health.py" and scenario.is_file()
    with KnownLatencyServer(service_ms=1.0) as srv:
        cmd = [sys.executable, "-m", "locust", "-f", str(scenario), "--headless", "--host", srv.url,
               "-u", "1", "-r", "1", "-t", "30s", "--duration", "1.5", "--only-summary"]  # fmt: skip
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = (tmp_path / "results").glob("*.json")
    rec = load_record(path)
    assert rec.status == "complete" and rec.config["scenario"] == "health"
