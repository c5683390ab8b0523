"""The model zoo build: export each model of the catalog (``deploybench.targets.catalog``) to every format
exactly once.

``build_zoo`` writes ``zoo_dir/<model>/model.<ext>`` plus ``zoo_dir/manifest.json`` (sha256, size_bytes,
export time, library versions and a parity check against the in-memory reference model, per artifact).
The quantized format "onnx-int8" is not exported but derived from the zoo's float32 "onnx" artifact
(built first) with onnxruntime.quantization; it is not held to a parity tolerance it cannot meet but to a
floor on its top-1 agreement with that float32 artifact on a held-out set (``INT8_TOP1_FLOOR``).
Up-to-date artifacts are skipped; every write is atomic and the manifest is rewritten after each artifact,
so an interrupted build keeps what it finished.

Importing this module is cheap: numpy only. torch, scikit-learn and the exporters are imported when a
build (or ``sample_inputs`` for iris) needs them (function-local imports, marked "import cost"), so an
ONNX-only server never imports torch.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib.util
import io
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from deploybench import paths
from deploybench.errors import UsageError
from deploybench.io import utc_now, write_atomic
from deploybench.targets.catalog import (
    MANIFEST_SCHEMA_VERSION,
    MODELS,
    QUANTIZED_FORMATS,
    ArtifactError,
    ModelSpec,
    artifact_key,
    artifact_relpath,
    get_spec,
    load_manifest,
    manifest_path,
    missing_format_reason,
    sha256_file,
)
from deploybench.targets.predictors import open_predictor, quiet_jit_deprecation
from deploybench.vocabulary import MODEL_FORMATS

# Bump when an export recipe changes: every artifact built by an older recipe is then rebuilt.
RECIPE_VERSION = 1
SEED = 0
PARITY_BATCH = 8  # batch the parity check runs (≠ EXAMPLE_BATCH, so the dynamic batch axis is exercised)
EXAMPLE_BATCH = 2  # example batch for tracing / torch.export (a batch of 1 would be specialised)
LOCK_TIMEOUT_S = 3600.0

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SEEDED_RANDOM = "seeded-random (untrained)"
ONNX_EXPORTER = "torch.onnx.export(dynamo=True, external_data=False)"

# Parity tolerances: max |p_artifact - p_reference| over a batch of PARITY_BATCH sample inputs.
# pickle round-trips the very same object (expected 0); skl2onnx computes the forest in float32 (sklearn
# averages tree probabilities in float64); torch exporters re-order float32 kernels (observed ~1e-7).
TOLERANCES: dict[tuple[str, str], float] = {
    ("scikit-learn", "pickle"): 1e-6,
    ("scikit-learn", "onnx"): 1e-5,
    ("torch", "pickle"): 1e-6,
    ("torch", "onnx"): 1e-4,
    ("torch", "torchscript"): 1e-4,
    ("torch", "pt2"): 1e-4,
}

# onnx-int8 (QUANTIZED_FORMATS): built from the zoo's float32 ONNX file, checked against it.
INT8_RECIPE_VERSION = 2  # bump when the quantization recipe changes: every onnx-int8 artifact is rebuilt
INT8_TOP1_FLOOR = 0.9  # the build fails when int8 and fp32 agree on the top-1 class of fewer held-out inputs
INT8_CALIBRATION_IMAGES = 16  # static quantization of the ResNets: activation ranges from these images
INT8_HELDOUT_IMAGES = 64  # ResNets' agreement set (disjoint from the calibration images)
INT8_EVAL_CHUNK = 16  # images per predict call while measuring agreement (bounds the ResNets' memory)
DIGITS_IMAGES = (
    "sklearn's bundled digits (8x8 grey, values 0..16) scaled to [0, 1], upscaled 28x (nearest) to 224x224, "
    "the grey copied to R, G and B, ImageNet-normalised; a seeded permutation (seed 0) of the 1797 images: "
    f"the first {INT8_CALIBRATION_IMAGES} calibrate, the next {INT8_HELDOUT_IMAGES} are held out"
)
IRIS_ROWS = "sklearn's bundled iris data set, all 150 rows (the MLP's training and test rows)"
INT8_RECIPES: dict[str, dict[str, Any]] = {
    "tabular": {
        "method": "dynamic",
        "tool": "onnxruntime.quantization.quantize_dynamic",
        "quant_format": "QOperator",  # MatMulInteger + DynamicQuantizeLinear
        "op_types": ["MatMul", "Gemm"],
        "per_channel": False,
        "weight_type": "int8",
        "activation_type": "uint8, range computed per batch at run time",
        "calibration": None,
    },
    "image": {
        "method": "static",
        "tool": "onnxruntime.quantization.quantize_static",
        "quant_format": "QDQ",  # QuantizeLinear/DequantizeLinear pairs; onnxruntime fuses them into int8 ops
        "op_types": "onnxruntime's default (Conv, Gemm, MatMul, Relu, Add, MaxPool, ...)",
        "per_channel": True,
        "weight_type": "int8",
        "activation_type": "uint8",
        "calibrate_method": "MinMax",
        # kept in float32: the Softmax, and the logits (the output of the final Gemm, the fc layer); 8-bit
        # probabilities over 1000 classes would round most of them to 0 and tie the top ones
        "float_ops": ["Softmax"],
        "float_outputs_of": ["Gemm"],
        "calibration": {"set": DIGITS_IMAGES, "n_samples": INT8_CALIBRATION_IMAGES, "seed": SEED},
    },
}
INT8_PREPROCESS = "onnxruntime.quantization.shape_inference.quant_pre_process (shape inference, optimisation)"

VERSIONED_LIBRARIES = (
    "numpy", "torch", "scikit-learn", "joblib", "onnx", "onnxruntime", "skl2onnx", "onnxscript",
)  # fmt: skip


class ParityError(RuntimeError):
    """An exported artifact's outputs differ from the reference model's by more than the tolerance."""


class AgreementError(ParityError):
    """A quantized artifact agrees with its float32 source on the top-1 class of too few held-out inputs."""


def tolerance(spec: ModelSpec, fmt: str) -> float:
    return TOLERANCES[(spec.library, fmt)]


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# ---------------------------------------------------------------------------------------------- inputs


def _iris() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's bundled iris (150 x 4 float32 features, int64 targets).

    Read straight from sklearn's data file when it is where it has always been, so that a server that
    only needs sample rows (warm-up) does not import scikit-learn (~2 s and ~90 MB per worker).
    """
    location = importlib.util.find_spec("sklearn")  # locates the package without importing it
    roots = list(location.submodule_search_locations or []) if location else []
    csv = Path(roots[0]) / "datasets" / "data" / "iris.csv" if roots else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",", skiprows=1, dtype=np.float64)
        if table.shape == (150, 5):
            return table[:, :4].astype(np.float32), table[:, 4].astype(np.int64)
    from sklearn.datasets import load_iris  # import cost: scikit-learn, only without the data file

    data = load_iris()
    return data.data.astype(np.float32), data.target.astype(np.int64)


def iris_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified 70/30 split of sklearn's bundled iris (random_state=0): X_train, X_test, y_train, y_test."""
    from sklearn.model_selection import train_test_split  # import cost: scikit-learn (~2 s)

    x, y = _iris()
    return train_test_split(x, y, test_size=0.3, random_state=SEED, stratify=y)


def sample_inputs(model: str, batch_size: int, seed: int = 0) -> np.ndarray:
    """A deterministic float32 batch (n, *input_shape) ready for ``Predictor.predict``.

    Tabular models: rows drawn from the iris data set. Image models: random pixels in [0, 1) normalised
    with the ImageNet mean/std, i.e. already-preprocessed (3, 224, 224) tensors.
    """
    spec = get_spec(model)
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng(seed)
    if spec.task == "tabular":
        x, _ = _iris()
        return np.ascontiguousarray(x[rng.integers(0, len(x), size=batch_size)], dtype=np.float32)
    pixels = rng.random((batch_size, *spec.input_shape), dtype=np.float32)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((pixels - mean) / std, dtype=np.float32)


def digit_images(indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Images for the ResNets' int8 calibration and agreement sets (``DIGITS_IMAGES``): float32
    (n, 3, 224, 224), deterministic, nothing downloaded."""
    from sklearn.datasets import load_digits  # import cost: scikit-learn (~2 s), only int8 builds need it

    grey = load_digits().images.astype(np.float32)[np.asarray(indices, dtype=np.int64)] / 16.0
    big = np.repeat(np.repeat(grey, 28, axis=1), 28, axis=2)  # (n, 224, 224)
    pixels = np.repeat(big[:, None], 3, axis=1)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((pixels - mean) / std, dtype=np.float32)


def int8_sample_sets(spec: ModelSpec) -> tuple[np.ndarray | None, np.ndarray, str]:
    """(calibration set or None, held-out set, description of the held-out set) for ``spec``'s onnx-int8.

    Tabular (dynamic quantization, no calibration): all 150 iris rows. Image: disjoint slices of a seeded
    permutation of sklearn's digits (``DIGITS_IMAGES``)."""
    if spec.task == "tabular":
        x, _ = _iris()
        return None, np.ascontiguousarray(x, dtype=np.float32), IRIS_ROWS
    n_cal, n_held = INT8_CALIBRATION_IMAGES, INT8_HELDOUT_IMAGES
    order = np.random.default_rng(SEED).permutation(1797)  # sklearn's digits: 1797 images
    images = digit_images(order[: n_cal + n_held])
    held = f"{n_held} digit images after the {n_cal} calibration images (see the calibration set)"
    return images[:n_cal], images[n_cal:], held


# ---------------------------------------------------------------------------------------------- manifest


def _empty_manifest() -> dict[str, Any]:
    now = utc_now()
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "created_utc": now,
        "updated_utc": now,
        "recipe_version": RECIPE_VERSION,
        "onnx_exporter": ONNX_EXPORTER,
        "tolerances": {f"{lib}/{fmt}": tol for (lib, fmt), tol in TOLERANCES.items()},
        "int8_top1_floor": INT8_TOP1_FLOOR,
        "models": {},
        "artifacts": {},
    }


def _save_manifest(zoo_dir: Path, manifest: dict[str, Any]) -> None:
    manifest["updated_utc"] = utc_now()
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    write_atomic(manifest_path(zoo_dir), text, fsync=True)


@contextlib.contextmanager
def _build_lock(zoo_dir: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialise concurrent builds of one zoo (the second one then finds everything up to date)."""
    deadline_ns = time.perf_counter_ns() + int(timeout_s * 1e9)
    with open(zoo_dir / ".build.lock", "a") as fh:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.perf_counter_ns() > deadline_ns:
                    raise ArtifactError(
                        f"another build of {zoo_dir} held its lock for more than {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------- references


def load_weights_file(model: str, path: Path) -> tuple[dict[str, Any], str]:
    """Read a torchvision-style state_dict file (weights only, no code execution) -> (state_dict, sha256)."""
    import torch  # import cost: torch (~1 s), only builds need it

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"weights file for {model} not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(
            f"cannot read weights file {path} for {model} as a torch state_dict: {first_line}"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ArtifactError(f"weights file {path} for {model} does not hold a state_dict (name -> tensor)")
    return obj, sha256_file(path)


def _apply_state_dict(model: str, net: Any, state_dict: dict[str, Any], path: Path) -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or mismatched:

        def head(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")

        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys: {head(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys: {head(unexpected)}")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches: {head(mismatched)}")
        raise ArtifactError(
            f"weights file {path} does not fit {model} (torchvision naming expected): " + "; ".join(problems)
        )
    net.load_state_dict(state_dict, strict=True)


def _train_iris_rf() -> tuple[Any, dict[str, Any]]:
    from sklearn.ensemble import RandomForestClassifier  # import cost: scikit-learn (~2 s)

    x_train, x_test, y_train, y_test = iris_split()
    clf = RandomForestClassifier(n_estimators=100, random_state=SEED)
    clf.fit(x_train, y_train)
    info = {
        "weights": "trained on sklearn's bundled iris (stratified 70/30 split, random_state=0)",
        "estimator": "RandomForestClassifier(n_estimators=100, random_state=0)",
        "accuracy": {
            "train": float(clf.score(x_train, y_train)),
            "test": float(clf.score(x_test, y_test)),
            "n_train": len(y_train),
            "n_test": len(y_test),
        },
    }
    return clf, info


def _train_iris_mlp() -> tuple[Any, dict[str, Any]]:
    import torch  # import cost: torch (~1 s), only builds need it

    from deploybench.targets.resnet import IrisMLP  # import cost: deploybench.targets.resnet imports torch

    epochs, lr = 300, 0.05
    x_train, x_test, y_train, y_test = iris_split()
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    torch.manual_seed(SEED)
    net = IrisMLP(mean=xt.mean(dim=0), std=xt.std(dim=0))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same float reduction order whatever the process's thread count
    try:
        for _ in range(epochs):  # full batch, one thread: bit-for-bit deterministic on a given CPU
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net.logits(xt), yt)
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    net.eval()

    def accuracy(x: np.ndarray, y: np.ndarray) -> float:
        with torch.no_grad():
            return float((net(torch.from_numpy(x)).argmax(dim=1).numpy() == y).mean())

    info = {
        "weights": f"trained on sklearn's bundled iris (seed {SEED}, stratified 70/30 split)",
        "training": f"Adam lr={lr}, {epochs} full-batch epochs, cross-entropy",
        "n_parameters": sum(p.numel() for p in net.parameters()),
        "accuracy": {
            "train": accuracy(x_train, y_train),
            "test": accuracy(x_test, y_test),
            "n_train": len(y_train),
            "n_test": len(y_test),
        },
    }
    return net, info


def _make_resnet(model: str, weights: tuple[dict[str, Any], str, Path] | None) -> tuple[Any, dict[str, Any]]:
    import torch  # import cost: torch (~1 s), only builds need it

    from deploybench.targets.resnet import (  # import cost: deploybench.targets.resnet imports torch
        ARCHITECTURES,
        SoftmaxHead,
    )

    torch.manual_seed(SEED)
    net = ARCHITECTURES[model]()
    if weights is None:
        provenance: Any = SEEDED_RANDOM
    else:
        state_dict, sha, path = weights
        _apply_state_dict(model, net, state_dict, path)
        provenance = {"file": str(path), "sha256": sha}
    wrapped = SoftmaxHead(net).eval()
    return wrapped, {"weights": provenance, "n_parameters": sum(p.numel() for p in net.parameters())}


def reference_predict(spec: ModelSpec, ref: Any, batch: np.ndarray) -> np.ndarray:
    """Probabilities of an in-memory reference model (the object ``build_zoo`` exports)."""
    if spec.library == "scikit-learn":
        return np.asarray(ref.predict_proba(batch), dtype=np.float32)
    import torch  # import cost: torch (~1 s), only torch references need it

    with torch.inference_mode():
        return ref(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy().astype(np.float32)


def build_reference(model: str, weights_path: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """The in-memory reference model (deterministic) and its manifest info."""
    spec = get_spec(model)
    if weights_path is not None and spec.task != "image":
        raise ArtifactError(f"--weights is only for the resnet models, not {model}")
    if model == "iris-rf":
        ref, info = _train_iris_rf()
    elif model == "iris-mlp":
        ref, info = _train_iris_mlp()
    else:
        loaded = None
        if weights_path is not None:
            state_dict, sha = load_weights_file(model, weights_path)
            loaded = (state_dict, sha, Path(weights_path))
        ref, info = _make_resnet(model, loaded)
    base = {
        "task": spec.task,
        "library": spec.library,
        "description": spec.description,
        "class_names_count": spec.n_classes,
        "input_shape": list(spec.input_shape),
        "seed": SEED,
    }
    return ref, {**base, **info}


# ---------------------------------------------------------------------------------------------- exporters


@contextlib.contextmanager
def _quiet_onnx_registry() -> Iterator[None]:
    """The dynamo ONNX exporter logs one warning per missing torchvision op; torchvision is not used here."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _export(spec: ModelSpec, fmt: str, ref: Any, path: Path) -> str:
    """Write ``ref`` as ``fmt`` to ``path``; returns a description of the exporter used."""
    if spec.library == "scikit-learn":
        if fmt == "pickle":
            import joblib  # import cost: joblib, only the pickle format needs it

            joblib.dump(ref, path)
            return "joblib.dump"
        # import cost: skl2onnx (and onnx), only the onnx export needs them
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType

        onx = to_onnx(
            ref,
            initial_types=[("input", FloatTensorType([None, *spec.input_shape]))],
            options={id(ref): {"zipmap": False}},
        )
        path.write_bytes(onx.SerializeToString())
        return "skl2onnx.to_onnx(zipmap=False)"

    import torch  # import cost: torch (~1 s), only builds need it

    example = torch.from_numpy(sample_inputs(spec.name, EXAMPLE_BATCH, seed=SEED + 1))
    # torch's zip archives are named after the file they are saved to: save to memory so the temporary
    # file name (with its pid) does not end up inside the artifact.
    buffer = io.BytesIO()
    if fmt == "pickle":
        torch.save(ref, buffer)
        path.write_bytes(buffer.getvalue())
        return "torch.save(module)"
    if fmt == "onnx":
        batch = torch.export.Dim("batch")
        with _quiet_onnx_registry():
            torch.onnx.export(
                ref,
                (example,),
                path,
                dynamo=True,
                external_data=False,
                input_names=["input"],
                output_names=["probabilities"],
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
        return ONNX_EXPORTER
    if fmt == "torchscript":
        with quiet_jit_deprecation(), torch.no_grad():
            traced = torch.jit.trace(ref, example)
            frozen = torch.jit.freeze(traced.eval())
            torch.jit.save(frozen, buffer)
        path.write_bytes(buffer.getvalue())
        return "torch.jit.trace + torch.jit.freeze"
    if fmt == "pt2":
        batch = torch.export.Dim("batch")
        program = torch.export.export(ref, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, buffer)
        path.write_bytes(buffer.getvalue())
        return "torch.export.export(dynamic batch) + torch.export.save"
    raise AssertionError(fmt)


def _parity(spec: ModelSpec, fmt: str, ref: Any, path: Path, sha: str) -> dict[str, Any]:
    batch = sample_inputs(spec.name, PARITY_BATCH, seed=SEED)
    expected = reference_predict(spec, ref, batch)
    got = open_predictor(spec.name, fmt, path, expected_sha256=sha).predict(batch)
    if got.shape != expected.shape:
        raise ParityError(
            f"{spec.name} {fmt}: output shape {got.shape} differs from the reference's {expected.shape}"
        )
    diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
    tol = tolerance(spec, fmt)
    argmax_agree = int(np.sum(got.argmax(axis=1) == expected.argmax(axis=1)))
    if not diff <= tol:  # also catches NaN
        raise ParityError(
            f"{spec.name} {fmt}: max |diff| vs the reference model is {diff:.3g} > tolerance {tol:g} "
            f"on {PARITY_BATCH} sample inputs; the artifact was not kept"
        )
    return {
        "max_abs_diff": diff,
        "tolerance": tol,
        "batch_size": PARITY_BATCH,
        "argmax_agree": argmax_agree,
        "seed": SEED,
    }


# ---------------------------------------------------------------------------------------------- int8


def _quantize(spec: ModelSpec, source: Path, path: Path, calibration: np.ndarray | None) -> str:
    """Quantize the float32 ONNX file ``source`` into ``path`` (recipe: ``INT8_RECIPES[spec.task]``);
    returns a description of the quantizer used."""
    # import cost: onnxruntime.quantization (onnx, onnxruntime), only int8 builds need it
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        """The calibration array, in batches of 8, as onnxruntime's calibrator reads it."""

        def __init__(self, input_name: str, data: np.ndarray, batch_size: int = 8):
            self._items = iter(
                [{input_name: data[i : i + batch_size]} for i in range(0, len(data), batch_size)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    recipe = INT8_RECIPES[spec.task]
    with tempfile.TemporaryDirectory(prefix="deploybench-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        if recipe["method"] == "dynamic":
            quantize_dynamic(
                prepared,
                path,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(recipe["op_types"]),
                per_channel=recipe["per_channel"],
            )
            return f"{recipe['tool']}(weights int8, {'/'.join(recipe['op_types'])})"
        if calibration is None:
            raise AssertionError(f"{spec.name}: static quantization needs a calibration set")
        import onnx  # import cost: onnx, already imported by onnxruntime.quantization

        softmax = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Softmax"]
        quantize_static(
            prepared,
            path,
            Batches("input", calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=recipe["per_channel"],
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=softmax,
            extra_options={"OpTypesToExcludeOutputQuantization": list(recipe["float_outputs_of"])},
        )
    return f"{recipe['tool']}(QDQ, per-channel int8 weights, uint8 activations, MinMax calibration)"


def _predict_chunked(predictor: Any, batch: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [predictor.predict(batch[i : i + INT8_EVAL_CHUNK]) for i in range(0, len(batch), INT8_EVAL_CHUNK)]
    )


def _agreement(
    spec: ModelSpec, fmt: str, path: Path, sha: str, source: dict[str, Any], source_path: Path,
    held_out: np.ndarray, held_out_what: str,
) -> dict[str, Any]:  # fmt: skip
    """Top-1 agreement of the quantized artifact with its float32 source on ``held_out``; AgreementError
    below ``INT8_TOP1_FLOOR``."""
    fp32 = _predict_chunked(
        open_predictor(spec.name, source["format"], source_path, expected_sha256=source["sha256"]), held_out
    )
    got = _predict_chunked(open_predictor(spec.name, fmt, path, expected_sha256=sha), held_out)
    if got.shape != fp32.shape:
        raise AgreementError(
            f"{spec.name} {fmt}: output shape {got.shape} differs from the float32 model's {fp32.shape}"
        )
    diff = np.abs(got.astype(np.float64) - fp32.astype(np.float64))
    agreement = float(np.mean(got.argmax(axis=1) == fp32.argmax(axis=1)))
    distinct = len(np.unique(fp32.argmax(axis=1)))
    if not agreement >= INT8_TOP1_FLOOR:  # also catches NaN
        raise AgreementError(
            f"{spec.name} {fmt}: top-1 agreement with the float32 {source['format']} artifact is "
            f"{agreement:.3f} < the floor {INT8_TOP1_FLOOR} on {len(held_out)} held-out inputs; the "
            "artifact was not kept"
        )
    out: dict[str, Any] = {
        "reference": f"the zoo's float32 {source['format']} artifact (sha256 {source['sha256']})",
        "held_out": held_out_what,
        "n_samples": len(held_out),
        "top1_agreement": agreement,
        "top1_floor": INT8_TOP1_FLOOR,
        "max_abs_prob_diff": float(np.max(diff)),
        "mean_abs_prob_diff": float(np.mean(diff)),
        "fp32_distinct_top1": distinct,
    }
    if distinct == 1:
        out["note"] = (
            "the float32 model gives every held-out input the same top-1 class (seeded random weights "
            "do that): the agreement says little; build with --weights for a meaningful figure"
        )
    return out


def _quantized_options(spec: ModelSpec, fmt: str, source: dict[str, Any]) -> dict[str, Any]:
    versions = library_versions()
    return {
        "recipe_version": RECIPE_VERSION,
        "int8_recipe_version": INT8_RECIPE_VERSION,
        "seed": SEED,
        "source_format": QUANTIZED_FORMATS[fmt],
        "source_sha256": source["sha256"],
        "recipe": INT8_RECIPES[spec.task],
        "top1_floor": INT8_TOP1_FLOOR,
        "held_out": len(_iris()[0]) if spec.task == "tabular" else INT8_HELDOUT_IMAGES,
        "versions": {k: versions[k] for k in ("python", "numpy", "onnx", "onnxruntime")},
    }


def _build_quantized(
    root: Path, spec: ModelSpec, fmt: str, source: dict[str, Any], options: dict[str, Any]
) -> dict[str, Any]:
    rel = artifact_relpath(spec, fmt)
    final = root / rel
    source_path = root / source["path"]
    if not source_path.is_file() or sha256_file(source_path) != source["sha256"]:
        raise ArtifactError(f"{spec.name} {fmt}: its float32 source {source_path} is missing or changed")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp{os.getpid()}-{final.name}")
    calibration, held_out, held_out_what = int8_sample_sets(spec)
    try:
        start_ns = time.perf_counter_ns()
        exporter = _quantize(spec, source_path, tmp, calibration)
        export_ns = time.perf_counter_ns() - start_ns
        sha = sha256_file(tmp)
        agreement = _agreement(spec, fmt, tmp, sha, source, source_path, held_out, held_out_what)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    size = final.stat().st_size
    return {
        "model": spec.name,
        "format": fmt,
        "path": rel,
        "sha256": sha,
        "size_bytes": size,
        "export_s": export_ns / 1e9,
        "exporter": exporter,
        "built_utc": utc_now(),
        "source": {k: source[k] for k in ("format", "path", "sha256", "size_bytes")},
        "size_ratio": size / source["size_bytes"],
        "quantization": {**INT8_RECIPES[spec.task], "preprocess": INT8_PREPROCESS},
        "agreement": agreement,
        "versions": library_versions(),
        "options": options,
    }


# ---------------------------------------------------------------------------------------------- build


def _artifact_options(spec: ModelSpec, fmt: str, weights_sha256: str | None) -> dict[str, Any]:
    versions = library_versions()
    relevant = (
        ("numpy", "scikit-learn", "joblib", "skl2onnx", "onnx")
        if spec.library == "scikit-learn"
        else ("numpy", "torch", "onnx", "onnxscript")
    )
    return {
        "recipe_version": RECIPE_VERSION,
        "seed": SEED,
        "weights_sha256": weights_sha256,
        "parity_batch": PARITY_BATCH,
        "tolerance": tolerance(spec, fmt),
        "versions": {k: versions[k] for k in ("python", *relevant)},
    }


def _is_up_to_date(
    zoo_dir: Path, manifest: dict[str, Any], spec: ModelSpec, fmt: str, options: dict[str, Any]
) -> bool:
    entry = manifest["artifacts"].get(artifact_key(spec.name, fmt))
    if not entry or entry.get("options") != options or spec.name not in manifest["models"]:
        return False
    path = zoo_dir / entry.get("path", "")
    return (
        path.is_file()
        and path.stat().st_size == entry.get("size_bytes")
        and sha256_file(path) == entry.get("sha256")
    )


def _with_sources(fmts: list[str]) -> list[str]:
    """``fmts`` with the float32 source of each quantized format inserted before it (when not in already)."""
    out: list[str] = []
    for fmt in fmts:
        source = QUANTIZED_FORMATS.get(fmt)
        if source is not None and source not in out:
            out.append(source)
        if fmt not in out:
            out.append(fmt)
    return out


def _selection(
    models: Sequence[str] | None, formats: Sequence[str] | None
) -> tuple[list[tuple[ModelSpec, list[str]]], dict[str, str]]:
    """The build plan (model, its formats in build order) and, when ``formats`` were named, the named
    model x format pairs the catalog lacks, with the reason (``missing_format_reason``)."""
    specs = [get_spec(m) for m in dict.fromkeys(models)] if models else list(MODELS.values())
    if formats:
        for fmt in formats:
            if fmt not in MODEL_FORMATS:
                raise ArtifactError(f"unknown format {fmt!r} (known: {', '.join(MODEL_FORMATS)})")
    wanted = list(dict.fromkeys(formats)) if formats else list(MODEL_FORMATS)
    plan = [(spec, _with_sources([f for f in wanted if f in spec.formats])) for spec in specs]
    plan = [(spec, fmts) for spec, fmts in plan if fmts]
    unavailable = {
        artifact_key(spec.name, f): reason
        for spec in specs
        for f in (wanted if formats else ())
        if (reason := missing_format_reason(spec, f)) is not None
    }
    if not plan:
        reasons = "; ".join(unavailable.values())
        raise ArtifactError(
            f"nothing to build: models {', '.join(s.name for s in specs)} have none of the formats "
            f"{', '.join(wanted)}" + (f" ({reasons})" if reasons else "")
        )
    return plan, unavailable


def build_zoo(
    zoo_dir: Path | str | None = None,
    models: Sequence[str] | None = None,
    formats: Sequence[str] | None = None,
    weights: dict[str, Path] | None = None,
    force: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Export each selected model to each of its selected formats once, into ``zoo_dir``.

    ``force`` rebuilds the selected artifacts even when up to date (with ``formats``: those named).
    ``weights`` maps a resnet model name to a torchvision-style state_dict file (strict load).
    ``progress`` (optional) is called with an event dict per artifact: ``{"event": "start" | "built" |
    "skipped", "model", "format", "entry"}``. Raises ArtifactError (bad selection, weights) or
    ParityError (an export disagrees with its reference; earlier artifacts are kept).

    A quantized format (``QUANTIZED_FORMATS``, e.g. "onnx-int8") brings its float32 source format into the
    build (it is quantized from that artifact) and raises AgreementError (a ParityError) when its top-1
    agreement with it is below ``INT8_TOP1_FLOOR``. A named format that a named model lacks is not built and
    is listed with the reason in ``"unavailable"`` (none of them available: ArtifactError with the reasons).

    Returns ``{"zoo_dir", "manifest", "built": [keys], "skipped": [keys], "unavailable": {key: reason},
    "wall_s"}``.
    """
    t0 = time.perf_counter_ns()
    root = Path(zoo_dir if zoo_dir is not None else paths.zoo_dir())
    plan, unavailable = _selection(models, formats)
    weights = {k: Path(v) for k, v in (weights or {}).items()}
    for name in weights:
        spec = get_spec(name)
        if spec.task != "image":
            raise ArtifactError(f"--weights is only for the resnet models, not {name}")
        if name not in {s.name for s, _ in plan}:
            raise ArtifactError(f"weights given for {name}, which is not in this build's models")
        if not weights[name].is_file():
            raise ArtifactError(f"weights file for {name} not found: {weights[name]}")
    weight_shas = {name: sha256_file(path) for name, path in weights.items()}
    emit = progress or (lambda event: None)

    root.mkdir(parents=True, exist_ok=True)
    built: list[str] = []
    skipped: list[str] = []
    with _build_lock(root):
        try:
            manifest = load_manifest(root)
        except ArtifactError:  # absent or unreadable: its artifacts cannot be trusted, rebuild them
            manifest = _empty_manifest()
        manifest["int8_top1_floor"] = INT8_TOP1_FLOOR  # also in a manifest written before onnx-int8
        for spec, fmts in plan:
            ref: Any = None
            for fmt in fmts:
                key = artifact_key(spec.name, fmt)
                source = None
                if fmt in QUANTIZED_FORMATS:  # its source came earlier in fmts (_with_sources)
                    source = manifest["artifacts"].get(artifact_key(spec.name, QUANTIZED_FORMATS[fmt]))
                    if source is None:
                        raise AssertionError(f"{key}: its source {QUANTIZED_FORMATS[fmt]} was not built")
                    options = _quantized_options(spec, fmt, source)
                else:
                    options = _artifact_options(spec, fmt, weight_shas.get(spec.name))
                # force rebuilds the named formats, not a source brought in for a quantized one
                forced = force and (not formats or fmt in formats)
                if not forced and _is_up_to_date(root, manifest, spec, fmt, options):
                    skipped.append(key)
                    emit({"event": "skipped", "model": spec.name, "format": fmt,
                          "entry": manifest["artifacts"][key]})  # fmt: skip
                    continue
                emit({"event": "start", "model": spec.name, "format": fmt, "entry": None})
                if source is not None:  # quantized from the source file: no reference model needed
                    entry = _build_quantized(root, spec, fmt, source, options)
                else:
                    if ref is None:
                        ref, info = build_reference(spec.name, weights.get(spec.name))
                        manifest["models"][spec.name] = info
                    entry = _build_artifact(root, spec, fmt, ref, options)
                manifest["artifacts"][key] = entry
                _save_manifest(root, manifest)
                built.append(key)
                emit({"event": "built", "model": spec.name, "format": fmt, "entry": entry})
    return {
        "zoo_dir": str(root),
        "manifest": manifest,
        "built": built,
        "skipped": skipped,
        "unavailable": unavailable,
        "wall_s": (time.perf_counter_ns() - t0) / 1e9,
    }


def _build_artifact(
    root: Path, spec: ModelSpec, fmt: str, ref: Any, options: dict[str, Any]
) -> dict[str, Any]:
    rel = artifact_relpath(spec, fmt)
    final = root / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    # Same suffix as the final name (some savers look at it); unique per process; renamed into place.
    tmp = final.with_name(f".tmp{os.getpid()}-{final.name}")
    before = set(final.parent.iterdir())
    try:
        start_ns = time.perf_counter_ns()
        exporter = _export(spec, fmt, ref, tmp)
        export_ns = time.perf_counter_ns() - start_ns
        stray = sorted(p.name for p in set(final.parent.iterdir()) - before - {tmp})
        if stray:  # e.g. ONNX external-data files: the artifact must be one self-contained file
            for p in stray:
                (final.parent / p).unlink(missing_ok=True)
            raise ParityError(f"{spec.name} {fmt}: the exporter wrote extra files {stray}; expected one file")
        sha = sha256_file(tmp)
        parity = _parity(spec, fmt, ref, tmp, sha)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "model": spec.name,
        "format": fmt,
        "path": rel,
        "sha256": sha,
        "size_bytes": final.stat().st_size,
        "export_s": export_ns / 1e9,
        "exporter": exporter,
        "built_utc": utc_now(),
        "parity": parity,
        "versions": library_versions(),
        "options": options,
    }
