"""Same-job A/B: a real git worktree of the base ref, interleaved runs of a cheap fake measurement.

The fake measurement (committed into a throwaway repo) writes one micro record whose samples come from a
seeded lognormal distribution scaled by the ``speed.txt`` of the tree it runs in, so the base side and the
candidate side measure different code exactly when the trees differ.

The shared-zoo tests (ab's default mode) use a measurement that loads a real model from the zoo named by
``deploybench.paths.zoo_dir()`` -- as `deploybench bench`/`load` do -- and records which zoo that was. The zoo
is git-ignored, so the base worktree has none of its own: only the shared zoo lets the base side measure.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deploybench.commands.cli import main
from deploybench.decisions.ab import ab_gate, run_ab
from deploybench.decisions.gate.rules import DEFAULT_RULES, parse_rules
from deploybench.record import load_record

pytestmark = pytest.mark.e2e  # git worktrees and measurement processes

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
with open(os.environ["AB_ORDER_LOG"] + ".pad", "a") as fh:  # the layout padding this run got
    fh.write(f"{len(os.environ.get('DEPLOYBENCH_LAYOUT_PAD', 'missing' * 1000))}\n")
rng = np.random.default_rng([rnd, side == "base"])
samples = np.maximum(1, np.round(rng.lognormal(np.log(400), 0.2, 1500) * scale)).astype(int).tolist()
r = RunRecord("micro", {"model": "fake", "format": "onnx"}, capture_env(), status="complete")
ns = [v * 1000 for v in samples]
r.series.append(Series(name="fake/b1", count=len(samples), samples_ns=ns, params={"batch_size": 1}))
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


@pytest.mark.e2e
def test_ab_aa_passes_interleaved_and_removes_worktree(repo: Path, tmp_path: Path) -> None:
    runs = run_ab(repo, "main", command(), rounds=3, out_dir=tmp_path / "out", share_zoo=False)
    order = (tmp_path / "order.log").read_text().split()
    assert [o.rsplit(":", 1)[0] for o in order] == [
        "1:base", "1:candidate", "2:candidate", "2:base", "3:base", "3:candidate",
    ]  # fmt: skip
    assert {o.rsplit(":", 1)[1] for o in order if ":base:" in o} == {"base"}  # ran inside the worktree
    assert {o.rsplit(":", 1)[1] for o in order if ":candidate:" in o} == {"repo"}
    assert len(runs.rounds) == 3 and all(len(r["base"]) == 1 for r in runs.rounds)
    # every run had a layout padding of its own random length (0..4095): no side keeps one memory layout
    pads = [int(x) for x in (tmp_path / "order.log.pad").read_text().split()]
    assert len(pads) == 6 and all(0 <= n < 4096 for n in pads) and len(set(pads)) > 1, pads
    result = ab_gate(runs.rounds, parse_rules(DEFAULT_RULES))
    assert result.exit_code == 0
    assert all(r.method == "A/B 3 rounds (t)" for r in result.rows)
    p50 = next(r for r in result.rows if r.metric == "p50")
    assert abs(p50.change) < 0.05 and p50.ci is not None
    assert git(repo, "worktree", "list").count("\n") == 1  # only the main working tree is left


@pytest.mark.e2e
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
    doc = json.loads((tmp_path / "out" / "ab.json").read_text())
    assert doc["exit_code"] == 1 and doc["result"] == "regression"
    assert doc["base_ref"] == "main" and doc["base_commit"] == git(repo, "rev-parse", "main").strip()
    assert doc["command"] == command() and [len(doc["wall_s"][s]) for s in ("base", "candidate")] == [3, 3]
    p50 = next(r for r in doc["rows"] if r["metric"] == "p50")
    assert p50["verdict"] == "regression" and 0.10 < p50["change"] < 0.20, p50
    # every run's record is kept where the README says, and holds that side's samples
    for rnd in (1, 2, 3):
        base = load_record(tmp_path / "out" / f"round-{rnd:02d}" / "base" / "fake.json")
        cand = load_record(tmp_path / "out" / f"round-{rnd:02d}" / "candidate" / "fake.json")
        ratio = np.median(cand.series[0].samples_ns) / np.median(base.series[0].samples_ns)
        assert 1.05 < ratio < 1.25, (rnd, ratio)


@pytest.mark.e2e
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


@pytest.mark.e2e
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
    from deploybench.record import RunRecord, Series

    env = {"cpu_model": "Test CPU", "cpu_count": 2, "python": "3.11.7"}
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


# -- the default mode: the candidate's model zoo shared with the base side -----------------------------------
MEASURE_WITH_ZOO = r"""
import os, sys
from pathlib import Path
import numpy as np
from deploybench.paths import zoo_dir
from deploybench.env import capture_env
from deploybench.record import RunRecord, Series
from deploybench.targets.predictors import load_predictor
from deploybench.targets.zoo import sample_inputs

out = Path(sys.argv[1])
zoo = zoo_dir().resolve()
probs = load_predictor("iris-rf", "onnx", zoo).predict(sample_inputs("iris-rf", 4))  # fails without a zoo
assert probs.shape == (4, 3), probs.shape
scale = float(Path("speed.txt").read_text())
side, rnd = os.environ["DEPLOYBENCH_AB_SIDE"], int(os.environ["DEPLOYBENCH_AB_ROUND"])
rng = np.random.default_rng([rnd, side == "base"])
samples = np.maximum(1, np.round(rng.lognormal(np.log(400), 0.2, 1500) * scale)).astype(int).tolist()
r = RunRecord("micro", {"model": "iris-rf", "format": "onnx", "zoo": str(zoo)}, capture_env(),
              status="complete")
r.series.append(Series(name="iris-rf/onnx/b4", count=len(samples), samples_ns=[v * 1000 for v in samples],
                       params={"batch_size": 4},
                       extra={"tree": Path.cwd().name, "zoo_env": os.environ.get("DEPLOYBENCH_ZOO"),
                              "p_sum": float(probs.sum())}))
r.save(out / "zoo-measure.json")
"""


@pytest.fixture
def zoo_repo(tmp_path: Path, zoo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway repo whose (git-ignored) artifacts/zoo holds iris-rf ONNX, copied from the built zoo."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "measure.py").write_text(MEASURE_WITH_ZOO)
    (repo / "speed.txt").write_text("1.0\n")
    (repo / ".gitignore").write_text("artifacts/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "base")
    zoo = repo / "artifacts" / "zoo"
    zoo.mkdir(parents=True)
    shutil.copytree(zoo_dir / "iris-rf", zoo / "iris-rf")
    shutil.copy2(zoo_dir / "manifest.json", zoo / "manifest.json")
    monkeypatch.delenv("DEPLOYBENCH_ZOO", raising=False)  # the default: the candidate's own zoo
    monkeypatch.chdir(tmp_path)  # not the repo: the zoo must come from --repo, not from the cwd
    return repo


def zoo_runs(out: Path) -> dict[str, list]:
    runs: dict[str, list] = {"base": [], "candidate": []}
    for path in sorted(out.glob("round-*/*/zoo-measure.json")):
        runs[path.parent.name].append(load_record(path))
    return runs


@pytest.mark.e2e
def test_ab_default_mode_shares_the_candidates_zoo_with_the_base(
    zoo_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --separate-zoo, no $DEPLOYBENCH_ZOO: both sides get $DEPLOYBENCH_ZOO = the candidate's zoo, so the
    base worktree (which has no zoo) measures the same artifacts; a 15% slower candidate is a regression."""
    (zoo_repo / "speed.txt").write_text("1.15\n")  # the candidate's uncommitted change
    out = tmp_path / "out"
    rc = main(["ab", "--base-ref", "main", "--rounds", "3", "--repo", str(zoo_repo), "--out", str(out),
               "--rule", "p50:+10%", "--", sys.executable, "measure.py", "{out}"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 1, text
    assert "A/B gate (3 rounds): REGRESSION" in text
    shared = str((zoo_repo / "artifacts" / "zoo").resolve())
    runs = zoo_runs(out)
    assert [len(runs["base"]), len(runs["candidate"])] == [3, 3]
    for side, records in runs.items():
        for rec in records:
            s = rec.series[0]
            assert rec.config["zoo"] == shared and s.extra["zoo_env"] == shared, (side, rec.config)
            assert s.extra["p_sum"] == pytest.approx(4.0, abs=1e-4)  # the model really ran
    # the base side ran in the base worktree (not the candidate's tree), yet used the candidate's zoo
    assert {rec.series[0].extra["tree"] for rec in runs["base"]} == {"base"}
    assert {rec.series[0].extra["tree"] for rec in runs["candidate"]} == {"repo"}
    doc = json.loads((out / "ab.json").read_text())
    assert doc["exit_code"] == 1
    (p50,) = [r for r in doc["rows"] if r["metric"] == "p50"]
    assert p50["verdict"] == "regression" and 0.10 < p50["change"] < 0.20
    assert git(zoo_repo, "worktree", "list").count("\n") == 1


@pytest.mark.e2e
def test_ab_shares_a_zoo_given_in_the_environment_and_separate_zoo_does_not(
    zoo_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # $DEPLOYBENCH_ZOO already set: that zoo (relative to the cwd) is the one shared, resolved to a full path
    elsewhere = tmp_path / "other-zoo"
    shutil.copytree(zoo_repo / "artifacts" / "zoo", elsewhere)
    monkeypatch.setenv("DEPLOYBENCH_ZOO", "other-zoo")
    runs = run_ab(zoo_repo, "main", [sys.executable, "measure.py", "{out}"], rounds=1, out_dir=tmp_path / "a")
    for rec in runs.rounds[0]["base"] + runs.rounds[0]["candidate"]:
        assert rec.config["zoo"] == str(elsewhere.resolve()) == rec.series[0].extra["zoo_env"]
    assert ab_gate(runs.rounds, parse_rules(["p50:+10%"])).exit_code == 0  # A/A, same zoo

    # --separate-zoo: nothing is passed, so the base worktree (no zoo of its own) cannot measure
    monkeypatch.delenv("DEPLOYBENCH_ZOO")
    rc = main(["ab", "--base-ref", "main", "--rounds", "1", "--repo", str(zoo_repo), "--separate-zoo",
               "--out", str(tmp_path / "b"), "--", sys.executable, "measure.py", "{out}"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert "measurement failed (base, round 1, exit 1)" in err and "no zoo manifest" in err


@pytest.mark.e2e
def test_ab_calibrate_prints_noise_floor_and_writes_json(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A/A on the working tree (both sides, no worktree): noise floor + detectable change, exit 0."""
    (repo / "speed.txt").write_text("1.15\n")  # uncommitted: both sides measure it (no base ref involved)
    out, js = tmp_path / "out", tmp_path / "calib.json"
    rc = main(["ab", "--calibrate", "--rounds", "4", "--gate-rounds", "3", "--repo", str(repo), "--out",
               str(out), "--separate-zoo", "--json", str(js), "--", *command()])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "A/B calibration (4 A/A rounds; gate of 3 rounds)" in text and "90% detects (3 rounds)" in text
    doc = json.loads(js.read_text())
    assert doc == json.loads((out / "calibration.json").read_text())
    p50 = next(r for r in doc["rows"] if r["metric"] == "p50")
    assert abs(p50["aa_change"]) < 0.05 and p50["noise_sd"] > 0 and p50["detectable"] > 0
    order = (tmp_path / "order.log").read_text().split()
    assert {o.rsplit(":", 1)[1] for o in order} == {"repo"}  # both sides ran in the working tree
    assert git(repo, "worktree", "list").count("\n") == 1
    args = ["ab", "--repo", str(repo), "--out", str(tmp_path / "o2"), "--separate-zoo"]
    assert main([*args, "--calibrate", "--base-ref", "main", "--", *command()]) == 2
    assert "drop --base-ref" in capsys.readouterr().err
    assert main([*args, "--calibrate", "--rounds", "2", "--", *command()]) == 2
    assert "at least 3 rounds" in capsys.readouterr().err
    assert main([*args, "--", *command()]) == 2
    assert "--base-ref is required" in capsys.readouterr().err
