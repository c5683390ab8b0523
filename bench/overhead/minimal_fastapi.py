"""A minimal FastAPI app, as small as the seed writes it: parse the JSON (or the upload), run the model inline
in an ``async def`` endpoint, return the prediction and its probabilities. No limits, no timing header, no
deadline: the yardstick our FastAPI target is measured against (``deploybench.bench.overhead.runner``). With
DEPLOYBENCH_MINIMAL_HANDLER=threadpool the endpoints are plain ``def`` (FastAPI runs them in its threadpool):
the yardstick of our target's threadpool handler style.

Served with ``uvicorn --factory deploybench.bench.overhead.minimal_fastapi:create_app`` (or gunicorn +
uvicorn worker); the model comes from the environment (``deploybench.bench.overhead.minimal_model``).
"""

from __future__ import annotations

import io
import os

import numpy as np
from fastapi import FastAPI, File, UploadFile
from PIL import Image
from pydantic import BaseModel

from deploybench.bench.overhead.minimal_model import HANDLER_ENV, MinimalModel, load_from_env


class IrisRequest(BaseModel):
    features: list[float]


def create_app() -> FastAPI:
    model: MinimalModel = load_from_env()
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    if os.environ.get(HANDLER_ENV, "inline") == "inline":

        @app.post("/predict")
        async def predict(req: IrisRequest) -> dict[str, object]:
            probs = model.run(np.array([req.features], dtype=np.float32))[0]
            i = int(np.argmax(probs))
            return {
                "prediction": model.classes[i],
                "probabilities": {c: float(p) for c, p in zip(model.classes, probs, strict=True)},
            }

        @app.post("/predict/image")
        async def predict_image(file: UploadFile = File(...)) -> dict[str, object]:  # noqa: B008
            img = Image.open(io.BytesIO(await file.read())).convert("RGB")
            probs = model.run(model.image_tensor(img))[0]
            top = np.argsort(-probs)[:5]
            return {"top_5": [{"class": model.classes[i], "probability": float(probs[i])} for i in top]}

    else:

        @app.post("/predict")
        def predict_def(req: IrisRequest) -> dict[str, object]:
            probs = model.run(np.array([req.features], dtype=np.float32))[0]
            i = int(np.argmax(probs))
            return {
                "prediction": model.classes[i],
                "probabilities": {c: float(p) for c, p in zip(model.classes, probs, strict=True)},
            }

        @app.post("/predict/image")
        def predict_image_def(file: UploadFile = File(...)) -> dict[str, object]:  # noqa: B008
            img = Image.open(io.BytesIO(file.file.read())).convert("RGB")
            probs = model.run(model.image_tensor(img))[0]
            top = np.argsort(-probs)[:5]
            return {"top_5": [{"class": model.classes[i], "probability": float(probs[i])} for i in top]}

    return app
