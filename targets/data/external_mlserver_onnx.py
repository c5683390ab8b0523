"""A small MLServer runtime for the zoo's ONNX classifiers (onnxruntime, CPU), shipped as package data.

It runs inside the MLServer virtualenv (deploybench.targets.external), never in deploybench's own: the
launcher copies it next to the model-settings.json as ``deploybench_onnx_runtime.py`` and names
``deploybench_onnx_runtime.OnnxClassifier`` as the model's implementation. Settings (model-settings.json
``parameters``): ``uri`` the .onnx file; ``extra.intra_op_threads`` (default 1).

Request: one FP32 input [n, F] (Open Inference Protocol v2). Response: one FP32 output ``predict_proba``
[n, classes], the class probabilities in class order (the same name as mlserver-sklearn's output for a
pickle, so both formats answer alike).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

OUTPUT_NAME = "predict_proba"


class OnnxClassifier(MLModel):
    async def load(self) -> bool:
        uri = await get_model_uri(self._settings)
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = int(extra.get("intra_op_threads", 1))
        self._session = ort.InferenceSession(str(uri), opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        names = [o.name for o in self._session.get_outputs()]
        # the zoo's torch exports name it "probabilities"; skl2onnx (zipmap=False) "probabilities" too
        self._output = "probabilities" if "probabilities" in names else names[-1]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if len(payload.inputs) != 1:
            raise InferenceError(f"expected one input tensor [n, features], got {len(payload.inputs)}")
        batch = self.decode_request(payload, default_codec=NumpyRequestCodec)
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 1:
            batch = batch[np.newaxis]
        try:
            probs = self._session.run([self._output], {self._input: batch})[0]
        except Exception as exc:  # onnxruntime's own exception types: a bad shape or type
            raise InferenceError(f"onnxruntime rejected the input: {exc}") from None
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(OUTPUT_NAME, np.asarray(probs, dtype=np.float32))],
        )
