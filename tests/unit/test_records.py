"""RunRecord schema: round trip, atomic save, migration of an older schema version, clear load errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploybench.errors import UsageError
from deploybench.record import (
    SCHEMA_VERSION,
    RecordWarning,
    RunRecord,
    Series,
    load_record,
    load_records,
    make_run_id,
    migrate,
    pct_key,
)

FIXTURES = Path(__file__).parent.parent / "fixtures"


def _record() -> RunRecord:
    s = Series(
        name="predict/iris-rf/onnx/b8/t1",
        count=3,
        latency_us={"p50": 20, "p99": 31, "max": 31},
        errors={"timeout": 1},
        duration_s=0.5,
        throughput_rps=6.0,
        items_per_s=48.0,
        samples_ns=[20_000, 19_400, 31_250],
        params={"model": "iris-rf", "format": "onnx", "batch_size": 8, "threads": 1},
        extra={"load_time_us": 2100, "size_bytes": 70081},
    )
    r = RunRecord(
        kind="micro",
        config={"model": "iris-rf", "format": "onnx"},
        env={"cpu_count": 2},
        started_utc="2026-11-28T01:50:11.123456Z",
        series=[s],
    )
    r.add_warning("few-samples", "3 samples", "run longer", s.name)
    return r


def test_round_trip_through_dict_and_file(tmp_path: Path) -> None:
    r = _record()
    assert RunRecord.from_dict(r.to_dict()) == r
    path = r.save(tmp_path / "sub" / "r.json")
    assert load_record(path) == r
    assert next(iter(json.loads(path.read_text()))) == "schema_version"
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp file left behind


def test_run_id_and_defaults() -> None:
    r = _record()
    assert r.run_id == "20261128T015011Z-micro-iris-rf-onnx"
    assert make_run_id("load", {"framework": "flask", "model": "a/b"}, r.started_utc).endswith(
        "load-flask-a_b"
    )
    assert r.status == "running" and r.ended_utc is None
    r.finish("interrupted", "SIGINT")
    assert (r.status, r.error) == ("interrupted", "SIGINT") and r.ended_utc


def test_warnings_are_data_and_deduplicated() -> None:
    r = _record()
    r.add_warning("few-samples", "3 samples", "run longer", "predict/iris-rf/onnx/b8/t1")
    assert r.warnings == [
        RecordWarning("few-samples", "3 samples", "run longer", "predict/iris-rf/onnx/b8/t1")
    ]


def test_series_error_ratio_and_unknown_keys() -> None:
    s = Series.from_dict({"name": "x", "count": 9, "errors": {"a": 1}, "future_field": 1})
    assert s.error_count == 1 and s.error_ratio == pytest.approx(0.1)
    assert Series(name="empty").error_ratio == 0.0


def test_pct_key() -> None:
    assert pct_key(50.0) == "p50" and pct_key(99.9) == "p99.9"


def test_v1_record_is_migrated() -> None:
    r = load_record(FIXTURES / "record_v1.json")
    assert r.schema_version == SCHEMA_VERSION
    assert (r.kind, r.status) == ("load", "complete")
    s = r.series[0]
    assert s.latency_us == {"p50": 2500, "p90": 3100, "p95": 3400, "p99": 4250, "p99.9": 7000, "max": 9900}
    assert s.errors == {"http-500": 2} and s.count == 1000
    assert r.run_id == "20250101T000000Z-load-flask-iris-rf"


def test_v2_micro_samples_become_ns() -> None:
    # v2 kept micro samples as whole µs; v3 keeps ns. A v2 record (the fixture) still loads, its samples
    # scaled, not re-rounded, and the fields v3 adds are empty.
    r = RunRecord.from_dict(
        {"schema_version": 2, "kind": "micro", "series": [{"name": "a", "count": 3, "samples_us": [7, 8, 9]}]}
    )
    (s,) = r.series
    assert r.schema_version == SCHEMA_VERSION == 3
    assert s.samples_ns == [7000, 8000, 9000]
    assert s.blocks is None and s.scheduled is None


def test_v1_migration_handles_missing_values() -> None:
    d = migrate(
        {"schema_version": 1, "endpoints": [{"name": "a", "latency_ms": {"p50": None, "p99": 0.0004}}]}
    )
    assert d["series"][0]["latency_us"] == {"p50": None, "p99": 0}
    assert d["kind"] == "load"


def test_stored_fixtures_load_and_round_trip() -> None:
    for path in sorted(FIXTURES.glob("record_*.json")):
        r = load_record(path)
        again = RunRecord.from_dict(json.loads(json.dumps(r.to_dict())))
        assert again == r, path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{broken", "not valid JSON"),
        ("[1, 2]", "not a deploybench run record"),
        ('{"kind": "load"}', "no integer schema_version"),
        ('{"schema_version": 99, "kind": "load"}', "newer than this deploybench understands"),
        ('{"schema_version": 2}', "malformed run record"),
        ('{"schema_version": 2, "kind": "load", "series": [{"nope": 1}]}', "malformed run record"),
        ('{"schema_version": 2, "kind": "load", "series": [1]}', "malformed run record"),
        ('{"schema_version": 2, "kind": "load", "series": {"a": 1}}', "malformed run record"),
        ('{"schema_version": 2, "kind": "load", "config": "x"}', "malformed run record"),
        ('{"schema_version": 2, "kind": "load", "env": [1]}', "malformed run record"),
        ('{"schema_version": 2, "kind": "load", "warnings": ["w"]}', "malformed run record"),
    ],
)
def test_bad_files_give_usage_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        load_record(path)


def test_load_records_from_files_and_folders(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_record(tmp_path / "missing.json")
    with pytest.raises(UsageError, match=r"no \*\.json records"):
        load_records([tmp_path])
    a = _record()
    a.save(tmp_path / "a.json")
    (tmp_path / ".hidden.json").write_text("{broken")  # temp files of an atomic write are skipped
    assert load_records([tmp_path, FIXTURES / "record_v1.json"])[0] == a
    assert len(load_records([tmp_path, FIXTURES / "record_v1.json"])) == 2


def test_malformed_record_is_a_usage_error_on_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 with a message (not a traceback and exit 1, which CI would read as a regression)."""
    from deploybench.commands.cli import main

    good = tmp_path / "good.json"
    rec = _record()
    rec.finish()
    rec.save(good)
    for i, bad_json in enumerate(('"series": [1]', '"config": "x"')):
        bad = tmp_path / f"bad{i}.json"
        bad.write_text('{"schema_version": 2, "kind": "micro", ' + bad_json + "}")
        assert main(["gate", "--baseline", str(good), "--current", str(bad)]) == 2
        assert "malformed run record" in capsys.readouterr().err


def test_malformed_baseline_config_json_is_a_usage_error(tmp_path: Path) -> None:
    from deploybench.decisions.gate.baseline import find_baseline, save_baseline

    store = tmp_path / "store"
    rec = _record()
    rec.finish()
    (cfg_dir,) = {p.parent.parent for p in save_baseline([rec], store)}
    (cfg_dir / "config.json").write_text('["not", "an", "object"]')
    other = _record()
    other.config = {**other.config, "format": "pickle"}
    with pytest.raises(UsageError, match="unreadable baseline store entry"):
        find_baseline(store, [other])


def test_saved_record_has_umask_permissions(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        path = _record().save(tmp_path / "r.json")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
