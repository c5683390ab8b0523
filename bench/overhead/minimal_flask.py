"""A minimal Flask app, as small as the seed writes it: ``request.get_json()``, run the model, ``jsonify`` the
prediction and its probabilities. No limits, no timing header: the yardstick our Flask target is measured
against (``deploybench.bench.overhead.runner``). Served with ``gunicorn
'deploybench.bench.overhead.minimal_flask:create_app()'``.
"""

from __future__ import annotations

import io

import numpy as np
from flask import Flask, jsonify, request
from PIL import Image

from deploybench.bench.overhead.minimal_model import MinimalModel, load_from_env


def create_app() -> Flask:
    model: MinimalModel = load_from_env()
    app = Flask(__name__)

    @app.get("/health")
    def health() -> object:
        return jsonify(status="ok")

    @app.post("/predict")
    def predict() -> object:
        features = request.get_json()["features"]
        probs = model.run(np.array([features], dtype=np.float32))[0]
        i = int(np.argmax(probs))
        return jsonify(
            prediction=model.classes[i],
            probabilities={c: float(p) for c, p in zip(model.classes, probs, strict=True)},
        )

    @app.post("/predict/image")
    def predict_image() -> object:
        img = Image.open(io.BytesIO(request.files["file"].read())).convert("RGB")
        probs = model.run(model.image_tensor(img))[0]
        top = np.argsort(-probs)[:5]
        return jsonify(top_5=[{"class": model.classes[i], "probability": float(probs[i])} for i in top])

    return app
