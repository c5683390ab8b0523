"""Security: pickles are unpickled only after their sha256 matched the manifest (a tampered file — here one
that would run code — is refused before a byte of it is executed, in-process and by a served target);
servers listen on 127.0.0.1 unless told otherwise; neither app runs in debug mode, even with FLASK_DEBUG set.
Tests that start processes are marked e2e.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from deploybench import paths
from deploybench.errors import TargetError
from deploybench.targets.predictors import load_predictor
from deploybench.targets.serve import ServerProcess, TargetConfig, bind_listener, server_command
from deploybench.targets.zoo import ArtifactError, build_zoo, load_manifest, sha256_file

PICKLES = {"iris-rf": "pickle", "iris-mlp": "pickle"}  # joblib (scikit-learn) and torch.save (nn.Module)


class _Payload:
    """Unpickling this creates a marker file: proof that code in a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (os.system, (f"touch {self.marker}",))


def tampered_zoo(tmp_path: Path, model: str) -> tuple[Path, Path]:
    """A copy of the zoo (manifest + this model's pickle) whose pickle was replaced by a malicious one."""
    src = paths.zoo_dir()
    build_zoo(src, models=[model], formats=["pickle"])
    manifest = load_manifest(src)
    key = f"{model}/pickle"
    entry = manifest["artifacts"][key]
    zoo = tmp_path / "zoo"
    (zoo / Path(entry["path"]).parent).mkdir(parents=True)
    manifest["artifacts"] = {key: entry}
    (zoo / "manifest.json").write_text(json.dumps(manifest))
    marker = tmp_path / "pwned"
    (zoo / entry["path"]).write_bytes(pickle.dumps(_Payload(marker)))
    assert sha256_file(zoo / entry["path"]) != entry["sha256"]
    return zoo, marker


@pytest.mark.parametrize("model", list(PICKLES))
def test_tampered_pickle_is_refused_before_it_runs(tmp_path: Path, model: str) -> None:
    zoo, marker = tampered_zoo(tmp_path, model)
    with pytest.raises(ArtifactError, match=r"refusing to unpickle .* sha256 .* does not match the manifest"):
        load_predictor(model, "pickle", zoo_dir=zoo)
    assert not marker.exists(), "the tampered pickle was executed"


@pytest.mark.e2e
def test_served_tampered_pickle_fails_fast_with_the_reason(tmp_path: Path) -> None:
    zoo, marker = tampered_zoo(tmp_path, "iris-rf")
    config = TargetConfig(
        framework="fastapi", server="uvicorn", model="iris-rf", format="pickle", zoo_dir=zoo
    )
    with pytest.raises(TargetError) as info:
        ServerProcess(config, ready_timeout_s=60).start()
    message = str(info.value)
    assert "does not match the manifest" in message
    assert "uvicorn" in message  # names the command
    assert not marker.exists()


def test_untampered_pickle_still_loads() -> None:
    zoo = paths.zoo_dir()
    build_zoo(zoo, models=["iris-rf"], formats=["pickle"])
    probs = load_predictor("iris-rf", "pickle", zoo_dir=zoo).predict(np.full((1, 4), 2.0, np.float32))
    assert probs.shape == (1, 3) and abs(float(probs.sum()) - 1.0) < 1e-5


# -- bind address --------------------------------------------------------------------------------------------
def _listen_addresses(pid: int) -> set[tuple[str, int]]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    out = set()
    for p in procs:
        for c in p.net_connections(kind="inet"):
            if c.status == psutil.CONN_LISTEN:
                out.add((c.laddr.ip, c.laddr.port))
    return out


def test_default_bind_is_loopback_only() -> None:
    import argparse

    from deploybench.commands import serve

    assert TargetConfig().host == "127.0.0.1"
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    assert parser.parse_args([]).host == "127.0.0.1"
    for server in ("uvicorn", "gunicorn-uvicorn", "gunicorn-sync", "gunicorn-gthread"):
        fw = "fastapi" if "uvicorn" in server else "flask"
        cmd = server_command(TargetConfig(framework=fw, server=server), 8000)
        assert "127.0.0.1" in " ".join(cmd) and "0.0.0.0" not in " ".join(cmd)
        assert not {"--reload", "--debug", "--use-colors"} & set(cmd)
        # as launched: the server serves the socket the launcher bound (to config.host) and binds nothing
        inherited = server_command(TargetConfig(framework=fw, server=server), 8000, fd=5)
        assert "0.0.0.0" not in " ".join(inherited) and "8000" not in " ".join(inherited)
        assert not {"--reload", "--debug", "--use-colors"} & set(inherited)
    with bind_listener(TargetConfig().host, 0) as sock:
        assert sock.getsockname()[0] == "127.0.0.1"


@pytest.mark.e2e
@pytest.mark.parametrize(("framework", "server"), [("flask", "gunicorn-sync"), ("fastapi", "uvicorn")])
def test_running_server_listens_on_loopback_only(framework: str, server: str) -> None:
    zoo = paths.zoo_dir()
    build_zoo(zoo, models=["iris-rf"], formats=["onnx"])
    config = TargetConfig(framework=framework, server=server, model="iris-rf", format="onnx", zoo_dir=zoo)
    with ServerProcess(config, ready_timeout_s=60) as proc:
        assert proc.pid is not None
        assert _listen_addresses(proc.pid) == {("127.0.0.1", proc.port)}
        # an unknown route is a JSON 404, never a debugger page
        r = httpx.get(f"{proc.url}/console", timeout=10)
        assert r.status_code == 404 and r.json()["error"] == "not-found"


# -- no debug mode -------------------------------------------------------------------------------------------
class _FailingPredictor:
    def predict(self, batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("secret internal detail")


def test_apps_are_never_in_debug_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from deploybench.targets import fastapi_app, flask_app
    from deploybench.targets.serve import server_env
    from deploybench.targets.service import Service

    monkeypatch.setenv("FLASK_DEBUG", "1")  # what a user might have in their shell
    assert "FLASK_DEBUG" not in server_env(TargetConfig())
    for module, fw in ((flask_app, "flask"), (fastapi_app, "fastapi")):
        cfg = TargetConfig(framework=fw, model="iris-rf")
        svc = Service(cfg, _FailingPredictor(), task="tabular", class_names=["a", "b", "c"])
        app = module.create_app(cfg, svc)
        assert app.debug is False, f"{fw} app runs in debug mode"
        if module is flask_app:
            r = app.test_client().post("/predict", json={"features": [1, 2, 3, 4]})
            status, text = r.status_code, r.get_data(as_text=True)
        else:
            client = TestClient(app, raise_server_exceptions=False)
            r = client.post("/predict", json={"features": [1, 2, 3, 4]})
            status, text = r.status_code, r.text
        assert status == 500
        assert json.loads(text) == {
            "error": "internal-error",
            "detail": "unexpected RuntimeError in the target",
        }
        assert "secret internal detail" not in text and "Traceback" not in text


def test_copy_of_zoo_is_independent(tmp_path: Path) -> None:
    """tampered_zoo never touches the real zoo."""
    zoo, _ = tampered_zoo(tmp_path, "iris-rf")
    real = load_manifest(paths.zoo_dir())["artifacts"]["iris-rf/pickle"]
    assert sha256_file(paths.zoo_dir() / real["path"]) == real["sha256"]
    shutil.rmtree(zoo)
