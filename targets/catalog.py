"""The model catalog: which models exist (``MODELS``), their formats, and where a built zoo keeps each
artifact (the manifest written by ``deploybench.targets.zoo.build_zoo``). Cheap to import: no model
library."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploybench import paths
from deploybench.errors import UsageError
from deploybench.vocabulary import MODEL_FORMATS

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
IRIS_CLASSES = ["setosa", "versicolor", "virginica"]


class ArtifactError(UsageError):
    """A model artifact is unknown, missing, unreadable or does not match its manifest entry."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str  # "tabular" | "image"
    class_names: list[str]
    input_shape: tuple[int, ...]  # per item
    formats: tuple[str, ...]
    library: str  # "scikit-learn" | "torch"
    description: str = ""
    # format -> why this model has none (the formats of MODEL_FORMATS it lacks, for clear refusals/skips)
    missing_formats: dict[str, str] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names shipped in targets/data (index = class id)."""
    # A plain path, not importlib.resources: an editable install made before targets/__init__.py existed
    # maps `targets` as a namespace package, which resources.files() cannot read.
    text = (Path(__file__).parent / "data" / "imagenet_classes.txt").read_text(encoding="utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != 1000:
        raise RuntimeError(f"targets/data/imagenet_classes.txt has {len(names)} names, expected 1000")
    return names


_IMAGENET = imagenet_class_names()
_TORCH_FORMATS = MODEL_FORMATS  # a torch model exports to every format

# Formats derived from another artifact of the zoo rather than exported from the model: quantized format ->
# its float32 source format (the build makes the source first and measures the quantized one against it).
QUANTIZED_FORMATS: dict[str, str] = {"onnx-int8": "onnx"}

_SKLEARN_MISSING = {
    "onnx-int8": (
        "a scikit-learn random forest exports to ONNX as a TreeEnsembleClassifier, and "
        "onnxruntime.quantization quantizes tensor ops (MatMul, Gemm, Conv, ...), not tree ensembles: "
        "there is nothing in it to quantize, so an int8 file would be the float32 one renamed"
    ),
    "torchscript": "it is a scikit-learn model; TorchScript is a torch export",
    "pt2": "it is a scikit-learn model; pt2 (torch.export) is a torch export",
}

MODELS: dict[str, ModelSpec] = {
    "iris-rf": ModelSpec(
        "iris-rf", "tabular", IRIS_CLASSES, (4,), ("pickle", "onnx"), "scikit-learn",
        "scikit-learn RandomForestClassifier(n_estimators=100, random_state=0) on iris", _SKLEARN_MISSING,
    ),
    "iris-mlp": ModelSpec(
        "iris-mlp", "tabular", IRIS_CLASSES, (4,), _TORCH_FORMATS, "torch",
        "torch MLP 4-16-3 (ReLU), standardisation and softmax inside, trained on iris",
    ),
    "resnet18": ModelSpec(
        "resnet18", "image", _IMAGENET, (3, 224, 224), _TORCH_FORMATS, "torch",
        "ResNet-18 (torchvision layout), softmax output",
    ),
    "resnet50": ModelSpec(
        "resnet50", "image", _IMAGENET, (3, 224, 224), _TORCH_FORMATS, "torch",
        "ResNet-50 (torchvision layout), softmax output",
    ),
}  # fmt: skip


# ---------------------------------------------------------------------------------------------- lookups


def get_spec(model: str) -> ModelSpec:
    try:
        return MODELS[model]
    except KeyError:
        raise ArtifactError(f"unknown model {model!r} (known: {', '.join(MODELS)})") from None


def missing_format_reason(spec: ModelSpec, fmt: str) -> str | None:
    """Why ``spec`` has no ``fmt`` artifact (a sentence naming its formats), or None when it has one. The
    wording of ``check_format``'s refusal, for callers that skip rather than fail (a compare matrix)."""
    if fmt in spec.formats:
        return None
    why = spec.missing_formats.get(fmt)
    return (
        f"model {spec.name} has no {fmt} format"
        + (f": {why}" if why else "")
        + f" (its formats: {', '.join(spec.formats)})"
    )


def check_format(spec: ModelSpec, fmt: str) -> None:
    if fmt not in MODEL_FORMATS:
        raise ArtifactError(f"unknown format {fmt!r} (known: {', '.join(MODEL_FORMATS)})")
    reason = missing_format_reason(spec, fmt)
    if reason is not None:
        raise ArtifactError(reason)


def artifact_key(model: str, fmt: str) -> str:
    return f"{model}/{fmt}"


def artifact_relpath(spec: ModelSpec, fmt: str) -> str:
    """Path of an artifact relative to the zoo folder."""
    filename = {
        "pickle": "model.joblib" if spec.library == "scikit-learn" else "model.pkl",
        "onnx": "model.onnx",
        "onnx-int8": "model.int8.onnx",
        "torchscript": "model.torchscript.pt",
        "pt2": "model.pt2",
    }[fmt]
    return f"{spec.name}/{filename}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_path(zoo_dir: Path | str | None = None) -> Path:
    return Path(zoo_dir if zoo_dir is not None else paths.zoo_dir()) / MANIFEST_NAME


def load_manifest(zoo_dir: Path | str | None = None) -> dict[str, Any]:
    """Read zoo_dir/manifest.json; ArtifactError when it is missing, unreadable or of an unknown schema."""
    path = manifest_path(zoo_dir)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"no zoo manifest at {path}; run `deploybench build` first") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read zoo manifest {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        version = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise ArtifactError(
            f"zoo manifest {path} has schema_version {version!r}, expected {MANIFEST_SCHEMA_VERSION}; "
            "rebuild with `deploybench build --force`"
        )
    manifest.setdefault("models", {})
    manifest.setdefault("artifacts", {})
    return manifest


def artifact_entry(model: str, fmt: str, zoo_dir: Path | str | None = None) -> tuple[dict[str, Any], Path]:
    """The manifest entry and absolute path of one artifact; ArtifactError if unknown or missing."""
    spec = get_spec(model)
    check_format(spec, fmt)
    root = Path(zoo_dir if zoo_dir is not None else paths.zoo_dir())
    manifest = load_manifest(root)
    entry = manifest["artifacts"].get(artifact_key(model, fmt))
    hint = f"run `deploybench build --models {model} --formats {fmt} --zoo-dir {root}`"
    if entry is None:
        raise ArtifactError(f"no {model} {fmt} artifact in {manifest_path(root)}; {hint}")
    path = root / entry["path"]
    if not path.is_file():
        raise ArtifactError(f"{model} {fmt} artifact {path} is missing (listed in the manifest); {hint}")
    return entry, path
