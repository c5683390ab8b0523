"""Model servers in their own virtualenvs (deploybench.targets.external): the pinned sets, the env's marker
(hash -> reuse or rebuild), the lock, a failed install's error, and which model x format each one serves.

The env-making steps run through ``external._spawn``: here a fake that plays python -m venv / pip (no
process, no network); one e2e-marked test runs a fake ``python`` script through the real path."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import stat
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

from deploybench.errors import TargetError, UsageError
from deploybench.targets import external
from deploybench.targets.external import (
    EXTERNAL_SERVERS,
    ExternalServerProcess,
    ensure_env,
    env_info,
    env_versions,
    external_unsupported,
    requirements,
    requirements_sha256,
)

PIP_ERROR = "ERROR: No matching distribution found for mlserver==1.7.1"


class FakeSteps:
    """Plays the env-making commands: ``-m venv DIR`` makes DIR/bin/python; ``-m pip install`` writes pip-like
    output and exits ``pip_code``. Counts the installs."""

    def __init__(self, pip_code: int = 0) -> None:
        self.pip_code = pip_code
        self.installs = 0
        self.lock = threading.Lock()

    def __call__(self, cmd: list[str], log: IO[bytes], timeout_s: float) -> int:
        if cmd[1:3] == ["-m", "venv"]:
            (Path(cmd[3]) / "bin").mkdir(parents=True)
            (Path(cmd[3]) / "bin" / "python").write_text("")
            return 0
        assert cmd[1:4] == ["-m", "pip", "install"], cmd
        with self.lock:
            self.installs += 1
        log.write(b"WARNING: Location 'file:///opt/x/' is ignored: it is neither a file nor a directory.\n")
        log.write(b"Collecting mlserver==1.7.1\n")
        if self.pip_code:
            log.write(f"{PIP_ERROR}\n".encode())
        return self.pip_code


def fake_versions(python: Path) -> dict[str, str]:
    return {
        "python": "3.11.7",
        "mlserver": "1.7.1",
        "litserve": "0.2.19",
        "NumPy": "2.4.6",
        "aiofiles": "25.1.0",
    }


@pytest.fixture
def fake_steps(monkeypatch: pytest.MonkeyPatch) -> FakeSteps:
    steps = FakeSteps()
    monkeypatch.setattr(external, "_spawn", steps)
    monkeypatch.setattr(external, "_installed_versions", fake_versions)
    return steps


def copy_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package data in a folder the test may change."""
    data = tmp_path / "data"
    shutil.copytree(external.DATA_DIR, data)
    monkeypatch.setattr(external, "DATA_DIR", data)
    return data


# ---------------------------------------------------------------------------------------- pinned sets


@pytest.mark.parametrize("server", EXTERNAL_SERVERS)
def test_every_requirement_is_an_exact_pin_and_none_is_torch(server: str) -> None:
    reqs = requirements(server)
    assert reqs
    for line in reqs:
        name, sep, version = line.partition("==")
        assert sep and name.strip() and version.strip() and not set(version) & set("<>=!~;, "), line
        assert name.strip().lower() not in {"torch", "torchvision", "lightning", "pytorch-lightning"}, line


def test_the_pins_name_the_servers_and_the_versions_that_load_our_zoo() -> None:
    ml = dict(line.split("==") for line in requirements("mlserver"))
    ls = dict(line.split("==") for line in requirements("litserve"))
    assert ml["mlserver"] == "1.7.1" and ml["mlserver-sklearn"] == "1.7.1"
    assert ls["litserve"] == "0.2.19"
    # a joblib pickle loads only with the scikit-learn that made it: the zoo is built in this environment
    for pins in (ml, ls):
        for pkg in ("scikit-learn", "joblib", "numpy", "onnxruntime"):
            assert pins[pkg] == importlib.metadata.version(pkg), pkg


def test_the_hash_follows_the_pinned_set_and_the_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = requirements_sha256("litserve")
    assert requirements_sha256("litserve") == before  # deterministic
    assert requirements_sha256("litserve", python="/other/python3.12") != before
    data = copy_data(tmp_path, monkeypatch)
    assert requirements_sha256("litserve") == before  # same text, another folder
    path = data / "external-litserve.txt"
    path.write_text(path.read_text() + "\n# a comment changes nothing\n")
    assert requirements_sha256("litserve") == before
    path.write_text(path.read_text().replace("litserve==0.2.19", "litserve==0.2.18"))
    assert requirements_sha256("litserve") != before


def test_every_venv_over_the_same_interpreter_shares_the_envs(monkeypatch: pytest.MonkeyPatch) -> None:
    """`nox -s model-servers` makes them from its venv; `nox -s compare` (another venv) finds them made."""
    before = requirements_sha256("mlserver")
    monkeypatch.setattr(sys, "executable", "/somewhere/.nox/compare/bin/python")
    assert requirements_sha256("mlserver") == before
    monkeypatch.setattr(sys, "_base_executable", "/another/python3.12", raising=False)
    assert requirements_sha256("mlserver") != before


def test_an_unknown_server_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="mlserver, litserve"):
        requirements("triton")
    with pytest.raises(UsageError, match="unknown model server"):
        ensure_env("triton")


# ------------------------------------------------------------------------------------------ the envs


def test_the_env_is_made_once_then_reused_and_its_versions_recorded(
    tmp_path: Path, fake_steps: FakeSteps
) -> None:
    env = ensure_env("mlserver", tmp_path)
    assert env == tmp_path.absolute() / "mlserver" and fake_steps.installs == 1
    marker = json.loads((env / external.MARKER_NAME).read_text())
    assert marker["requirements_sha256"] == requirements_sha256("mlserver")
    assert marker["create_s"] >= 0
    assert ensure_env("mlserver", tmp_path) == env and fake_steps.installs == 1  # the marker matches: reused
    # python and the key packages go to the record (names canonical); aiofiles is pinned, not a key one
    assert env_versions("mlserver", tmp_path) == {"python": "3.11.7", "mlserver": "1.7.1", "numpy": "2.4.6"}
    assert env_versions("mlserver", tmp_path, every_package=True)["aiofiles"] == "25.1.0"
    assert "litserve" not in env_versions("mlserver", tmp_path, every_package=True)  # not pinned there
    assert env_versions("litserve", tmp_path) == {} and env_info("litserve", tmp_path) == {}


def test_a_changed_pin_rebuilds_the_env(
    tmp_path: Path, fake_steps: FakeSteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = ensure_env("litserve", tmp_path / "envs")
    (env / "left-by-the-old-env").write_text("x")
    data = copy_data(tmp_path, monkeypatch)
    path = data / "external-litserve.txt"
    path.write_text(path.read_text().replace("numpy==", "numpy==0.0.1\n# was numpy=="))
    ensure_env("litserve", tmp_path / "envs")
    assert fake_steps.installs == 2
    assert not (env / "left-by-the-old-env").exists()  # rebuilt from scratch, not installed over
    assert env_info("litserve", tmp_path / "envs")["requirements_sha256"] == requirements_sha256("litserve")


def test_an_env_without_its_marker_is_made_again(tmp_path: Path, fake_steps: FakeSteps) -> None:
    env = ensure_env("litserve", tmp_path)
    (env / external.MARKER_NAME).unlink()  # e.g. an install that was killed half-way
    ensure_env("litserve", tmp_path)
    assert fake_steps.installs == 2


def test_callers_at_once_make_the_env_once(tmp_path: Path, fake_steps: FakeSteps) -> None:
    errors: list[BaseException] = []

    def make() -> None:
        try:
            ensure_env("mlserver", tmp_path)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert fake_steps.installs == 1


def test_a_failed_install_is_a_target_error_with_the_tail_of_pips_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = FakeSteps(pip_code=1)
    monkeypatch.setattr(external, "_spawn", steps)
    with pytest.raises(TargetError) as info:
        ensure_env("mlserver", tmp_path)
    message = str(info.value)
    assert "installing mlserver failed (exit code 1)" in message
    assert PIP_ERROR in message and "Collecting mlserver" in message
    assert "WARNING: Location" not in message  # the local index noise is dropped
    assert str(tmp_path / "mlserver-install.log") in message
    assert env_info("mlserver", tmp_path) == {}  # no marker: not taken for a made env
    steps.pip_code = 0
    monkeypatch.setattr(external, "_installed_versions", fake_versions)
    ensure_env("mlserver", tmp_path)  # the next call tries again
    assert steps.installs == 2


def test_an_env_that_pulls_in_torch_is_refused(
    tmp_path: Path, fake_steps: FakeSteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(external, "_installed_versions", lambda python: {"torch": "2.13.0", "litserve": "1"})
    with pytest.raises(TargetError, match="pulled in torch"):
        ensure_env("litserve", tmp_path)
    assert env_info("litserve", tmp_path) == {}


def test_the_env_folder_comes_from_the_environment(
    tmp_path: Path, fake_steps: FakeSteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(external.ENVS_DIR_ENV, str(tmp_path / "cache"))
    assert ensure_env("litserve") == tmp_path / "cache" / "litserve"


@pytest.mark.e2e
def test_a_fake_python_through_the_real_commands(tmp_path: Path) -> None:
    """The real subprocess path with a fake interpreter: venv made, pip fails -> the tail of its output."""
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0; fi\n'
        'if [ "$1 $2" = "-m pip" ]; then echo "Collecting litserve==0.2.19"; '
        f'echo "{PIP_ERROR}" >&2; exit 1; fi\n'
        "exit 2\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(TargetError) as info:
        ensure_env("litserve", tmp_path / "envs", python=str(fake))
    assert "installing litserve failed (exit code 1)" in str(info.value)
    assert PIP_ERROR in str(info.value) and "Collecting litserve==0.2.19" in str(info.value)
    assert os.access(tmp_path / "envs" / "litserve" / "bin" / "python", os.X_OK)  # the venv step ran


# -------------------------------------------------------------------------------- what each one serves


@pytest.mark.parametrize(
    ("server", "model", "fmt"),
    [
        ("mlserver", "iris-rf", "pickle"),
        ("mlserver", "iris-rf", "onnx"),
        ("mlserver", "iris-mlp", "onnx"),
        ("litserve", "iris-rf", "pickle"),
        ("litserve", "iris-rf", "onnx"),
        ("litserve", "iris-mlp", "onnx"),
    ],
)
def test_the_tabular_models_are_served(server: str, model: str, fmt: str) -> None:
    assert external_unsupported(server, model, fmt) is None


@pytest.mark.parametrize(
    ("server", "model", "fmt", "why"),
    [
        ("mlserver", "iris-mlp", "pickle", "scikit-learn only"),  # a torch pickle needs torch in the env
        ("litserve", "iris-mlp", "torchscript", "does not serve the torchscript format"),
        ("mlserver", "iris-mlp", "pt2", "does not serve the pt2 format"),
        ("mlserver", "resnet18", "onnx", "tabular models only"),
        ("litserve", "resnet50", "onnx", "tabular models only"),
        ("litserve", "iris-rf", "torchscript", "has no torchscript format"),
        ("mlserver", "nope", "onnx", "unknown model"),
        ("triton", "iris-rf", "onnx", "not a model server"),
    ],
)
def test_the_others_say_why_not(server: str, model: str, fmt: str, why: str) -> None:
    reason = external_unsupported(server, model, fmt)
    assert reason is not None and why in reason


def test_the_process_refuses_bad_options_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="tabular models only"):
        ExternalServerProcess("mlserver", "resnet18", "onnx", env_root=tmp_path).start()
    with pytest.raises(UsageError, match="workers must be an integer >= 1"):
        ExternalServerProcess("litserve", "iris-rf", "onnx", workers=0, env_root=tmp_path).start()
    with pytest.raises(UsageError, match="max_batch_size"):
        ExternalServerProcess("litserve", "iris-rf", "onnx", max_batch_size=-1, env_root=tmp_path).start()
    with pytest.raises(UsageError, match="port must be"):
        ExternalServerProcess("mlserver", "iris-rf", "pickle", port=70000, env_root=tmp_path).start()
    assert not (tmp_path / "mlserver").exists() and not (tmp_path / "litserve").exists()  # no env made


def test_the_scenario_and_url_of_each_server() -> None:
    ml = ExternalServerProcess("mlserver", "iris-rf", "pickle", port=8123)
    ls = ExternalServerProcess("litserve", "iris-rf", "onnx", port=8124)
    assert (ml.scenario, ml.url, ml.pid, ml.is_alive()) == ("oip", "http://127.0.0.1:8123", None, False)
    assert (ls.scenario, ls.url, ls.framework) == ("tabular", "http://127.0.0.1:8124", "litserve")
    assert ml.stop() is None  # never started: nothing to stop


def test_mlserver_gets_its_settings_from_our_options(tmp_path: Path) -> None:
    proc = ExternalServerProcess(
        "mlserver", "iris-rf", "pickle", workers=3, max_batch_size=8, max_queue_delay_us=500
    )
    proc._tmp = tmp_path  # what start() makes
    cmd = proc._command(Path("/envs/mlserver"), Path("/zoo/iris-rf/model.joblib"), 8123)
    assert cmd[:2] == ["/envs/mlserver/bin/mlserver", "start"]
    folder = Path(cmd[2])
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["http_port"] == 8123 and settings["parallel_workers"] == 3
    assert len({settings["http_port"], settings["grpc_port"], settings["metrics_port"]}) == 3
    model = json.loads((folder / "iris-rf" / "model-settings.json").read_text())
    assert model["name"] == "iris-rf" and model["implementation"] == "mlserver_sklearn.SKLearnModel"
    assert model["parameters"] == {
        "uri": "/zoo/iris-rf/model.joblib",
        "extra": {"predict_fn": "predict_proba"},
    }
    assert (model["max_batch_size"], model["max_batch_time"]) == (8, 0.0005)
    assert model["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert model["outputs"] == [{"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]}]

    onnx = ExternalServerProcess("mlserver", "iris-mlp", "onnx")  # no batching: MLServer's defaults
    onnx._tmp = tmp_path
    folder = Path(onnx._command(Path("/envs/mlserver"), Path("/zoo/iris-mlp/model.onnx"), 8124)[2])
    model = json.loads((folder / "iris-mlp" / "model-settings.json").read_text())
    assert model["implementation"] == f"{external.MLSERVER_ONNX_MODULE}.OnnxClassifier"
    assert "max_batch_size" not in model
    assert (folder / "iris-mlp" / f"{external.MLSERVER_ONNX_MODULE}.py").is_file()  # the runtime beside it


def test_litserve_gets_its_batching_and_workers_from_our_options(tmp_path: Path) -> None:
    proc = ExternalServerProcess(
        "litserve", "iris-rf", "onnx", workers=2, max_batch_size=4, max_queue_delay_us=2000
    )
    proc._tmp = tmp_path
    cmd = proc._command(Path("/envs/litserve"), Path("/zoo/iris-rf/model.onnx"), 8125)
    assert cmd[:2] == ["/envs/litserve/bin/python", str(external.DATA_DIR / "external_litserve_server.py")]
    args = dict(zip(cmd[2::2], cmd[3::2], strict=True))
    assert args == {
        "--artifact": "/zoo/iris-rf/model.onnx", "--format": "onnx", "--model": "iris-rf",
        "--classes": "setosa,versicolor,virginica", "--host": "127.0.0.1", "--port": "8125",
        "--workers": "2", "--max-batch-size": "4", "--batch-timeout-s": "0.002",
    }  # fmt: skip
    plain = ExternalServerProcess("litserve", "iris-rf", "onnx")
    plain._tmp = tmp_path
    assert "--max-batch-size" not in plain._command(Path("/e"), Path("/m.onnx"), 1)  # 0 or 1: one per call
