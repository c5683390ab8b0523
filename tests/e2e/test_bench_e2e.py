"""Micro-benchmarks: profiles and cases, conversion to records with noise warnings, and a tiny end-to-end
`deploybench bench` run (seconds) on a freshly built iris-rf zoo."""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deploybench.bench.convert import noise_warnings, records_from_benchmark_json, series_from_benchmark
from deploybench.bench.profiles import (
    PROFILES,
    Case,
    Profile,
    calibrated_rounds,
    predict_cases,
    select_profile,
)
from deploybench.errors import UsageError
from deploybench.record import load_records
from deploybench.reports.render import render_markdown
from deploybench.targets.zoo import MODELS

REPO = Path(__file__).resolve().parents[2]


# -- profiles and cases ----------------------------------------------------------------------------------
def test_calibrated_rounds_fill_the_budget_within_bounds() -> None:
    p = PROFILES["quick"]  # 1 s per case, 5..1000 rounds
    assert calibrated_rounds(0.010, p) == 100
    assert calibrated_rounds(0.3, p) == p.min_rounds
    assert calibrated_rounds(1e-7, p) == p.max_rounds
    assert calibrated_rounds(0.0, p) == p.max_rounds


def _key(c: Case) -> tuple[str, str, int]:
    return (c.model, c.format, c.threads)


def test_quick_profile_thread_matrix() -> None:
    cases = predict_cases(PROFILES["quick"], MODELS, cores=2)
    by = {(c.model, c.format, c.batch_size, c.threads) for c in cases}
    assert ("iris-rf", "onnx", 1, 1) in by and ("iris-rf", "onnx", 1, 2) not in by
    assert ("iris-rf", "onnx", 512, 1) in by and ("iris-rf", "onnx", 512, 2) in by
    assert ("resnet50", "pt2", 1, 1) in by and ("resnet50", "pt2", 1, 2) in by
    assert ("resnet50", "pt2", 8, 2) in by and ("resnet50", "pt2", 8, 1) not in by
    assert {c.format for c in cases if c.model == "iris-rf"} == {"pickle", "onnx"}
    # one predictor per (model, format, threads): its cases are consecutive
    keys = [_key(c) for c in cases]
    runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(runs) == len(set(keys))


def test_full_profile_covers_every_combination() -> None:
    cases = predict_cases(PROFILES["full"], MODELS, cores=4)
    expected = sum(len(spec.formats) * (4 if spec.task == "tabular" else 2) * 2 for spec in MODELS.values())
    assert len(cases) == expected == len({c.id for c in cases})
    assert predict_cases(PROFILES["full"], MODELS, cores=1) == [
        c for c in predict_cases(PROFILES["full"], MODELS, cores=1) if c.threads == 1
    ]


def test_select_profile_and_filters() -> None:
    p = select_profile("tiny", ["iris-rf"])
    assert p.models == ("iris-rf",) and p.name == "tiny"
    assert {c.format for c in predict_cases(p, MODELS, formats=("onnx",))} == {"onnx"}
    with pytest.raises(UsageError, match="unknown profile"):
        select_profile("huge")


# -- conversion and warnings -----------------------------------------------------------------------------
def _bench(case: Case, samples_us: list[float], iterations: int = 1, **extra: object) -> dict:
    return {
        "name": case.id,
        "extra_info": {"case": case.to_dict(), "series": case.id, **extra},
        "stats": {"iterations": iterations, "data": [s / 1e6 for s in samples_us]},
    }


def test_series_from_benchmark_converts_seconds_to_exact_us() -> None:
    case = Case("predict", "iris-rf", "onnx", 8, 1)
    samples = [20.4, 19.6, 31.0, 25.0]
    _, s = series_from_benchmark(_bench(case, samples, warmup_rounds=3, rounds=4))
    assert s.samples_ns == [20_400, 19_600, 31_000, 25_000]  # full resolution, ns
    assert s.latency_us["p50"] == 20 and s.latency_us["max"] == 31
    assert s.count == 4
    assert s.items_per_s == pytest.approx(8 * 4 / (96 / 1e6))
    assert s.params == {
        "case": "predict",
        "model": "iris-rf",
        "format": "onnx",
        "batch_size": 8,
        "threads": 1,
    }
    assert s.extra["warmup_rounds"] == 3
    with pytest.raises(ValueError, match="iterations"):
        series_from_benchmark(_bench(case, samples, iterations=10))


def test_noise_warnings() -> None:
    steady = [100] * 200
    assert noise_warnings("s", steady) == []
    codes = [w.code for w in noise_warnings("s", [100, 150, 60, 140, 55, 100, 160] * 20)]
    assert codes == ["high-spread"]
    few = noise_warnings("s", [100] * 50)
    assert (
        [w.code for w in few] == ["few-samples"] and "p99" in few[0].message and "p95" not in few[0].message
    )
    assert noise_warnings("s", [100] * 50, check_few=False) == []
    slow = noise_warnings("s", [300] + [100] * 199)
    assert [w.code for w in slow] == ["slow-first-round"] and slow[0].series == "s"
    assert noise_warnings("s", [30] + [10] * 199) == []  # 20 µs slower: timer noise, not a cold start
    assert [w.code for w in noise_warnings("s", [100, 500, 20])] == ["few-samples"]  # no spread check on 3


def test_records_from_benchmark_json_groups_and_flags_missing_cases() -> None:
    expected = [
        Case("predict", "iris-rf", "onnx", 1, 1),
        Case("predict", "iris-rf", "pickle", 1, 1),
        Case("load", "iris-rf", "onnx"),
        Case("preprocess", width=64, height=48),
    ]
    data = {
        "benchmarks": [
            _bench(expected[2], [2000, 2100, 2200], size_bytes=1234),
            _bench(expected[0], [20] * 150),
            _bench(expected[3], [900] * 120),
            {"name": "not ours", "extra_info": {}, "stats": {"iterations": 1, "data": [1.0]}},
        ]
    }
    records = records_from_benchmark_json(
        data, profile=PROFILES["tiny"], expected=expected, env={"cpu_count": 2},
        started_utc="2026-01-01T00:00:00.000000Z", settings={"max_time_s": 0.2}, tasks={"iris-rf": "tabular"},
    )  # fmt: skip
    assert list(records) == ["iris-rf", "shared"]
    rf = records["iris-rf"]
    assert rf.kind == "micro" and rf.config["model"] == "iris-rf" and rf.config["profile"] == "tiny"
    assert [s.name for s in rf.series] == ["predict/iris-rf/onnx/b1/t1", "load/iris-rf/onnx"]
    onnx = rf.series[0]
    assert onnx.extra["load_time_us"] == 2100 and onnx.extra["size_bytes"] == 1234
    missing = [w for w in rf.warnings if w.code == "case-missing"]
    assert len(missing) == 1 and "predict/iris-rf/pickle/b1/t1" in missing[0].message
    assert [s.name for s in records["shared"].series] == ["preprocess/64x48"]
    assert records["shared"].run_id.endswith("micro-preprocess")


def test_failed_case_fails_only_its_own_record() -> None:
    """One failed pytest case: only the record missing a case is "failed"; the others stay "complete"."""
    from deploybench.bench.run import record_status

    expected = [Case("predict", "iris-rf", "onnx", 1, 1), Case("predict", "iris-mlp", "onnx", 1, 1)]
    data = {"benchmarks": [_bench(expected[0], [20] * 150)]}  # the iris-mlp case failed
    records = records_from_benchmark_json(
        data, profile=PROFILES["tiny"], expected=expected, env={"cpu_count": 2},
        started_utc="2026-01-01T00:00:00.000000Z", settings={"max_time_s": 0.2},
    )  # fmt: skip
    error = "pytest exited with code 1: some cases failed (see its output)"
    assert record_status(records["iris-rf"], "failed", error) == ("complete", None)
    assert record_status(records["iris-mlp"], "failed", error) == ("failed", error)
    assert record_status(records["iris-rf"], "interrupted", "stopped") == ("interrupted", "stopped")


# -- end to end ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def iris_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from deploybench.targets.zoo import build_zoo

    root = tmp_path_factory.mktemp("zoo")
    build_zoo(root, models=["iris-rf"])
    return root


def _cli(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploybench", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def bench_run(
    iris_zoo: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("bench-out")
    proc = _cli("bench", "--profile", "tiny", "--models", "iris-rf", "--zoo", str(iris_zoo),
                "--out", str(out), "--report-format", "md,html,csv")  # fmt: skip
    return proc, out


@pytest.mark.e2e
def test_bench_end_to_end_writes_records_and_report(bench_run, iris_zoo: Path) -> None:
    proc, out = bench_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # progress: one line per case while it runs
    expected = {
        *(f"predict/iris-rf/{f}/b{b}/t1" for f in ("pickle", "onnx") for b in (1, 8)),
        "load/iris-rf/pickle", "load/iris-rf/onnx", "preprocess/640x480", "noop",
    }  # fmt: skip
    for case_id in expected:
        assert f"[{case_id}] PASSED" in proc.stdout
    assert "wall time" in proc.stdout

    records = load_records([p for p in out.glob("*.json") if p.name != "summary.json"])
    assert sorted(r.config.get("model", r.config.get("scenario")) for r in records) == [
        "iris-rf",
        "preprocess",
    ]
    assert all(r.status == "complete" and r.kind == "micro" for r in records)
    series = {s.name: s for r in records for s in r.series}
    assert set(series) == expected
    for name, s in series.items():
        samples = np.asarray(s.samples_ns) / 1000.0
        tiny = PROFILES["tiny"]
        assert s.count == len(samples) >= (tiny.load_rounds if name.startswith("load/") else tiny.min_rounds)
        assert s.latency_us["p50"] == round(np.percentile(samples, 50, method="inverted_cdf")), name
        assert s.latency_us["p99"] == round(np.percentile(samples, 99, method="inverted_cdf")), name
        assert s.extra["warmup_rounds"] >= 1
    onnx8 = series["predict/iris-rf/onnx/b8/t1"]
    assert onnx8.items_per_s == pytest.approx(8 * onnx8.count / (sum(onnx8.samples_ns) / 1e9))
    assert onnx8.extra["load_time_us"] == series["load/iris-rf/onnx"].latency_us["p50"]
    assert onnx8.extra["size_bytes"] == (iris_zoo / "iris-rf" / "model.onnx").stat().st_size
    assert series["load/iris-rf/pickle"].count == PROFILES["tiny"].load_rounds

    # the raw pytest-benchmark JSON is kept, and the records' samples are its timings in ns
    raw = json.loads(next((out / "raw").glob("*.json")).read_text())
    raw_onnx8 = next(b for b in raw["benchmarks"] if b["extra_info"]["series"] == onnx8.name)
    assert onnx8.samples_ns == [round(x * 1e9) for x in raw_onnx8["stats"]["data"]]

    # the report is rendered from the records alone: re-rendering the saved records gives the same file
    order = [r.run_id for r in records]
    md = (out / "report.md").read_text()
    assert "| onnx | 8 | 1 |" in md and "| pickle | 1 | 1 |" in md
    key = {run_id: md.index(f"`{run_id}`") for run_id in order}
    in_order = sorted(records, key=lambda r: key[r.run_id])
    assert md == render_markdown(in_order, title="deploybench micro-benchmarks (tiny)")
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert (out / "summary.csv").read_text().count("\n") == 1 + len(series)


@pytest.mark.e2e
def test_bench_bad_input_exits_2(tmp_path: Path, iris_zoo: Path) -> None:
    proc = _cli(
        "bench", "--profile", "tiny", "--models", "nope", "--zoo", str(iris_zoo), "--out", str(tmp_path)
    )
    assert proc.returncode == 2 and "unknown model" in proc.stderr
    proc = _cli("bench", "--profile", "tiny", "--zoo", str(tmp_path / "empty"), "--out", str(tmp_path))
    assert proc.returncode == 2 and "deploybench build" in proc.stderr
    proc = _cli(
        "bench", "--profile", "tiny", "--formats", "zip", "--zoo", str(iris_zoo), "--out", str(tmp_path)
    )
    assert proc.returncode == 2 and "unknown format" in proc.stderr
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.e2e
def test_bench_interrupted_keeps_finished_cases(tmp_path: Path, iris_zoo: Path) -> None:
    """Ctrl-C (SIGINT to the bench command) mid-run: finished cases are saved, status "interrupted"."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "deploybench", "bench", "--profile", "tiny", "--models", "iris-rf",
           "--zoo", str(iris_zoo), "--out", str(out)]  # fmt: skip
    # SIGINT back to its default in the child: a test run started in the background (`cmd &` in a script)
    # ignores SIGINT, and an ignored signal stays ignored across exec, so Ctrl-C would never arrive.
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline and not any(
                "predict/iris-rf/pickle/b1/t1] PASSED" in x for x in lines
            ):
                if sel.select(timeout=1.0):
                    line = proc.stdout.readline()
                    if not line:
                        break
                    lines.append(line)
        assert proc.poll() is None, "".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, "".join(lines) + rest
    assert "results written so far are kept" in rest
    records = load_records([out])
    assert records and all(r.status == "interrupted" for r in records)
    names = {s.name for r in records for s in r.series}
    assert "predict/iris-rf/pickle/b1/t1" in names
    assert any(w.code == "case-missing" for r in records for w in r.warnings)


def test_profiles_are_documented() -> None:
    for p in PROFILES.values():
        assert isinstance(p, Profile) and p.description
        assert p.min_rounds <= p.max_rounds and p.warmup_rounds >= 1
