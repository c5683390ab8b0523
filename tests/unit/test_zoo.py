"""Model zoo: models, export formats, manifest, predictors and the `deploybench build` command.

Cross-format parity uses the shared default zoo (fixture ``zoo_dir``); builds that must start from a known
state (tampering, skipping, interruption, user weights) go to tmp dirs with the smallest models/formats.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deploybench.commands.cli import main
from deploybench.errors import UsageError
from deploybench.targets import zoo
from deploybench.targets.catalog import (
    QUANTIZED_FORMATS,
    artifact_relpath,
    check_format,
    missing_format_reason,
)
from deploybench.targets.predictors import PREDICTOR_CLASSES, load_predictor, open_predictor
from deploybench.targets.zoo import (
    MODELS,
    SEEDED_RANDOM,
    AgreementError,
    ArtifactError,
    ParityError,
    build_reference,
    build_zoo,
    load_manifest,
    reference_predict,
    sample_inputs,
    sha256_file,
)

ALL_ARTIFACTS = [(m, f) for m, spec in MODELS.items() for f in spec.formats]


# ---------------------------------------------------------------------------------------------- specs


def test_model_specs_follow_the_contract() -> None:
    assert set(MODELS) == {"iris-rf", "iris-mlp", "resnet18", "resnet50"}
    assert MODELS["iris-rf"].formats == ("pickle", "onnx")
    for name in ("iris-mlp", "resnet18", "resnet50"):
        assert MODELS[name].formats == ("pickle", "onnx", "onnx-int8", "torchscript", "pt2")
    for name in ("iris-rf", "iris-mlp"):
        assert MODELS[name].task == "tabular"
        assert MODELS[name].input_shape == (4,)
        assert MODELS[name].class_names == ["setosa", "versicolor", "virginica"]
    for name in ("resnet18", "resnet50"):
        spec = MODELS[name]
        assert spec.task == "image"
        assert spec.input_shape == (3, 224, 224)
        assert spec.n_classes == 1000
        assert spec.class_names[0] == "tench"
        assert spec.class_names[999] == "toilet paper"
    # every artifact has a predictor (the table may map more: PREDICTOR_CLASSES is predictors.py's)
    assert {(MODELS[m].library, f) for m, f in ALL_ARTIFACTS} <= set(PREDICTOR_CLASSES)


def test_sample_inputs_are_deterministic_float32_batches() -> None:
    iris = sample_inputs("iris-rf", 5, seed=1)
    assert iris.shape == (5, 4)
    assert iris.dtype == np.float32
    assert np.array_equal(iris, sample_inputs("iris-mlp", 5, seed=1))
    img = sample_inputs("resnet18", 2, seed=3)
    assert img.shape == (2, 3, 224, 224)
    assert img.dtype == np.float32
    assert img.flags.c_contiguous
    assert np.array_equal(img, sample_inputs("resnet18", 2, seed=3))
    assert not np.array_equal(img, sample_inputs("resnet18", 2, seed=4))
    # normalised pixels: (0 - mean)/std .. (1 - mean)/std
    assert img.min() >= (0 - 0.485) / 0.229 - 1e-5
    assert img.max() <= (1 - 0.406) / 0.225 + 1e-5
    with pytest.raises(ArtifactError, match="unknown model"):
        sample_inputs("vgg16", 1)


def test_iris_rows_match_sklearn() -> None:
    from sklearn.datasets import load_iris

    x, y = zoo._iris()
    data = load_iris()
    assert np.array_equal(x, data.data.astype(np.float32))
    assert np.array_equal(y, data.target)


# ---------------------------------------------------------------------------------------------- resnet


TORCHVISION_KEYS = {
    "resnet18": [
        "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
        "bn1.num_batches_tracked", "layer1.0.conv1.weight", "layer1.0.bn2.running_var",
        "layer1.1.conv2.weight", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean",
        "layer3.1.bn1.bias", "layer4.0.downsample.1.weight", "layer4.1.conv2.weight", "fc.weight", "fc.bias",
    ],
    "resnet50": [
        "conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.0.conv3.weight",
        "layer1.0.bn3.weight", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.num_batches_tracked",
        "layer1.2.conv3.weight", "layer2.3.bn2.bias", "layer3.5.conv3.weight", "layer4.0.downsample.0.weight",
        "layer4.2.bn3.running_mean", "fc.weight", "fc.bias",
    ],
}  # fmt: skip
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet50": 25_557_032}
TORCHVISION_STATE_KEYS = {"resnet18": 122, "resnet50": 320}
TORCHVISION_SHAPES = {
    "resnet18": {"conv1.weight": (64, 3, 7, 7), "layer2.0.downsample.0.weight": (128, 64, 1, 1),
                 "fc.weight": (1000, 512)},
    "resnet50": {"layer1.0.conv3.weight": (256, 64, 1, 1), "layer2.0.conv2.weight": (128, 128, 3, 3),
                 "fc.weight": (1000, 2048)},
}  # fmt: skip


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_state_dict_uses_torchvision_names(name: str) -> None:
    from deploybench.targets.resnet import ARCHITECTURES

    net = ARCHITECTURES[name]()
    state = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == TORCHVISION_PARAMS[name]
    assert len(state) == TORCHVISION_STATE_KEYS[name]
    missing = [k for k in TORCHVISION_KEYS[name] if k not in state]
    assert not missing
    for key, shape in TORCHVISION_SHAPES[name].items():
        assert tuple(state[key].shape) == shape


# ---------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("model", list(MODELS))
def test_every_format_gives_the_same_probabilities(zoo_dir: Path, model: str) -> None:
    spec = MODELS[model]
    batch = sample_inputs(model, 4, seed=7)  # not the build's parity batch
    ref, _ = build_reference(model)
    expected = reference_predict(spec, ref, batch)
    top2 = np.sort(expected, axis=1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > 1e-3  # argmax only compared where it is not a near-tie
    for fmt in spec.formats:
        if fmt in QUANTIZED_FORMATS:  # no parity tolerance: see test_int8_agrees_with_its_float32_source
            continue
        predictor = load_predictor(model, fmt, zoo_dir, intra_op_threads=1)
        got = predictor.predict(batch)
        # The reference is recomputed here, maybe with another torch thread count than the build's
        # (float32 reductions then differ in the last bits): 1e-5 is the floor.
        tol = max(zoo.tolerance(spec, fmt), 1e-5)
        assert got.shape == (4, spec.n_classes), fmt
        assert got.dtype == np.float32, fmt
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-4, err_msg=fmt)
        assert float(np.max(np.abs(got - expected))) <= tol, fmt
        assert np.array_equal(got.argmax(axis=1)[decisive], expected.argmax(axis=1)[decisive]), fmt
        # a batch of one works too (dynamic batch axis) and matches the same row of the batch
        single = predictor.predict(batch[2:3])
        assert single.shape == (1, spec.n_classes), fmt
        assert float(np.max(np.abs(single[0] - expected[2]))) <= tol, fmt
    if spec.task == "tabular":  # a trained model: right on (almost) all of the iris rows sampled
        x, y = zoo._iris()
        preds = load_predictor(model, spec.formats[-1], zoo_dir).predict(x).argmax(axis=1)
        assert float(np.mean(preds == y)) >= 0.9


def test_manifest_describes_every_artifact(zoo_dir: Path) -> None:
    manifest = load_manifest(zoo_dir)
    assert manifest["schema_version"] == zoo.MANIFEST_SCHEMA_VERSION
    for model, fmt in ALL_ARTIFACTS:
        entry = manifest["artifacts"][f"{model}/{fmt}"]
        path = zoo_dir / entry["path"]
        assert entry["model"] == model and entry["format"] == fmt
        assert entry["size_bytes"] == path.stat().st_size > 0
        assert entry["sha256"] == sha256_file(path)
        assert entry["export_s"] > 0
        assert entry["versions"]["numpy"] and entry["versions"]["python"]
        if fmt in QUANTIZED_FORMATS:  # checked against its float32 source, not the reference model
            assert "parity" not in entry
            assert entry["source"]["format"] == QUANTIZED_FORMATS[fmt]
            assert entry["source"]["sha256"] == manifest["artifacts"][f"{model}/onnx"]["sha256"]
            assert entry["agreement"]["top1_agreement"] >= entry["agreement"]["top1_floor"] == 0.9
            assert entry["size_bytes"] < entry["source"]["size_bytes"]
            continue
        assert entry["parity"]["max_abs_diff"] <= entry["parity"]["tolerance"]
        assert entry["parity"]["batch_size"] == zoo.PARITY_BATCH
    for model, spec in MODELS.items():
        info = manifest["models"][model]
        assert info["class_names_count"] == spec.n_classes
        assert info["input_shape"] == list(spec.input_shape)
    assert manifest["models"]["iris-rf"]["accuracy"]["test"] >= 0.9
    assert manifest["models"]["iris-mlp"]["accuracy"]["test"] >= 0.9
    assert manifest["models"]["resnet18"]["weights"] == SEEDED_RANDOM
    assert manifest["models"]["resnet50"]["weights"] == SEEDED_RANDOM
    assert manifest["models"]["resnet50"]["n_parameters"] == TORCHVISION_PARAMS["resnet50"]
    for ext in ("*.onnx.data", "*.data", ".tmp*"):  # ONNX weights inline, no leftovers
        assert not list(zoo_dir.glob(f"*/{ext}"))


# ---------------------------------------------------------------------------------------------- weights


def _seeded_resnet18_state(seed: int) -> dict:
    import torch

    from deploybench.targets.resnet import resnet18

    torch.manual_seed(seed)
    net = resnet18()
    with torch.no_grad():  # non-trivial BN statistics, so they must be loaded too
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return net.state_dict()


def test_user_weights_round_trip_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    from deploybench.targets.resnet import SoftmaxHead, resnet18

    state = _seeded_resnet18_state(123)
    weights = tmp_path / "resnet18-user.pth"
    torch.save(state, weights)
    zoo_root = tmp_path / "zoo"
    argv = ["build", "--models", "resnet18", "--formats", "pickle", "--zoo-dir", str(zoo_root), "--quiet"]
    assert main([*argv, "--weights", f"resnet18={weights}"]) == 0
    assert "resnet18  pickle" in capsys.readouterr().out

    net = resnet18()
    net.load_state_dict(state)
    expected_model = SoftmaxHead(net).eval()
    batch = sample_inputs("resnet18", 2, seed=5)
    expected = reference_predict(MODELS["resnet18"], expected_model, batch)
    got = load_predictor("resnet18", "pickle", zoo_root).predict(batch)
    assert float(np.max(np.abs(got - expected))) <= 1e-6
    seeded = reference_predict(MODELS["resnet18"], build_reference("resnet18")[0], batch)
    assert float(np.max(np.abs(got - seeded))) > 1e-3  # the user's weights were used, not the seeded ones

    info = load_manifest(zoo_root)["models"]["resnet18"]
    assert info["weights"] == {"file": str(weights), "sha256": sha256_file(weights)}
    # the same weights again: up to date; no weights: the options differ, so it is rebuilt seeded-random
    assert build_zoo(zoo_root, ["resnet18"], ["pickle"], weights={"resnet18": weights})["built"] == []
    assert build_zoo(zoo_root, ["resnet18"], ["pickle"])["built"] == ["resnet18/pickle"]
    assert load_manifest(zoo_root)["models"]["resnet18"]["weights"] == SEEDED_RANDOM


def test_wrong_weights_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    r18 = tmp_path / "r18.pth"
    torch.save(_seeded_resnet18_state(1), r18)
    expected = r"does not fit resnet50.*missing keys.*shape mismatches: fc\.weight"
    with pytest.raises(ArtifactError, match=expected):
        build_zoo(tmp_path / "zoo", ["resnet50"], ["pickle"], weights={"resnet50": r18})
    assert not (tmp_path / "zoo" / "resnet50" / "model.pkl").exists()

    garbage = tmp_path / "notes.pth"
    garbage.write_text("not a checkpoint")
    zoo_arg = ["--zoo-dir", str(tmp_path / "zoo")]
    assert main(["build", "--models", "resnet18", "--weights", f"resnet18={garbage}", *zoo_arg]) == 2
    assert "cannot read weights file" in capsys.readouterr().err
    assert main(["build", "--models", "resnet18", "--weights", f"resnet18={tmp_path / 'nope.pth'}"]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(ArtifactError, match="not in this build"):
        build_zoo(tmp_path / "zoo", ["resnet18"], ["pickle"], weights={"resnet50": r18})


# ---------------------------------------------------------------------------------------------- build / load


def test_tampered_pickle_is_refused_and_rebuilt(tmp_path: Path) -> None:
    build_zoo(tmp_path, ["iris-rf"], ["pickle"])
    entry = load_manifest(tmp_path)["artifacts"]["iris-rf/pickle"]
    path = tmp_path / entry["path"]
    with open(path, "ab") as fh:
        fh.write(b"\x00")
    with pytest.raises(ArtifactError, match="refusing to unpickle") as excinfo:
        load_predictor("iris-rf", "pickle", tmp_path)
    message = str(excinfo.value)
    assert str(path) in message
    assert entry["sha256"] in message
    assert sha256_file(path) in message
    with pytest.raises(ArtifactError, match="no expected sha256"):
        open_predictor("iris-rf", "pickle", path)
    # a rebuild notices the hash mismatch and replaces the file
    assert build_zoo(tmp_path, ["iris-rf"], ["pickle"])["built"] == ["iris-rf/pickle"]
    assert load_predictor("iris-rf", "pickle", tmp_path).predict(sample_inputs("iris-rf", 3)).shape == (3, 3)


def test_missing_or_unknown_artifacts_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no zoo manifest"):
        load_predictor("iris-rf", "pickle", tmp_path)
    build_zoo(tmp_path, ["iris-rf"], ["pickle"])
    with pytest.raises(ArtifactError, match=r"no iris-rf onnx artifact.*deploybench build --models iris-rf"):
        load_predictor("iris-rf", "onnx", tmp_path)
    with pytest.raises(ArtifactError, match="has no torchscript format"):
        load_predictor("iris-rf", "torchscript", tmp_path)
    with pytest.raises(ArtifactError, match="unknown model 'vgg16'"):
        load_predictor("vgg16", "onnx", tmp_path)
    with pytest.raises(ArtifactError, match="unknown format 'tflite'"):
        load_predictor("iris-rf", "tflite", tmp_path)
    (tmp_path / "iris-rf" / "model.joblib").unlink()
    with pytest.raises(ArtifactError, match="is missing"):
        load_predictor("iris-rf", "pickle", tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="cannot read zoo manifest"):
        load_predictor("iris-rf", "pickle", tmp_path)
    assert issubclass(ArtifactError, UsageError)


def test_rebuild_skips_up_to_date_artifacts(tmp_path: Path) -> None:
    events: list[tuple[str, str]] = []
    first = build_zoo(tmp_path, ["iris-rf"], progress=lambda e: events.append((e["event"], e["format"])))
    assert first["built"] == ["iris-rf/pickle", "iris-rf/onnx"]
    assert events == [("start", "pickle"), ("built", "pickle"), ("start", "onnx"), ("built", "onnx")]
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "iris-rf").iterdir()}
    second = build_zoo(tmp_path, ["iris-rf"])
    assert second["built"] == [] and second["skipped"] == ["iris-rf/pickle", "iris-rf/onnx"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "iris-rf").iterdir()} == mtimes
    forced = build_zoo(tmp_path, ["iris-rf"], ["onnx"], force=True)
    assert forced["built"] == ["iris-rf/onnx"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["artifacts"]) == {"iris-rf/pickle", "iris-rf/onnx"}


def test_interrupted_build_keeps_finished_artifacts(tmp_path: Path) -> None:
    def interrupt_after_first(event: dict) -> None:
        if event["event"] == "built":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_zoo(tmp_path, ["iris-rf"], progress=interrupt_after_first)
    assert set(load_manifest(tmp_path)["artifacts"]) == {"iris-rf/pickle"}
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp")]
    resumed = build_zoo(tmp_path, ["iris-rf"])
    assert resumed["skipped"] == ["iris-rf/pickle"] and resumed["built"] == ["iris-rf/onnx"]


def test_parity_failure_fails_the_build_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(zoo.TOLERANCES, ("scikit-learn", "onnx"), -1.0)  # any diff is "too large"
    with pytest.raises(ParityError, match=r"iris-rf onnx: max \|diff\|.*not kept"):
        build_zoo(tmp_path, ["iris-rf"], ["pickle", "onnx"])
    assert set(load_manifest(tmp_path)["artifacts"]) == {"iris-rf/pickle"}
    assert not (tmp_path / "iris-rf" / "model.onnx").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp")]
    assert main(["build", "--models", "iris-rf", "--zoo-dir", str(tmp_path), "--quiet"]) == 1
    assert "parity check failed" in capsys.readouterr().err


def test_predict_rejects_a_wrong_shape(zoo_dir: Path) -> None:
    predictor = load_predictor("iris-mlp", "onnx", zoo_dir)
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        predictor.predict(np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="empty batch"):
        predictor.predict(np.zeros((0, 4), dtype=np.float32))
    # float64 input is accepted and converted
    assert predictor.predict(np.ones((1, 4))).dtype == np.float32


# ---------------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "vgg16"], "unknown models vgg16"),
        (["--formats", "onnx,tflite"], "unknown formats tflite"),
        (["--models", "iris-rf", "--formats", "pt2"], "nothing to build"),
        (["--weights", "resnet50"], "MODEL=FILE"),
        (["--models", ""], "--models is empty"),
        (["--weights", "iris-mlp=w.pth", "--models", "iris-mlp"], "only for the resnet models"),
    ],
)
def test_cli_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    assert main(["build", "--zoo-dir", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "manifest.json").exists()


def test_cli_prints_progress_and_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["build", "--models", "iris-rf", "--zoo-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "building   iris-rf   pickle" in out
    assert "built      iris-rf   onnx" in out
    header = next(line for line in out.splitlines() if line.startswith("model"))
    assert header.split() == ["model", "format", "size_bytes", "export_s", "max|diff|", "tolerance", "status"]
    assert "2 built, 0 up to date" in out
    assert main(["build", "--models", "iris-rf", "--zoo-dir", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "building" not in out and "0 built, 2 up to date" in out
    rows = [line.split(None, 6) for line in out.splitlines()[2:4]]  # the status is "up to date"
    assert [(r[0], r[1], r[6]) for r in rows] == [
        ("iris-rf", "pickle", "up to date"),
        ("iris-rf", "onnx", "up to date"),
    ]
    artifacts = load_manifest(tmp_path)["artifacts"]
    assert {r[1]: int(r[2].replace(",", "")) for r in rows} == {
        f: artifacts[f"iris-rf/{f}"]["size_bytes"] for f in ("pickle", "onnx")
    }


# ---------------------------------------------------------------------------------------------- onnx-int8


def test_int8_is_known_for_torch_models_and_refused_with_a_reason_for_iris_rf(tmp_path: Path) -> None:
    for name in ("iris-mlp", "resnet18", "resnet50"):
        check_format(MODELS[name], "onnx-int8")  # no error
        assert missing_format_reason(MODELS[name], "onnx-int8") is None
        assert artifact_relpath(MODELS[name], "onnx-int8") == f"{name}/model.int8.onnx"
    reason = missing_format_reason(MODELS["iris-rf"], "onnx-int8")
    assert reason is not None and "TreeEnsembleClassifier" in reason and "nothing in it to quantize" in reason
    with pytest.raises(ArtifactError, match=r"iris-rf has no onnx-int8 format: .*TreeEnsemble"):
        check_format(MODELS["iris-rf"], "onnx-int8")
    with pytest.raises(ArtifactError, match=r"has no onnx-int8 format: .*\(its formats: pickle, onnx\)"):
        load_predictor("iris-rf", "onnx-int8", tmp_path)
    with pytest.raises(ArtifactError, match=r"nothing to build.*TreeEnsembleClassifier"):
        build_zoo(tmp_path, ["iris-rf"], ["onnx-int8"])
    assert not (tmp_path / "manifest.json").exists()


def test_int8_selection_brings_its_float32_source_first() -> None:
    plan, unavailable = zoo._selection(["iris-rf", "iris-mlp"], ["onnx-int8"])
    assert [(spec.name, fmts) for spec, fmts in plan] == [("iris-mlp", ["onnx", "onnx-int8"])]
    assert list(unavailable) == ["iris-rf/onnx-int8"]
    assert "TreeEnsembleClassifier" in unavailable["iris-rf/onnx-int8"]
    plan, unavailable = zoo._selection(["resnet18"], ["onnx-int8", "pickle", "onnx"])
    assert plan[0][1] == ["onnx", "onnx-int8", "pickle"]
    assert unavailable == {}
    # the default build (no formats named): every model its own formats, nothing listed as unavailable
    plan, unavailable = zoo._selection(None, None)
    assert dict((s.name, f) for s, f in plan)["iris-rf"] == ["pickle", "onnx"]
    assert unavailable == {}


def test_int8_calibration_and_held_out_sets_are_deterministic_and_disjoint() -> None:
    cal, held, what = zoo.int8_sample_sets(MODELS["resnet18"])
    assert cal is not None
    assert cal.shape == (zoo.INT8_CALIBRATION_IMAGES, 3, 224, 224)
    assert held.shape == (zoo.INT8_HELDOUT_IMAGES, 3, 224, 224)
    assert cal.dtype == held.dtype == np.float32
    assert "digit images" in what
    again, held_again, _ = zoo.int8_sample_sets(MODELS["resnet50"])
    assert np.array_equal(cal, again) and np.array_equal(held, held_again)
    # disjoint: drawn without replacement from the digits, so no calibration image is held out
    # (compare the 8x8 sources: one pixel per 28x28 block of the first channel)
    small = lambda x: x[:, 0, ::28, ::28].reshape(len(x), -1)  # noqa: E731
    rows_cal = {r.tobytes() for r in small(cal)}
    assert not any(r.tobytes() in rows_cal for r in small(held))
    assert len(rows_cal) == len(cal)  # and they are distinct images
    # normalised pixels, like sample_inputs
    assert held.min() >= (0 - 0.485) / 0.229 - 1e-5 and held.max() <= (1 - 0.406) / 0.225 + 1e-5
    none, iris, what = zoo.int8_sample_sets(MODELS["iris-mlp"])
    assert none is None and iris.shape == (150, 4) and "iris" in what


def test_int8_build_records_method_and_agreement(tmp_path: Path) -> None:
    result = build_zoo(tmp_path, ["iris-mlp"], ["onnx-int8"])
    assert result["built"] == ["iris-mlp/onnx", "iris-mlp/onnx-int8"]
    manifest = load_manifest(tmp_path)
    assert manifest["int8_top1_floor"] == zoo.INT8_TOP1_FLOOR == 0.9
    fp32, entry = manifest["artifacts"]["iris-mlp/onnx"], manifest["artifacts"]["iris-mlp/onnx-int8"]
    assert entry["path"] == "iris-mlp/model.int8.onnx"
    assert entry["sha256"] == sha256_file(tmp_path / entry["path"])
    assert entry["source"] == {k: fp32[k] for k in ("format", "path", "sha256", "size_bytes")}
    q = entry["quantization"]
    assert (q["method"], q["quant_format"], q["per_channel"], q["weight_type"]) == (
        "dynamic", "QOperator", False, "int8",
    )  # fmt: skip
    assert q["calibration"] is None  # dynamic: activation ranges at run time
    a = entry["agreement"]
    assert a["n_samples"] == 150 and "iris" in a["held_out"]
    assert 0.9 <= a["top1_agreement"] <= 1.0
    assert 0 < a["max_abs_prob_diff"] < 0.5  # int8 changes the numbers, a little
    assert a["fp32_distinct_top1"] == 3 and "note" not in a
    # the int8 file runs through the same predictor and agrees with the float32 one
    x, y = zoo._iris()
    got = load_predictor("iris-mlp", "onnx-int8", tmp_path).predict(x)
    want = load_predictor("iris-mlp", "onnx", tmp_path).predict(x)
    assert got.shape == want.shape == (150, 3)
    assert float(np.mean(got.argmax(axis=1) == want.argmax(axis=1))) == pytest.approx(a["top1_agreement"])
    assert float(np.mean(got.argmax(axis=1) == y)) >= 0.9
    # up to date the second time; --force on onnx-int8 rebuilds it, not its source
    again = build_zoo(tmp_path, ["iris-mlp"], ["onnx-int8"])
    assert again["built"] == [] and again["skipped"] == ["iris-mlp/onnx", "iris-mlp/onnx-int8"]
    forced = build_zoo(tmp_path, ["iris-mlp"], ["onnx-int8"], force=True)
    assert forced["built"] == ["iris-mlp/onnx-int8"]
    assert load_manifest(tmp_path)["artifacts"]["iris-mlp/onnx-int8"]["sha256"] == entry["sha256"]  # same
    # the int8 depends on its source's bytes: a source rebuilt the same keeps it; another source does not
    manifest = load_manifest(tmp_path)
    manifest["artifacts"]["iris-mlp/onnx"]["options"]["seed"] = -1
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert build_zoo(tmp_path, ["iris-mlp"], ["onnx-int8"])["built"] == ["iris-mlp/onnx"]  # same bytes
    manifest = load_manifest(tmp_path)
    manifest["artifacts"]["iris-mlp/onnx-int8"]["options"]["source_sha256"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert build_zoo(tmp_path, ["iris-mlp"], ["onnx-int8"])["built"] == ["iris-mlp/onnx-int8"]


def test_int8_below_the_agreement_floor_fails_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(zoo, "INT8_TOP1_FLOOR", 1.01)  # no agreement can reach it
    with pytest.raises(
        AgreementError, match=r"iris-mlp onnx-int8: top-1 agreement .* < the floor 1.01.*not kept"
    ):
        build_zoo(tmp_path, ["iris-mlp"], ["onnx-int8"])
    assert set(load_manifest(tmp_path)["artifacts"]) == {"iris-mlp/onnx"}
    assert not (tmp_path / "iris-mlp" / "model.int8.onnx").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp")]
    argv = ["build", "--models", "iris-mlp", "--formats", "onnx-int8", "--zoo-dir", str(tmp_path), "--quiet"]
    assert main(argv) == 1
    assert "agreement check failed" in capsys.readouterr().err


def test_cli_lists_int8_it_cannot_build_and_shows_agreement(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["build", "--models", "iris-rf,iris-mlp", "--formats", "onnx-int8", "--zoo-dir", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "not built  iris-rf/onnx-int8: model iris-rf has no onnx-int8 format: a scikit-learn" in out
    assert "built      iris-mlp  onnx-int8" in out and "top-1 agreement" in out
    row = next(line for line in out.splitlines() if line.startswith("iris-mlp  onnx-int8"))
    assert row.split()[5].startswith("top1=") and row.split()[5].endswith(">=0.9")
    assert main(["build", "--models", "iris-rf", "--formats", "onnx-int8", "--zoo-dir", str(tmp_path)]) == 2
    assert "nothing to build" in capsys.readouterr().err


def test_int8_agrees_with_its_float32_source(zoo_dir: Path) -> None:
    """The default zoo's int8 artifacts (every torch model): a batch that is not the build's held-out set."""
    for model, spec in MODELS.items():
        if "onnx-int8" not in spec.formats:
            continue
        batch = sample_inputs(model, 8 if spec.task == "tabular" else 4, seed=11)
        want = load_predictor(model, "onnx", zoo_dir, intra_op_threads=1).predict(batch)
        got = load_predictor(model, "onnx-int8", zoo_dir, intra_op_threads=1).predict(batch)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-3)
        top2 = np.sort(want, axis=1)[:, -2:]
        decisive = (top2[:, 1] - top2[:, 0]) > 0.05  # int8 may swap near-ties
        assert np.array_equal(got.argmax(axis=1)[decisive], want.argmax(axis=1)[decisive]), model
