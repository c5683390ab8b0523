"""One contract for every model format: ``Predictor.predict(batch) -> probabilities``.

A batch is float32 ``(n, *input_shape)`` (iris rows, or preprocessed (3, 224, 224) image tensors); the
result is float32 ``(n, n_classes)`` probabilities. One class per format family:

- ``SklearnJoblibPredictor``  scikit-learn estimator saved with joblib (format "pickle")
- ``TorchPicklePredictor``    whole torch nn.Module saved with torch.save (format "pickle")
- ``OnnxPredictor``           onnxruntime InferenceSession, CPU provider (formats "onnx", "onnx-int8")
- ``TorchScriptPredictor``    traced + frozen TorchScript (format "torchscript")
- ``ExportedProgramPredictor`` torch.export program, ``torch.export.load(...).module()`` (format "pt2")

Pickled artifacts execute code when loaded, so they are only loaded after their sha256 matched the zoo
manifest, or for a user's own file (``deploybench.targets.modelfile``) the sha256 the user vouched for with
``--trust-pickle`` (else ArtifactError). Each class imports its own library on first use: an ONNX predictor
never imports torch.

A user's file is opened with a provisional ``ModelSpec`` (input shape and classes unknown); what the model
declares about itself is read with ``declared_input_shape`` / ``declared_class_names`` and the final spec is
set by ``deploybench.targets.modelfile``. Its output is normalised to probabilities: ``softmax_output``
applies a softmax to models that return logits (rows that are not already non-negative and summing to 1).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from deploybench.targets.catalog import (
    ArtifactError,
    ModelSpec,
    artifact_entry,
    check_format,
    get_spec,
    sha256_file,
)


@contextlib.contextmanager
def quiet_jit_deprecation() -> Iterator[None]:
    """Silence exactly torch 2.13's "`torch.jit.X` is deprecated" DeprecationWarnings (TorchScript is
    deprecated, but it is one of the formats being measured); every other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
        )
        yield


PICKLE_RISK = (
    "unpickling runs whatever code the file's author put in it, so a pickle from an untrusted source can "
    "take over the process that loads it"
)
TRUST_PICKLE_HINT = (
    "If you trust this file, opt in with --trust-pickle SHA256 (TOML: trust_pickle), giving the sha256 you "
    "expect it to have; see docs/guides/your-model.md, 'Pickles and the security risk'"
)


def check_pickle_trust(path: Path, expected_sha256: str | None, *, user_file: bool) -> str:
    """Refuse (ArtifactError) to unpickle ``path`` unless its sha256 is ``expected_sha256``; returns it.

    Zoo artifacts are checked against the manifest; a user's file against the sha256 given with
    ``--trust-pickle`` (the explicit opt-in), and the refusal names the risk."""
    if expected_sha256 is None:
        if user_file:
            raise ArtifactError(
                f"refusing to unpickle {path}: {PICKLE_RISK}. {TRUST_PICKLE_HINT} "
                f"(this file's sha256 is {sha256_file(path)})"
            )
        raise ArtifactError(f"refusing to unpickle {path}: no expected sha256 to check it against")
    actual = sha256_file(path)
    if actual != expected_sha256.lower():
        if user_file:
            raise ArtifactError(
                f"refusing to unpickle {path}: its sha256 is {actual}, not the {expected_sha256} given with "
                f"--trust-pickle (the file changed, or the hash is of another file); {PICKLE_RISK}"
            )
        raise ArtifactError(
            f"refusing to unpickle {path}: sha256 {actual} does not match the manifest's "
            f"{expected_sha256} (file changed after the build); rebuild with `deploybench build`"
        )
    return actual


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax (numerically stable), float64."""
    z = np.asarray(scores, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Predictor(ABC):
    """A loaded model artifact. ``load_ns`` is the wall time the load took (perf_counter_ns)."""

    family: ClassVar[str]
    pickled: ClassVar[bool] = False

    def __init__(
        self,
        model: str,
        fmt: str,
        path: Path,
        *,
        expected_sha256: str | None = None,
        intra_op_threads: int | None = None,
        spec: ModelSpec | None = None,
        ort_opt_level: str = "all",
        inter_op_threads: int = 1,
    ):
        # ``spec`` given: a user's file (deploybench.targets.modelfile), else a zoo model of the catalog
        self.user_file = spec is not None
        self.spec: ModelSpec = spec if spec is not None else get_spec(model)
        self.model = model
        self.format = fmt
        self.path = Path(path)
        self.intra_op_threads = intra_op_threads
        self.softmax_output = False  # set for a user's model that returns logits
        self.ort_opt_level = ort_opt_level  # onnxruntime only (OnnxPredictor): ORT_OPT_LEVELS
        self.inter_op_threads = inter_op_threads
        if intra_op_threads is not None and intra_op_threads < 1:
            raise ArtifactError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
        if not self.path.is_file():
            raise ArtifactError(f"{model} {fmt} artifact not found: {self.path}")
        start_ns = time.perf_counter_ns()
        if self.pickled:
            check_pickle_trust(self.path, expected_sha256, user_file=self.user_file)
        self._load()
        self.load_ns = time.perf_counter_ns() - start_ns

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _predict(self, batch: np.ndarray) -> np.ndarray: ...

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 (n, *input_shape) -> float32 (n, n_classes) probabilities."""
        batch = np.asarray(batch)
        shape = self.spec.input_shape
        if shape and (batch.ndim != 1 + len(shape) or tuple(batch.shape[1:]) != shape):
            raise ValueError(
                f"{self.model} expects a batch of shape (n, {', '.join(map(str, shape))}), "
                f"got {tuple(batch.shape)}"
            )
        if batch.shape[0] < 1:
            raise ValueError(f"{self.model}: empty batch")
        out = self.raw_predict(batch)
        if self.softmax_output:
            out = softmax(out)
        return np.asarray(out, dtype=np.float32)

    def raw_predict(self, batch: np.ndarray) -> np.ndarray:
        """What the model itself returns for a batch (no shape check, no softmax)."""
        return np.asarray(self._predict(np.ascontiguousarray(batch, dtype=np.float32)))

    def declared_input_shape(self) -> tuple[int | None, ...] | None:
        """The per-item input shape the model declares (None: a dimension it leaves open), or None when
        the format records no input shape (TorchScript, a pickled torch module)."""
        return None

    def declared_class_names(self) -> list[str] | None:
        """Class names the model carries (scikit-learn ``classes_``, ONNX class labels), else None."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, format={self.format!r}, path={str(self.path)!r})"


class SklearnJoblibPredictor(Predictor):
    family = "sklearn-joblib"
    pickled = True

    def _load(self) -> None:
        import joblib  # import cost: joblib, only the scikit-learn pickle format needs it

        try:
            self._estimator: Any = joblib.load(self.path)
        except Exception as exc:  # whatever the unpickler raises for a file it cannot read
            raise ArtifactError(f"cannot load {self.path} with joblib: {_first_line(exc)}") from None
        if not callable(getattr(self._estimator, "predict_proba", None)):
            raise ArtifactError(
                f"{self.path} holds a {type(self._estimator).__name__}, not a classifier with predict_proba "
                "(deploybench serves class probabilities)"
            )

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        return self._estimator.predict_proba(batch)

    def declared_input_shape(self) -> tuple[int | None, ...] | None:
        n = getattr(self._estimator, "n_features_in_", None)
        return (int(n),) if isinstance(n, int | np.integer) else None

    def declared_class_names(self) -> list[str] | None:
        classes = getattr(self._estimator, "classes_", None)
        return [str(c) for c in classes] if classes is not None else None


# deploybench.vocabulary.ORT_OPT_LEVELS -> onnxruntime.GraphOptimizationLevel member
ORT_GRAPH_OPT_LEVELS: dict[str, str] = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


class OnnxPredictor(Predictor):
    """onnxruntime, CPU provider; graph optimisation ``ort_opt_level`` (default all), ``inter_op_threads``
    (default 1: sequential execution; more: parallel execution of independent nodes)."""

    family = "onnxruntime"

    def _load(self) -> None:
        import onnxruntime as ort  # import cost: onnxruntime, only the onnx format needs it

        if self.ort_opt_level not in ORT_GRAPH_OPT_LEVELS:
            raise ArtifactError(
                f"ort_opt_level must be one of {', '.join(ORT_GRAPH_OPT_LEVELS)}, got {self.ort_opt_level!r}"
            )
        if isinstance(self.inter_op_threads, bool) or not (
            isinstance(self.inter_op_threads, int) and self.inter_op_threads >= 1
        ):
            raise ArtifactError(f"inter_op_threads must be >= 1, got {self.inter_op_threads!r}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, ORT_GRAPH_OPT_LEVELS[self.ort_opt_level]
        )
        # inter-op threads only run independent nodes in parallel under the parallel execution mode
        opts.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if self.inter_op_threads > 1 else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        opts.inter_op_num_threads = self.inter_op_threads
        if self.intra_op_threads is not None:  # None: onnxruntime's default (one per physical core)
            opts.intra_op_num_threads = self.intra_op_threads
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ArtifactError(f"onnxruntime cannot load {self.path}: {exc}") from None
        self._input = self._session.get_inputs()[0].name
        outputs = self._session.get_outputs()
        names = [o.name for o in outputs]
        if "probabilities" in names:
            self._outputs = ["probabilities"]
        else:
            # a user's model: a scikit-learn conversion with its ZipMap (a list of {label: p}) or a float
            # output; an integer "label" output is not the scores
            scores = [o.name for o in outputs if o.type == "tensor(float)" or o.type.startswith("seq(map(")]
            probs = [n for n in scores if "prob" in n.lower()]
            self._outputs = [(probs or scores or names)[-1]]
        self._zipmap = next(o for o in outputs if o.name == self._outputs[0]).type.startswith("seq(map(")
        self._zipmap_labels: list[str] | None = None

    def session_options(self) -> dict[str, Any]:
        """The onnxruntime options this session runs with (for /health)."""
        return {
            "ort_opt_level": self.ort_opt_level,
            "inter_op_threads": self.inter_op_threads,
            "intra_op_threads": self.intra_op_threads,
        }

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        out = self._session.run(self._outputs, {self._input: batch})[0]
        if self._zipmap:  # [{label: p, ...}, ...] in class order
            if self._zipmap_labels is None and out:
                self._zipmap_labels = [str(k) for k in out[0]]
            return np.asarray([list(row.values()) for row in out], dtype=np.float32)
        return out

    def input_meta(self) -> tuple[int, str, list[Any]]:
        """(number of inputs, the first one's element type, its shape with the batch axis)."""
        inputs = self._session.get_inputs()
        return len(inputs), inputs[0].type, list(inputs[0].shape)

    def declared_input_shape(self) -> tuple[int | None, ...] | None:
        _, _, shape = self.input_meta()
        if not shape:
            return None
        return tuple(d if isinstance(d, int) and d > 0 else None for d in shape[1:])

    def declared_class_names(self) -> list[str] | None:
        if self._zipmap:
            if self._zipmap_labels is None:
                _, _, shape = self.input_meta()
                dims = [d if isinstance(d, int) and d > 0 else 1 for d in shape[1:]]
                self._predict(np.zeros((1, *dims), dtype=np.float32))
            return self._zipmap_labels
        return _onnx_class_labels(self.path)


_ONNX_LABEL_ATTRIBUTES = ("classlabels_strings", "classlabels_int64s", "classlabels_ints")


def _onnx_class_labels(path: Path) -> list[str] | None:
    """Class labels an ONNX classifier carries (the ai.onnx.ml classifier ops' classlabels_* attribute, as
    written by skl2onnx), when exactly one node declares them."""
    import onnx  # import cost: onnx (protobuf parsing), only to read a user's model's class labels

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (
        Exception
    ):  # onnxruntime already loaded it; a model onnx cannot parse carries no labels we can read
        return None
    found: list[list[str]] = []
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "classlabels_strings" and attr.strings:
                found.append([b.decode("utf-8", "replace") for b in attr.strings])
            elif attr.name in _ONNX_LABEL_ATTRIBUTES and attr.ints:
                found.append([str(i) for i in attr.ints])
    return found[0] if len(found) == 1 else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _TorchPredictor(Predictor):
    def _load(self) -> None:
        import torch  # import cost: torch (~1 s), never imported by an onnx or scikit-learn predictor

        if self.intra_op_threads is not None:
            torch.set_num_threads(self.intra_op_threads)  # process-wide
        self._torch = torch
        self._module = self._load_module()

    @abstractmethod
    def _load_module(self) -> Any: ...

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            return self._module(torch.from_numpy(batch)).numpy()


class TorchPicklePredictor(_TorchPredictor):
    family = "torch-pickle"
    pickled = True

    def _load_module(self) -> Any:
        # weights_only=False unpickles arbitrary code: only reached after the sha256 check above.
        try:
            module = self._torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as exc:  # whatever the unpickler raises for a file it cannot read
            raise ArtifactError(f"torch.load cannot read {self.path}: {_first_line(exc)}") from None
        if not isinstance(module, self._torch.nn.Module):
            raise ArtifactError(
                f"{self.path} holds a {type(module).__name__}, not a torch.nn.Module (a whole module saved "
                "with torch.save); a state_dict alone has no architecture to serve"
            )
        return module.eval()


class TorchScriptPredictor(_TorchPredictor):
    family = "torchscript"

    def _load_module(self) -> Any:
        with quiet_jit_deprecation():
            try:
                return self._torch.jit.load(str(self.path), map_location="cpu").eval()
            except Exception as exc:  # torch raises RuntimeError and others for unreadable archives
                raise ArtifactError(f"torch.jit.load cannot read {self.path}: {_first_line(exc)}") from None


class ExportedProgramPredictor(_TorchPredictor):
    family = "torch-export"

    def _load_module(self) -> Any:
        try:
            self._program = self._torch.export.load(self.path)
        except Exception as exc:  # torch raises several types for unreadable archives
            raise ArtifactError(f"torch.export.load cannot read {self.path}: {_first_line(exc)}") from None
        return self._program.module()

    def declared_input_shape(self) -> tuple[int | None, ...] | None:
        program = self._program
        user_inputs = list(program.graph_signature.user_inputs)
        if len(user_inputs) != 1:
            raise ArtifactError(
                f"{self.path} takes {len(user_inputs)} inputs; deploybench serves models with one input"
            )
        for node in program.graph.nodes:
            if node.op == "placeholder" and node.name == user_inputs[0]:
                val = node.meta.get("val")
                shape = getattr(val, "shape", None)
                if shape is None or len(shape) < 2:
                    return None
                return tuple(d if isinstance(d, int) else None for d in shape[1:])
        return None


PREDICTOR_CLASSES: dict[tuple[str, str], type[Predictor]] = {
    ("scikit-learn", "pickle"): SklearnJoblibPredictor,
    ("scikit-learn", "onnx"): OnnxPredictor,
    ("scikit-learn", "onnx-int8"): OnnxPredictor,
    ("torch", "pickle"): TorchPicklePredictor,
    ("torch", "onnx"): OnnxPredictor,
    ("torch", "onnx-int8"): OnnxPredictor,
    ("torch", "torchscript"): TorchScriptPredictor,
    ("torch", "pt2"): ExportedProgramPredictor,
}


def open_predictor(
    model: str,
    fmt: str,
    path: Path,
    *,
    expected_sha256: str | None = None,
    intra_op_threads: int | None = None,
    ort_opt_level: str = "all",
    inter_op_threads: int = 1,
) -> Predictor:  # a zoo artifact; a user's file: deploybench.targets.modelfile
    """Load one artifact file directly (no manifest). Pickles need ``expected_sha256``. ``ort_opt_level``
    and ``inter_op_threads`` are onnxruntime's (ignored by the other formats)."""
    spec = get_spec(model)
    check_format(spec, fmt)
    cls = PREDICTOR_CLASSES[(spec.library, fmt)]
    return cls(
        model,
        fmt,
        Path(path),
        expected_sha256=expected_sha256,
        intra_op_threads=intra_op_threads,
        ort_opt_level=ort_opt_level,
        inter_op_threads=inter_op_threads,
    )


def load_predictor(
    model: str,
    fmt: str,
    zoo_dir: Path | None = None,
    intra_op_threads: int | None = None,
    *,
    ort_opt_level: str = "all",
    inter_op_threads: int = 1,
) -> Predictor:
    """Load a built artifact from the zoo (default deploybench.paths.zoo_dir()).

    Raises ArtifactError for an unknown model/format, a missing manifest or artifact, or a pickle whose
    sha256 differs from the manifest's. ``intra_op_threads``: torch.set_num_threads (process-wide) for torch
    formats, SessionOptions.intra_op_num_threads for onnx; None keeps the library default.
    ``ort_opt_level`` / ``inter_op_threads``: the onnxruntime session's graph optimisation and inter-op
    threads (onnx formats only).
    """
    entry, path = artifact_entry(model, fmt, zoo_dir)
    return open_predictor(
        model,
        fmt,
        path,
        expected_sha256=entry.get("sha256"),
        intra_op_threads=intra_op_threads,
        ort_opt_level=ort_opt_level,
        inter_op_threads=inter_op_threads,
    )
