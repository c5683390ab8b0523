"""A user's own model file (``deploybench.targets.modelfile``), in-process: formats from extension and
contents, input shapes from the model or the options, classes, logits -> softmax, the pickle opt-in, both apps
serving it with identical JSON, the ``--model-file`` options and their one-line errors (exit code 2), compare
matrices with ``[[models]]`` / ``[[urls]]``, and the bench catalog. The models are made here, at run time; the
end-to-end tests (real servers, load, benchmarks, compare) are in tests/e2e/test_model_files_e2e.py and
test_compare_urls_e2e.py."""

from __future__ import annotations

import argparse
import base64
import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from deploybench.bench.profiles import PROFILES
from deploybench.bench.suite import UserBenchModel, predict_cases_for, zoo_models
from deploybench.commands.cli import main
from deploybench.commands.model_options import (
    add_model_file_arguments,
    model_file_options,
    user_model_from_args,
)
from deploybench.compare_doc import Choice, ChoiceResult, CompareRun, best_sentence, load_compare
from deploybench.decisions.compare.config import (
    CompareConfig,
    expand,
    inspect_models,
    load_config,
    user_catalog,
    zoo_catalog,
)
from deploybench.decisions.compare.driver import RealDriver
from deploybench.decisions.compare.run import run_choice
from deploybench.errors import UsageError
from deploybench.reports.compare_render import build_blocks
from deploybench.reports.render import blocks_to_markdown
from deploybench.targets.catalog import ArtifactError, sha256_file
from deploybench.targets.modelfile import (
    ModelFileError,
    UserModel,
    default_model_name,
    input_kind,
    inspect_user_model,
    parse_floats,
    parse_shape,
    resolve_format,
    sniff,
)
from deploybench.targets.predictors import quiet_jit_deprecation
from deploybench.targets.preprocess import ZOO_IMAGE_TRANSFORM, ImageTransform, InputError, validate_features
from deploybench.targets.serve import TargetConfig
from deploybench.targets.service import Service


class TinyImageNet(torch.nn.Module):
    """1 x 6 x 6 grayscale -> 4 logits (module level: torch.save pickles it by reference)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(36, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * 3.0


class Marker:
    """A pickle that creates a file when it is unpickled: what an attacker's pickle could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.touch, (self.path,))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import joblib  # import cost: scikit-learn and its converter, only for these files
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    d = tmp_path_factory.mktemp("model-files")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 5)).astype(np.float32)
    y = np.array(["ant", "bee", "cat"])[np.argmax(x[:, :3], axis=1)]
    clf = LogisticRegression(max_iter=200).fit(x, y)
    out = {"joblib": d / "tab.joblib", "onnx": d / "tab.onnx", "zipmap": d / "tab-zipmap.onnx"}
    joblib.dump(clf, out["joblib"])
    initial = [("input", FloatTensorType([None, 5]))]
    out["onnx"].write_bytes(
        to_onnx(clf, initial_types=initial, options={id(clf): {"zipmap": False}}).SerializeToString()
    )
    out["zipmap"].write_bytes(to_onnx(clf, initial_types=initial).SerializeToString())

    net = TinyImageNet().eval()
    with quiet_jit_deprecation(), torch.no_grad():
        traced = torch.jit.freeze(torch.jit.trace(net, torch.zeros(2, 1, 6, 6)).eval())
    out["torchscript"] = d / "img.torchscript"
    torch.jit.save(traced, str(out["torchscript"]))
    out["torch-pickle"] = d / "img.pth"
    torch.save(net, out["torch-pickle"])
    out["text"] = d / "notes.onnx"
    out["text"].write_text("not a model\n")
    out["marker-target"] = d / "pwned"
    out["evil"] = d / "evil.pkl"
    out["evil"].write_bytes(pickle.dumps(Marker(out["marker-target"]), protocol=4))
    out["labels"] = d / "labels.txt"
    out["labels"].write_text("zero\none\ntwo\nthree\n")
    return out


# -- formats: extension, --format, contents ------------------------------------------------------------------
def test_sniff_and_format_from_extension_or_option(files: dict[str, Path], tmp_path: Path) -> None:
    assert sniff(files["joblib"]) == "pickle" and sniff(files["onnx"]) == "onnx"
    assert sniff(files["torchscript"]) == "torchscript" and sniff(files["torch-pickle"]) == "torch-pickle"
    assert sniff(files["text"]) == "unknown"
    assert resolve_format(files["joblib"]) == "pickle"
    assert resolve_format(files["onnx"]) == "onnx"
    assert resolve_format(files["torchscript"]) == "torchscript"
    assert resolve_format(files["torch-pickle"]) == "pickle"  # .pth: told apart by its contents
    odd = tmp_path / "model.bin"
    odd.write_bytes(files["onnx"].read_bytes())
    with pytest.raises(ModelFileError, match=r"cannot tell the format of .*model\.bin.*--format onnx"):
        resolve_format(odd)
    assert resolve_format(odd, "onnx") == "onnx"


@pytest.mark.parametrize(
    ("key", "given", "message"),
    [
        ("text", None, r"is not a model file deploybench can read"),
        ("joblib", "onnx", r"is a pickle \(joblib\), not the onnx format given; use --format pickle"),
        ("onnx", "torchscript", r"is an ONNX model, not the torchscript format given"),
    ],
)
def test_a_file_that_is_no_model_or_not_the_format_given_is_refused(
    files: dict[str, Path], key: str, given: str | None, message: str
) -> None:
    with pytest.raises(ModelFileError, match=message) as info:
        resolve_format(files[key], given)
    assert "\n" not in str(info.value)


def test_an_extension_that_contradicts_the_contents_is_refused(
    files: dict[str, Path], tmp_path: Path
) -> None:
    liar = tmp_path / "model.onnx"
    liar.write_bytes(files["torchscript"].read_bytes())
    with pytest.raises(
        ModelFileError, match=r"extension \.onnx says onnx, but the file is a TorchScript archive"
    ):
        resolve_format(liar)


def test_option_parsers() -> None:
    assert parse_shape("64") == [64] and parse_shape("3x224x224") == [3, 224, 224]
    assert parse_shape("N,3,8,8") == [3, 8, 8]
    for bad in ("", "a,b", "3,0,4"):
        with pytest.raises(ModelFileError):
            parse_shape(bad)
    assert parse_floats("imagenet", "mean") == pytest.approx([0.485, 0.456, 0.406])
    assert parse_floats("0.5", "std") == [0.5]
    assert (
        input_kind([64]) == "tabular"
        and input_kind([3, 8, 8]) == "image"
        and input_kind([1, 8, 8]) == "image"
    )
    with pytest.raises(ModelFileError, match="not 2 channels"):
        input_kind([2, 8, 8])
    with pytest.raises(ModelFileError, match=r"tabular models .* and image models"):
        input_kind([8, 8])
    assert default_model_name("/x/my model.v2.onnx") == "my-model.v2"


# -- inspection ----------------------------------------------------------------------------------------------
def test_tabular_model_shape_and_classes_come_from_the_model(files: dict[str, Path]) -> None:
    sha = sha256_file(files["joblib"])
    um = UserModel("tab", {"pickle": str(files["joblib"]), "onnx": str(files["onnx"])}, trust_pickle=sha)
    info, predictors = inspect_user_model(um)
    assert (info.task, info.input_shape, info.shape_source) == ("tabular", [5], "model")
    assert (info.class_names, info.class_names_source) == (["ant", "bee", "cat"], "model")
    assert info.input_spec() == {"kind": "tabular", "n_features": 5}
    assert {f: i.output for f, i in info.files.items()} == {
        "pickle": "probabilities",
        "onnx": "probabilities",
    }
    assert info.files["pickle"].pickle_trusted and info.files["pickle"].sha256 == sha
    x = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_allclose(predictors["onnx"].predict(x), predictors["pickle"].predict(x), atol=1e-5)
    # a ZipMap conversion (skl2onnx's default) gives the same probabilities and its labels
    zinfo, zpred = inspect_user_model(UserModel("z", {"onnx": str(files["zipmap"])}))
    assert zinfo.class_names == ["ant", "bee", "cat"]
    np.testing.assert_allclose(zpred["onnx"].predict(x), predictors["pickle"].predict(x), atol=1e-5)


def test_torchscript_needs_a_shape_and_logits_get_a_softmax(files: dict[str, Path], tmp_path: Path) -> None:
    ts = str(files["torchscript"])
    with pytest.raises(
        ModelFileError, match=r"cannot infer the input shape .*--input-shape .*--sample-input"
    ):
        inspect_user_model(UserModel("img", {"torchscript": ts}))
    info, predictors = inspect_user_model(UserModel("img", {"torchscript": ts}, input_shape=[1, 6, 6]))
    assert (info.task, info.input_shape, info.shape_source) == ("image", [1, 6, 6], "input_shape")
    assert info.class_names == ["class_0", "class_1", "class_2", "class_3"]
    assert info.files["torchscript"].output == "logits"
    batch = np.random.default_rng(0).random((3, 1, 6, 6), dtype=np.float32)
    probs = predictors["torchscript"].predict(batch)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    logits = TinyImageNet().eval()(torch.from_numpy(batch)).detach().numpy()
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(logits), dim=1).numpy(), atol=1e-6)
    # a sample input gives the shape too; a labels file names the classes
    np.save(tmp_path / "x.npy", batch[0])
    info, _ = inspect_user_model(
        UserModel(
            "img", {"torchscript": ts}, sample_input=str(tmp_path / "x.npy"), labels_file=str(files["labels"])
        )
    )
    assert (info.input_shape, info.shape_source) == ([1, 6, 6], "sample_input")
    assert (info.class_names, info.class_names_source) == (["zero", "one", "two", "three"], "labels file")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_shape": [5]}, r"failed on a batch of shape \[2, 5\]"),
        ({"input_shape": [3, 6, 6]}, r"failed on a batch"),
        ({"input_shape": [1, 6, 6], "labels_file": "labels3"}, r"has 3 names; the model has 4 classes"),
        ({"input_shape": [1, 6, 6], "mean": [0.1, 0.2]}, r"mean needs 1 value \(one per channel\), got 2"),
    ],
)
def test_inputs_and_labels_that_do_not_fit_the_model_are_refused(
    files: dict[str, Path], tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    if kwargs.get("labels_file") == "labels3":
        (tmp_path / "l3.txt").write_text("a\nb\nc\n")
        kwargs = {**kwargs, "labels_file": str(tmp_path / "l3.txt")}
    with pytest.raises(ModelFileError, match=message):
        inspect_user_model(UserModel("img", {"torchscript": str(files["torchscript"])}, **kwargs))


def test_a_given_shape_must_fit_the_declared_one(files: dict[str, Path]) -> None:
    with pytest.raises(
        ModelFileError, match=r"--input-shape 6 \(\[N, 6\]\) does not fit tab\.onnx, which takes \[N, 5\]"
    ):
        inspect_user_model(UserModel("tab", {"onnx": str(files["onnx"])}, input_shape=[6]))


# -- the pickle opt-in ---------------------------------------------------------------------------------------
def test_a_users_pickle_is_refused_without_the_opt_in_and_never_unpickled(files: dict[str, Path]) -> None:
    marker = files["marker-target"]
    um = UserModel("evil", {"pickle": str(files["evil"])})
    with pytest.raises(ArtifactError) as info:
        inspect_user_model(um)
    text = str(info.value)
    assert "refusing to unpickle" in text and "take over the process" in text and "--trust-pickle" in text
    assert sha256_file(files["evil"]) in text  # the hash to check and give, if the user trusts the file
    assert not marker.exists()  # nothing ran
    wrong = UserModel("evil", {"pickle": str(files["evil"])}, trust_pickle="0" * 64)
    with pytest.raises(
        ArtifactError, match=r"its sha256 is [0-9a-f]{64}, not the 0{64} given with --trust-pickle"
    ):
        inspect_user_model(wrong)
    assert not marker.exists()
    with pytest.raises(ModelFileError, match="64 hex digits"):
        UserModel("evil", {"pickle": str(files["evil"])}, trust_pickle="yes").check()


def test_a_trusted_torch_module_pickle_loads_and_says_so(files: dict[str, Path]) -> None:
    path = files["torch-pickle"]
    um = UserModel(
        "img", {"pickle": str(path)}, input_shape=[1, 6, 6], trust_pickle=sha256_file(path).upper()
    )
    info, predictors = inspect_user_model(um)
    assert info.files["pickle"].pickle_trusted and info.files["pickle"].runtime == "torch-pickle"
    assert predictors["pickle"].predict(np.zeros((1, 1, 6, 6), np.float32)).shape == (1, 4)


# -- served: both apps, identical JSON -----------------------------------------------------------------------
def _clients(config_kwargs: dict[str, Any]) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from deploybench.targets import fastapi_app, flask_app

    out = {}
    for module, fw in ((flask_app, "flask"), (fastapi_app, "fastapi")):
        cfg = TargetConfig(framework=fw, **config_kwargs)
        app = module.create_app(cfg, Service.load(cfg))
        out[fw] = app.test_client() if module is flask_app else TestClient(app)
    return out


def _json(resp: Any) -> Any:
    return json.loads(resp.data if hasattr(resp, "data") else resp.content)


def test_both_apps_serve_a_tabular_model_file_with_identical_answers(files: dict[str, Path]) -> None:
    clients = _clients({"model_file": str(files["onnx"])})
    bodies: dict[str, list[Any]] = {}
    for fw, client in clients.items():
        health = _json(client.get("/health"))
        assert (health["model"], health["format"], health["task"]) == ("tab", "onnx", "tabular")
        assert health["input"] == {"kind": "tabular", "n_features": 5} and health["n_classes"] == 3
        assert health["model_file"]["sha256"] == sha256_file(files["onnx"])
        ok = client.post("/predict", json={"instances": [[-1.5, 0, 2, 1e5, -3], [0.1] * 5]})
        one = client.post("/predict", json={"features": [1, 2, 3, 4, 5]})
        short = client.post("/predict", json={"instances": [[1, 2, 3, 4]]})
        image = client.post("/predict/image/base64", json={"image": "AAAA"})
        doc = _json(client.get("/openapi.json"))
        assert [ok.status_code, one.status_code, short.status_code, image.status_code] == [200, 200, 422, 409]
        row = doc["components"]["schemas"]["InstancesRequest"]["properties"]["instances"]["items"]
        assert (row["minItems"], row["items"]["minimum"]) == (5, -1e6)
        bodies[fw] = [_json(ok), _json(one), _json(short), _json(image), doc["paths"]]
    assert bodies["flask"] == bodies["fastapi"]
    ok, _one, short, image, _paths = bodies["flask"]
    assert len(ok["predictions"]) == 2 and {"prediction", "class_id", "confidence"} <= set(
        ok["predictions"][0]
    )
    assert set(ok["predictions"][0]["probabilities"]) == {"ant", "bee", "cat"}
    assert short == {"error": "invalid-features", "detail": "instances[0] must have exactly 5 numbers, got 4"}
    assert image["error"] == "wrong-model-kind"


def test_both_apps_serve_a_grayscale_image_model_file(files: dict[str, Path]) -> None:
    clients = _clients(
        {
            "model_file": str(files["torchscript"]),
            "input_shape": [1, 6, 6],
            "labels_file": str(files["labels"]),
        }
    )
    buf = io.BytesIO()
    Image.fromarray(np.arange(100, dtype=np.uint8).reshape(10, 10)).convert("RGB").save(buf, format="PNG")
    payload = {"image": base64.b64encode(buf.getvalue()).decode()}
    answers = {}
    for fw, client in clients.items():
        health = _json(client.get("/health"))
        assert health["input"] == {"kind": "image", "shape": [1, 6, 6]}
        assert health["model_file"]["output"] == "logits (softmax applied)"
        r = client.post("/predict/image/base64", json=payload)
        assert r.status_code == 200
        body = _json(r)
        body.pop("inference_time_ms")
        answers[fw] = body
    assert answers["flask"] == answers["fastapi"]
    assert answers["flask"]["top_class"] in ("zero", "one", "two", "three")
    assert sum(item["probability"] for item in answers["flask"]["top_5"]) == pytest.approx(1.0, abs=1e-6)


def test_image_transform_grayscale_straight_resize_and_the_zoo_default() -> None:
    img = Image.fromarray(np.full((20, 30, 3), 255, dtype=np.uint8))
    t = ImageTransform(height=4, width=5, channels=1, mean=(0.5,), std=(0.25,), resize_px=None)
    out = t(img)
    assert out.shape == (1, 4, 5) and np.allclose(out, (1.0 - 0.5) / 0.25)
    assert ZOO_IMAGE_TRANSFORM.shape == (3, 224, 224) and ZOO_IMAGE_TRANSFORM.resize_px == 256
    with pytest.raises(ValueError, match="smaller than"):
        ImageTransform(height=8, width=8, resize_px=4)


def test_negative_features_only_for_a_users_model() -> None:
    with pytest.raises(InputError, match="a length in cm"):
        validate_features({"features": [-1, 0, 0, 0]}, max_batch=4)
    batch, _ = validate_features({"features": [-1, 0, 0]}, max_batch=4, n_features=3, allow_negative=True)
    assert batch.tolist() == [[-1, 0, 0]]
    with pytest.raises(InputError, match="between -1e\\+06 and 1e\\+06"):
        validate_features({"features": [-2e6, 0, 0]}, max_batch=4, n_features=3, allow_negative=True)


# -- TargetConfig and the command-line options ---------------------------------------------------------------
def test_target_config_takes_name_and_format_from_the_file_and_round_trips(files: dict[str, Path]) -> None:
    cfg = TargetConfig(framework="flask", model_file=str(files["onnx"]))
    assert (cfg.model, cfg.format, cfg.server) == ("tab", "onnx", "gunicorn-sync")
    cfg.validate()
    again = TargetConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))  # how the worker receives it
    assert again == cfg
    assert TargetConfig().model == "iris-rf" and TargetConfig().format == "onnx"  # the zoo default is kept
    with pytest.raises(UsageError, match="refusing to unpickle"):
        TargetConfig(model_file=str(files["joblib"])).validate()


def _parse(argv: list[str], several: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--format")
    add_model_file_arguments(parser, several=several)
    return parser.parse_args(argv)


def test_model_file_options_become_target_config_arguments(files: dict[str, Path]) -> None:
    opts = model_file_options(
        _parse(["--model-file", str(files["torchscript"]), "--input-shape", "1,6,6", "--mean", "0.5",
                "--std", "0.25", "--labels", str(files["labels"]), "--model-name", "mine"])
    )  # fmt: skip
    assert (opts["model"], opts["format"], opts["input_shape"], opts["mean"]) == (
        "mine",
        "torchscript",
        [1, 6, 6],
        [0.5],
    )
    cfg = TargetConfig(framework="fastapi", **opts)
    assert cfg.user_model().target_options("torchscript") == opts
    assert model_file_options(_parse([])) == {}
    with pytest.raises(UsageError, match=r"--input-shape is about a model file: add --model-file PATH"):
        model_file_options(_parse(["--input-shape", "3"]))
    um = user_model_from_args(
        _parse(["--model-file", str(files["onnx"]), "--model-file", str(files["joblib"]),
                "--trust-pickle", sha256_file(files["joblib"])], several=True)
    )  # fmt: skip
    assert um is not None and set(um.files) == {"onnx", "pickle"} and um.name == "tab"


@pytest.mark.parametrize(
    ("key", "extra", "message"),
    [
        ("text", [], "is not a model file deploybench can read"),
        ("onnx", ["--format", "pickle"], "is an ONNX model, not the pickle format given"),
        ("torchscript", [], "cannot infer the input shape"),
        ("joblib", [], "refusing to unpickle"),
        ("onnx", ["--model", "iris-rf"], "give --model (a zoo model) or --model-file (yours), not both"),
    ],
)
def test_serve_refuses_bad_model_files_with_one_line_and_exit_2(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], key: str, extra: list[str], message: str
) -> None:
    """Refused while inspecting, before any server process starts (this is an in-process test)."""
    assert main(["serve", "--model-file", str(files[key]), "--port", "0", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


# -- compare: [[models]] and [[urls]] ------------------------------------------------------------------------
def test_compare_matrix_with_model_files_and_urls(files: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tab.onnx").write_bytes(files["onnx"].read_bytes())
    toml = tmp_path / "sub" / "mine.toml"
    toml.write_text(
        f"""
name = "mine"
[matrix]
framework = ["fastapi", "flask"]
server = ["uvicorn", "gunicorn-sync"]
format = ["pt2"]
[[models]]
name = "tab"
files = {{ onnx = "../models/tab.onnx", pickle = "{files["joblib"]}" }}
trust_pickle = "{sha256_file(files["joblib"])}"
[[urls]]
name = "current"
url = "http://127.0.0.1:9"
"""
    )
    cfg = load_config(str(toml))
    assert cfg.matrix.model == ["tab"]  # [[models]] without [matrix] model: only yours
    assert Path(cfg.models[0].files["onnx"]).resolve() == (tmp_path / "models" / "tab.onnx").resolve()
    infos = inspect_models(cfg)
    catalog = {**zoo_catalog(), **user_catalog(infos)}
    choices, _skipped, scenario = expand(cfg, catalog, {"current": "tabular"})
    assert scenario == "tabular"
    # every file of the model is a choice, whatever [matrix] format says; the URL comes last
    assert [c.id for c in choices] == [
        "fastapi-uvicorn-tab-pickle-w1", "fastapi-uvicorn-tab-onnx-w1",
        "flask-gunicorn-sync-tab-pickle-w1", "flask-gunicorn-sync-tab-onnx-w1", "url-current",
    ]  # fmt: skip
    assert choices[-1].external and choices[-1].label == "current (external, http://127.0.0.1:9)"
    with pytest.raises(UsageError, match="mixes tabular and image"):
        expand(cfg, catalog, {"current": "image"})
    # relative paths are relative to the matrix file
    toml.write_text('[[models]]\nfiles = ["../x/model.onnx"]\n')
    with pytest.raises(UsageError, match=r"\[\[models\]\] #1: model file .*sub/\.\./x/model\.onnx not found"):
        load_config(str(toml))
    with pytest.raises(UsageError, match="is a zoo model's"):
        CompareConfig.from_dict({"models": [{"name": "iris-rf", "files": {"onnx": str(files["onnx"])}}]})
    with pytest.raises(UsageError, match="url must start with http"):
        CompareConfig.from_dict({"urls": [{"name": "x", "url": "ftp://x"}]})


def test_driver_plans_requests_for_a_users_model(files: dict[str, Path], tmp_path: Path) -> None:
    """A user's tabular model gets generated rows of its width (the api scenario); a zoo model keeps its
    scenario; an image model gets images of its input size."""
    cfg = CompareConfig.from_dict({"models": [{"name": "tab", "files": {"onnx": str(files["onnx"])}}]})
    driver = RealDriver(cfg, "tabular", tmp_path / "zoo", tmp_path / "out", model_infos=inspect_models(cfg))
    driver._plan_load("tab", {"kind": "tabular", "n_features": 5}, None)
    assert driver._load_scenario == "api" and driver._scenario_options["path"] == "/predict"
    lines = Path(driver._scenario_options["payload"]).read_text().splitlines()
    assert len(lines) == 64 and all(len(json.loads(line)["features"]) == 5 for line in lines)
    zoo = RealDriver(cfg, "tabular", tmp_path / "zoo", tmp_path / "out")
    zoo._plan_load("iris-rf", {"kind": "tabular", "n_features": 4}, None)
    assert (zoo._load_scenario, zoo._scenario_options) == ("tabular", {})
    img = RealDriver(cfg, "image", tmp_path / "zoo", tmp_path / "out")
    img._plan_load("cnn", {"kind": "image", "shape": [3, 8, 12]}, None)
    assert (img._load_scenario, img._scenario_options) == ("image", {"image_size": "12x8"})


def test_an_external_choice_is_never_stopped_and_reports_no_server_cpu(tmp_path: Path) -> None:
    from deploybench.record import RunRecord, Series

    class External:
        url, pid, health = "http://127.0.0.1:9", None, {"model": "digits", "framework": "flask"}

        def is_alive(self) -> bool:
            return True

    class Driver:
        stopped = False

        def start(self, choice: Choice, log_path: Path) -> Any:
            import contextlib

            @contextlib.contextmanager
            def cm() -> Any:
                yield External()

            return cm()

        def load(
            self, target: Any, *, record_path: Path, rate_rps: float | None = None, **kw: Any
        ) -> RunRecord:
            rate = rate_rps or 100.0
            s = Series("POST /predict", count=int(rate), latency_us={"p50": 900, "p99": 2000}, duration_s=1.0,
                       throughput_rps=rate, offered_rps=rate_rps)  # fmt: skip
            rec = RunRecord("load", {}, {}, series=[s])
            rec.finish()
            rec.save(record_path)
            return rec

    cfg = CompareConfig.from_dict({"urls": [{"name": "cur", "url": "http://127.0.0.1:9"}],
                                   "search": {"max_probes": 2}, "measure": {"stability_windows": 1,
                                                                              "max_windows": 1}})  # fmt: skip
    choice = Choice("", "", "", "", url="http://127.0.0.1:9", name="cur")
    result = ChoiceResult(choice)
    run_choice(choice, cfg, Driver(), tmp_path, result, lambda: None)
    assert result.status == "complete", result.error
    assert result.server_log is None and result.server_affinity is None
    assert result.common is not None and result.common["server_cpu_percent"] is None
    assert result.target_health == {"model": "digits", "framework": "flask"}
    run = CompareRun(config=cfg.to_dict(), scenario="tabular", env={}, results=[result])
    run.save(tmp_path / "compare.json")
    again = load_compare(tmp_path)
    assert again.results[0].choice == choice and again.results[0].target_health == result.target_health
    md = blocks_to_markdown(build_blocks(again, plots=False))
    assert "## External choices" in md and "`url-cur`: http://127.0.0.1:9 — already running" in md


def test_best_sentence_when_no_search_found_a_failing_rate() -> None:
    """Both choices passed every probe (no resolution): still one sentence (this raised TypeError)."""
    results = []
    for fmt, rps in (("onnx", 1000.0), ("pickle", 500.0)):
        r = ChoiceResult(Choice("fastapi", "uvicorn", "m", fmt), status="complete")
        r.saturation = {"max_rps": rps, "resolution": None}
        results.append(r)
    text = best_sentence(results, 50_000)
    assert "100% (500 rps) more than the runner-up" in text and "m/pickle" in text


# -- bench ---------------------------------------------------------------------------------------------------
def test_bench_takes_a_users_model_like_a_zoo_model(files: dict[str, Path]) -> None:
    um = UserModel("img", {"torchscript": str(files["torchscript"])}, input_shape=[1, 6, 6])
    info, _ = inspect_user_model(um)
    ubm = UserBenchModel.from_info(um, info)
    again = UserBenchModel.from_dict(json.loads(json.dumps(ubm.to_dict())))
    assert again == ubm and zoo_models({"img": ubm})["img"].task == "image"
    profile = PROFILES["tiny"].__class__(**{**PROFILES["tiny"].to_dict(), "models": ("img",)})
    cases = predict_cases_for(profile, None, {"img": ubm})
    assert [c.id for c in cases] == ["predict/img/torchscript/b1/t1"]
    probs = ubm.predictor("torchscript").predict(ubm.batch(3))
    assert probs.shape == (3, 4) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)  # softmax applied
