"""The model zoo build: export each model of the catalog (``deploybench.targets.catalog``) to every format
exactly once.

``build_zoo`` writes ``zoo_dir/<model>/model.<ext>`` plus ``zoo_dir/manifest.json`` (sha256, size_bytes,
export time, library versions and a parity check against the in-memory reference model, per artifact).
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
    ArtifactError,
    ModelSpec,
    artifact_key,
    artifact_relpath,
    get_spec,
    load_manifest,
    manifest_path,
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

VERSIONED_LIBRARIES = (
    "numpy", "torch", "scikit-learn", "joblib", "onnx", "onnxruntime", "skl2onnx", "onnxscript",
)  # fmt: skip


class ParityError(RuntimeError):
    """An exported artifact's outputs differ from the reference model's by more than the tolerance."""


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


def _selection(
    models: Sequence[str] | None, formats: Sequence[str] | None
) -> list[tuple[ModelSpec, list[str]]]:
    specs = [get_spec(m) for m in dict.fromkeys(models)] if models else list(MODELS.values())
    if formats:
        for fmt in formats:
            if fmt not in MODEL_FORMATS:
                raise ArtifactError(f"unknown format {fmt!r} (known: {', '.join(MODEL_FORMATS)})")
    wanted = list(dict.fromkeys(formats)) if formats else list(MODEL_FORMATS)
    plan = [(spec, [f for f in wanted if f in spec.formats]) for spec in specs]
    plan = [(spec, fmts) for spec, fmts in plan if fmts]
    if not plan:
        raise ArtifactError(
            f"nothing to build: models {', '.join(s.name for s in specs)} have none of the formats "
            f"{', '.join(wanted)}"
        )
    return plan


def build_zoo(
    zoo_dir: Path | str | None = None,
    models: Sequence[str] | None = None,
    formats: Sequence[str] | None = None,
    weights: dict[str, Path] | None = None,
    force: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Export each selected model to each of its selected formats once, into ``zoo_dir``.

    ``weights`` maps a resnet model name to a torchvision-style state_dict file (strict load).
    ``progress`` (optional) is called with an event dict per artifact: ``{"event": "start" | "built" |
    "skipped", "model", "format", "entry"}``. Raises ArtifactError (bad selection, weights) or
    ParityError (an export disagrees with its reference; earlier artifacts are kept).

    Returns ``{"zoo_dir", "manifest", "built": [keys], "skipped": [keys], "wall_s"}``.
    """
    t0 = time.perf_counter_ns()
    root = Path(zoo_dir if zoo_dir is not None else paths.zoo_dir())
    plan = _selection(models, formats)
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
        for spec, fmts in plan:
            ref: Any = None
            for fmt in fmts:
                key = artifact_key(spec.name, fmt)
                options = _artifact_options(spec, fmt, weight_shas.get(spec.name))
                if not force and _is_up_to_date(root, manifest, spec, fmt, options):
                    skipped.append(key)
                    emit({"event": "skipped", "model": spec.name, "format": fmt,
                          "entry": manifest["artifacts"][key]})  # fmt: skip
                    continue
                emit({"event": "start", "model": spec.name, "format": fmt, "entry": None})
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
