"""The names deploybench's parts agree on, defined once: frameworks and their servers, model formats,
scenarios, load models, report formats, and the environment variables a launcher and its workers share."""

from __future__ import annotations

# Web frameworks and the servers that can run each one; the first server is the default.
FRAMEWORK_SERVERS: dict[str, tuple[str, ...]] = {
    "flask": ("gunicorn-sync", "gunicorn-gthread"),
    "fastapi": ("uvicorn", "gunicorn-uvicorn"),
}
FRAMEWORKS: tuple[str, ...] = tuple(FRAMEWORK_SERVERS)
# Third-party model servers that compare can start as choices, each in its own virtualenv
# (deploybench.targets.external): Seldon MLServer (Open Inference Protocol v2) and Lightning LitServe.
MODEL_SERVERS: tuple[str, ...] = ("mlserver", "litserve")
SERVERS: tuple[str, ...] = tuple(s for servers in FRAMEWORK_SERVERS.values() for s in servers)
DEFAULT_SERVER: dict[str, str] = {fw: servers[0] for fw, servers in FRAMEWORK_SERVERS.items()}

# Where a FastAPI target runs the inference: "inline" in the event loop (an ``async def`` endpoint calling
# the model, as the seed writes it), or "threadpool" (a ``def`` endpoint: a hop to a worker thread, the loop
# stays free). "auto" picks per model kind (deploybench.targets.serve.TargetConfig.resolved_handler). Flask's
# counterpart is the server: gunicorn-sync vs gunicorn-gthread.
HANDLER_STYLES: tuple[str, ...] = ("auto", "inline", "threadpool")

# onnxruntime graph-optimisation levels (SessionOptions.graph_optimization_level, GraphOptimizationLevel
# ORT_DISABLE_ALL / ORT_ENABLE_BASIC / ORT_ENABLE_EXTENDED / ORT_ENABLE_ALL): TargetConfig.ort_opt_level.
ORT_OPT_LEVELS: tuple[str, ...] = ("disable", "basic", "extended", "all")

# Model artifact formats ("pickle" is joblib for scikit-learn, torch.save of the module for torch;
# "onnx-int8" is the zoo's "onnx" quantized to int8 by onnxruntime.quantization, built from it).
MODEL_FORMATS: tuple[str, ...] = ("pickle", "onnx", "onnx-int8", "torchscript", "pt2")

# Model tasks; each has the load scenario of the same name. "health" measures the harness alone; "oip"
# drives any Open Inference Protocol v2 server (POST /v2/models/NAME/infer, ours included).
TASKS: tuple[str, ...] = ("tabular", "image")
SCENARIOS: tuple[str, ...] = (*TASKS, "health", "oip")

# How a load generator sends: closed loop (users back to back) or open-loop arrivals at a rate.
OPEN_LOOP_MODELS: tuple[str, ...] = ("constant", "poisson")
LOAD_MODELS: tuple[str, ...] = ("closed", *OPEN_LOOP_MODELS)
# Load generators: the lean engine (built-in scenarios and URL + payload runs) and Locust (locustfiles,
# the web UI, master/worker across machines).
ENGINES: tuple[str, ...] = ("lean", "locust")

# What `deploybench report` writes.
REPORT_FORMATS: tuple[str, ...] = ("md", "html", "csv", "json")

# A target's launcher and its server workers: the TargetConfig (JSON) and the folder of readiness files.
CONFIG_ENV = "DEPLOYBENCH_TARGET_CONFIG"
READY_DIR_ENV = "DEPLOYBENCH_READY_DIR"
