"""`deploybench compare` without real servers: config files, matrix expansion, ranking, the best-choice
sentence, the per-choice pipeline (fake driver with a known capacity), failures, Ctrl-C, and the report."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploybench.commands.cli import main
from deploybench.commands.compare import progress_line
from deploybench.compare_doc import (
    Choice,
    ChoiceResult,
    CompareRun,
    best_sentence,
    describe_split,
    load_compare,
    places,
    rank,
)
from deploybench.decisions.compare.config import (
    CONFIG_DIR,
    CompareConfig,
    ModelInfo,
    apply_overrides,
    expand,
    load_config,
)
from deploybench.decisions.compare.driver import RealDriver, check_pin_possible, core_split, stamp_target_env
from deploybench.decisions.compare.run import run_matrix
from deploybench.errors import TargetError, UsageError
from deploybench.record import RecordWarning, RunRecord, Series, load_record
from deploybench.reports.compare_render import ranked_table_markdown, write_report
from deploybench.stats import encode_histogram, new_histogram, record_us, summarize_histogram

CATALOG = {
    "iris-rf": ModelInfo("tabular", ("pickle", "onnx")),
    "iris-mlp": ModelInfo("tabular", ("pickle", "onnx", "torchscript", "pt2")),
    "resnet18": ModelInfo("image", ("pickle", "onnx", "torchscript", "pt2")),
}


def write_toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "m.toml"
    p.write_text(text)
    return p


# -- config files -------------------------------------------------------------------------------------------
def test_every_shipped_config_parses_and_expands():
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
    assert "quick" in names and len(names) >= 4
    for name in names:
        cfg = load_config(name)
        choices, _skipped, scenario = expand(cfg, CATALOG)
        assert choices and scenario in ("tabular", "image"), name


def test_quick_default_matrix_is_three_formats_on_both_frameworks_with_repeats():
    """The main job compares the seed's three formats (pickle, ONNX, TorchScript) on both frameworks, with
    repeated searches (an interval per choice) and pinning where the CPUs allow."""
    cfg = load_config(None)
    assert cfg.name == "quick"
    choices, skipped, scenario = expand(cfg, CATALOG)
    assert scenario == "tabular"
    assert [c.id for c in choices] == [
        f"{fw}-iris-mlp-{fmt}-w1"
        for fw in ("fastapi-uvicorn", "flask-gunicorn-sync")
        for fmt in ("pickle", "onnx", "torchscript")
    ]
    assert {s.combo for s in skipped} == {"fastapi+gunicorn-sync", "flask+uvicorn"}
    assert cfg.search.repeats >= 3 and cfg.measure.pin == "auto"


def test_expansion_skips_missing_formats_and_threads_outside_gthread(tmp_path):
    cfg = load_config(str(write_toml(tmp_path, """
[matrix]
framework = ["flask"]
server = ["gunicorn-sync", "gunicorn-gthread"]
model = ["iris-rf"]
format = ["onnx", "torchscript"]
threads = [1, 4]
""")))  # fmt: skip
    choices, skipped, _ = expand(cfg, CATALOG)
    assert [c.id for c in choices] == [
        "flask-gunicorn-sync-iris-rf-onnx-w1",
        "flask-gunicorn-gthread-iris-rf-onnx-w1-t1",
        "flask-gunicorn-gthread-iris-rf-onnx-w1-t4",
    ]
    reasons = {s.combo: s.reason for s in skipped}
    assert "iris-rf has no torchscript" in reasons["iris-rf/torchscript"]
    assert "gunicorn-gthread" in reasons["gunicorn-sync threads=4"]


def test_batching_and_runtime_axes_expand_with_the_targets_own_skips(tmp_path):
    cfg = load_config(str(write_toml(tmp_path, """
[matrix]
framework = ["fastapi", "flask"]
server = ["uvicorn", "gunicorn-sync"]
model = ["iris-mlp"]
format = ["onnx", "pickle"]
max_batch_size = [0, 8]
max_queue_delay_us = [500, 2000]
ort_opt_level = ["all", "basic"]
""")))  # fmt: skip
    choices, skipped, _ = expand(cfg, CATALOG)
    ids = [c.id for c in choices]
    # batching off: the delay does not apply, so one choice (not one per delay); onnxruntime options only
    # on ONNX; batching only where requests are in flight together (not gunicorn-sync)
    assert ids == [
        "fastapi-uvicorn-iris-mlp-onnx-w1",
        "fastapi-uvicorn-iris-mlp-onnx-w1-ort-basic",
        "fastapi-uvicorn-iris-mlp-onnx-w1-b8d500",
        "fastapi-uvicorn-iris-mlp-onnx-w1-b8d500-ort-basic",
        "fastapi-uvicorn-iris-mlp-onnx-w1-b8d2000",
        "fastapi-uvicorn-iris-mlp-onnx-w1-b8d2000-ort-basic",
        "fastapi-uvicorn-iris-mlp-pickle-w1",
        "fastapi-uvicorn-iris-mlp-pickle-w1-b8d500",
        "fastapi-uvicorn-iris-mlp-pickle-w1-b8d2000",
        "flask-gunicorn-sync-iris-mlp-onnx-w1",
        "flask-gunicorn-sync-iris-mlp-onnx-w1-ort-basic",
        "flask-gunicorn-sync-iris-mlp-pickle-w1",
    ]
    by_id = {c.id: c for c in choices}
    c = by_id["fastapi-uvicorn-iris-mlp-onnx-w1-b8d500-ort-basic"]
    assert (c.max_batch_size, c.max_queue_delay_us, c.ort_opt_level) == (8, 500, "basic")
    assert c.label == "fastapi+uvicorn iris-mlp/onnx w1 batch 8/500us ort=basic"
    assert Choice.from_dict(c.to_dict()) == c
    reasons = {s.combo: s.reason for s in skipped}
    assert "one request at a time" in reasons["flask+gunicorn-sync t1 onnx batch 8/500us"]
    assert "onnxruntime" in reasons["fastapi+uvicorn t1 pickle ort=basic"]
    # an old compare.json (no tuning fields) loads with the defaults: same id and label as before
    old = Choice.from_dict({"framework": "flask", "server": "gunicorn-sync", "model": "iris-mlp",
                            "format": "onnx", "workers": 1, "threads": 1})  # fmt: skip
    assert old.id == "flask-gunicorn-sync-iris-mlp-onnx-w1" and old.max_batch_size == 0


def test_model_servers_are_one_choice_each_whatever_the_server_axis(tmp_path):
    cfg = load_config(str(write_toml(tmp_path, """
[matrix]
framework = ["fastapi", "mlserver", "litserve"]
server = ["uvicorn", "gunicorn-uvicorn"]
model = ["iris-rf"]
format = ["onnx"]
""")))  # fmt: skip
    choices, _skipped, scenario = expand(cfg, CATALOG)
    assert scenario == "tabular"
    assert [c.id for c in choices] == [
        "fastapi-uvicorn-iris-rf-onnx-w1",
        "fastapi-gunicorn-uvicorn-iris-rf-onnx-w1",
        "mlserver-iris-rf-onnx-w1",
        "litserve-iris-rf-onnx-w1",
    ]
    ml = choices[2]
    assert ml.model_server and ml.label == "mlserver iris-rf/onnx w1" and not choices[0].model_server
    # onnxruntime options are our targets': a model server with them is a listed skip, not a silent default
    cfg.matrix.ort_opt_level = ["basic"]
    cfg.matrix.framework = ["mlserver"]
    with pytest.raises(UsageError, match="ort_opt_level: options of deploybench's own targets"):
        expand(cfg, CATALOG)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[matrix]\nmax_batch_size = [1]", "max_batch_size must be 0 (off) or 2..1024"),
        ("[matrix]\nort_opt_level = ['max']", "ort_opt_level 'max' is not one of"),
        ("[matrix]\ninter_op_threads = [0]", "inter_op_threads must be in 1..64"),
        ("[matrix]\nmax_queue_delay_us = [-1]", "max_queue_delay_us must be in 0..10000000"),
        ("[matrix]\nframework = ['django']", "framework 'django' is not one of"),
        ("[matrix]\nworkers = [0]", "workers must be in 1..64"),
        ("[matrix]\nworkers = ['two']", "`workers` must be an integer"),
        ("[matrix]\nformat = []", "`format` must not be empty"),
        ("[slo]\np99_ms = -1", "p99_ms must be > 0"),
        ("[slo]\np99 = 5", "unknown key `p99` in [slo]"),
        ("[measure]\nload_model = 'closed'", "load_model must be one of"),
        ("[search]\nlo_factor = 2.0\nhi_factor = 1.0", "lo_factor < hi_factor"),
        ("[measure]\nmax_windows = 2\nstability_windows = 3", "max_windows must be >= stability_windows"),
        ("colour = 'red'", "unknown top-level key `colour`"),
        ("[matrix\n", "not valid TOML"),
    ],
)
def test_bad_config_is_a_usage_error_naming_the_key(tmp_path, text, message):
    with pytest.raises(UsageError, match=r"m\.toml") as exc:
        load_config(str(write_toml(tmp_path, text)))
    assert message in str(exc.value)


def test_expansion_errors_unknown_model_mixed_tasks_and_empty_matrix(tmp_path):
    with pytest.raises(UsageError, match="model 'gpt' is not one of"):
        expand(CompareConfig.from_dict({"matrix": {"model": ["gpt"]}}), CATALOG)
    with pytest.raises(UsageError, match="mixes tabular and image"):
        expand(CompareConfig.from_dict({"matrix": {"model": ["iris-rf", "resnet18"]}}), CATALOG)
    with pytest.raises(UsageError, match="no valid choice"):
        cfg = {"matrix": {"framework": ["flask"], "server": ["uvicorn"]}}
        expand(CompareConfig.from_dict(cfg), CATALOG)
    with pytest.raises(UsageError, match="no config named 'nope'"):
        load_config("nope")


def test_cli_overrides_replace_axes_and_are_validated():
    cfg = apply_overrides(load_config("quick"), {"matrix.format": ["onnx"], "slo.p99_ms": 20, "x.y": None})
    assert cfg.matrix.format == ["onnx"] and cfg.slo.p99_ms == 20.0
    with pytest.raises(UsageError, match="format 'tflite'"):
        apply_overrides(load_config("quick"), {"matrix.format": ["tflite"]})


def test_cli_bad_input_exits_2_and_dry_run_lists_the_matrix(capsys, tmp_path):
    assert main(["compare", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["compare", "--server", "tomcat", "--dry-run"]) == 2
    assert "server 'tomcat'" in capsys.readouterr().err
    assert main(["compare", "--report", str(tmp_path)]) == 2
    assert f"{tmp_path / 'compare.json'}: no such file" in capsys.readouterr().err
    assert main(["compare", "--dry-run", "--format", "onnx", "--model", "iris-rf"]) == 0
    out = capsys.readouterr().out
    assert (
        "2 choice(s)" in out and "fastapi-uvicorn-iris-rf-onnx-w1" in out and "skipped flask+uvicorn" in out
    )
    assert main(["compare", "--dry-run", "--handler", "inline,auto", "--model", "iris-rf"]) == 0
    out = capsys.readouterr().out
    assert "fastapi-uvicorn-iris-rf-onnx-w1-inline" in out and "skipped flask handler=inline" in out


URLS = ["--url", "current=http://127.0.0.1:8000", "--url", "candidate=http://127.0.0.1:8001"]


def compare_args(*argv: str):
    import argparse

    import deploybench.commands.compare as compare_cmd

    parser = argparse.ArgumentParser()
    compare_cmd.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_url_alone_measures_only_the_urls_with_the_default_settings():
    from deploybench.commands.compare import resolve_config

    cfg = resolve_config(compare_args(*URLS, "--slo-ms", "20", "--repeats", "1"))
    assert [(u.name, u.url) for u in cfg.urls] == [
        ("current", "http://127.0.0.1:8000"), ("candidate", "http://127.0.0.1:8001")
    ]  # fmt: skip
    assert cfg.name == "urls" and cfg.matrix.model == [] and cfg.models == [] and "--url" in cfg.description
    quick = load_config("quick")
    assert cfg.measure.users == quick.measure.users and cfg.search.step_s == quick.search.step_s
    assert cfg.slo.p99_ms == 20.0 and cfg.search.repeats == 1  # measurement overrides still apply
    choices, skipped, scenario = expand(cfg, CATALOG, {"current": "tabular", "candidate": None})
    assert [c.id for c in choices] == ["url-current", "url-candidate"] and all(c.external for c in choices)
    assert skipped == [] and scenario == "tabular"


@pytest.mark.parametrize(
    ("extra", "n_matrix"),
    [
        (["-c", "quick"], 6),  # the quick matrix (6 choices) plus the URLs
        (["-c", "frameworks"], None),
        (["--format", "onnx"], 2),  # a matrix override asks for the default matrix
        (["--model", "iris-rf"], 4),
        (["--intra-op-threads", "2"], 6),
    ],
)
def test_url_joins_the_matrix_of_a_config_or_a_matrix_override(extra, n_matrix):
    from deploybench.commands.compare import resolve_config

    cfg = resolve_config(compare_args(*URLS, *extra))
    choices, _skipped, _scenario = expand(cfg, CATALOG, {"current": "tabular", "candidate": "tabular"})
    if n_matrix is None:
        n_matrix = len(expand(load_config(extra[1]), CATALOG)[0])
    assert [c.id for c in choices[n_matrix:]] == ["url-current", "url-candidate"]
    assert n_matrix > 0 and not any(c.external for c in choices[:n_matrix]) and cfg.name != "urls"


def test_dry_run_of_url_alone_lists_just_the_urls(monkeypatch, capsys):
    import deploybench.commands.compare as compare_cmd

    monkeypatch.setattr(compare_cmd, "fetch_health", lambda url: {"task": "tabular"})
    assert main(["compare", "--dry-run", *URLS]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "urls: 2 choice(s), scenario tabular, P99 SLO 50 ms",
        "  url-current (http://127.0.0.1:8000, not started by compare)",
        "  url-candidate (http://127.0.0.1:8001, not started by compare)",
    ]
    assert main(["compare", "--dry-run", "-c", "quick", *URLS]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("quick: 8 choice(s)") and "  url-candidate" in out[8] and "iris-mlp" in out[1]
    # a service whose /health names no task: the scenario comes from --scenario
    monkeypatch.setattr(compare_cmd, "fetch_health", lambda url: None)
    assert main(["compare", "--dry-run", *URLS]) == 2
    assert "--scenario" in capsys.readouterr().err
    assert main(["compare", "--dry-run", "--scenario", "image", *URLS]) == 0
    assert capsys.readouterr().out.startswith("urls: 2 choice(s), scenario image")


# -- ranking and the best-choice sentence -----------------------------------------------------------------
def result(
    fw: str, max_rps: float | None, p99_us: int = 5000, status: str = "complete", fail: float | None = None
):
    r = ChoiceResult(Choice(fw, "uvicorn" if fw == "fastapi" else "gunicorn-sync", "iris-rf", "onnx"))
    r.status = status
    first_fail = fail if fail is not None else (max_rps * 1.05 if max_rps else None)
    r.saturation = {"max_rps": max_rps, "first_fail_rps": first_fail,
                    "resolution": (first_fail / max_rps - 1) if max_rps and first_fail else None}  # fmt: skip
    r.common = {"latency_us": {"p50": p99_us // 2, "p95": p99_us - 1, "p99": p99_us}}
    return r


def test_rank_orders_by_max_throughput_then_p99_and_puts_failures_last():
    a, b, c = result("fastapi", 200.0), result("flask", 300.0), result("fastapi", 200.0, p99_us=4000)
    c.choice = Choice("fastapi", "gunicorn-uvicorn", "iris-rf", "onnx")
    failed = result("flask", None, status="failed")
    none = result("flask", None)
    assert rank([failed, a, none, b, c]) == [b, c, a, none, failed]


def test_best_sentence_states_margin_over_runner_up():
    ranked = rank([result("fastapi", 300.0), result("flask", 200.0)])
    s = best_sentence(ranked, 50_000, 0.10)
    assert s.startswith("Best: **fastapi+uvicorn iris-rf/onnx w1** sustains 300 rps under the 50 ms P99 SLO")
    assert "50% (100 rps) more than the runner-up **flask+gunicorn-sync iris-rf/onnx w1** (200 rps)" in s
    assert "tie" not in s and s.count(".") <= 2


def test_best_sentence_calls_a_margin_inside_the_resolution_a_tie():
    s = best_sentence(rank([result("fastapi", 210.0, fail=240.0), result("flask", 200.0)]), 50_000, 0.05)
    assert "5% (10 rps) more" in s and "treat it as a tie" in s and "~14%" in s


def test_best_sentence_edge_cases():
    assert "nothing to rank" in best_sentence([result("flask", None, status="failed")], 50_000)
    assert "no best choice" in best_sentence(rank([result("flask", None)]), 50_000)
    only = best_sentence(rank([result("flask", 120.0), result("fastapi", None, status="failed")]), 50_000)
    assert "only choice that completed" in only
    ranked = rank([result("flask", 9.0), result("fastapi", None)])
    assert "met the SLO at no rate tried" in best_sentence(ranked, 50_000)


# -- the pipeline with a fake driver -----------------------------------------------------------------------
def fake_record(rate: float | None, throughput: float, latency_us: int, n: int) -> RunRecord:
    hist = new_histogram()
    for i in range(n):
        record_us(hist, latency_us + (i % 10))
    s = Series("POST /predict", count=n, latency_us=summarize_histogram(hist), duration_s=n / throughput,
               throughput_rps=throughput, offered_rps=rate, histogram=encode_histogram(hist))  # fmt: skip
    rec = RunRecord("load", {"load_model": "closed" if rate is None else "constant"}, {}, series=[s])
    rec.finish()
    return rec


class FakeTarget:
    def __init__(self, capacity: float) -> None:
        self.capacity, self.url, self.pid = capacity, "http://127.0.0.1:1", 0

    def is_alive(self) -> bool:
        return True


class FakeDriver:
    """Capacities by framework; a choice with capacity None fails to start; interrupt_on raises Ctrl-C."""

    def __init__(self, capacities: dict[str, float | None], interrupt_on: str | None = None) -> None:
        self.capacities, self.interrupt_on = capacities, interrupt_on
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.loads = 0

    @contextlib.contextmanager
    def start(self, choice: Choice, log_path: Path):
        cap = self.capacities[choice.framework]
        self.started.append(choice.id)
        if cap is None:
            raise TargetError(f"server exited during start-up: {choice.id} (log tail: ImportError)")
        try:
            yield FakeTarget(cap)
        finally:
            self.stopped.append(choice.id)

    def load(self, target, *, load_model, duration_s, warmup_s, record_path, users=None, rate_rps=None):
        self.loads += 1
        if self.interrupt_on and self.started[-1].startswith(self.interrupt_on) and rate_rps:
            raise KeyboardInterrupt
        cap = target.capacity
        if rate_rps is None:  # closed loop saturates the target
            rec = fake_record(None, cap, 4000, 200)
        elif rate_rps <= cap:
            rec = fake_record(rate_rps, rate_rps, 3000 + int(20_000 * rate_rps / cap), 200)
        else:
            rec = fake_record(rate_rps, cap, 900_000, 200)
        rec.add_warning("late-sends", "3% of sends left late", "pin the generator")
        rec.save(record_path)
        return rec


def quick_cfg(**search) -> CompareConfig:
    cfg = CompareConfig.from_dict(
        {"name": "unit", "measure": {"common_rate_rps": 50.0, "load_model": "constant"},
         "search": {"max_probes": 6, "rel_tolerance": 0.05, **search}}
    )  # fmt: skip
    return cfg


class SweepingDriver(FakeDriver):
    """Closed loop at N users: each adds 100 rps up to the capacity, then only latency grows (a queue)."""

    def load(self, target, *, load_model, duration_s, warmup_s, record_path, users=None, rate_rps=None):
        if rate_rps is not None or users is None or "sweep-users" not in str(record_path):
            return super().load(target, load_model=load_model, duration_s=duration_s, warmup_s=warmup_s,
                                record_path=record_path, users=users, rate_rps=rate_rps)  # fmt: skip
        tput = min(100.0 * users, target.capacity)
        rec = fake_record(None, tput, int(4000 * max(1.0, 100.0 * users / target.capacity)), 200)
        rec.save(record_path)
        return rec


def test_a_concurrency_sweep_per_choice_gives_its_curve_and_knee_in_the_document_and_report(tmp_path):
    cfg = quick_cfg(repeats=0)
    cfg = apply_overrides(cfg, {"matrix.framework": ["fastapi"], "matrix.server": ["uvicorn"],
                                "matrix.format": ["onnx"], "measure.sweep_users": "1:16:x2"})  # fmt: skip
    assert cfg.measure.sweep_users == [1, 2, 4, 8, 16]
    choices, skipped, scenario = expand(cfg, CATALOG)
    run = run_matrix(cfg, choices, skipped, scenario, SweepingDriver({"fastapi": 400.0}), tmp_path, env={})
    (r,) = run.results
    sweep = r.sweeps["users"]
    assert [p["value"] for p in sweep["points"]] == [1, 2, 4, 8, 16]
    assert [p["throughput_rps"] for p in sweep["points"]] == [100, 200, 400, 400, 400]
    # power (rps / P99 ms) rises to 4 users (capacity reached at the base latency), then falls: the knee
    assert sweep["knee"]["value"] == 4
    folder = tmp_path / r.choice.id / "sweep-users"
    assert (folder / "sweep.json").is_file() and (folder / sweep["points"][2]["record"]).is_file()
    assert load_compare(tmp_path).results[0].sweeps == r.sweeps  # kept in compare.json
    write_report(load_compare(tmp_path), tmp_path, plots=False)
    text = (tmp_path / "report.md").read_text()
    assert "## Sweeps" in text and "concurrency (users)" in text and "**knee**" in text


@pytest.mark.parametrize(
    ("sweep", "message"),
    [("4,2", "strictly increasing"), ("0,1", "must be >= 1"), ("1.5,2", "whole numbers"), ([], None)],
)
def test_sweep_points_in_a_config_are_checked(sweep, message):
    if message is None:
        assert CompareConfig.from_dict({"measure": {"sweep_users": sweep}}).measure.sweep_users == []
        return
    with pytest.raises(UsageError, match=message):
        CompareConfig.from_dict({"measure": {"sweep_users": sweep}})


def test_a_model_servers_versions_join_each_load_records_environment(tmp_path):
    rec = fake_record(None, 100.0, 4000, 20)
    path = tmp_path / "r.json"
    rec.save(path)
    assert stamp_target_env(rec, None, path).env.get("target_env") is None  # our own target: unchanged
    versions = {"server": "mlserver", "virtualenv": True, "mlserver": "1.7.1", "fastapi": "0.115.14"}
    stamp_target_env(rec, versions, path)
    assert load_record(path).env["target_env"] == versions


def test_matrix_ranks_choices_records_a_failed_start_and_continues(tmp_path):
    cfg = quick_cfg()
    cfg.matrix.framework = ["fastapi", "flask"]
    cfg.matrix.server = ["uvicorn", "gunicorn-sync", "gunicorn-gthread"]
    cfg.matrix.format = ["onnx"]
    choices, skipped, scenario = expand(cfg, CATALOG)
    assert len(choices) == 3  # fastapi+uvicorn, flask+sync, flask+gthread
    caps = {"fastapi": 400.0, "flask": None}  # every flask choice fails to start
    driver = FakeDriver(caps)
    run = run_matrix(cfg, choices, skipped, scenario, driver, tmp_path, env={"cpu_model": "test"})
    assert run.status == "complete"
    assert [r.status for r in run.results] == ["complete", "failed", "failed"]
    assert "server exited during start-up" in run.results[1].error
    assert list(dict.fromkeys(driver.started)) == [c.id for c in choices]  # the rest ran after a failure
    assert driver.stopped == [choices[0].id] * 3  # the coarse search's target + a restart for repeats 2, 3

    best = run.results[0]
    assert 400 / 1.05 <= best.max_rps <= 400.0  # the search found the fake capacity
    assert best.stability["stable"] and best.common["latency_us"]["p99"] < 50_000
    assert any(w.code == "late-sends" for w in best.warnings)
    # saved as it went: the document on disk is the final one, and every load record exists
    saved = load_compare(tmp_path)
    assert [r.status for r in saved.results] == ["complete", "failed", "failed"]
    for p in saved.results[0].saturation["points"]:
        assert (tmp_path / p["extra"]["record"]).is_file()
    assert (tmp_path / best.choice.id / "common-rate.json").is_file()


def test_interrupt_keeps_finished_choices_and_marks_the_current_one(tmp_path):
    cfg = quick_cfg()
    cfg.matrix.format = ["onnx"]
    choices, skipped, scenario = expand(cfg, CATALOG)
    driver = FakeDriver({"fastapi": 300.0, "flask": 200.0}, interrupt_on="flask")
    with pytest.raises(KeyboardInterrupt):
        run_matrix(cfg, choices, skipped, scenario, driver, tmp_path, env={})
    saved = load_compare(tmp_path)
    assert saved.status == "interrupted"
    assert [r.status for r in saved.results] == ["complete", "interrupted"]
    assert saved.results[0].max_rps is not None
    assert driver.stopped == driver.started  # the interrupted target was stopped too
    text = ranked_table_markdown(saved)
    assert "| 1 |" in text and "interrupted" in text


def test_report_has_ranked_table_sentence_plots_warnings_and_env(tmp_path):
    cfg = quick_cfg()
    cfg.matrix.format = ["onnx"]
    choices, skipped, scenario = expand(cfg, CATALOG)
    driver = FakeDriver({"fastapi": 400.0, "flask": 150.0})
    run = run_matrix(
        cfg, choices, skipped, scenario, driver, tmp_path, env={"cpu_model": "Test CPU", "cpu_count": 2}
    )
    paths = write_report(run, tmp_path)
    md = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert "| # | choice | max rps under SLO |" in md
    first_row = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    assert "fastapi+uvicorn" in first_row
    assert md.index("Pick **fastapi+uvicorn") < md.index("## Ranking")  # the verdict comes first
    assert "more than **flask+gunicorn-sync" in md and "95% CI" in md
    assert run.verdict and run.verdict in md and load_compare(tmp_path).verdict == run.verdict
    assert "late-sends" in md and "Test CPU" in md and "flask+uvicorn" in md  # warning, env, skipped combo
    assert md.count("![") == 2 and all(p.exists() for p in paths)
    assert html.count("data:image/png;base64,") == 2 and "<table>" in html
    # the document round-trips: re-rendering from compare.json gives the same Markdown
    again = load_compare(tmp_path / "compare.json")
    write_report(again, tmp_path / "again")
    assert (tmp_path / "again" / "report.md").read_text() == md


def test_latency_throughput_lines_join_each_choices_points_in_order_of_rate(monkeypatch):
    """The chart's line runs along its x axis (achieved rps), whatever order the probes ran in; past
    saturation a higher offered rate achieved less (3000 offered: 2100 achieved; 2500 offered: 2400)."""
    from deploybench.reports import plots  # import cost: matplotlib

    def choice(fw: str, run_order: list[tuple[float, float, int, bool]], common_offered: float | None):
        r = ChoiceResult(Choice(fw, "uvicorn" if fw == "fastapi" else "gunicorn-sync", "iris-rf", "onnx"))
        r.status = "complete"
        r.saturation = {"points": [{"offered_rps": o, "throughput_rps": t, "p99_us": p99, "passed": ok}
                                   for o, t, p99, ok in run_order]}  # fmt: skip
        r.common = {"offered_rps": common_offered, "throughput_rps": 199.0, "latency_us": {"p99": 2500}}
        return r

    # coarse search (1000, 3000, 2000), then a repeated search (2500, 2200): the order they ran in
    fast = choice("fastapi", [(1000, 995, 4000, True), (3000, 2100, 900_000, False), (2000, 1990, 9000, True),
                              (2500, 2400, 80_000, False), (2200, 2180, 30_000, True)], 200.0)  # fmt: skip
    slow = choice("flask", [(800, 790, 60_000, False), (400, 398, 6000, True), (900, 610, 700_000, False),
                            (600, 601, 20_000, True)], None)  # fmt: skip
    run = CompareRun(config={"slo": {"p99_ms": 50.0}}, scenario="tabular", env={}, results=[fast, slow])
    curves = plots.latency_throughput_curves(run)
    assert [label for label, _ in curves] == [fast.choice.label, slow.choice.label]
    fast_pts, slow_pts = curves[0][1], curves[1][1]
    assert [p.throughput_rps for p in fast_pts] == [199.0, 995, 1990, 2100, 2180, 2400]
    assert [p.p99_ms for p in fast_pts] == [2.5, 4.0, 9.0, 900.0, 30.0, 80.0]
    assert [p.throughput_rps for p in slow_pts] == [199.0, 398, 601, 610, 790]
    assert [p.passed for p in slow_pts] == [True, True, True, False, False]

    figures = []
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or b"png")
    assert plots.latency_throughput_png(run) == b"png"
    (fig,) = figures
    lines = [line for line in fig.axes[0].get_lines() if line.get_label() != "P99 SLO"]
    assert [line.get_label() for line in lines] == [fast.choice.label, slow.choice.label]
    for line, pts in zip(lines, (fast_pts, slow_pts), strict=True):
        xs = [float(x) for x in line.get_xdata()]
        assert xs == sorted(xs) == [p.throughput_rps for p in pts]
        assert [float(y) for y in line.get_ydata()] == [p.p99_ms for p in pts]
    plots.plt.close(fig)


def test_compare_document_rejects_other_json(tmp_path):
    (tmp_path / "compare.json").write_text(json.dumps({"schema_version": 2, "kind": "load"}))
    with pytest.raises(UsageError, match="not a deploybench compare document"):
        load_compare(tmp_path)
    slo = CompareRun.from_dict(
        {"schema_version": 1, "kind": "compare", "config": {"slo": {"p99_ms": 5}}, "scenario": "tabular"}
    ).slo_p99_us  # fmt: skip
    assert slo == 5000 and isinstance(slo, int)


def test_warnings_are_data_not_prints(tmp_path, capsys):
    cfg = quick_cfg()
    choices, skipped, scenario = expand(cfg, CATALOG)
    run_matrix(cfg, choices[:1], skipped, scenario, FakeDriver({"fastapi": 100.0}), tmp_path, env={})
    assert capsys.readouterr() == ("", "")
    assert isinstance(load_compare(tmp_path).results[0].warnings[0], RecordWarning)


# -- --pin: server and generator on cores of their own (2 CPUs: server CPU 1, generator CPU 0) --------------
@pytest.mark.parametrize("usable", [{0}, {1}, {5}])
def test_pin_with_fewer_than_2_cpus_is_a_usage_error(monkeypatch, capsys, tmp_path, usable):
    """Checked before anything starts: no server, no Locust, no output folder."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(usable))
    message = f"--pin needs at least 2 usable CPUs; this process may use {sorted(usable)}"
    with pytest.raises(UsageError, match=re.escape(message)):
        check_pin_possible()
    out = tmp_path / "out"
    assert main(["compare", "--format", "onnx", "--pin", "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "--pin needs at least 2 usable CPUs" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "usable, workers, server, generator",
    [
        ({0, 1}, 1, [1], [0]),
        ({0, 1}, 4, [1], [0]),  # more workers than cores: they share the one server core
        ({0, 1, 2, 3}, 1, [3], [0]),
        ({0, 1, 2, 3}, 2, [2, 3], [0, 1]),
        ({0, 1, 2, 3}, 4, [1, 2, 3], [0]),  # the generator keeps at least one core
        (set(range(16)), 4, [12, 13, 14, 15], [0, 1, 2, 3]),
        ({2, 5, 7}, 1, [7], [2]),  # the usable set, not CPU numbers from 0
    ],
)
def test_core_split_gives_the_server_a_core_per_worker_and_the_generator_as_many(
    usable, workers, server, generator
):
    assert core_split(usable, workers) == (server, generator)
    assert not set(server) & set(generator)


def test_core_split_needs_2_cpus():
    with pytest.raises(UsageError, match="at least 2 usable CPUs"):
        core_split({3}, 1)


def test_the_split_is_described_in_words():
    assert describe_split([1], [0]) == "server on CPU 1, generator on CPU 0"
    assert describe_split([12, 13, 14, 15], [0, 1, 2, 3]) == (
        "server on CPUs 12-15, generator on CPUs 0-3 (4 processes)"
    )
    assert describe_split([2, 3], [0, 1]) == "server on CPUs 2, 3, generator on CPUs 0, 1 (2 processes)"
    assert describe_split(None, [0]) == "generator on CPU 0"
    assert describe_split([1], None) == "not pinned"


def test_pin_without_linux_affinity_is_a_usage_error(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity")
    with pytest.raises(UsageError, match=r"--pin needs Linux CPU affinity"):
        check_pin_possible()


def test_pin_drives_the_pinning_of_server_and_generator(monkeypatch, tmp_path):
    """The driver asks for the split ``core_split`` gives: on 3 CPUs the server on CPU 2, the generator on
    CPU 0 (in-process fakes record the requests; tests/e2e/test_compare_e2e.py checks the affinities the OS
    actually applied on 2 CPUs)."""
    import deploybench.decisions.compare.driver as driver_module

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    check_pin_possible()  # no error
    asked: dict[str, object] = {}

    class FakeServer:
        url, pid = "http://127.0.0.1:1", 1

        def __init__(self, config, log_path=None):
            asked["server_cpus"] = config.cpus

        def start(self):
            return self

        def stop(self):
            asked["stopped"] = True

        def cleanup(self):
            pass

    def fake_run_load(url, scenario, **kw):
        asked["generator_cpus"] = kw["generator_cpus"]
        asked["processes"] = kw["processes"]

    monkeypatch.setattr(driver_module, "ServerProcess", FakeServer)
    monkeypatch.setattr(driver_module, "run_load", fake_run_load)
    cases = (
        (True, 1, [2], [0], 0),
        (False, 1, None, None, 0),
        ("auto", 1, [2], [0], 0),
        (True, 2, [1, 2], [0], 0),  # 3 CPUs, 2 workers: the generator keeps one core
    )
    for pin, workers, server_cpus, generator_cpus, processes in cases:
        asked.clear()
        cfg = apply_overrides(load_config("quick"), {"measure.pin": pin})
        driver = RealDriver(cfg, "tabular", tmp_path / "zoo", tmp_path / "out")
        choice = Choice("fastapi", "uvicorn", "iris-rf", "onnx", workers=workers)
        with driver.start(choice, tmp_path / "server.log") as target:
            driver.load(target, load_model="closed", duration_s=1.0, warmup_s=0.0, record_path=tmp_path / "r")
        assert driver.generator_cpus == generator_cpus
        want = {"server_cpus": server_cpus, "generator_cpus": generator_cpus, "processes": processes}
        assert asked == {**want, "stopped": True}


# -- warnings that do not concern compare, and the handler passed to the target ------------------------------
class NoisyRecordsDriver(FakeDriver):
    """Every record also carries the generator's few-samples warning about P99.9 (compare reports up to
    P99) and, above capacity, overload warnings."""

    def load(self, target, **kw):
        rec = super().load(target, **kw)
        rec.add_warning("few-samples", "200 samples cannot resolve p99.9", "run longer", "POST /predict")
        if kw.get("rate_rps") and kw["rate_rps"] > target.capacity:
            rec.add_warning("dropped-sends", "12 scheduled sends were dropped", "more users")
        return rec


def test_p999_few_samples_and_overload_warnings_of_failing_probes_stay_off_the_choice(tmp_path):
    cfg = quick_cfg()
    cfg.matrix.framework, cfg.matrix.format = ["fastapi"], ["onnx"]
    choices, skipped, scenario = expand(cfg, CATALOG)
    driver = NoisyRecordsDriver({"fastapi": 300.0})
    run = run_matrix(cfg, choices, skipped, scenario, driver, tmp_path, env={})
    (r,) = run.results
    codes = {w.code for w in r.warnings}
    assert "few-samples" not in codes and "dropped-sends" not in codes and "late-sends" in codes
    failing = [p for p in r.saturation["points"] if not p["passed"]]
    assert failing and all(
        "dropped-sends" in {w["code"] for w in p["extra"]["warnings"]} for p in failing
    )  # kept on the probe itself
    assert r.interval is not None and r.interval.n == cfg.search.repeats


def test_the_driver_passes_the_handler_style_to_the_target(monkeypatch, tmp_path):
    import deploybench.decisions.compare.driver as driver_module

    asked: dict[str, object] = {}

    class FakeServer:
        url, pid = "http://127.0.0.1:1", 1

        def __init__(self, config, log_path=None):
            asked["handler"] = config.handler

        def start(self):
            return self

        def stop(self):
            pass

        def cleanup(self):
            pass

    monkeypatch.setattr(driver_module, "ServerProcess", FakeServer)
    cfg = apply_overrides(load_config("quick"), {"measure.pin": False})
    driver = RealDriver(cfg, "tabular", tmp_path / "zoo", tmp_path / "out")
    with driver.start(Choice("fastapi", "uvicorn", "iris-rf", "onnx", handler="inline"), tmp_path / "s.log"):
        pass
    assert asked == {"handler": "inline"}


class PerStartDriver(FakeDriver):
    """Each start of a choice is a process of its own speed: capacity x ``speeds[k]`` at the k-th start."""

    def __init__(self, capacities: dict[str, float | None], speeds: list[float]) -> None:
        super().__init__(capacities)
        self.speeds = speeds
        self.warmups: list[tuple[int, float | None, float]] = []  # (start number, rate, warm-up s)

    @contextlib.contextmanager
    def start(self, choice: Choice, log_path: Path):
        k = self.started.count(choice.id)
        with super().start(choice, log_path) as target:
            target.capacity *= self.speeds[k]
            target.start_no = k
            yield target

    def load(self, target, **kw):
        self.warmups.append((target.start_no, kw.get("rate_rps"), kw["warmup_s"]))
        return super().load(target, **kw)


@pytest.mark.parametrize("restart", [True, False])
def test_repeats_after_the_first_run_on_a_fresh_target_whose_speed_they_measure(tmp_path, restart):
    """A process's speed varies from one start to the next: repeated searches on one process cannot see
    it. With repeat_restart each repeat after the first measures a freshly started (and warmed-up) target."""
    cfg = quick_cfg(repeats=3, repeat_probes=4, repeat_restart=restart)
    cfg.matrix.format = ["onnx"]
    cfg.matrix.framework = ["fastapi"]
    choices, skipped, scenario = expand(cfg, CATALOG)
    driver = PerStartDriver({"fastapi": 1000.0}, speeds=[1.0, 1.08, 0.92])
    run = run_matrix(cfg, choices, skipped, scenario, driver, tmp_path, env={})
    (res,) = run.results
    reps = res.saturation["repeats"]
    estimates = [r["estimate_rps"] for r in reps["runs"]]
    if restart:
        assert driver.started == [choices[0].id] * 3 == driver.stopped
        assert reps["restarts"] == 2
        assert estimates[1] > estimates[0] > estimates[2]  # each repeat found its own process's capacity
        for k, speed in enumerate([1.0, 1.08, 0.92]):
            assert estimates[k] == pytest.approx(1000.0 * speed, rel=0.05)
        # the first step on a restarted target gets the full warm-up, the rest the step warm-up
        first_steps = [w for i, w in enumerate(driver.warmups) if i == 0 or w[0] != driver.warmups[i - 1][0]]
        assert [w[0] for w in first_steps] == [0, 1, 2]
        assert all(w[2] == cfg.measure.warmup_s for w in first_steps[1:])
        assert all(w[2] == cfg.search.step_warmup_s for w in driver.warmups if w not in first_steps)
    else:
        assert driver.started == [choices[0].id] and reps["restarts"] == 0
        assert all(e == pytest.approx(1000.0, rel=0.05) for e in estimates)
    write_report(run, tmp_path)
    method = (tmp_path / "report.md").read_text()
    assert ("freshly started target" in method) == restart
    assert ("all on the target process of the coarse search" in method) == (not restart)


class TimedDriver(PerStartDriver):
    """Starts numbered across the whole matrix (the machine's clock): the speed of the n-th start of any
    choice is ``speeds[n]``; ``fail_start`` / ``interrupt_start``: that start fails / gets Ctrl-C."""

    def __init__(self, capacities, speeds, fail_start=None, interrupt_start=None) -> None:
        super().__init__(capacities, speeds)
        self.fail_start, self.interrupt_start = fail_start, interrupt_start

    @contextlib.contextmanager
    def start(self, choice: Choice, log_path: Path):
        n = len(self.started)
        if n == self.fail_start:
            self.started.append(choice.id)
            raise TargetError(f"server exited during start-up: {choice.id}")
        with FakeDriver.start(self, choice, log_path) as target:
            target.capacity *= self.speeds[n]
            target.start_no = n
            yield target

    def load(self, target, **kw):
        if target.start_no == self.interrupt_start and kw.get("rate_rps"):
            raise KeyboardInterrupt
        return super().load(target, **kw)


def two_choice_run(tmp_path, driver, on_progress=None):
    cfg = quick_cfg(repeats=3, repeat_probes=4)
    cfg.matrix.format = ["onnx"]
    choices, skipped, scenario = expand(cfg, CATALOG)
    assert [c.framework for c in choices] == ["fastapi", "flask"]
    return (
        cfg,
        choices,
        lambda: run_matrix(
            cfg, choices, skipped, scenario, driver, tmp_path, env={}, on_progress=on_progress
        ),
    )


def test_repeats_are_interleaved_across_choices_so_a_slow_minute_does_not_bias_one_ratio(tmp_path):
    """Repeat k of every choice runs before repeat k+1 of any (alternating the order): a slow spell of the
    machine during the second pass lowers one repeat of both choices alike, so two equal choices still read
    equal (measured one choice after the other, a spell as long as one choice's repeats biases its ratio)."""
    driver = TimedDriver({"fastapi": 1000.0, "flask": 1000.0}, speeds=[1.0, 1.0, 0.9, 0.9, 1.0, 1.0])
    _, choices, go = two_choice_run(tmp_path, driver)
    run = go()
    a, b = (c.id for c in choices)
    assert driver.started == [a, b, b, a, a, b] == driver.stopped  # pass 2 in reverse order
    ra, rb = run.results
    for r in (ra, rb):
        assert r.status == "complete" and r.saturation["repeats"]["restarts"] == 2
        est = [x["estimate_rps"] for x in r.saturation["repeats"]["runs"]]
        assert est == pytest.approx([1000.0, 900.0, 1000.0], rel=0.06)  # within a final cell
    assert ra.max_rps / rb.max_rps == pytest.approx(1.0, rel=0.03)
    assert places(rank(run.results)) == ["1=", "1="]


def test_progress_is_reported_per_pass_and_once_per_choice_when_done(tmp_path):
    driver = TimedDriver({"fastapi": 1000.0, "flask": 500.0}, speeds=[1.0] * 6)
    cfg, choices, _ = two_choice_run(tmp_path, driver)
    seen: list[tuple[str, str, str]] = []
    lines: list[str] = []

    def on_progress(r: ChoiceResult, what: str) -> None:
        seen.append((r.choice.framework, what, r.status))
        lines.append(progress_line(r, what, cfg.search.repeats))

    run_matrix(cfg, choices, [], "tabular", driver, tmp_path, env={}, on_progress=on_progress)
    assert seen == [
        ("fastapi", "first pass", "running"),
        ("flask", "first pass", "running"),
        ("flask", "repeat 2", "running"),
        ("fastapi", "repeat 2", "running"),
        ("fastapi", "repeat 3", "running"),
        ("flask", "repeat 3", "running"),
        ("fastapi", "done", "complete"),
        ("flask", "done", "complete"),
    ]
    assert re.fullmatch(
        r"  fastapi-\S+: first pass done, max under SLO so far \d+\.\d rps \(1 of 3 repeats\)", lines[0]
    )
    assert "CI" not in lines[0]  # no interval from 1 of 3 repeats
    assert re.fullmatch(
        r"  flask-\S+: complete, max under SLO \d+\.\d rps \(95% CI \S+-\S+; 3 repeats\), \d+ s", lines[-1]
    )


def test_a_restart_that_fails_fails_that_choice_only(tmp_path):
    driver = TimedDriver(
        {"fastapi": 1000.0, "flask": 500.0}, speeds=[1.0] * 6, fail_start=2
    )  # flask's repeat 2
    seen: list[tuple[str, str, str]] = []
    _, choices, go = two_choice_run(
        tmp_path, driver, lambda r, what: seen.append((r.choice.framework, what, r.status))
    )
    run = go()
    assert [r.status for r in run.results] == ["complete", "failed"]
    assert "server exited during start-up" in run.results[1].error
    assert len(run.results[0].saturation["repeats"]["runs"]) == 3
    assert driver.started.count(choices[1].id) == 2  # flask got no repeat 3
    assert driver.stopped == [c for i, c in enumerate(driver.started) if i != 2]
    # the failure is reported once, when it happens; no "repeat 2 done" for the failed pass
    assert seen == [
        ("fastapi", "first pass", "running"),
        ("flask", "first pass", "running"),
        ("flask", "done", "failed"),
        ("fastapi", "repeat 2", "running"),
        ("fastapi", "repeat 3", "running"),
        ("fastapi", "done", "complete"),
    ]


def test_a_choice_that_fails_to_start_is_reported_done_once(tmp_path):
    driver = TimedDriver({"fastapi": 1000.0, "flask": 500.0}, speeds=[1.0] * 6, fail_start=0)
    seen: list[tuple[str, str, str]] = []
    *_, go = two_choice_run(
        tmp_path, driver, lambda r, what: seen.append((r.choice.framework, what, r.status))
    )
    run = go()
    assert [r.status for r in run.results] == ["failed", "complete"]
    assert [e for e in seen if e[1] == "done"] == [
        ("fastapi", "done", "failed"),
        ("flask", "done", "complete"),
    ]


def test_ctrl_c_in_a_later_pass_keeps_every_choice_with_the_repeats_it_finished(tmp_path):
    """Interrupted during repeat 2 (flask's, the first of that pass): both choices are reported from the
    repeats they finished, each with a warning saying how many; the run is marked interrupted."""
    driver = TimedDriver({"fastapi": 1000.0, "flask": 500.0}, speeds=[1.0] * 6, interrupt_start=2)
    *_, go = two_choice_run(tmp_path, driver)
    with pytest.raises(KeyboardInterrupt):
        go()
    saved = load_compare(tmp_path)
    assert saved.status == "interrupted"
    assert [r.status for r in saved.results] == ["complete", "complete"]
    for r in saved.results:
        assert r.interval is not None and r.interval.n == 1
        (w,) = [w for w in r.warnings if w.code == "fewer-repeats"]
        assert "interrupted after 1 of 3 repeated searches" in w.message
    assert driver.stopped == driver.started  # the interrupted restart was stopped too
    assert [r.choice.framework for r in rank(saved.results)] == ["fastapi", "flask"]


# -- remote workers: compare as their master --------------------------------------------------------------
def test_remote_workers_need_locust_and_a_fixed_master_address():
    ok = CompareConfig.from_dict(
        {"measure": {"engine": "locust", "expect_workers": 2, "master_bind": "0.0.0.0:5557"}}
    )
    assert ok.measure.expect_workers == 2
    with pytest.raises(UsageError, match=r'expect_workers \(remote workers\) .* needs engine = "locust"'):
        CompareConfig.from_dict({"measure": {"expect_workers": 2}})  # the default engine is lean
    for bad in ("127.0.0.1:0", "127.0.0.1", ":5557", "host:port"):
        with pytest.raises(UsageError, match="master_bind must be HOST:PORT with a port > 0"):
            CompareConfig.from_dict(
                {"measure": {"engine": "locust", "expect_workers": 1, "master_bind": bad}}
            )


def test_compare_expect_workers_on_the_command_line(monkeypatch, capsys, tmp_path):
    """--expect-workers implies the Locust engine; with --engine lean it is a usage error (exit 2, before
    anything starts); the driver then asks every run for the master and its workers, no local processes."""
    import deploybench.decisions.compare.driver as driver_module

    out = tmp_path / "out"
    argv = [
        "compare",
        "--format",
        "onnx",
        "--expect-workers",
        "2",
        "--engine",
        "lean",
        "--out",
        str(out),
        "-q",
    ]
    assert main(argv) == 2
    assert 'needs engine = "locust"' in capsys.readouterr().err and not out.exists()

    asked: dict[str, object] = {}
    monkeypatch.setattr(driver_module, "run_load", lambda url, scenario, **kw: asked.update(kw))
    remote = {"measure.engine": "locust", "measure.expect_workers": 2, "measure.master_bind": "10.0.0.5:6000"}
    cfg = apply_overrides(load_config("quick"), {**remote, "measure.pin": False})
    driver = RealDriver(cfg, "tabular", tmp_path / "zoo", tmp_path / "out")
    target = SimpleNamespace(url="http://127.0.0.1:1", pid=None)
    driver.load(target, load_model="closed", duration_s=1.0, warmup_s=0.0, record_path=tmp_path / "r")
    assert asked["expect_workers"] == 2 and asked["master_bind"] == ("10.0.0.5", 6000)
    assert asked["generator_cpus"] is None and "processes" not in asked and asked["engine"] == "locust"


class TooSlowDriver(FakeDriver):
    """Every open-loop run misses the SLO (P99 900 ms at any rate)."""

    def load(self, target, *, load_model, duration_s, warmup_s, record_path, users=None, rate_rps=None):
        rec = fake_record(rate_rps, rate_rps or 100.0, 900_000, 200)
        rec.save(record_path)
        return rec


@pytest.mark.parametrize(
    ("driver", "why"),
    [
        (FakeDriver({"fastapi": None, "flask": None}), "no choice completed"),
        (TooSlowDriver({"fastapi": 300.0, "flask": 300.0}), "no choice met the SLO at any rate tried"),
    ],
)
def test_compare_exits_1_when_nothing_met_the_slo(monkeypatch, tmp_path, capsys, driver, why):
    import deploybench.commands.compare as compare_command

    monkeypatch.setattr(compare_command, "RealDriver", lambda *a, **k: driver)
    monkeypatch.setattr(compare_command, "run_matrix", functools.partial(run_matrix, env={}))  # no git call
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "manifest.json").write_text("{}")
    argv = ["compare", "--framework", "fastapi,flask", "--model", "iris-rf", "--format", "onnx", "--no-pin",
            "--repeats", "0", "--zoo", str(tmp_path / "zoo"), "-q"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"deploybench compare: {why} (exit 1)" in err
    assert (tmp_path / "out" / "report.md").is_file()  # the report is written all the same
    one_serves = FakeDriver({"fastapi": 300.0, "flask": None})
    monkeypatch.setattr(compare_command, "RealDriver", lambda *a, **k: one_serves)
    assert main([*argv, "--out", str(tmp_path / "out2")]) == 0


def test_compare_thresholds_per_choice_exit_3_when_every_choice_crossed_one(monkeypatch, tmp_path, capsys):
    """`--threshold` judges each choice: the fake fastapi reaches ~300 rps, flask ~200 rps. throughput>250
    leaves flask out of the recommendation (exit 0); throughput>1000 crosses for both (exit 3); a malformed
    threshold is exit 2 before anything runs."""
    import deploybench.commands.compare as compare_command

    monkeypatch.setattr(compare_command, "run_matrix", functools.partial(run_matrix, env={}))  # no git call
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "manifest.json").write_text("{}")
    argv = ["compare", "--framework", "fastapi,flask", "--model", "iris-rf", "--format", "onnx", "--no-pin",
            "--repeats", "0", "--zoo", str(tmp_path / "zoo"), "-q"]  # fmt: skip
    for limit, code, out in (("throughput>250", 0, "one"), ("throughput>1000", 3, "all")):
        driver = FakeDriver({"fastapi": 300.0, "flask": 200.0})
        monkeypatch.setattr(compare_command, "RealDriver", lambda *a, d=driver, **k: d)
        assert main([*argv, "--threshold", limit, "--out", str(tmp_path / out)]) == code
        doc = load_compare(tmp_path / out)
        crossed = {r.choice.framework: bool(r.crossed_thresholds) for r in doc.results}
        assert crossed == {"fastapi": code == 3, "flask": True}
        assert doc.config["slo"]["thresholds"] == [limit]
        assert "Crossed a threshold, so not recommended" in doc.verdict
    assert "every choice that met the SLO crossed a threshold (exit 3)" in capsys.readouterr().err
    assert main([*argv, "--threshold", "p99<20", "--out", str(tmp_path / "bad")]) == 2
    assert "threshold 'p99<20': missing unit" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_traffic_target_adds_a_capacity_section_and_cost_to_the_verdict(tmp_path):
    """[plan] traffic_rps: the report plans each ranked choice at that traffic (deploybench plan's
    arithmetic) and the verdict names the cheapest. Fake capacities ~400 and ~200 rps, 20 % headroom, 1,000
    rps: fastapi ceil(1000 / (~390 x 0.8)) = 4 replicas of 1 core, flask ceil(1000 / (~195 x 0.8)) = 7."""
    cfg = quick_cfg()
    cfg.matrix.framework = ["fastapi", "flask"]
    cfg.matrix.format = ["onnx"]
    cfg.plan.traffic_rps, cfg.plan.headroom, cfg.plan.core_hour_price = 1000.0, 0.2, 0.04
    choices, skipped, scenario = expand(cfg, CATALOG)
    driver = FakeDriver({"fastapi": 400.0, "flask": 200.0})
    run = run_matrix(cfg, choices, skipped, scenario, driver, tmp_path, env={})
    rows = run.capacity["rows"]
    assert [r["label"].split("+")[0] for r in rows] == ["fastapi", "flask"]
    assert [r["replicas"] for r in rows] == [4, 7] and rows[0]["cost_per_month"] == pytest.approx(
        4 * 0.04 * 730
    )
    assert (
        "At 1,000 rps with 20% headroom the cheapest is **fastapi+uvicorn iris-rf/onnx w1**: 4 core(s)"
        in (run.verdict)
    )
    assert load_compare(tmp_path).capacity == run.capacity  # kept in compare.json
    write_report(run, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "## Capacity at 1,000 rps" in report and "| `flask+gunicorn-sync iris-rf/onnx w1` |" in report
    # no traffic target: no section, the verdict unchanged
    cfg.plan.traffic_rps = 0.0
    plain = run_matrix(
        cfg, choices, skipped, scenario, FakeDriver({"fastapi": 400.0}), tmp_path / "b", env={}
    )
    assert plain.capacity is None and "cheapest" not in plain.verdict


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--traffic", "2000"], "--traffic '2000': give a rate with its unit"),
        (["--traffic", "2000rps", "--headroom", "99%"], "--headroom '99%': must be at least 0 and below 95%"),
    ],
)
def test_compare_capacity_options_bad_input_is_exit_2(capsys, argv, message):
    assert main(["compare", "--dry-run", *argv]) == 2
    assert message in capsys.readouterr().err
