"""Matrix files for `deploybench compare`: parse + validate a TOML config, expand it into choices.

A config file (see the built-in ones, ``deploybench/decisions/compare/configs/*.toml``) has these tables,
every key optional (defaults below)::

    name = "quick"
    description = "..."

    [matrix]                       # the cartesian product of these axes, invalid combinations skipped
    framework = ["fastapi", "flask"]
    server = ["uvicorn", "gunicorn-sync"]
    model = ["iris-rf"]
    format = ["pickle", "onnx"]
    workers = [1]
    threads = [1]                  # only gunicorn-gthread uses threads > 1
    handler = ["auto"]             # FastAPI: auto | inline | threadpool (non-auto x flask: skipped)
    intra_op_threads = [1]         # model runtime threads per worker (torch / onnxruntime / OpenMP)
    inter_op_threads = [1]         # onnxruntime inter-op threads (ONNX formats only; others: skipped)
    ort_opt_level = ["all"]        # onnxruntime graph optimisation: disable | basic | extended | all
    max_batch_size = [0]           # server-side dynamic batching: rows per batch (0: off; Flask needs
                                   # gunicorn-gthread with threads >= 2, else skipped)
    max_queue_delay_us = [0]       # ... how long a batch's first request may wait for more (Triton's
                                   # max_queue_delay_microseconds)

    Frameworks ``mlserver`` and ``litserve`` are third-party model servers (deploybench.targets.external),
    each started from its own virtualenv (created on first use); the server, threads and handler axes do
    not apply to them (one choice each), nor do the onnxruntime options.

    [slo]
    p99_ms = 50.0                  # corrected P99 must stay under this
    max_error_ratio = 0.01
    min_throughput_ratio = 0.95    # achieved / offered
    thresholds = []                # absolute limits per choice, e.g. ["p99<20ms", "throughput>500"]:
                                   # latency and error_ratio at the common rate, throughput on the max rate
                                   # under the SLO; a choice crossing one is not recommended (exit 3 if all)

    [measure]
    scenario = "auto"              # "auto" = from the models' task (tabular / image)
    users = 8                      # closed-loop users for warm-up + stability windows
    open_loop_users = 0            # open-loop senders; 0 = enough for 2 x SLO of requests at the rate (>= 16)
    warmup_s = 2.0
    window_s = 2.0                 # one stability window
    stability_windows = 3          # ... this many consecutive windows
    stability_tolerance = 0.10     # ... within 10% (max/min) of each other
    max_windows = 6
    max_stability_s = 20.0
    common_rate_rps = 50.0         # every choice is also measured at this open-loop rate (P50/P95/P99, CPU)
    common_duration_s = 4.0        # (longer when needed for search.min_step_requests requests)
    load_model = "poisson"         # open-loop arrivals: "constant" | "poisson"
    pin = "auto"                   # true: server and generator on cores of their own; "auto": when >= 2 CPUs
    engine = "lean"                # load generator: "lean" (uvloop + httptools) | "locust"
    expect_workers = 0             # > 0: every run is a Locust master for this many remote workers
    master_bind = "127.0.0.1:5557" # ... bound here (`deploybench worker --keep --master HOST:5557` on each)
    sweep_users = []               # a concurrency sweep per choice: [1, 2, 4, 8, 16] or "1:16:x2" (closed
                                   # loop); the curve and its knee (max throughput / P99) in the report
    sweep_rates = []               # a rate sweep per choice (open loop): [100, 200] or "100:800:x2"
    sweep_s = 2.0                  # measured seconds per sweep point

    [[models]]                     # your own model files (repeatable); each is on the model axis by name
    name = "digits"                # default: the first file's stem
    files = { onnx = "digits.onnx", pickle = "digits.joblib" }  # format = path (relative to this file),
                                   # or a list of paths (formats from the extensions); every file is a choice
    trust_pickle = "<sha256>"      # the opt-in to unpickle its pickle file (see
    deploybench.targets.modelfile)
    input_shape = [64]             # only when no file declares it; also sample_input, labels, mean, std,
                                   # resize_px (as the --model-file options)

    [[urls]]                       # already-running services (repeatable): measured and ranked the same way,
    name = "current"               # never started or stopped
    url = "http://127.0.0.1:8000"

    [search]                       # saturation search: bisection over open-loop rates
    step_s = 3.0                   # measured seconds per probed rate
    step_warmup_s = 1.0
    lo_factor = 0.5                # bounds = factor x closed-loop throughput ...
    hi_factor = 1.25
    lo_rps = 0.0                   # ... unless given in rps (> 0)
    hi_rps = 0.0
    max_probes = 6
    rel_tolerance = 0.10           # the coarse search stops at this bracket
    max_expansions = 1
    min_step_requests = 400        # a step lasts long enough for this many requests (P99 from >= 100) ...
    max_step_s = 10.0              # ... but at most this long
    repeats = 3                    # repeated searches after the coarse one (0: the coarse search only)
    repeat_probes = 3              # probes per repeated search (bisections of the widened coarse bracket)
    repeat_extra_probes = 2        # ... plus at most this many when the boundary lies outside it
    repeat_margin = 0.10           # the coarse bracket widened by this on both sides
    repeat_restart = true          # each repeated search after the first on a freshly started target,
                                   # interleaved across the choices (repeat 2 of all, then repeat 3 of all)

    [plan]                         # a traffic target: the report's capacity section (deploybench plan)
    traffic_rps = 0.0              # 0: none; else replicas, cores and cost per choice at this traffic
    headroom = 0.0                 # share of each replica's capacity kept free, in [0, 0.95)
    core_hour_price = 0.0          # 0: no costs
    cores_per_replica = 0          # 0: as measured (more is extrapolated, said so)

With ``[[models]]`` or ``[[urls]]`` and no ``[matrix] model``, the model axis is the ``[[models]]`` names
(none for a file of URLs only). A user model's files are all measured, whatever ``[matrix] format`` says
(that axis picks zoo artifacts); the zoo and user models on the axis must share one task (one scenario).

Every problem is a UsageError naming the file and the key (exit code 2).
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from deploybench.compare_doc import Choice, Skipped
from deploybench.errors import UsageError
from deploybench.io import parse_host_port
from deploybench.sweep import check_points, parse_points
from deploybench.targets.catalog import MODELS, missing_format_reason
from deploybench.targets.external import external_unsupported
from deploybench.targets.modelfile import (
    NAME_RE,
    ModelFileError,
    UserModel,
    UserModelInfo,
    default_model_name,
    inspect_user_model,
    parse_floats,
    parse_shape,
    resolve_format,
)
from deploybench.targets.serve import TargetConfig, batching_unsupported, ort_options_unsupported
from deploybench.thresholds import ThresholdError, parse_thresholds
from deploybench.vocabulary import (
    ENGINES,
    FRAMEWORK_SERVERS,
    HANDLER_STYLES,
    MODEL_FORMATS,
    MODEL_SERVERS,
    OPEN_LOOP_MODELS,
    ORT_OPT_LEVELS,
    SERVERS,
    TASKS,
)

SWEEP_AXES = {"sweep_users": "users", "sweep_rates": "rate"}  # [measure] key -> deploybench.sweep axis

# The built-in matrix files, shipped as package data (``--config quick`` = configs/quick.toml).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = "quick"
SCENARIOS = ("auto", *TASKS)  # "auto": the scenario of the models' task


@dataclass
class MatrixAxes:
    framework: list[str] = field(default_factory=lambda: ["fastapi", "flask"])
    server: list[str] = field(default_factory=lambda: ["uvicorn", "gunicorn-sync"])
    model: list[str] = field(default_factory=lambda: ["iris-rf"])
    format: list[str] = field(default_factory=lambda: ["pickle", "onnx"])
    workers: list[int] = field(default_factory=lambda: [1])
    threads: list[int] = field(default_factory=lambda: [1])
    handler: list[str] = field(default_factory=lambda: ["auto"])
    intra_op_threads: list[int] = field(default_factory=lambda: [1])
    inter_op_threads: list[int] = field(default_factory=lambda: [1])
    ort_opt_level: list[str] = field(default_factory=lambda: ["all"])
    max_batch_size: list[int] = field(default_factory=lambda: [0])
    max_queue_delay_us: list[int] = field(default_factory=lambda: [0])


@dataclass
class SloConfig:
    p99_ms: float = 50.0
    max_error_ratio: float = 0.01
    min_throughput_ratio: float = 0.95
    thresholds: list[str] = field(default_factory=list)  # deploybench.thresholds, judged per choice


@dataclass
class MeasureConfig:
    scenario: str = "auto"
    users: int = 8
    open_loop_users: int = 0  # 0 = auto (``open_loop_users``)
    warmup_s: float = 2.0
    window_s: float = 2.0
    stability_windows: int = 3
    stability_tolerance: float = 0.10
    max_windows: int = 6
    max_stability_s: float = 20.0
    common_rate_rps: float = 50.0
    common_duration_s: float = 4.0
    load_model: str = "poisson"
    pin: bool | str = "auto"  # True | False | "auto" (pinned when 2 or more CPUs are usable: core_split)
    engine: str = "lean"  # the load generator: "lean" | "locust"
    expect_workers: int = 0  # > 0: each load run is a Locust master waiting for this many remote workers
    master_bind: str = "127.0.0.1:5557"  # HOST:PORT that master binds (a fixed port: workers reconnect to it)
    # sweeps per choice (deploybench.sweep: a latency-throughput curve and its knee), in its first pass
    sweep_users: list[float] = field(default_factory=list)  # closed loop, e.g. [1, 2, 4, 8, 16] or "1:16:x2"
    sweep_rates: list[float] = field(default_factory=list)  # open loop (load_model), rps, or "100:800:x2"
    sweep_s: float = 2.0  # measured seconds per sweep point (after search.step_warmup_s)


@dataclass
class PlanConfig:
    """``[plan]``: a traffic target makes the report's capacity section (``deploybench.decisions.plan``)."""

    traffic_rps: float = 0.0  # 0: no capacity section
    headroom: float = 0.0  # share of each replica's capacity kept free, in [0, 0.95)
    core_hour_price: float = 0.0  # 0: no costs
    cores_per_replica: int = 0  # 0: as measured


@dataclass
class SearchConfig:
    step_s: float = 3.0
    step_warmup_s: float = 1.0
    lo_factor: float = 0.5
    hi_factor: float = 1.25
    lo_rps: float = 0.0
    hi_rps: float = 0.0
    max_probes: int = 6
    rel_tolerance: float = 0.10
    max_expansions: int = 1
    min_step_requests: int = 400
    max_step_s: float = 10.0
    repeats: int = 3
    repeat_probes: int = 3
    repeat_extra_probes: int = 2
    repeat_margin: float = 0.10
    repeat_restart: bool = True


@dataclass
class UrlEntry:
    """An already-running service to measure as a choice (``[[urls]]`` / ``--url NAME=URL``)."""

    name: str
    url: str


@dataclass
class CompareConfig:
    name: str = DEFAULT_CONFIG
    description: str = ""
    source: str = ""  # the file it came from (or "built-in")
    matrix: MatrixAxes = field(default_factory=MatrixAxes)
    slo: SloConfig = field(default_factory=SloConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    models: list[UserModel] = field(default_factory=list)  # [[models]]: the user's model files
    urls: list[UrlEntry] = field(default_factory=list)  # [[urls]]: running services

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def user_model(self, name: str) -> UserModel | None:
        return next((m for m in self.models if m.name == name), None)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<dict>") -> CompareConfig:
        return _parse(dict(d), source)


# -- parsing -----------------------------------------------------------------------------------------------
_SECTIONS: dict[str, type] = {
    "matrix": MatrixAxes,
    "slo": SloConfig,
    "measure": MeasureConfig,
    "search": SearchConfig,
    "plan": PlanConfig,
}


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", str(t))


def _coerce(where: str, key: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of ``default`` (lists: of the element type; a scalar becomes [x]).
    ``pin`` takes true, false or "auto"."""
    if key == "pin":
        if isinstance(value, bool) or value == "auto":
            return value
        raise UsageError(f'{where}: `pin` must be true, false or "auto", got {value!r}')
    if key in SWEEP_AXES:  # a list of points or a range string ("1:16:x2"), deploybench.sweep's rules
        axis, option = SWEEP_AXES[key], f"{where}: `{key}`"
        if isinstance(value, str):
            return parse_points(value, axis, option)
        items = value if isinstance(value, list) else [value]
        if not items:
            return []
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in items):
            raise UsageError(f'{option} must be numbers or a range string like "1:16:x2", got {value!r}')
        check_points([float(v) for v in items], axis, option)
        return [float(v) for v in items]
    if isinstance(default, list):
        elem_type = type(default[0]) if default else str
        items = value if isinstance(value, list) else [value]
        if not items and key != "thresholds":  # no thresholds is a choice; no framework is not
            raise UsageError(f"{where}: `{key}` must not be empty")
        out = [_coerce(where, key, v, elem_type()) for v in items]
        if len(set(out)) != len(out):
            raise UsageError(f"{where}: `{key}` lists a value twice: {items}")
        return out
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UsageError(f"{where}: `{key}` must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{where}: `{key}` must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"{where}: `{key}` must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise UsageError(f"{where}: `{key}` must be a string, got {value!r}")
        return value
    raise UsageError(f"{where}: `{key}`: unsupported value {value!r}")  # pragma: no cover


def _parse_section(source: str, name: str, raw: Any) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: [{name}] must be a table")
    obj = cls()
    known = {f.name for f in fields(cls)}
    for key, value in raw.items():
        if key not in known:
            raise UsageError(f"{source}: unknown key `{key}` in [{name}] (known: {', '.join(sorted(known))})")
        setattr(obj, key, _coerce(f"{source} [{name}]", key, value, getattr(obj, key)))
    return obj


_MODEL_KEYS = ("name", "files", "input_shape", "sample_input", "labels", "mean", "std", "resize_px",
               "trust_pickle")  # fmt: skip


def _base_dir(source: str) -> Path:
    """Relative paths in a matrix file are relative to the file's folder (to the working folder otherwise)."""
    p = Path(source)
    return p.parent if source and p.suffix == ".toml" else Path()


def _parse_user_model(source: str, i: int, raw: Any) -> UserModel:
    """One ``[[models]]`` entry. Names and keys are checked here; the files when the catalog is built."""
    where = f"{source} [[models]] #{i + 1}"
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be a table")
    unknown = sorted(set(raw) - set(_MODEL_KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(_MODEL_KEYS)})")
    base = _base_dir(source)

    def path(value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise UsageError(f"{where}: `{key}` must be a path")
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else base / p)

    files_raw = raw.get("files")
    files: dict[str, str] = {}
    if isinstance(files_raw, dict):
        for fmt, value in files_raw.items():
            if fmt not in MODEL_FORMATS:
                raise UsageError(f"{where}: files: {fmt!r} is not a format ({', '.join(MODEL_FORMATS)})")
            files[fmt] = path(value, f"files.{fmt}")
    elif isinstance(files_raw, list) and files_raw:
        for value in files_raw:
            p = path(value, "files")
            try:
                fmt = resolve_format(p)
            except ModelFileError as exc:
                raise UsageError(f"{where}: {exc}") from None
            if fmt in files:
                raise UsageError(f"{where}: two {fmt} files; give one file per format")
            files[fmt] = p
    else:
        raise UsageError(f"{where}: `files` must be a table {{format = path}} or a list of paths")
    if not files:
        raise UsageError(f"{where}: `files` is empty")
    name = raw.get("name", default_model_name(next(iter(files.values()))))
    try:
        shape = raw.get("input_shape")
        if isinstance(shape, list):
            shape = parse_shape(",".join(str(d) for d in shape))
        elif shape is not None:
            shape = parse_shape(str(shape))

        def floats(key: str) -> list[float] | None:
            v = raw.get(key)
            if v is None:
                return None
            return parse_floats(",".join(map(str, v)) if isinstance(v, list) else str(v), key)

        resize = raw.get("resize_px")
        if resize is not None and (isinstance(resize, bool) or not isinstance(resize, int)):
            raise UsageError(f"{where}: `resize_px` must be an integer")
        trust = raw.get("trust_pickle")
        if trust is not None and not isinstance(trust, str):
            raise UsageError(f"{where}: `trust_pickle` must be the file's sha256 (a string)")
        return UserModel(
            name=str(name),
            files=files,
            input_shape=shape,
            sample_input=path(raw["sample_input"], "sample_input") if "sample_input" in raw else None,
            labels_file=path(raw["labels"], "labels") if "labels" in raw else None,
            mean=floats("mean"),
            std=floats("std"),
            resize_px=resize,
            trust_pickle=trust,
        )
    except ModelFileError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _parse_url(source: str, i: int, raw: Any) -> UrlEntry:
    where = f"{source} [[urls]] #{i + 1}"
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be a table")
    unknown = sorted(set(raw) - {"name", "url"})
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)} (known: name, url)")
    if not isinstance(raw.get("url"), str) or not isinstance(raw.get("name"), str):
        raise UsageError(f"{where}: needs `name` and `url` (strings)")
    return UrlEntry(raw["name"], raw["url"])


def _parse(raw: dict[str, Any], source: str) -> CompareConfig:
    cfg = CompareConfig(source=source)
    for key, value in raw.items():
        if key in _SECTIONS:
            setattr(cfg, key, _parse_section(source, key, value))
        elif key in ("name", "description"):
            if not isinstance(value, str):
                raise UsageError(f"{source}: `{key}` must be a string")
            setattr(cfg, key, value)
        elif key in ("models", "urls"):
            if not isinstance(value, list):
                raise UsageError(f"{source}: `{key}` must be an array of tables ([[{key}]])")
            parse = _parse_user_model if key == "models" else _parse_url
            setattr(cfg, key, [parse(source, i, v) for i, v in enumerate(value)])
        else:
            raise UsageError(
                f"{source}: unknown top-level key `{key}` "
                f"(known: name, description, {', '.join('[' + s + ']' for s in _SECTIONS)}, [[models]], "
                "[[urls]])"
            )
    if (cfg.models or cfg.urls) and "model" not in (raw.get("matrix") or {}):
        cfg.matrix.model = [m.name for m in cfg.models]  # your models only (none: URLs only)
    validate(cfg)
    return cfg


def _check(cond: bool, source: str, message: str) -> None:
    if not cond:
        raise UsageError(f"{source}: {message}")


def validate(cfg: CompareConfig) -> None:
    """Value checks that do not need the model zoo (ranges, names)."""
    src = cfg.source or "config"
    m = cfg.matrix
    for fw in m.framework:
        _check(
            fw in FRAMEWORK_SERVERS or fw in MODEL_SERVERS,
            src,
            f"[matrix] framework {fw!r} is not one of {', '.join((*FRAMEWORK_SERVERS, *MODEL_SERVERS))}",
        )
    for s in m.server:
        _check(s in SERVERS, src, f"[matrix] server {s!r} is not one of {', '.join(SERVERS)}")
    for f in m.format:
        _check(f in MODEL_FORMATS, src, f"[matrix] format {f!r} is not one of {', '.join(MODEL_FORMATS)}")
    for w in m.workers:
        _check(1 <= w <= 64, src, f"[matrix] workers must be in 1..64, got {w}")
    for t in m.threads:
        _check(1 <= t <= 64, src, f"[matrix] threads must be in 1..64, got {t}")
    for h in m.handler:
        _check(h in HANDLER_STYLES, src, f"[matrix] handler {h!r} is not one of {', '.join(HANDLER_STYLES)}")
    for key in ("intra_op_threads", "inter_op_threads"):
        for n in getattr(m, key):
            _check(1 <= n <= 64, src, f"[matrix] {key} must be in 1..64, got {n}")
    for level in m.ort_opt_level:
        _check(
            level in ORT_OPT_LEVELS,
            src,
            f"[matrix] ort_opt_level {level!r} is not one of {', '.join(ORT_OPT_LEVELS)}",
        )
    for b in m.max_batch_size:
        _check(b == 0 or 2 <= b <= 1024, src, f"[matrix] max_batch_size must be 0 (off) or 2..1024, got {b}")
    for d in m.max_queue_delay_us:
        _check(0 <= d <= 10_000_000, src, f"[matrix] max_queue_delay_us must be in 0..10000000, got {d}")
    names: list[str] = []
    for um in cfg.models:
        _check(bool(NAME_RE.match(um.name)), src, f"[[models]] name {um.name!r}: use letters, digits, . _ -")
        _check(um.name not in MODELS, src, f"[[models]] name {um.name!r} is a zoo model's; rename yours")
        names.append(um.name)
    for u in cfg.urls:
        _check(bool(NAME_RE.match(u.name)), src, f"[[urls]] name {u.name!r}: use letters, digits, . _ -")
        _check(
            u.url.startswith(("http://", "https://")) and len(u.url) > len("http://"),
            src,
            f"[[urls]] {u.name}: url must start with http:// or https:// (got {u.url!r})",
        )
        names.append(u.name)
    twice = sorted({n for n in names if names.count(n) > 1})
    _check(not twice, src, f"[[models]] / [[urls]] name(s) given twice: {', '.join(twice)}")
    _check(bool(m.model) or bool(cfg.urls), src, "[matrix] model is empty and there are no [[urls]]")

    s = cfg.slo
    _check(s.p99_ms > 0, src, f"[slo] p99_ms must be > 0, got {s.p99_ms}")
    _check(0 <= s.max_error_ratio < 1, src, "[slo] max_error_ratio must be in [0, 1)")
    _check(0 < s.min_throughput_ratio <= 1, src, "[slo] min_throughput_ratio must be in (0, 1]")
    try:
        parse_thresholds(s.thresholds)
    except ThresholdError as exc:
        raise UsageError(f"{src}: [slo] thresholds: {exc}") from None
    pl = cfg.plan
    _check(pl.traffic_rps >= 0, src, f"[plan] traffic_rps must be >= 0 (0: no plan), got {pl.traffic_rps}")
    _check(0 <= pl.headroom < 0.95, src, f"[plan] headroom must be in [0, 0.95), got {pl.headroom}")
    _check(pl.core_hour_price >= 0, src, f"[plan] core_hour_price must be >= 0, got {pl.core_hour_price}")
    _check(
        pl.cores_per_replica >= 0, src, f"[plan] cores_per_replica must be >= 0, got {pl.cores_per_replica}"
    )

    ms = cfg.measure
    _check(ms.scenario in SCENARIOS, src, f"[measure] scenario must be one of {', '.join(SCENARIOS)}")
    _check(
        ms.load_model in OPEN_LOOP_MODELS,
        src,
        f"[measure] load_model must be one of {', '.join(OPEN_LOOP_MODELS)}",
    )
    _check(ms.engine in ENGINES, src, f"[measure] engine must be one of {', '.join(ENGINES)}")
    _check(0 <= ms.expect_workers <= 1000, src, "[measure] expect_workers must be in 0..1000")
    _check(
        not ms.expect_workers or ms.engine == "locust",
        src,
        '[measure] expect_workers (remote workers) runs Locust\'s distribution: needs engine = "locust"',
    )
    bind_ok = master_address(ms.master_bind) is not None
    _check(bind_ok, src, f"[measure] master_bind must be HOST:PORT with a port > 0, got {ms.master_bind!r}")
    _check(1 <= ms.users <= 1000, src, "[measure] users must be in 1..1000")
    _check(0 <= ms.open_loop_users <= 1000, src, "[measure] open_loop_users must be in 0..1000 (0 = auto)")
    for key in ("window_s", "common_duration_s", "max_stability_s"):
        _check(0 < getattr(ms, key) <= 3600, src, f"[measure] {key} must be in (0, 3600]")
    _check(0 <= ms.warmup_s <= 3600, src, "[measure] warmup_s must be in [0, 3600]")
    _check(ms.stability_windows >= 1, src, "[measure] stability_windows must be >= 1")
    _check(ms.max_windows >= ms.stability_windows, src, "[measure] max_windows must be >= stability_windows")
    _check(0 < ms.stability_tolerance < 1, src, "[measure] stability_tolerance must be in (0, 1)")
    _check(ms.common_rate_rps > 0, src, "[measure] common_rate_rps must be > 0")
    _check(0 < ms.sweep_s <= 600, src, "[measure] sweep_s must be in (0, 600]")

    se = cfg.search
    _check(0 < se.step_s <= 600, src, "[search] step_s must be in (0, 600]")
    _check(0 <= se.step_warmup_s <= 600, src, "[search] step_warmup_s must be in [0, 600]")
    _check(0 < se.lo_factor < se.hi_factor, src, "[search] need 0 < lo_factor < hi_factor")
    _check(se.lo_rps >= 0 and se.hi_rps >= 0, src, "[search] lo_rps / hi_rps must be >= 0 (0 = auto)")
    _check(not (se.lo_rps and se.hi_rps) or se.lo_rps < se.hi_rps, src, "[search] need lo_rps < hi_rps")
    _check(2 <= se.max_probes <= 50, src, "[search] max_probes must be in 2..50")
    _check(0 < se.rel_tolerance < 1, src, "[search] rel_tolerance must be in (0, 1)")
    _check(0 <= se.max_expansions <= 5, src, "[search] max_expansions must be in 0..5")
    _check(0 <= se.min_step_requests <= 100_000, src, "[search] min_step_requests must be in 0..100000")
    _check(se.step_s <= se.max_step_s <= 600, src, "[search] max_step_s must be in [step_s, 600]")
    _check(0 <= se.repeats <= 20, src, "[search] repeats must be in 0..20")
    _check(1 <= se.repeat_probes <= 8, src, "[search] repeat_probes must be in 1..8")
    _check(0 <= se.repeat_extra_probes <= 8, src, "[search] repeat_extra_probes must be in 0..8")
    _check(0 < se.repeat_margin < 1, src, "[search] repeat_margin must be in (0, 1)")


def resolve_config_path(name_or_path: str | None) -> Path:
    """A path to a TOML file, or the name of a built-in one (``quick`` -> ``CONFIG_DIR/quick.toml``)."""
    name = name_or_path or DEFAULT_CONFIG
    p = Path(name)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            hint = f" (the built-in one of that name: -c {p.stem})" if (CONFIG_DIR / p.name).is_file() else ""
            raise UsageError(f"config file {p}: no such file{hint}")
        return p
    candidate = CONFIG_DIR / f"{name}.toml"
    if not candidate.is_file():
        known = sorted(f.stem for f in CONFIG_DIR.glob("*.toml")) if CONFIG_DIR.is_dir() else []
        raise UsageError(f"no config named {name!r} (a .toml path, or one of: {', '.join(known) or 'none'})")
    return candidate


def load_config(name_or_path: str | None = None) -> CompareConfig:
    path = resolve_config_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read ({exc})") from None
    return _parse(raw, str(path))


# -- expansion ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    task: str  # "tabular" | "image"
    formats: tuple[str, ...]
    source: str = "zoo"  # "zoo" | "file" (a [[models]] entry: every one of its files is a choice)


@dataclass(frozen=True)
class Tuning:
    """One point of the batching and model-runtime axes (``Choice``'s fields of the same names)."""

    max_batch_size: int = 0
    max_queue_delay_us: int = 0
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    ort_opt_level: str = "all"

    def choice_fields(self) -> dict[str, Any]:
        return asdict(self)

    def words(self) -> str:
        """`` batch 8/500us ort=basic`` (empty at the defaults), for a skipped combination's name."""
        return "".join(f" {w}" for w in Choice("", "", "", "", **self.choice_fields())._tuning(" "))

    def unsupported(self, framework: str, server: str, threads: int, fmt: str) -> str | None:
        """Why one of our targets cannot take these options (the targets' own rules), or None."""
        config = TargetConfig(framework=framework, server=server, threads=threads, format=fmt,
                              **self.choice_fields())  # fmt: skip
        return batching_unsupported(config) or ort_options_unsupported(config)


def model_server_skip(server: str, model: str, fmt: str, info: ModelInfo, tuning: Tuning) -> str | None:
    """Why a third-party model server cannot be this choice (None: it can)."""
    if info.source == "file":
        return f"{server} serves zoo models here, not your own model files"
    runtime = [w for w in ("intra_op_threads", "inter_op_threads", "ort_opt_level")
               if getattr(tuning, w) != getattr(Tuning(), w)]  # fmt: skip
    if runtime:
        return f"{', '.join(runtime)}: options of deploybench's own targets ({server} sets its own)"
    return external_unsupported(server, model, fmt)


def zoo_catalog() -> dict[str, ModelInfo]:
    """Models and their formats, from the zoo's catalog."""
    return {name: ModelInfo(spec.task, tuple(spec.formats)) for name, spec in MODELS.items()}


def inspect_models(cfg: CompareConfig) -> dict[str, UserModelInfo]:
    """Load and inspect every ``[[models]]`` entry on the model axis (before anything starts): a file that is
    no model, a format that does not fit, a shape that cannot be inferred or a refused pickle is a
    UsageError naming the entry (exit code 2). A file that declares no input shape (TorchScript) takes the
    one its sibling files declare: it is written into the entry's ``input_shape``."""
    out: dict[str, UserModelInfo] = {}
    src = cfg.source or "config"
    for um in cfg.models:
        if um.name not in cfg.matrix.model:
            continue
        try:
            info, predictors = inspect_user_model(um)
        except UsageError as exc:
            raise UsageError(f"{src} [[models]] {um.name}: {exc}") from None
        predictors.clear()
        um.input_shape = list(info.input_shape)
        out[um.name] = info
    return out


def master_address(text: str) -> tuple[str, int] | None:
    """``HOST:PORT`` with a fixed port (``[::1]:5557`` for IPv6) -> (host, port); None when malformed or
    port 0."""
    try:
        host, port = parse_host_port(text)
    except ValueError:
        return None
    return (host, port) if port > 0 else None


def user_catalog(infos: Mapping[str, UserModelInfo]) -> dict[str, ModelInfo]:
    """Catalog entries of the user's (inspected) models."""
    return {name: ModelInfo(info.task, tuple(info.files), "file") for name, info in infos.items()}


def expand(
    cfg: CompareConfig, catalog: Mapping[str, ModelInfo], url_tasks: Mapping[str, str | None] | None = None
) -> tuple[list[Choice], list[Skipped], str]:
    """Every valid choice of the matrix (in axis order), then one per ``[[urls]]`` entry; the skipped
    combinations with a reason; and the scenario they all run. ``url_tasks``: the task each URL's /health
    reports (None: unknown; those choices must fit the others' scenario). Raises UsageError for an unknown
    model, a mix of tabular and image models (they cannot share a scenario), or no valid choice."""
    m = cfg.matrix
    src = cfg.source or "config"
    url_tasks = dict(url_tasks or {})
    for model in m.model:
        if model not in catalog:
            raise UsageError(f"{src}: [matrix] model {model!r} is not one of {', '.join(sorted(catalog))}")
    tasks = {catalog[model].task for model in m.model}
    known_urls = {name: t for name, t in url_tasks.items() if t and any(u.name == name for u in cfg.urls)}
    scenario = cfg.measure.scenario
    if scenario == "auto":
        all_tasks = tasks | set(known_urls.values())
        if len(all_tasks) > 1:
            what = [*m.model, *(f"{n} (url)" for n in known_urls)]
            raise UsageError(
                f"{src}: the matrix mixes tabular and image models ({', '.join(what)}); every choice must "
                "run the same scenario: compare them in separate matrices"
            )
        if not all_tasks:
            raise UsageError(
                f"{src}: cannot tell which scenario the [[urls]] choices need (their /health gives no task); "
                'set [measure] scenario = "tabular" or "image" (on the command line: --scenario)'
            )
        scenario = all_tasks.pop()
    else:
        wrong = [model for model in m.model if catalog[model].task != scenario]
        wrong += [f"{n} (url)" for n, t in known_urls.items() if t != scenario]
        if wrong:
            raise UsageError(f"{src}: scenario {scenario!r} does not fit model(s) {', '.join(wrong)}")

    choices: list[Choice] = []
    skipped: list[Skipped] = []
    seen_skips: set[str] = set()

    def skip(combo: str, reason: str) -> None:
        if combo not in seen_skips:
            seen_skips.add(combo)
            skipped.append(Skipped(combo, reason))

    ids: set[str] = set()

    def add(choice: Choice) -> None:
        if choice.id not in ids:  # e.g. a model server once for every server axis value
            ids.add(choice.id)
            choices.append(choice)

    tunings = [
        Tuning(b, d if b else 0, intra, inter, level)
        for b, d, intra, inter, level in itertools.product(
            m.max_batch_size, m.max_queue_delay_us, m.intra_op_threads, m.inter_op_threads, m.ort_opt_level
        )
    ]
    for fw, server, model, fmt, workers, threads, handler, tuning in itertools.product(
        m.framework, m.server, m.model, m.format, m.workers, m.threads, m.handler, tunings
    ):
        if fw in MODEL_SERVERS:
            why = model_server_skip(fw, model, fmt, catalog[model], tuning)
            if why is not None:
                skip(f"{fw} {model}/{fmt}{tuning.words()}", why)
                continue
            add(Choice(fw, fw, model, fmt, workers, 1, **tuning.choice_fields()))
            continue
        if server not in FRAMEWORK_SERVERS[fw]:
            servers = " or ".join(FRAMEWORK_SERVERS[fw])
            skip(f"{fw}+{server}", f"{server} does not serve {fw} (it uses {servers})")
            continue
        if handler != "auto" and fw != "fastapi":
            skip(
                f"{fw} handler={handler}",
                "handler styles are FastAPI's (a Flask view is a plain function; pick its server instead: "
                "gunicorn-sync or gunicorn-gthread)",
            )
            continue
        user_file = catalog[model].source == "file"
        if not user_file and fmt not in catalog[model].formats:
            known = ", ".join(catalog[model].formats)
            why = missing_format_reason(MODELS[model], fmt) if model in MODELS else None
            skip(f"{model}/{fmt}", why or f"{model} has no {fmt} artifact (formats: {known})")
            continue
        if threads != 1 and server != "gunicorn-gthread":
            skip(f"{server} threads={threads}", "only gunicorn-gthread uses threads > 1")
            continue
        # a user's model: every one of its files, whatever the format axis (zoo artifacts only)
        for f in [g for g in MODEL_FORMATS if g in catalog[model].formats] if user_file else [fmt]:
            why = tuning.unsupported(fw, server, threads, f)
            if why is not None:
                skip(f"{fw}+{server} t{threads} {f}{tuning.words()}", why)
                continue
            add(Choice(fw, server, model, f, workers, threads, handler=handler, **tuning.choice_fields()))
    choices += [Choice("", "", "", "", url=u.url, name=u.name) for u in cfg.urls]
    if not choices:
        why = "; ".join(f"{s.combo}: {s.reason}" for s in skipped) or "empty axes"
        raise UsageError(f"{src}: the matrix has no valid choice ({why})")
    return choices, skipped, scenario


def open_loop_users(cfg: CompareConfig, rate_rps: float) -> int:
    """Open-loop senders for a run at ``rate_rps``: ``measure.open_loop_users``, or (0, auto) enough for
    twice the SLO's worth of requests at that rate (Little's law: in flight = rate x latency, and a passing
    run keeps nearly every request under the SLO), at least 16, at most 1000. Too few senders leave slots
    late (``late-sends``) while the target is still keeping up, and the lateness counts as latency."""
    if cfg.measure.open_loop_users:
        return cfg.measure.open_loop_users
    return int(min(1000, max(16, math.ceil(2.0 * rate_rps * cfg.slo.p99_ms / 1000.0))))


def step_duration_s(cfg: CompareConfig, rate_rps: float, base_s: float | None = None) -> float:
    """Measured seconds of an open-loop run at ``rate_rps``: ``base_s`` (search.step_s), longer when needed
    for ``search.min_step_requests`` requests (a P99 from ~100 requests is nearly the maximum), at most
    ``search.max_step_s`` (never shorter than ``base_s``)."""
    se = cfg.search
    base = se.step_s if base_s is None else base_s
    need = se.min_step_requests / rate_rps if rate_rps > 0 else 0.0
    return max(base, min(need, se.max_step_s))


def apply_overrides(cfg: CompareConfig, overrides: Mapping[str, Any]) -> CompareConfig:
    """CLI flags over the file: ``{"matrix.framework": ["flask"], "slo.p99_ms": 20.0, ...}`` (None = keep)."""
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        obj = getattr(cfg, section)
        setattr(obj, key, _coerce(f"--{key.replace('_', '-')}", key, value, getattr(obj, key)))
    validate(cfg)
    return cfg
