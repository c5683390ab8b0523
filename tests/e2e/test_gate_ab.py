"""Same-job A/B: a real git worktree of the base ref, interleaved runs of a cheap fake measurement.

The fake measurement (committed into a throwaway repo) writes one micro record whose samples come from a
seeded lognormal distribution scaled by the ``speed.txt`` of the tree it runs in, so the base side and the
candidate side measure different code exactly when the trees differ.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from commands.cli import main
from decisions.ab import ab_gate, run_ab
from decisions.gate.rules import DEFAULT_RULES, parse_rules

pytestmark = pytest.mark.e2e  # git worktrees and measurement processes (capture_env runs git too)

MEASURE = r"""
import os, sys
from pathlib import Path
import numpy as np
from deploybench.env import capture_env
from deploybench.record import RunRecord, Series

out = Path(sys.argv[1])
scale = float(Path("speed.txt").read_text())
if scale < 0:
    sys.exit("measurement broke on purpose")
side, rnd = os.environ["DEPLOYBENCH_AB_SIDE"], int(os.environ["DEPLOYBENCH_AB_ROUND"])
with open(os.environ["AB_ORDER_LOG"], "a") as fh:
    fh.write(f"{rnd}:{side}:{Path.cwd().name}\n")
rng = np.random.default_rng([rnd, side == "base"])
samples = np.maximum(1, np.round(rng.lognormal(np.log(400), 0.2, 1500) * scale)).astype(int).tolist()
r = RunRecord("micro", {"model": "fake", "format": "onnx"}, capture_env(), status="complete")
r.series.append(Series(name="fake/b1", count=len(samples), samples_us=samples, params={"batch_size": 1}))
r.save(out / "fake.json")
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "measure.py").write_text(MEASURE)
    (repo / "speed.txt").write_text("1.0\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "base")
    monkeypatch.setenv("AB_ORDER_LOG", str(tmp_path / "order.log"))
    return repo


def command() -> list[str]:
    return [sys.executable, "measure.py", "{out}"]


def test_ab_aa_passes_interleaved_and_removes_worktree(repo: Path, tmp_path: Path) -> None:
    runs = run_ab(repo, "main", command(), rounds=3, out_dir=tmp_path / "out", share_zoo=False)
    order = (tmp_path / "order.log").read_text().split()
    assert [o.rsplit(":", 1)[0] for o in order] == [
        "1:base", "1:candidate", "2:candidate", "2:base", "3:base", "3:candidate",
    ]  # fmt: skip
    assert {o.rsplit(":", 1)[1] for o in order if ":base:" in o} == {"base"}  # ran inside the worktree
    assert {o.rsplit(":", 1)[1] for o in order if ":candidate:" in o} == {"repo"}
    assert len(runs.rounds) == 3 and all(len(r["base"]) == 1 for r in runs.rounds)
    result = ab_gate(runs.rounds, parse_rules(DEFAULT_RULES))
    assert result.exit_code == 0
    assert all(r.method == "A/B 3 rounds (t)" for r in result.rows)
    p50 = next(r for r in result.rows if r.metric == "p50")
    assert abs(p50.change) < 0.05 and p50.ci is not None
    assert git(repo, "worktree", "list").count("\n") == 1  # only the main working tree is left


def test_ab_cli_detects_slower_candidate(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "speed.txt").write_text("1.15\n")  # uncommitted change in the candidate tree
    md = tmp_path / "ab.md"
    out_dir = str(tmp_path / "out")
    rc = main(["ab", "--base-ref", "main", "--rounds", "3", "--repo", str(repo), "--out", out_dir,
               "--separate-zoo", "--markdown", str(md), "--", *command()])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "A/B gate (3 rounds): REGRESSION" in out
    assert "❌ regression" in md.read_text()
    assert (tmp_path / "out" / "ab.json").is_file()
    assert (tmp_path / "out" / "round-02" / "candidate" / "fake.json").is_file()


def test_ab_failed_measurement_is_exit_2_and_cleans_up(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "speed.txt").write_text("-1\n")
    rc = main(["ab", "--base-ref", "main", "--rounds", "2", "--repo", str(repo), "--out", str(tmp_path / "o"),
               "--separate-zoo", "--", *command()])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert "measurement failed (candidate, round 1, exit 1)" in err and "broke on purpose" in err
    assert git(repo, "worktree", "list").count("\n") == 1


def test_ab_usage_errors(repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["ab", "--repo", str(repo), "--out", str(tmp_path / "o"), "--separate-zoo"]
    assert main([*args, "--base-ref", "no-such-ref", "--", *command()]) == 2
    assert "not a commit" in capsys.readouterr().err
    assert main([*args, "--base-ref", "main", "--rule", "p99:10%", "--", *command()]) == 2
    assert "missing sign" in capsys.readouterr().err
    assert main([*args, "--base-ref", "main"]) == 2
    assert "no measurement command" in capsys.readouterr().err
    assert main([*args, "--base-ref", "main", "--", sys.executable, "-c", "pass"]) == 2
    assert "wrote no records" in capsys.readouterr().err
    assert git(repo, "worktree", "list").count("\n") == 1


def test_ab_zero_throughput_candidate_is_a_regression() -> None:
    """A candidate with throughput 0 in every round: no per-round ratio, but -100% is a regression."""
    from deploybench.env import capture_env
    from deploybench.record import RunRecord, Series

    env = capture_env()
    config = {"model": "iris-rf", "format": "onnx", "scenario": "tabular"}

    def rec(rps: float) -> list[RunRecord]:
        r = RunRecord("load", dict(config), dict(env), status="complete")
        r.series.append(Series("POST /predict", count=int(rps * 10), duration_s=10.0, throughput_rps=rps))
        return [r]

    rounds = [{"base": rec(100.0 + i), "candidate": rec(0.0)} for i in range(3)]
    result = ab_gate(rounds, parse_rules(["throughput:-10%"]))
    (row,) = result.rows
    assert row.change == pytest.approx(-1.0) and row.verdict == "regression"
    assert result.exit_code == 1
