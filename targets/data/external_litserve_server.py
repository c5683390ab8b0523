"""A LitServe server for the zoo's tabular classifiers, answering deploybench's own API (package data).

It runs inside the LitServe virtualenv (deploybench.targets.external), never in deploybench's own:

    python external_litserve_server.py --artifact FILE --format onnx|pickle --model NAME --port N
        [--host 127.0.0.1] [--workers N] [--max-batch-size N] [--batch-timeout-s S] [--classes a,b,c]

- POST /predict ``{"features": [F numbers]}`` or ``{"instances": [[F numbers], ...]}`` -> the body
  deploybench's targets return: one item ``{"prediction", "class_id", "probabilities": {class: p},
  "confidence"}``, or ``{"predictions": [item, ...]}`` for ``instances``. Bad input: 4xx with
  ``{"detail": "..."}`` (LitServe's error body).
- GET /health -> ``{"status": "ok", "framework": "litserve", "model", "format", "workers"}`` once every
  inference worker has loaded the model (503 before); LitServe's own check moves to /litserve/health.
- Batching is LitServe's: ``--max-batch-size`` > 1 gathers up to that many requests (each may hold several
  rows) for at most ``--batch-timeout-s``; ``--workers`` is LitServe's ``workers_per_device`` on the CPU.
"""

from __future__ import annotations

import argparse
import math
import os

import litserve as ls
import numpy as np
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from litserve.utils import WorkerSetupStatus

MAX_ROWS = 256  # deploybench's Limits.max_batch
MAX_FEATURE_VALUE = 1000.0


def _row(row: object, where: str, n_features: int) -> list[float]:
    if not isinstance(row, list) or len(row) != n_features:
        raise HTTPException(422, f"{where} must be an array of exactly {n_features} numbers")
    out = []
    for i, v in enumerate(row):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise HTTPException(422, f"{where}[{i}] must be a number")
        if not math.isfinite(v) or not 0 <= v <= MAX_FEATURE_VALUE:
            raise HTTPException(422, f"{where}[{i}] must be finite, >= 0 and <= {MAX_FEATURE_VALUE:g}")
        out.append(float(v))
    return out


def parse_rows(body: object, n_features: int) -> tuple[np.ndarray, bool]:
    """(float32 [n, F], is_batch) from a deploybench tabular request; HTTPException 4xx when invalid."""
    if not isinstance(body, dict) or not body.keys() & {"features", "instances"}:
        raise HTTPException(422, "give 'features': [numbers] or 'instances': [[numbers], ...]")
    if "features" in body and "instances" in body:
        raise HTTPException(422, "give either 'features' or 'instances', not both")
    if "features" in body:
        return np.asarray([_row(body["features"], "features", n_features)], dtype=np.float32), False
    rows = body["instances"]
    if not isinstance(rows, list) or not rows:
        raise HTTPException(422, "instances must be a non-empty array of rows")
    if len(rows) > MAX_ROWS:
        raise HTTPException(413, f"instances has {len(rows)} rows; at most {MAX_ROWS}")
    batch = [_row(r, f"instances[{i}]", n_features) for i, r in enumerate(rows)]
    return np.asarray(batch, dtype=np.float32), True


class Classifier:
    """The zoo artifact behind the API: onnxruntime (CPU, 1 intra-op thread) or a scikit-learn pickle."""

    def __init__(self, artifact: str, fmt: str) -> None:
        if fmt == "onnx":
            import onnxruntime as ort  # import cost: onnxruntime, only the onnx format needs it

            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.inter_op_num_threads = 1
            opts.intra_op_num_threads = 1
            self._session = ort.InferenceSession(artifact, opts, providers=["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name
            names = [o.name for o in self._session.get_outputs()]
            self._output = "probabilities" if "probabilities" in names else names[-1]
            self.n_features = int(self._session.get_inputs()[0].shape[1])
            self.predict = self._predict_onnx
        elif fmt == "pickle":
            import joblib  # import cost: joblib + scikit-learn, only the pickle format needs them

            self._estimator = joblib.load(artifact)
            self.n_features = int(self._estimator.n_features_in_)
            self.predict = self._estimator.predict_proba
        else:
            raise SystemExit(f"unsupported format {fmt!r} (onnx or pickle)")

    def _predict_onnx(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([self._output], {self._input: batch})[0]


class TabularAPI(ls.LitAPI):
    """One request at a time (max_batch_size 1): predict gets one request's rows."""

    def __init__(self, artifact: str, fmt: str, classes: list[str], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.artifact, self.fmt, self.classes = artifact, fmt, classes

    def setup(self, device: str) -> None:
        self.model = Classifier(self.artifact, self.fmt)
        self.model.predict(np.zeros((1, self.model.n_features), dtype=np.float32))  # warm-up

    def decode_request(self, request: dict) -> tuple[np.ndarray, bool]:
        return parse_rows(request, self.model.n_features)

    def predict(self, x: tuple[np.ndarray, bool]) -> tuple[list[list[float]], bool]:
        rows, is_batch = x
        return np.asarray(self.model.predict(rows), dtype=np.float64).tolist(), is_batch

    def encode_response(self, output: tuple[list[list[float]], bool]) -> dict:
        probs, is_batch = output
        items = [self._item(p) for p in probs]
        return {"predictions": items} if is_batch else items[0]

    def _item(self, p: list[float]) -> dict:
        i = max(range(len(p)), key=p.__getitem__)  # the first highest, as np.argmax
        return {
            "prediction": self.classes[i],
            "class_id": i,
            "probabilities": dict(zip(self.classes, p, strict=True)),
            "confidence": p[i],
        }


class BatchedTabularAPI(TabularAPI):
    """LitServe's batching: several requests' rows stacked into one predict call, then split back."""

    def batch(self, inputs: list[tuple[np.ndarray, bool]]) -> tuple[np.ndarray, list[int], list[bool]]:
        return (
            np.concatenate([rows for rows, _ in inputs]),
            [len(rows) for rows, _ in inputs],
            [is_batch for _, is_batch in inputs],
        )

    def predict(self, x: tuple[np.ndarray, list[int], list[bool]]) -> list[tuple[list[list[float]], bool]]:
        rows, sizes, flags = x
        probs = np.asarray(self.model.predict(rows), dtype=np.float64).tolist()
        out, start = [], 0
        for n, is_batch in zip(sizes, flags, strict=True):
            out.append((probs[start : start + n], is_batch))
            start += n
        return out

    def unbatch(self, output: list[tuple[list[list[float]], bool]]) -> list[tuple[list[list[float]], bool]]:
        return output


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--format", required=True, choices=("onnx", "pickle"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--classes", default="setosa,versicolor,virginica")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-batch-size", type=int, default=1)
    ap.add_argument("--batch-timeout-s", type=float, default=0.0)
    args = ap.parse_args()
    classes = args.classes.split(",")
    if args.max_batch_size > 1:
        api: TabularAPI = BatchedTabularAPI(
            os.path.abspath(args.artifact), args.format, classes,
            max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout_s,
        )  # fmt: skip
    else:
        api = TabularAPI(os.path.abspath(args.artifact), args.format, classes)
    server = ls.LitServer(
        api, accelerator="cpu", workers_per_device=args.workers, healthcheck_path="/litserve/health"
    )

    @server.app.get("/health")
    async def health() -> JSONResponse:
        status = getattr(server, "workers_setup_status", None) or {}
        ready = bool(status) and all(v == WorkerSetupStatus.READY for v in status.values())
        body = {
            "status": "ok" if ready else "loading",
            "framework": "litserve",
            "model": args.model,
            "format": args.format,
            "workers": args.workers,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
