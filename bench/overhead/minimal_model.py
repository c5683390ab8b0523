"""The model of a minimal app: an onnxruntime session on the same zoo artifact as our target, one intra-op
thread (as our targets default to), and the seed's image pre-processing (resize the shorter side to 256,
centre-crop 224, ImageNet mean/std). Configured by the environment the overhead runner sets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from deploybench.targets.catalog import MODELS

MODEL_PATH_ENV = "DEPLOYBENCH_MINIMAL_MODEL_PATH"
MODEL_NAME_ENV = "DEPLOYBENCH_MINIMAL_MODEL"
HANDLER_ENV = "DEPLOYBENCH_MINIMAL_HANDLER"  # FastAPI: inline (async def, default) | threadpool (def)
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass
class MinimalModel:
    session: Any
    input_name: str
    classes: list[str]

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["probabilities"], {self.input_name: x})[0]

    @staticmethod
    def image_tensor(img: Image.Image) -> np.ndarray:
        w, h = img.size
        s = 256 / min(w, h)
        img = img.resize((max(256, round(w * s)), max(256, round(h * s))), Image.Resampling.BILINEAR)
        w, h = img.size
        left, top = (w - 224) // 2, (h - 224) // 2
        img = img.crop((left, top, left + 224, top + 224))
        x = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
        return np.ascontiguousarray(x.transpose(2, 0, 1)[np.newaxis])


def load_from_env() -> MinimalModel:
    import onnxruntime as ort  # import cost: only the served app needs it

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(os.environ[MODEL_PATH_ENV], opts, providers=["CPUExecutionProvider"])
    name = os.environ[MODEL_NAME_ENV]
    return MinimalModel(session, session.get_inputs()[0].name, list(MODELS[name].class_names))
