"""One contract for every model format: ``Predictor.predict(batch) -> probabilities``.

A batch is float32 ``(n, *input_shape)`` (iris rows, or preprocessed (3, 224, 224) image tensors); the
result is float32 ``(n, n_classes)`` probabilities. One class per format family:

- ``SklearnJoblibPredictor``  scikit-learn estimator saved with joblib (format "pickle")
- ``TorchPicklePredictor``    whole torch nn.Module saved with torch.save (format "pickle")
- ``OnnxPredictor``           onnxruntime InferenceSession, CPU provider (format "onnx")
- ``TorchScriptPredictor``    traced + frozen TorchScript (format "torchscript")
- ``ExportedProgramPredictor`` torch.export program, ``torch.export.load(...).module()`` (format "pt2")

Pickled artifacts execute code when loaded, so they are only loaded after their sha256 matched the zoo
manifest (else ArtifactError). Each class imports its own library on first use: an ONNX predictor never
imports torch.
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

from targets.catalog import ArtifactError, ModelSpec, artifact_entry, check_format, get_spec, sha256_file


@contextlib.contextmanager
def quiet_jit_deprecation() -> Iterator[None]:
    """Silence exactly torch 2.13's "`torch.jit.X` is deprecated" DeprecationWarnings (TorchScript is
    deprecated, but it is one of the formats being measured); every other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
        )
        yield


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
    ):
        self.spec: ModelSpec = get_spec(model)
        self.model = model
        self.format = fmt
        self.path = Path(path)
        self.intra_op_threads = intra_op_threads
        if intra_op_threads is not None and intra_op_threads < 1:
            raise ArtifactError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
        if not self.path.is_file():
            raise ArtifactError(f"{model} {fmt} artifact not found: {self.path}")
        start_ns = time.perf_counter_ns()
        if self.pickled:
            if expected_sha256 is None:
                raise ArtifactError(
                    f"refusing to unpickle {self.path}: no expected sha256 to check it against"
                )
            actual = sha256_file(self.path)
            if actual != expected_sha256:
                raise ArtifactError(
                    f"refusing to unpickle {self.path}: sha256 {actual} does not match the manifest's "
                    f"{expected_sha256} (file changed after the build); rebuild with `deploybench build`"
                )
        self._load()
        self.load_ns = time.perf_counter_ns() - start_ns

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _predict(self, batch: np.ndarray) -> np.ndarray: ...

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 (n, *input_shape) -> float32 (n, n_classes) probabilities."""
        batch = np.asarray(batch)
        if batch.ndim != 1 + len(self.spec.input_shape) or tuple(batch.shape[1:]) != self.spec.input_shape:
            raise ValueError(
                f"{self.model} expects a batch of shape (n, {', '.join(map(str, self.spec.input_shape))}), "
                f"got {tuple(batch.shape)}"
            )
        if batch.shape[0] < 1:
            raise ValueError(f"{self.model}: empty batch")
        out = self._predict(np.ascontiguousarray(batch, dtype=np.float32))
        return np.asarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, format={self.format!r}, path={str(self.path)!r})"


class SklearnJoblibPredictor(Predictor):
    family = "sklearn-joblib"
    pickled = True

    def _load(self) -> None:
        import joblib  # import cost: joblib, only the scikit-learn pickle format needs it

        self._estimator: Any = joblib.load(self.path)

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        return self._estimator.predict_proba(batch)


class OnnxPredictor(Predictor):
    """onnxruntime, CPU provider, all graph optimisations, sequential execution (inter-op 1)."""

    family = "onnxruntime"

    def _load(self) -> None:
        import onnxruntime as ort  # import cost: onnxruntime, only the onnx format needs it

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if self.intra_op_threads is not None:  # None: onnxruntime's default (one per physical core)
            opts.intra_op_num_threads = self.intra_op_threads
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ArtifactError(f"onnxruntime cannot load {self.path}: {exc}") from None
        self._input = self._session.get_inputs()[0].name
        names = [o.name for o in self._session.get_outputs()]
        self._outputs = ["probabilities"] if "probabilities" in names else [names[-1]]

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(self._outputs, {self._input: batch})[0]


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
        module = self._torch.load(self.path, map_location="cpu", weights_only=False)
        return module.eval()


class TorchScriptPredictor(_TorchPredictor):
    family = "torchscript"

    def _load_module(self) -> Any:
        with quiet_jit_deprecation():
            return self._torch.jit.load(str(self.path), map_location="cpu").eval()


class ExportedProgramPredictor(_TorchPredictor):
    family = "torch-export"

    def _load_module(self) -> Any:
        return self._torch.export.load(self.path).module()


PREDICTOR_CLASSES: dict[tuple[str, str], type[Predictor]] = {
    ("scikit-learn", "pickle"): SklearnJoblibPredictor,
    ("scikit-learn", "onnx"): OnnxPredictor,
    ("torch", "pickle"): TorchPicklePredictor,
    ("torch", "onnx"): OnnxPredictor,
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
) -> Predictor:
    """Load one artifact file directly (no manifest). Pickles need ``expected_sha256``."""
    spec = get_spec(model)
    check_format(spec, fmt)
    cls = PREDICTOR_CLASSES[(spec.library, fmt)]
    return cls(model, fmt, Path(path), expected_sha256=expected_sha256, intra_op_threads=intra_op_threads)


def load_predictor(
    model: str, fmt: str, zoo_dir: Path | None = None, intra_op_threads: int | None = None
) -> Predictor:
    """Load a built artifact from the zoo (default deploybench.paths.zoo_dir()).

    Raises ArtifactError for an unknown model/format, a missing manifest or artifact, or a pickle whose
    sha256 differs from the manifest's. ``intra_op_threads``: torch.set_num_threads (process-wide) for torch
    formats, SessionOptions.intra_op_num_threads for onnx; None keeps the library default.
    """
    entry, path = artifact_entry(model, fmt, zoo_dir)
    return open_predictor(
        model, fmt, path, expected_sha256=entry.get("sha256"), intra_op_threads=intra_op_threads
    )
