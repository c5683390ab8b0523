"""`pip install <checkout>` (not editable) into a fresh virtualenv, then the commands from a folder outside
the checkout: the wheel claims one top-level name (deploybench), configs are package data, plain
`locust -f "$(deploybench locustfile tabular)"` runs, relative paths are the caller's, results default to
./results, and the record carries the library versions actually installed.

Installs ~100 packages (torch, the CPU build, first: from $TORCH_INDEX_URL when set, as in the noxfile), so
it is marked slow; CI runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploybench.record import load_record

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = (".git", ".nox", ".venv", "artifacts", "results", "build", "dist", "*.egg-info", "__pycache__",
              ".hypothesis", ".benchmarks", ".pytest_cache", ".ruff_cache", "baselines")  # fmt: skip


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


@pytest.mark.timeout(1800)
def test_pip_install_into_a_fresh_venv_and_run_from_another_folder(tmp_path: Path) -> None:
    # the source as a user would have it: no venvs, build output or results of this checkout
    src = tmp_path / "deploybench-src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "DEPLOYBENCH_ZOO", "DEPLOYBENCH_RESULTS")}  # fmt: skip
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, env, 300)
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(src / "constraints.txt")]
    index = os.environ.get("TORCH_INDEX_URL", "")
    t0 = time.monotonic()
    run([*pip, "--no-deps", *(["--index-url", index] if index else []), "torch"], tmp_path, env, 900)
    run([*pip, str(src)], tmp_path, env, 1200)
    install_s = time.monotonic() - t0

    work = tmp_path / "elsewhere"
    work.mkdir()
    db = str(venv / "bin" / "deploybench")
    probe = (
        "import deploybench.loadtests, deploybench.commands.cli as c; print(deploybench.loadtests.__file__)"
    )
    where = run([str(venv / "bin" / "python"), "-c", probe], work, env, 60).stdout.strip()
    site = Path(where).parent.parent.parent
    assert site.is_relative_to(venv) and site.name == "site-packages", where  # not the checkout
    assert not (site / "deploybench" / "__init__.py").is_symlink()
    # one installed namespace: the wheel claims no generic top-level name (targets, commands, bench, ...)
    (dist_info,) = site.glob("deploybench-*.dist-info")
    assert (dist_info / "top_level.txt").read_text().split() == ["deploybench"]
    record = (dist_info / "RECORD").read_text().splitlines()
    tops = {line.split("/", 1)[0] for line in record if "/" in line and not line.startswith("../")}
    assert tops - {dist_info.name} == {"deploybench"}, tops  # (../../../bin/deploybench: the script)
    for name in ("targets", "loadtests", "bench", "reports", "decisions", "commands"):
        assert not (site / name).exists(), name

    version = run([db, "--version"], work, env, 60).stdout
    assert version.startswith("deploybench ")
    image = Path(run([db, "locustfile", "image"], work, env, 60).stdout.strip())
    assert image == site / "deploybench" / "loadtests" / "image.py" and image.is_file()
    assert (venv / "bin" / "locust").is_file()  # `locust -f "$(deploybench locustfile image)"` works here

    run([db, "build", "--models", "iris-rf", "--formats", "onnx", "--quiet"], work, env, 600)
    assert (work / "artifacts" / "zoo" / "manifest.json").is_file()  # the caller's ./artifacts/zoo

    # plain Locust on a built-in scenario of the installed package, from outside the checkout
    tabular = run([db, "locustfile", "tabular"], work, env, 60).stdout.strip()
    assert Path(tabular).is_relative_to(site / "deploybench")
    serve = subprocess.Popen(
        [db, "serve", "--framework", "fastapi", "--model", "iris-rf", "--format", "onnx", "--port", "0"],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        lines = []
        while not any(" at http://" in line for line in lines):  # printed once /health is ready
            line = serve.stdout.readline()
            assert line, "".join(lines)  # EOF: the server exited
            lines.append(line)
        url = next(line for line in lines if " at http://" in line).split(" at ", 1)[1].split()[0]
        cmd = [str(venv / "bin" / "locust"), "-f", tabular, "--headless", "--host", url, "-u", "2", "-r", "2",
               "-t", "2s", "--results-dir", "locust-out", "--only-summary"]  # fmt: skip
        locust = run(cmd, work, env, 120)
    finally:
        serve.terminate()
        serve.wait(timeout=60)
    (record_path,) = (work / "locust-out").glob("*.json")
    plain = load_record(record_path)
    assert plain.config["scenario"] == "tabular" and plain.series[0].count > 0, locust.stdout[-2000:]

    load = run([db, "load", "--framework", "fastapi", "--server", "uvicorn", "--model", "iris-rf", "--format",
                "onnx", "--scenario", "tabular", "--duration", "2", "--warmup", "0.5", "--users", "2",
                "--out", "relout"], work, env, 300)  # fmt: skip
    (line,) = [x for x in load.stdout.splitlines() if x.startswith("record: ")]
    path = Path(line.removeprefix("record: "))
    assert path.parent == work / "relout", (install_s, load.stdout)
    rec = load_record(path)
    assert rec.status == "complete" and rec.series[0].count > 0 and not rec.series[0].errors
    freeze = run([str(venv / "bin" / "python"), "-m", "pip", "freeze"], work, env, 120).stdout
    installed = dict(x.split("==", 1) for x in freeze.splitlines() if "==" in x)
    versions = json.dumps(rec.env)
    for lib in ("locust", "numpy", "onnxruntime", "fastapi"):
        assert f'"{installed[lib]}"' in versions, (lib, installed[lib], rec.env)  # the versions actually used

    dry = run([db, "compare", "-c", "quick", "--dry-run"], work, env, 120)  # built-in configs: package data
    assert "quick: 6 choice(s)" in dry.stdout and "iris-mlp-torchscript" in dry.stdout  # the default matrix
    run([db, "report", "relout", "--out", "report", "--format", "md"], work, env, 300)
    assert (work / "report" / "report.md").is_file()
    assert not (work / "results").exists() or list((work / "results").iterdir()) == []
