"""Gate: rule parsing, significance-aware verdicts, comparability refusals, baseline store, CLI exit codes.

Records are synthetic with samples from known distributions (seeded), so every verdict here is deterministic.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from deploybench.commands.cli import main
from deploybench.decisions.gate.baseline import env_hash, find_baseline, save_baseline
from deploybench.decisions.gate.judge import gate
from deploybench.decisions.gate.matching import IncomparableError
from deploybench.decisions.gate.rules import (
    DEFAULT_RULES,
    RuleError,
    load_rules_file,
    parse_rule,
    parse_rules,
)
from deploybench.env import capture_env
from deploybench.errors import UsageError
from deploybench.record import RunRecord, Series, load_record
from deploybench.reports.gate_render import render_markdown, render_table
from deploybench.stats import (
    Dist,
    encode_histogram,
    new_histogram,
    percentile,
    record_us,
    summarize_histogram,
)

ENV = capture_env()
CONFIG = {"model": "iris-rf", "format": "onnx", "framework": "fastapi", "server": "uvicorn", "workers": 1}


def draws(
    seed: int, scale: float = 1.0, n: int = 2000, median_us: float = 500.0, sigma: float = 0.2
) -> list[int]:
    rng = np.random.default_rng(seed)
    return np.maximum(1, np.round(rng.lognormal(np.log(median_us), sigma, n) * scale)).astype(int).tolist()


def micro(
    samples: list[int],
    *,
    env: dict | None = None,
    config: dict | None = None,
    name: str = "iris-rf/onnx/b1",
    status: str = "complete",
) -> RunRecord:
    r = RunRecord("micro", dict(config or CONFIG), dict(env or ENV), status=status)
    r.series.append(
        Series(
            name=name, count=len(samples), samples_ns=[v * 1000 for v in samples], params={"batch_size": 1}
        )
    )
    return r


def hist_of(samples: list[int] | np.ndarray) -> str:
    h = new_histogram()
    values, counts = np.unique(np.asarray(samples, dtype=np.int64), return_counts=True)
    for v, c in zip(values.tolist(), counts.tolist(), strict=True):
        h.record_value(min(max(int(v), 1), 3_600_000_000), int(c))
    return encode_histogram(h)


def time_blocks(samples: list[int], errors: int, duration_s: float, n_blocks: int) -> list[dict]:
    """Consecutive samples cut into ``n_blocks`` equal time blocks (the shape the load generator writes)."""
    parts = np.array_split(np.asarray(samples, dtype=np.int64), n_blocks)
    errs = np.array_split(np.arange(errors), n_blocks)
    step = duration_s / n_blocks
    return [
        {
            "start_s": i * step,
            "duration_s": step,
            "count": len(part),
            "errors": len(e),
            "histogram": hist_of(part),
        }
        for i, (part, e) in enumerate(zip(parts, errs, strict=True))
    ]


def load(
    samples: list[int], *, errors: int = 0, duration_s: float = 10.0, blocks: int | None = 20
) -> RunRecord:
    h = new_histogram()
    for v in samples:
        record_us(h, v)
    r = RunRecord("load", {**CONFIG, "scenario": "tabular", "load_model": "closed", "users": 4}, dict(ENV),
                  status="complete")  # fmt: skip
    r.series.append(
        Series(
            name="POST /predict",
            count=len(samples),
            latency_us=summarize_histogram(h),
            errors={"http-500": errors} if errors else {},
            duration_s=duration_s,
            throughput_rps=len(samples) / duration_s,
            histogram=encode_histogram(h),
            blocks=time_blocks(samples, errors, duration_s, blocks) if blocks else None,
        )
    )
    return r


def verdicts(result, metric: str) -> list[str]:
    return [r.verdict for r in result.rows if r.metric == metric]


RULES = parse_rules(DEFAULT_RULES)


# -- rules -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "metric", "limit", "unit"),
    [
        ("p99:+10%", "p99", 10.0, "%"),
        (" p95 : +5ms ", "p95", 5000.0, "us"),
        ("p99.9:+500us", "p99.9", 500.0, "us"),
        ("p50:+250µs", "p50", 250.0, "us"),
        ("median:+3%", "p50", 3.0, "%"),
        ("mean:+0.5ms", "mean", 500.0, "us"),
        ("throughput:-5%", "throughput", 5.0, "%"),
        ("throughput:-50rps", "throughput", 50.0, "rps"),
        ("error_ratio:+1pp", "error_ratio", 1.0, "pp"),
    ],
)
def test_parse_rule(text: str, metric: str, limit: float, unit: str) -> None:
    rule = parse_rule(text)
    assert (rule.metric, rule.limit, rule.unit) == (metric, limit, unit)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p99:+10", "missing unit: use % or ms"),
        ("p99:10%", "missing sign: write p99:+10%"),
        ("p98:+10%", "unknown metric 'p98'"),
        ("throughput:+5%", "limits a decrease: write throughput:-5%"),
        ("p99:-10%", "limits an increase: write p99:+10%"),
        ("p99", "expected METRIC:CHANGE"),
        ("p99:", "missing change"),
        ("p99:+fast%", "is not a number"),
        ("p99:+0%", "positive number"),
        ("error_ratio:+1%", "percentage points"),
        ("p99:+5rps", "unit 'rps' does not fit p99"),
        ("throughput:-5ms", "unit 'ms' does not fit throughput"),
    ],
)
def test_rule_errors_are_precise(text: str, message: str) -> None:
    with pytest.raises(RuleError, match=re.escape(message)) as info:
        parse_rule(text)
    assert repr(text) in str(info.value)


def test_duplicate_rule_refused() -> None:
    with pytest.raises(RuleError, match="more than one p99 rule"):
        parse_rules(["p99:+10%", "p99:+20%"])


def test_rules_files(tmp_path: Path) -> None:
    toml = tmp_path / "rules.toml"
    toml.write_text('rules = ["p99:+10%", "throughput:-5%"]\nconfidence = 0.9\n')
    rules, conf = load_rules_file(toml)
    assert [r.text for r in rules] == ["p99:+10%", "throughput:-5%"] and conf == 0.9
    js = tmp_path / "rules.json"
    js.write_text('["p95:+5ms"]')
    assert load_rules_file(js)[0][0].limit == 5000.0
    bad = tmp_path / "bad.toml"
    bad.write_text('rules = ["p99:+10"]\n')
    with pytest.raises(RuleError, match=r"bad\.toml.*missing unit"):
        load_rules_file(bad)
    extra = tmp_path / "extra.toml"
    extra.write_text('rules = ["p99:+10%"]\nthreshold = 3\n')
    with pytest.raises(UsageError, match=r"extra\.toml: unknown key\(s\) threshold; allowed: rules, conf"):
        load_rules_file(extra)
    empty = tmp_path / "empty.json"
    empty.write_text('{"rules": []}')
    with pytest.raises(UsageError, match="'rules' must be a non-empty list of strings"):
        load_rules_file(empty)
    with pytest.raises(UsageError, match=r"missing\.toml: cannot read"):
        load_rules_file(tmp_path / "missing.toml")


# -- statistics ----------------------------------------------------------------------------------------------


def test_dist_matches_exact_percentiles() -> None:
    samples = draws(7, n=999, sigma=0.5)
    d = Dist.from_samples(samples)
    for metric in ("p50", "p90", "p95", "p99", "p99.9"):
        assert d.stat(metric) == percentile(samples, float(metric[1:]))
    assert d.stat("max") == max(samples) and d.stat("min") == min(samples)
    assert d.stat("mean") == pytest.approx(np.mean(samples))
    h = new_histogram()
    for v in samples:
        record_us(h, v)
    hd = Dist.from_histogram(encode_histogram(h))
    summary = summarize_histogram(h)
    assert hd.n == len(samples)
    for metric in ("p50", "p99", "max"):
        assert hd.stat(metric) == summary[metric]


def test_undecodable_histogram_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"undecodable histogram in record \(.*base64"):
        Dist.from_histogram("not base64 at all!")
    with pytest.raises(UsageError, match="undecodable histogram in record"):
        Dist.from_histogram("aGVsbG8=")  # valid base64, not an HdrHistogram


def test_bootstrap_is_deterministic() -> None:
    base, cur = [micro(draws(1))], [micro(draws(2, scale=1.05))]
    a = gate(base, cur, RULES)
    b = gate(base, cur, RULES)
    assert [r.ci for r in a.rows] == [r.ci for r in b.rows]
    assert all(r.ci is not None and r.ci[0] < r.change < r.ci[1] for r in a.rows if r.metric != "error_ratio")


# -- verdicts -----------------------------------------------------------------------------------------------


def test_aa_passes_micro() -> None:
    for seed in range(5):
        result = gate([micro(draws(100 + seed))], [micro(draws(200 + seed))], RULES)
        assert result.exit_code == 0, render_table(result)
        assert not result.regressions


def runs(seeds: tuple[int, ...], scale: float = 1.0) -> list[RunRecord]:
    return [micro(draws(s, scale=scale)) for s in seeds]


def test_injected_15pct_slowdown_fails_micro() -> None:
    result = gate(runs((1, 2, 3)), runs((4, 5, 6), scale=1.15), RULES)
    assert result.exit_code == 1
    assert verdicts(result, "p50") == ["regression"]
    assert verdicts(result, "throughput") == ["regression"]
    p50 = next(r for r in result.rows if r.metric == "p50")
    assert 0.10 < p50.change < 0.20 and p50.ci[0] > 0 and p50.method == "runs 3+3 (t)"


def test_one_run_per_side_beyond_a_limit_cannot_tell() -> None:
    """The same slowdown from one run per side: the blocks' interval excludes 0, but it cannot see drift
    between the two runs, so the answer is "cannot tell" with its own exit code, not a regression."""
    result = gate([micro(draws(1))], [micro(draws(2, scale=1.15))], RULES)
    assert result.exit_code == 4 and result.outcome == "cannot tell" and not result.regressions
    assert verdicts(result, "p50") == ["cannot tell"] and verdicts(result, "throughput") == ["cannot tell"]
    p50 = next(r for r in result.rows if r.metric == "p50")
    assert 0.10 < p50.change < 0.20 and p50.ci[0] > 0 and p50.method.startswith("blocks")
    assert "CANNOT TELL" in render_table(result) and "❔ cannot tell" in render_markdown(result)


def test_improvement_is_a_pass() -> None:
    result = gate(runs((1, 2, 3)), runs((4, 5, 6), scale=0.8), RULES)
    assert result.exit_code == 0
    assert verdicts(result, "p50") == ["improvement"]
    one_each = gate([micro(draws(1))], [micro(draws(2, scale=0.8))], RULES)
    assert one_each.exit_code == 0 and verdicts(one_each, "p50") == ["pass"]  # no claim from one run each


def test_noisy_difference_is_not_significant() -> None:
    # 100 samples with a wide spread: a +12% median is beyond the 10% limit but inside the noise.
    base, cur = micro(draws(3, n=100, sigma=0.6)), micro(draws(4, n=100, sigma=0.6))
    cur.series[0].samples_ns = [round(v * 1.12) for v in base.series[0].samples_ns[::-1]]
    cur.series[0].samples_ns[0] = round(cur.series[0].samples_ns[0] * 3)  # not the same list, same median
    result = gate([base], [cur], parse_rules(["p50:+10%"]))
    (row,) = result.rows
    assert row.change > 0.10 and row.method == "blocks 10+10 (bootstrap)"
    assert row.ci[0] <= 0 <= row.ci[1]
    assert row.verdict == "cannot tell" and result.exit_code == 4


def test_absolute_rule() -> None:
    result = gate(runs((1, 2, 3)), runs((4, 5, 6), scale=1.15), parse_rules(["p50:+50us", "p95:+1ms"]))
    assert [r.verdict for r in result.rows] == ["regression", "pass"]
    assert result.rows[0].change == pytest.approx(result.rows[0].current - result.rows[0].baseline)


def test_load_records_block_bootstrap() -> None:
    assert gate([load(draws(1))], [load(draws(2))], RULES).exit_code == 0
    slow = gate([load(draws(1))], [load(draws(2, scale=1.15), duration_s=11.5)], RULES)
    assert slow.exit_code == 4 and verdicts(slow, "p50") == ["cannot tell"], render_table(slow)
    assert all(r.method == "blocks 20+20 (bootstrap)" for r in slow.rows)
    thr = next(r for r in slow.rows if r.metric == "throughput")
    assert (
        thr.ci is not None and thr.verdict == "cannot tell" and thr.change == pytest.approx(-1 / 1.15 * 0.15)
    )
    assert any("not the drift of the machine between the baseline run and this one" in n for n in slow.notes)


def test_one_run_without_blocks_claims_no_significance() -> None:
    """Old records (no time blocks) or too few blocks: a beyond-limit change is reported, never a failure."""
    for blocks in (None, 3):
        slow = gate(
            [load(draws(1), blocks=blocks)], [load(draws(2, scale=1.3), duration_s=13, blocks=blocks)], RULES
        )
        assert slow.exit_code == 4, render_table(slow)
        assert verdicts(slow, "p50") == ["cannot tell"] and verdicts(slow, "throughput") == ["cannot tell"]
        assert all(r.ci is None and r.p_value is None for r in slow.rows)
        assert all("no significance can be claimed" in r.note for r in slow.rows)
        assert slow.family == 0 and "no significance testable" in render_table(slow)


def test_error_ratio_rule() -> None:
    base = [load(draws(s)) for s in (1, 2, 3)]
    result = gate(base, [load(draws(s), errors=e) for s, e in ((4, 90), (5, 100), (6, 110))],
                  parse_rules(["error_ratio:+1pp"]))  # fmt: skip
    (row,) = result.rows
    assert row.current == pytest.approx(np.mean([90 / 2090, 100 / 2100, 110 / 2110]))
    assert row.verdict == "regression"


def test_repeated_runs_use_spread_across_runs() -> None:
    base = [micro(draws(s)) for s in (1, 2, 3)]
    same = [micro(draws(s)) for s in (4, 5, 6)]
    slow = [micro(draws(s, scale=1.15)) for s in (7, 8, 9)]
    aa = gate(base, same, RULES)
    assert aa.exit_code == 0 and all(r.method.startswith("runs 3+3") for r in aa.rows)
    ab = gate(base, slow, RULES)
    assert ab.exit_code == 1 and verdicts(ab, "p50") == ["regression"]
    # one noisy run on each side: the spread across runs widens the CI -> not significant, not a failure
    noisy_base = [micro(draws(1)), micro(draws(2, scale=0.7))]
    noisy_cur = [micro(draws(3, scale=1.4)), micro(draws(4, scale=0.9))]
    noisy = gate(noisy_base, noisy_cur, parse_rules(["p50:+10%"]))
    assert noisy.rows[0].change > 0.10 and noisy.rows[0].verdict == "not significant"


# -- comparability ----------------------------------------------------------------------------------------


def test_different_environment_is_refused_unless_forced() -> None:
    other = {**ENV, "cpu_model": "Some Other CPU", "torch": "2.0.0"}
    with pytest.raises(IncomparableError, match=r"environments differ.*cpu_model"):
        gate([micro(draws(1), env=other)], [micro(draws(2))], RULES)
    forced = gate([micro(draws(1), env=other)], [micro(draws(2))], RULES, force=True)
    assert forced.rows and any("forced: environments differ" in n for n in forced.notes)


def test_different_config_is_refused_unless_forced() -> None:
    with pytest.raises(IncomparableError, match="workers: baseline 1 vs current 2"):
        gate([micro(draws(1))], [micro(draws(2), config={**CONFIG, "workers": 2})], RULES)
    forced = gate([micro(draws(1))], [micro(draws(2), config={**CONFIG, "workers": 2})], RULES, force=True)
    assert any("forced: configs differ" in n for n in forced.notes)


def test_nested_target_config_is_compared() -> None:
    a = micro(draws(1), config={"target": {**CONFIG}, "scenario": "tabular"})
    b = micro(draws(2), config={"target": {**CONFIG, "format": "pickle"}, "scenario": "tabular"})
    with pytest.raises(IncomparableError, match="format: baseline 'onnx' vs current 'pickle'"):
        gate([a], [b], RULES)


def test_batched_and_unbatched_runs_are_not_compared_but_old_records_match_the_defaults() -> None:
    old = micro(draws(1), config={"target": {**CONFIG}, "scenario": "tabular"})  # made before batching
    off = micro(draws(2), config={"target": {**CONFIG, "max_batch_size": 0, "ort_opt_level": "all"},
                                  "scenario": "tabular"})  # fmt: skip
    assert gate([old], [off], RULES).rows  # same target: the new keys at their defaults are left out
    on = micro(draws(2), config={"target": {**CONFIG, "max_batch_size": 8, "max_queue_delay_us": 500},
                                 "scenario": "tabular"})  # fmt: skip
    with pytest.raises(IncomparableError, match="max_batch_size: baseline None vs current 8"):
        gate([old], [on], RULES)


def test_incomplete_record_is_refused() -> None:
    with pytest.raises(IncomparableError, match="status 'interrupted'"):
        gate([micro(draws(1))], [micro(draws(2), status="interrupted")], RULES)


def test_unmatched_series_noted_and_nothing_to_compare_refused() -> None:
    with pytest.raises(IncomparableError, match="nothing to compare"):
        gate([micro(draws(1), name="a")], [micro(draws(2), name="b")], RULES)
    base = micro(draws(1))
    cur = micro(draws(2))
    cur.series.append(Series(name="new-case", count=3, samples_ns=[1000, 2000, 3000]))
    result = gate([base], [cur], RULES)
    assert any("'new-case' has no baseline" in n for n in result.notes)


def test_markdown_output() -> None:
    md = render_markdown(gate(runs((1, 2, 3)), runs((4, 5, 6), scale=1.15), RULES))
    assert md.startswith("### Latency gate: REGRESSION")
    assert "| rule | series | baseline | current | change | CI | verdict |" in md
    assert "❌ regression" in md and "| p50:+10% | iris-rf/onnx/b1 |" in md


# -- baseline store and CLI ----------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, record: RunRecord) -> str:
    return str(record.save(tmp_path / name))


def test_baseline_store_roundtrip(tmp_path: Path) -> None:
    store = tmp_path / "baselines"
    runs = [micro(draws(1)), micro(draws(2))]
    written = save_baseline(runs, store)
    assert len(written) == 2
    assert all(p.parent.parent.parent.name == env_hash(ENV) for p in written)
    found, notes = find_baseline(store, [micro(draws(3))])
    assert sorted(r.run_id for r in found) == sorted(r.run_id for r in runs) and not notes
    save_baseline([micro(draws(4))], store)  # replaces (not appends)
    assert len(find_baseline(store, [micro(draws(3))])[0]) == 1
    save_baseline([micro(draws(5))], store, append=True)
    assert len(find_baseline(store, [micro(draws(3))])[0]) == 2
    other = {**ENV, "python": "3.11.0-other"}
    with pytest.raises(
        IncomparableError, match=r"no baseline for this environment.*deploybench baseline save"
    ):
        find_baseline(store, [micro(draws(3), env=other)])
    with pytest.raises(
        IncomparableError, match=r"no baseline for config.*closest saved config differs in format"
    ):
        find_baseline(store, [micro(draws(3), config={**CONFIG, "format": "pickle"})])


def test_cli_gate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write(tmp_path, "base.json", micro(draws(1)))
    same = write(tmp_path, "same.json", micro(draws(2)))
    slow = write(tmp_path, "slow.json", micro(draws(3, scale=1.15)))
    md = tmp_path / "summary.md"
    assert main(["gate", "--baseline", base, "--current", same]) == 0
    assert "Latency gate: PASS" in capsys.readouterr().out
    assert main(["gate", "--baseline", base, "--current", slow]) == 4  # one run per side
    assert "Latency gate: CANNOT TELL" in capsys.readouterr().out
    bases = [write(tmp_path, f"base{s}.json", micro(draws(s))) for s in (10, 11, 12)]
    slows = [write(tmp_path, f"slow{s}.json", micro(draws(s, scale=1.15))) for s in (13, 14, 15)]
    assert main(["gate", "--baseline", *bases, "--current", *slows, "--last", "0", "--markdown", str(md),
                 "--json", str(tmp_path / "gate.json")]) == 1  # fmt: skip
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "p50:+10%" in out and "runs 3+3 (t)" in out
    assert "❌ regression" in md.read_text()
    assert json.loads((tmp_path / "gate.json").read_text())["exit_code"] == 1
    assert main(["gate", "--baseline", base, "--current", slow, "--rule", "p99:+10"]) == 2
    assert "missing unit: use % or ms" in capsys.readouterr().err
    other = write(tmp_path, "other.json", micro(draws(4), env={**ENV, "torch": "1.0"}))
    assert main(["gate", "--baseline", other, "--current", same]) == 2
    assert "environments differ" in capsys.readouterr().err
    assert main(["gate", "--baseline", other, "--current", same, "--force"]) == 0
    assert main(["gate", "--baseline", str(tmp_path / "nope"), "--current", same]) == 2
    assert "deploybench baseline save" in capsys.readouterr().err


@pytest.fixture
def no_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """capture_env() without its `git` subprocess (the commit is not what these in-process tests check)."""
    import deploybench.env

    monkeypatch.setattr(deploybench.env, "git_info", lambda cwd=None: {"commit": None, "dirty": None})


def test_cli_baseline_save_show_and_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_git: None
) -> None:
    store = str(tmp_path / "baselines")
    base = write(tmp_path, "base.json", micro(draws(1)))
    assert main(["baseline", "save", base, "--dir", store]) == 0
    assert main(["baseline", "show", "--dir", store]) == 0
    out = capsys.readouterr().out
    assert env_hash(ENV) in out and "<- this machine" in out and "1 run(s)" in out
    cur = tmp_path / "cur"
    micro(draws(2, scale=1.15)).save(cur / "r.json")
    assert main(["gate", "--baseline", store, "--current", str(cur)]) == 4  # one stored run: cannot tell
    # a rolling baseline: runs saved at different times, only the newest 3 kept
    for i, s in enumerate((20, 21, 22, 23)):
        r = micro(draws(s))
        r.started_utc = f"2020-01-0{i + 1}T00:00:00.000000Z"  # older than the first saved run (now)
        assert main(["baseline", "save", write(tmp_path, f"b{s}.json", r), "--dir", store, "--append",
                     "--keep", "3"]) == 0  # fmt: skip
    (kept,) = [d for d in (tmp_path / "baselines").glob("*/*/runs")]
    days = sorted(load_record(f).started_utc[:10] for f in kept.glob("*.json"))
    assert len(days) == 3 and days[:2] == ["2020-01-03", "2020-01-04"]  # the two oldest runs left
    capsys.readouterr()
    assert main(["gate", "--baseline", store, "--current", str(cur)]) == 1
    assert "runs 3+1 (t)" in capsys.readouterr().out
    assert main(["baseline", "save", base, "--dir", store, "--keep", "-1"]) == 2
    assert main(["baseline", "show", "--dir", str(tmp_path / "empty")]) == 2


def test_cli_folders_latest_run_and_other_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base_dir, cur_dir = tmp_path / "base", tmp_path / "cur"
    micro(draws(1)).save(base_dir / "b.json")
    old = micro(draws(2, scale=1.3))
    old.started_utc = "2020-01-01T00:00:00.000000Z"
    old.save(cur_dir / "old.json")  # an older run in the same folder: not used by default
    micro(draws(3)).save(cur_dir / "new.json")
    (cur_dir / "summary.json").write_text('{"rows": []}')  # a report, not a record
    assert main(["gate", "--baseline", str(base_dir), "--current", str(cur_dir)]) == 0
    out = capsys.readouterr().out
    assert "using the latest 1 of 2 runs" in out and "summary.json: not a run record" in out
    # --last 0: both current runs count (runs are the units: 1 baseline run + 2 current runs, whose spread
    # -- one of them 30% slower -- leaves the change not significant)
    assert main(["gate", "--baseline", str(base_dir), "--current", str(cur_dir), "--last", "0"]) == 0
    assert "runs 1+2 (t)" in capsys.readouterr().out
    store = str(tmp_path / "store")
    assert main(["baseline", "save", str(cur_dir), "--dir", store, "--last", "0"]) == 0
    capsys.readouterr()
    assert main(["gate", "--baseline", store, "--current", str(cur_dir), "--last", "0"]) == 0
    assert "runs 2+2 (t)" in capsys.readouterr().out


def test_current_with_no_data_is_a_regression() -> None:
    """Every request failed (count 0, empty histogram): the baseline measured it, so not "no data"."""
    dead = load([], errors=50)
    result = gate([load(draws(1))], [dead], parse_rules(["p50:+10%", "p99:+10%", "throughput:-10%"]))
    assert [r.verdict for r in result.rows][:2] == ["regression", "regression"], render_table(result)
    assert result.exit_code == 1
    p50 = result.rows[0]
    assert p50.baseline is not None and p50.current is None and "measured no p50" in p50.note
    # both sides empty (e.g. a 0 µs noop case): still "no data", the gate passes
    zero = micro([0] * 200)
    both = gate([zero], [micro([0] * 200)], parse_rules(["throughput:-10%"]))
    assert [r.verdict for r in both.rows] == ["no data"] and both.exit_code == 0


def test_folder_of_only_other_json_refused_after_a_folder_with_skips(tmp_path: Path) -> None:
    from deploybench.decisions.gate.matching import load_inputs
    from deploybench.errors import UsageError

    a, b = tmp_path / "a", tmp_path / "b"
    micro(draws(1)).save(a / "r.json")
    micro(draws(2)).save(a / "r2.json")
    (a / "summary.json").write_text('{"rows": []}')
    b.mkdir()
    (b / "summary.json").write_text('{"rows": []}')
    (b / "gate.json").write_text('{"rows": []}')
    records, notes = load_inputs([a])
    assert len(records) == 2 and len(notes) == 1
    # b holds no record: its 2 skipped files must not be counted against a's 1 skipped + 3 files
    with pytest.raises(UsageError, match=r"b: no run records"):
        load_inputs([a, b])
    micro(draws(3)).save(b / "r.json")
    assert len(load_inputs([a, b])[0]) == 3  # a folder with a record after a's skips: accepted


def test_baseline_save_keeps_old_runs_when_writing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "baselines"
    save_baseline([micro(draws(1))], store)
    old = find_baseline(store, [micro(draws(3))])[0]

    def boom(self, path):
        raise OSError("disk full")

    monkeypatch.setattr(RunRecord, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_baseline([micro(draws(2))], store)
    monkeypatch.undo()
    kept = find_baseline(store, [micro(draws(3))])[0]
    assert [r.run_id for r in kept] == [r.run_id for r in old]
    assert not [p for p in store.rglob(".runs*")]  # no temp folders left behind
