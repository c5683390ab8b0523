"""Your own model file, served, load-tested, benchmarked and compared like a zoo model.

A *user model* (``UserModel``) is a name (default: the file's stem) and one or more files of the same model
in different formats (``{"onnx": "m.onnx", "pickle": "m.joblib"}``), so formats can be compared on it.

Format of a file: from its extension (``.onnx``; ``.joblib`` / ``.pkl`` / ``.pickle``; ``.pt2``;
``.torchscript`` / ``.ts``; ``.pt`` / ``.pth`` are TorchScript or a ``torch.save`` pickle, told apart by their
contents) or given (``--format``). The contents must agree (``sniff``): a file that is no model, or one whose
contents are another format than its extension or ``--format`` says, is refused with a one-line
``ModelFileError`` (a UsageError: exit code 2).

Input shape (per item, without the batch axis): from the model where it declares it (ONNX graph input,
scikit-learn ``n_features_in_``, the ``.pt2`` program's input; several files of one model must agree, and a
file that declares nothing, such as TorchScript, takes its siblings' shape), else ``input_shape`` or the item
shape of a ``sample_input`` file (``.npy``, or JSON ``{"instances": [[...]]}``). ``(F,)`` is a tabular
model (``POST /predict``, ``{"instances": [[F numbers]]}``); ``(3, H, W)`` (RGB) or ``(1, H, W)``
(grayscale) an image model (the image routes). An image is resized straight to H x W (or, with
``resize_px``, its shorter side to ``resize_px``, then centre-cropped to H x W), scaled to [0, 1] and
normalised with ``mean`` / ``std`` (default 0 and 1: pixels in [0, 1]; ``imagenet`` for ImageNet's).

Classes: from the model (scikit-learn ``classes_``, an ONNX classifier's class labels or ZipMap keys), else a
``labels`` file (one name per line; it wins over the model's when given), else ``class_0``, ``class_1``, ...
Outputs: probabilities per class. A model whose outputs on a probe batch are not already probabilities
(every value in [0, 1] and each row summing to 1 within 1e-3) returns logits: its outputs get a softmax.

Pickles (joblib / pickle / ``torch.save``) run code when loaded: a user's pickle is loaded only with an
explicit opt-in, ``trust_pickle`` (``--trust-pickle SHA256``), the sha256 the user expects the file to have;
it is checked before every unpickling (launcher and every server worker) and shown in ``/health`` and the run
records. Without it the refusal names the risk.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from deploybench.targets.catalog import MODELS, ArtifactError, ModelSpec, sha256_file
from deploybench.targets.predictors import (
    ExportedProgramPredictor,
    OnnxPredictor,
    Predictor,
    SklearnJoblibPredictor,
    TorchPicklePredictor,
    TorchScriptPredictor,
    check_pickle_trust,
)
from deploybench.targets.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImageTransform
from deploybench.vocabulary import MODEL_FORMATS


class ModelFileError(ArtifactError):
    """A user's model file (or an option about it) that cannot be served; the message is one line."""


# extension -> format; .pt / .pth are TorchScript or a torch.save pickle (decided by the contents)
EXTENSION_FORMATS: dict[str, str] = {
    ".onnx": "onnx",
    ".joblib": "pickle",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".pt2": "pt2",
    ".torchscript": "torchscript",
    ".ts": "torchscript",
}
TORCH_EXTENSIONS = (".pt", ".pth")
# what sniff() finds -> (the format it is, how to say it)
KINDS: dict[str, tuple[str, str]] = {
    "onnx": ("onnx", "an ONNX model"),
    "torchscript": ("torchscript", "a TorchScript archive"),
    "pt2": ("pt2", "a torch.export program (.pt2)"),
    "torch-pickle": ("pickle", "a torch.save pickle"),
    "pickle": ("pickle", "a pickle (joblib)"),
}
SUPPORTED = "ONNX, scikit-learn joblib/pickle, TorchScript, torch.export .pt2"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
PROBE_BATCH = 2  # items in the probe batch (> 1: a model that cannot batch is found at once)
PROB_SUM_TOLERANCE = 1e-3
IMAGE_CHANNELS = (1, 3)


# ---------------------------------------------------------------------------------------------- formats


def sniff(path: Path) -> str:
    """What a file holds, from its contents: "onnx", "torchscript", "pt2", "torch-pickle", "pickle" or
    "unknown". Reads the first bytes (and a zip archive's member names); never unpickles anything."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return "unknown"
        if any(n.endswith(("/archive_format", "/models/model.json")) for n in names):
            return "pt2"
        if any("/code/__torch__" in n or n.endswith("/constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
            return "torch-pickle"
        return "unknown"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2..5 (joblib: highest)
        return "pickle"
    # joblib.dump(..., compress=...): zlib, gzip, bz2, xz/lzma, lz4 streams around a pickle
    if head[:2] in (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda", b"\x1f\x8b") or head.startswith(
        (b"BZh", b"\xfd7zXZ\x00", b"\x5d\x00\x00", b"\x04\x22\x4d\x18")
    ):
        return "pickle"
    if head[:1] == b"\x08":  # an ONNX ModelProto starts with field 1 (ir_version), a varint
        return "onnx"
    return "unknown"


def resolve_format(path: str | Path, given: str | None = None) -> str:
    """The format of a user's file: ``given`` (``--format``) or its extension, checked against its contents.

    ModelFileError when the file is missing, is not a model, or is another format than the one named."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} not found")
    if given is not None and given not in MODEL_FORMATS:
        raise ModelFileError(f"unknown format {given!r} (known: {', '.join(MODEL_FORMATS)})")
    kind = sniff(path)
    if kind == "unknown":
        raise ModelFileError(f"{path} is not a model file deploybench can read ({SUPPORTED})")
    actual, what = KINDS[kind]
    ext = path.suffix.lower()
    if given is not None:
        if given != actual:
            raise ModelFileError(f"{path} is {what}, not the {given} format given; use --format {actual}")
        return given
    if ext in EXTENSION_FORMATS:
        named = EXTENSION_FORMATS[ext]
        if named != actual:
            raise ModelFileError(
                f"{path}: its extension {ext} says {named}, but the file is {what}; rename it or pass "
                f"--format {actual}"
            )
        return named
    if ext in TORCH_EXTENSIONS and kind in ("torchscript", "torch-pickle"):
        return actual
    raise ModelFileError(
        f"cannot tell the format of {path} from its extension ({ext or 'none'}); pass --format "
        f"(it looks like {what}: --format {actual})"
    )


# ---------------------------------------------------------------------------------------------- options


def parse_shape(text: str) -> list[int]:
    """``"64"``, ``"3,224,224"`` or ``"3x224x224"`` (a leading ``N`` / ``-1`` batch axis is dropped)."""
    parts = [p.strip() for p in re.split(r"[,x]", str(text).strip().lower()) if p.strip()]
    if parts and parts[0] in ("n", "-1", "?", "batch"):
        parts = parts[1:]
    try:
        shape = [int(p) for p in parts]
    except ValueError:
        raise ModelFileError(f"input shape must look like 64 or 3,224,224 (got {text!r})") from None
    if not shape or any(d < 1 for d in shape):
        raise ModelFileError(f"input shape must be positive integers like 64 or 3,224,224 (got {text!r})")
    return shape


def parse_floats(text: str, what: str) -> list[float]:
    """``"0.5"`` or ``"0.485,0.456,0.406"``; ``"imagenet"`` gives ImageNet's mean or std."""
    t = str(text).strip().lower()
    if t == "imagenet":
        return [float(x) for x in (IMAGENET_MEAN if what == "mean" else IMAGENET_STD)]
    try:
        values = [float(p) for p in t.split(",") if p.strip()]
    except ValueError:
        raise ModelFileError(f"--{what} takes numbers like 0.5 or 0.485,0.456,0.406 (got {text!r})") from None
    if not values or not all(np.isfinite(values)):
        raise ModelFileError(f"--{what} takes finite numbers like 0.5 or 0.485,0.456,0.406 (got {text!r})")
    return values


def input_kind(shape: list[int] | tuple[int, ...]) -> str:
    """ "tabular" for (F,), "image" for (1 or 3, H, W); ModelFileError otherwise."""
    shape = tuple(shape)
    if len(shape) == 1:
        return "tabular"
    if len(shape) == 3 and shape[0] in IMAGE_CHANNELS:
        return "image"
    if len(shape) == 3:
        raise ModelFileError(
            f"input shape {list(shape)}: an image model takes (3, H, W) (RGB) or (1, H, W) (grayscale), "
            f"not {shape[0]} channels"
        )
    raise ModelFileError(
        f"input shape {list(shape)}: deploybench serves tabular models (F features: [N, F]) and image models "
        "([N, 3, H, W] or [N, 1, H, W])"
    )


def read_labels(path: str | Path) -> list[str]:
    """Class names, one per line (blank lines ignored)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"cannot read the labels file {path}: {exc}") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ModelFileError(f"the labels file {path} has no names (one per line)")
    return names


def load_sample_input(path: str | Path) -> np.ndarray:
    """A sample batch, float32 ``(n, *item_shape)``: ``.npy`` (one item of rank 1 or 3, or a batch of rank 2
    or 4) or JSON (``{"instances": [[...]]}``, ``{"features": [...]}`` or a list of rows)."""
    p = Path(path)
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif p.suffix.lower() == ".json":
            obj = json.loads(p.read_text(encoding="utf-8"))
            if isinstance(obj, dict):
                obj = obj.get("instances", [obj["features"]] if "features" in obj else None)
            arr = np.asarray(obj, dtype=np.float32)
        else:
            raise ModelFileError(f"sample input {p}: use a .npy or .json file")
        arr = np.asarray(arr, dtype=np.float32)
    except ModelFileError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(f"cannot read the sample input {p}: {exc}") from None
    if arr.ndim in (1, 3):
        arr = arr[np.newaxis]
    if arr.ndim not in (2, 4) or arr.shape[0] < 1 or arr.size == 0:
        raise ModelFileError(
            f"sample input {p} has shape {list(arr.shape)}: expected one item (F,) or (C, H, W), or a batch"
        )
    if not np.all(np.isfinite(arr)):
        raise ModelFileError(f"sample input {p} holds non-finite values")
    return np.ascontiguousarray(arr)


def default_model_name(path: str | Path) -> str:
    """A name from the file's stem, made file-name safe (``my model.v2.onnx`` -> ``my-model.v2``)."""
    stem = Path(path).name
    for ext in (*EXTENSION_FORMATS, *TORCH_EXTENSIONS):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:64]
    return name or "model"


def check_model_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise ModelFileError(
            f"model name {name!r}: use letters, digits, '.', '_' and '-' (at most 64, starting with a letter "
            "or digit)"
        )
    if name in MODELS:
        raise ModelFileError(f"model name {name!r} is a zoo model's; give your model another name")


# ---------------------------------------------------------------------------------------------- the model


@dataclass
class UserModel:
    """A user's model: a name and its files, one per format, plus what the files cannot say themselves."""

    name: str
    files: dict[str, str]  # format -> path
    input_shape: list[int] | None = None  # per item; needed only when no file declares it
    sample_input: str | None = None  # .npy / .json batch: its item shape, and the warm-up input
    labels_file: str | None = None  # class names, one per line
    mean: list[float] | None = None  # image normalisation (default 0)
    std: list[float] | None = None  # (default 1)
    resize_px: int | None = None  # image: shorter side to this, then centre crop (default: straight resize)
    trust_pickle: str | None = None  # the sha256 the user vouches for: the opt-in to unpickle their file

    def __post_init__(self) -> None:
        self.files = {fmt: str(Path(p).expanduser().absolute()) for fmt, p in self.files.items()}
        for key in ("sample_input", "labels_file"):
            if getattr(self, key) is not None:
                setattr(self, key, str(Path(getattr(self, key)).expanduser().absolute()))
        if self.input_shape is not None:
            self.input_shape = [int(d) for d in self.input_shape]
        if self.trust_pickle is not None:
            self.trust_pickle = self.trust_pickle.strip().lower()

    def check(self) -> None:
        """The checks that load no model: names, files (present, their contents the format named), options
        and the pickle opt-in. ModelFileError (exit code 2) for the first problem."""
        check_model_name(self.name)
        if not self.files:
            raise ModelFileError(f"model {self.name} has no files")
        for fmt, path in self.files.items():
            resolve_format(path, fmt)
        if self.input_shape is not None:
            input_kind(self.input_shape)
        for key, what in (("sample_input", "sample input"), ("labels_file", "labels file")):
            value = getattr(self, key)
            if value is not None and not Path(value).is_file():
                raise ModelFileError(f"{what} {value} not found")
        if self.resize_px is not None and (isinstance(self.resize_px, bool) or self.resize_px < 1):
            raise ModelFileError(f"resize_px must be a positive integer, got {self.resize_px!r}")
        if self.std is not None and any(not s > 0 for s in self.std):
            raise ModelFileError(f"std values must be > 0, got {self.std}")
        if self.trust_pickle is not None:
            if not SHA256_RE.match(self.trust_pickle):
                raise ModelFileError(
                    f"--trust-pickle takes the file's sha256 (64 hex digits), got {self.trust_pickle!r}"
                )
            if "pickle" not in self.files:
                raise ModelFileError(f"--trust-pickle is for a pickle file, and model {self.name} has none")
        if "pickle" in self.files:
            # the opt-in, checked before anything unpickles the file (again in every server worker)
            check_pickle_trust(Path(self.files["pickle"]), self.trust_pickle, user_file=True)

    def target_options(self, fmt: str) -> dict[str, Any]:
        """``deploybench.targets.serve.TargetConfig`` keyword arguments serving this model's ``fmt`` file."""
        return {
            "model": self.name,
            "format": fmt,
            "model_file": self.files[fmt],
            "input_shape": self.input_shape,
            "sample_input": self.sample_input,
            "labels_file": self.labels_file,
            "mean": self.mean,
            "std": self.std,
            "resize_px": self.resize_px,
            "trust_pickle": self.trust_pickle if fmt == "pickle" else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UserModel:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelFileError(f"unknown model key(s): {', '.join(unknown)}")
        return cls(**d)


@dataclass
class FileInfo:
    """One file of a user model, as inspected."""

    format: str
    path: str
    sha256: str
    size_bytes: int
    runtime: str  # the predictor family: onnxruntime, sklearn-joblib, torch-pickle, torchscript, torch-export
    declared_input_shape: list[int | None] | None  # what the file itself says (None: nothing)
    output: str  # "probabilities" | "logits" (softmax applied)
    pickle_trusted: bool = False  # a pickle loaded under --trust-pickle (its sha256 matched)


@dataclass
class UserModelInfo:
    """What inspecting a user model found: one task, input shape and class list for all its files."""

    name: str
    task: str  # "tabular" | "image"
    input_shape: list[int]
    shape_source: str  # "model" (declared by a file) | "input_shape" | "sample_input"
    class_names: list[str]
    class_names_source: str  # "labels file" | "model" | "generated"
    files: dict[str, FileInfo] = field(default_factory=dict)
    preprocessing: dict[str, Any] | None = None  # image models: ImageTransform.describe()

    def input_spec(self) -> dict[str, Any]:
        """What a load generator needs to build requests (served in /health as ``input``)."""
        return input_spec(self.task, self.input_shape)

    def file_summary(self, fmt: str) -> dict[str, Any]:
        """The served file, for /health and the run records."""
        f = self.files[fmt]
        return {
            "path": f.path,
            "sha256": f.sha256,
            "size_bytes": f.size_bytes,
            "runtime": f.runtime,
            "output": f.output if f.output == "probabilities" else "logits (softmax applied)",
            "pickle_trusted": f.pickle_trusted,
            "shape_source": self.shape_source,
            "class_names_source": self.class_names_source,
            "n_classes": len(self.class_names),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def input_spec(task: str, input_shape: list[int] | tuple[int, ...]) -> dict[str, Any]:
    """``{"kind": "tabular", "n_features": F}`` or ``{"kind": "image", "shape": [C, H, W]}``."""
    if task == "tabular":
        return {"kind": "tabular", "n_features": int(input_shape[0])}
    return {"kind": "image", "shape": [int(d) for d in input_shape]}


# ---------------------------------------------------------------------------------------------- inspection


def open_model_file(
    name: str,
    fmt: str,
    path: str | Path,
    *,
    trust_pickle: str | None = None,
    intra_op_threads: int | None = None,
    ort_opt_level: str = "all",
    inter_op_threads: int = 1,
) -> Predictor:
    """Load one file of a user's model with a provisional spec (shape and classes still unknown). Pickles
    are refused unless ``trust_pickle`` is their sha256. ``ort_opt_level`` / ``inter_op_threads``: the
    onnxruntime session's (an ONNX file; the other formats ignore them)."""
    path = Path(path)
    kind = sniff(path)
    classes: dict[str, type[Predictor]] = {
        "onnx": OnnxPredictor,
        "torchscript": TorchScriptPredictor,
        "pt2": ExportedProgramPredictor,
        "torch-pickle": TorchPicklePredictor,
        "pickle": SklearnJoblibPredictor,
    }
    if kind not in classes or KINDS[kind][0] != fmt:
        resolve_format(path, fmt)  # raises the precise one-line error
    library = "scikit-learn" if kind == "pickle" else "onnx" if kind == "onnx" else "torch"
    spec = ModelSpec(name, "", [], (), (fmt,), library, f"user model file {path}")
    return classes[kind](
        name,
        fmt,
        path,
        expected_sha256=trust_pickle if fmt == "pickle" else None,
        intra_op_threads=intra_op_threads,
        spec=spec,
        ort_opt_level=ort_opt_level,
        inter_op_threads=inter_op_threads,
    )


def _fmt_shape(shape: tuple[int | None, ...] | list[Any]) -> str:
    return "[N, " + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _fits(shape: list[int], declared: tuple[int | None, ...]) -> bool:
    return len(shape) == len(declared) and all(
        d is None or d == s for s, d in zip(shape, declared, strict=True)
    )


def resolve_input_shape(
    um: UserModel, declared: dict[str, tuple[int | None, ...] | None], sample: np.ndarray | None
) -> tuple[list[int], str]:
    """The per-item input shape and where it came from ("model", "input_shape", "sample_input")."""
    known = {fmt: d for fmt, d in declared.items() if d is not None}
    # several files of one model must declare the same shape
    merged: tuple[int | None, ...] | None = None
    for fmt, d in known.items():
        if merged is None:
            merged = d
            continue
        if len(d) != len(merged) or any(
            a is not None and b is not None and a != b for a, b in zip(d, merged, strict=True)
        ):
            a, b = next(iter(known)), fmt
            raise ModelFileError(
                f"the files of model {um.name} disagree on the input: {Path(um.files[a]).name} takes "
                f"{_fmt_shape(known[a])}, {Path(um.files[b]).name} takes {_fmt_shape(d)}"
            )
        merged = tuple(a if a is not None else b for a, b in zip(merged, d, strict=True))
    given: list[tuple[str, list[int]]] = []
    if um.input_shape is not None:
        given.append(("input_shape", list(um.input_shape)))
    if sample is not None:
        given.append(("sample_input", list(sample.shape[1:])))
    for source, shape in given:
        what = f"--input-shape {','.join(map(str, shape))}" if source == "input_shape" else "the sample input"
        for fmt, d in known.items():
            if not _fits(shape, d):
                raise ModelFileError(
                    f"{what} ({_fmt_shape(shape)}) does not fit {Path(um.files[fmt]).name}, which takes "
                    f"{_fmt_shape(d)}"
                )
    if len(given) == 2 and given[0][1] != given[1][1]:
        raise ModelFileError(
            f"--input-shape {_fmt_shape(given[0][1])} and the sample input's items "
            f"{_fmt_shape(given[1][1])} differ"
        )
    if given:
        source, shape = given[0]
        return shape, source
    if merged is not None and all(d is not None for d in merged):
        return [int(d) for d in merged if d is not None], "model"
    why = (
        f"{', '.join(Path(um.files[f]).name for f in known)} leaves {_fmt_shape(merged)} open"
        if merged is not None
        else "its format records no input shape"
        if len(um.files) == 1
        else "none of its files records an input shape"
    )
    raise ModelFileError(
        f"cannot infer the input shape of model {um.name} ({why}); pass --input-shape (e.g. 64 for 64 "
        "features, 3,224,224 for an RGB image) or --sample-input FILE (.npy)"
    )


def image_transform(um: UserModel, shape: list[int]) -> ImageTransform:
    """The pre-processing of a user's image model of input ``shape`` (C, H, W)."""
    try:
        return ImageTransform(
            height=shape[1],
            width=shape[2],
            channels=shape[0],
            mean=tuple(um.mean) if um.mean is not None else (0.0,),
            std=tuple(um.std) if um.std is not None else (1.0,),
            resize_px=um.resize_px,
        )
    except ValueError as exc:
        raise ModelFileError(f"model {um.name}: {exc}") from None


def probe_batch(
    task: str, shape: list[int], n: int, transform: ImageTransform | None = None, seed: int = 0
) -> np.ndarray:
    """A deterministic float32 input batch: tabular values uniform in [0, 1); image pixels uniform in [0, 1)
    normalised like the image transform does."""
    rng = np.random.default_rng(seed)
    batch = rng.random((n, *shape), dtype=np.float32)
    if task == "image" and transform is not None:
        c = shape[0]
        mean = np.broadcast_to(np.asarray(transform.mean, dtype=np.float32), (c,)).reshape(1, c, 1, 1)
        std = np.broadcast_to(np.asarray(transform.std, dtype=np.float32), (c,)).reshape(1, c, 1, 1)
        batch = (batch - mean) / std
    return np.ascontiguousarray(batch, dtype=np.float32)


def _error_line(exc: BaseException) -> str:
    """One line of a model runtime's error (TorchScript's first line is a generic header: take its last)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if "TorchScript interpreter" in lines[0] else lines[0]


def _output_kind(out: np.ndarray) -> str:
    ok = (
        np.all(out >= -1e-6)
        and np.all(out <= 1 + 1e-6)
        and np.allclose(out.sum(axis=1), 1.0, atol=PROB_SUM_TOLERANCE)
    )
    return "probabilities" if ok else "logits"


def inspect_user_model(
    um: UserModel,
    *,
    intra_op_threads: int | None = None,
    ort_opt_level: str = "all",
    inter_op_threads: int = 1,
) -> tuple[UserModelInfo, dict[str, Predictor]]:
    """Load every file of ``um``, infer its input shape, classes and output kind, probe each file with one
    batch, and return the findings and the ready predictors (final spec set; softmax where needed).

    ModelFileError / ArtifactError (exit code 2) for anything that cannot be served."""
    um.check()
    predictors: dict[str, Predictor] = {}
    declared: dict[str, tuple[int | None, ...] | None] = {}
    for fmt, path in um.files.items():
        pred = open_model_file(
            um.name, fmt, path, trust_pickle=um.trust_pickle, intra_op_threads=intra_op_threads,
            ort_opt_level=ort_opt_level, inter_op_threads=inter_op_threads,
        )  # fmt: skip
        if isinstance(pred, OnnxPredictor):
            n_inputs, elem_type, _ = pred.input_meta()
            if n_inputs != 1:
                raise ModelFileError(
                    f"{path} takes {n_inputs} inputs; deploybench serves models with one input"
                )
            if elem_type != "tensor(float)":
                raise ModelFileError(
                    f"{path} takes a {elem_type} input; deploybench sends float32 (tensor(float))"
                )
        predictors[fmt] = pred
        declared[fmt] = pred.declared_input_shape()
    sample = load_sample_input(um.sample_input) if um.sample_input else None
    shape, shape_source = resolve_input_shape(um, declared, sample)
    task = input_kind(shape)
    transform = image_transform(um, shape) if task == "image" else None
    batch = sample if sample is not None else probe_batch(task, shape, PROBE_BATCH, transform)

    files: dict[str, FileInfo] = {}
    n_classes: dict[str, int] = {}
    for fmt, pred in predictors.items():
        name = Path(um.files[fmt]).name
        try:
            out = np.asarray(pred.raw_predict(batch), dtype=np.float64)
        except ArtifactError:
            raise
        except Exception as exc:  # the model's own runtime error for an input it does not take
            raise ModelFileError(
                f"{name} ({fmt}) failed on a batch of shape {list(batch.shape)}: {_error_line(exc)} "
                "(is the input shape right? --input-shape)"
            ) from None
        if out.ndim != 2 or out.shape[0] != len(batch) or out.shape[1] < 2:
            raise ModelFileError(
                f"{name} ({fmt}) returned shape {list(out.shape)} for a batch of {len(batch)}; deploybench "
                "serves classifiers that return one score per class, (N, n_classes >= 2)"
            )
        if not np.all(np.isfinite(out)):
            raise ModelFileError(f"{name} ({fmt}) returned non-finite scores for the probe batch")
        kind = "probabilities" if isinstance(pred, SklearnJoblibPredictor) else _output_kind(out)
        pred.softmax_output = kind == "logits"
        n_classes[fmt] = out.shape[1]
        files[fmt] = FileInfo(
            format=fmt,
            path=um.files[fmt],
            sha256=sha256_file(Path(um.files[fmt])),
            size_bytes=Path(um.files[fmt]).stat().st_size,
            runtime=pred.family,
            declared_input_shape=None if declared[fmt] is None else list(declared[fmt] or ()),
            output=kind,
            pickle_trusted=pred.pickled,
        )
    if len(set(n_classes.values())) > 1:
        counts = ", ".join(f"{Path(um.files[f]).name}: {n}" for f, n in n_classes.items())
        raise ModelFileError(f"the files of model {um.name} return different numbers of classes ({counts})")
    k = next(iter(n_classes.values()))

    if um.labels_file is not None:
        names, names_source = read_labels(um.labels_file), "labels file"
        if len(names) != k:
            raise ModelFileError(
                f"the labels file {um.labels_file} has {len(names)} names; the model has {k} classes"
            )
    else:
        declared_names = [
            n for n in (p.declared_class_names() for p in predictors.values()) if n and len(n) == k
        ]
        if declared_names:
            names, names_source = declared_names[0], "model"
        else:
            names, names_source = [f"class_{i}" for i in range(k)], "generated"
    if len(set(names)) != len(names):
        raise ModelFileError(f"model {um.name}: class names must be unique ({names[:10]}...)")

    spec = ModelSpec(um.name, task, names, tuple(shape), tuple(um.files), "user", f"user model {um.name}")
    for pred in predictors.values():
        pred.spec = spec
    info = UserModelInfo(
        name=um.name,
        task=task,
        input_shape=shape,
        shape_source=shape_source,
        class_names=names,
        class_names_source=names_source,
        files=files,
        preprocessing=transform.describe() if transform is not None else None,
    )
    return info, predictors


def sample_batch(um: UserModel, info: UserModelInfo, n: int, seed: int = 0) -> np.ndarray:
    """An input batch of ``n`` items for warm-up and micro-benchmarks: rows of the sample input when there
    is one (cycled), else the probe distribution."""
    if um.sample_input is not None:
        sample = load_sample_input(um.sample_input)
        return np.ascontiguousarray(sample[np.arange(n) % len(sample)], dtype=np.float32)
    transform = image_transform(um, info.input_shape) if info.task == "image" else None
    return probe_batch(info.task, info.input_shape, n, transform, seed)
