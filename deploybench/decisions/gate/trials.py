"""Measure the gate's error rates on this machine: K trials of each gate mode, A/A and with a true slowdown.

``python -m deploybench.decisions.gate.trials --trials 20`` (run it on a quiet machine). Wall time on 2
cores: one 3 s load run ~7 s; an A/B trial number is 3 x ``--rounds`` runs (10 rounds: ~210 s) and gives one
A/A and one slowdown trial; a single-run trial is one 10 s run (~12.5 s); so 20 trials of each kind take ~70
min for ``ab`` and ~11 min for ``single`` with its delay calibration (678 s on 2026-12-04). ``--modes``,
``--trials`` and ``--rounds`` bound it. The measurement is the example workflow's
(``.github/workflows/latency-gate.yml``)::

    deploybench load --framework fastapi --server uvicorn --model iris-rf --format onnx --scenario tabular
        --duration 3 --warmup 1 --users 1

1. The true change: the unchanged P50 is measured (3 runs) and ``--inject-delay-ms`` (a busy-wait in the
   target, added to every request's time; one user) set to 15 % of it; 3 interleaved pairs of runs report
   what it gives, and every trial reports the P50 change it measured (A/B: paired, the accurate figure).
2. ``ab``: K A/A trials and K slowdown trials of ``deploybench ab``'s gate with the workflow's ``--rounds 10``
   and default rules: each round runs the base, an unchanged and a slowed candidate (rotating order); the
   A/A trial gates base vs unchanged, the slowdown trial the same base runs vs slowed. All arms run the
   same tree (as ``ab --calibrate``; in the workflow the base is a worktree of the same files); the slowed
   candidate's command adds the delay through ``$DEPLOYBENCH_AB_SIDE`` (``sh -c``), as a slower commit would.
3. ``single``: the stored-baseline gate. ``--baseline-runs`` N unchanged runs (default 5) are saved as the
   baseline, then K unchanged and K slowed runs of ``--single-duration`` s (default 10), interleaved, are
   each gated against it (``deploybench gate``'s default rules: with N >= 2 the runs are the units, a
   prediction interval for one new run from the baseline runs' spread). After each trial the unchanged run
   joins the baseline and the oldest leaves (``baseline save --append --keep N``), as a baseline saved on
   every push to main would: the baseline is N runs made at different times, and consecutive trials share
   only part of it. With N = 1 every trial is one run per side: its answer is "cannot tell" (exit 4)
   whenever the change is beyond a limit.

Output: per mode "A/A false alarms a of K; +15 % detected d of K", as text and as JSON (``trials.json`` in
``--out``), with each trial's exit code, P50 change and notes. Targets: A/A <= 5 %, +15 % >= 90 %.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deploybench.decisions.ab import ab_gate, measure_once, repo_root, shared_zoo
from deploybench.decisions.gate.baseline import resolve_baseline, save_baseline
from deploybench.decisions.gate.judge import gate
from deploybench.decisions.gate.rules import DEFAULT_RULES, parse_rules
from deploybench.errors import UsageError
from deploybench.io import utc_stamp, write_json_atomic
from deploybench.record import RunRecord, load_records
from deploybench.verdicts import CANNOT_TELL_EXIT, GateResult

LOAD_ARGS = ["load", "--framework", "fastapi", "--server", "uvicorn", "--model", "iris-rf", "--format",
             "onnx", "--scenario", "tabular", "--duration", "3", "--warmup", "1", "--users", "1"]  # fmt: skip
WORKFLOW_ROUNDS = 10  # .github/workflows/latency-gate.yml: deploybench ab --rounds 10
TARGET_CHANGE = 0.15
# Only the candidate side adds the delay: sh -c SIDE_SCRIPT DEPLOYBENCH DELAY_MS {out} LOAD_ARGS...
SIDE_SCRIPT = (
    'exe="$0"; d=0; if [ "$DEPLOYBENCH_AB_SIDE" = candidate ]; then d="$1"; fi; out="$2"; shift 2; '
    'exec "$exe" "$@" --inject-delay-ms "$d" --out "$out"'
)


def _load_args(duration_s: float) -> list[str]:
    args = list(LOAD_ARGS)
    args[args.index("--duration") + 1] = f"{duration_s:g}"
    return args


def run_load(deploybench: str, out: Path, delay_ms: float, duration_s: float) -> list[RunRecord]:
    """One ``deploybench load`` run (the workflow's measurement) into the empty folder ``out``."""
    out.mkdir(parents=True, exist_ok=False)
    argv = [deploybench, *_load_args(duration_s), "--inject-delay-ms", f"{delay_ms:.6f}", "--out", str(out)]
    with open(out / "command.log", "wb") as log:
        rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=600, check=False).returncode
    if rc != 0:
        raise UsageError(f"measurement failed (exit {rc}): {' '.join(argv)}; log {out / 'command.log'}")
    files = [f for f in sorted(out.glob("*.json")) if "schema_version" in f.read_text()[:4000]]
    return load_records(files)


def p50_us(records: Sequence[RunRecord]) -> float:
    return float(records[0].series[0].latency_us["p50"])


def calibrate_delay(
    deploybench: str, out: Path, duration_s: float, runs: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """The delay (ms) for a +15 % P50: 15 % of the median unchanged P50 (with one user the busy-wait adds
    to every request's time), then ``runs`` interleaved pairs unchanged / delayed to report what it gives.
    That check is only indicative: one run's P50 moves by several % from one server start to the next
    (two checks of 4 pairs here read +24 % and +5 % for the same delay), so the delay is not tuned on it;
    the change the trials really tested is the median over the slowdown trials' paired P50 changes."""
    base = [p50_us(run_load(deploybench, out / f"plain-{i}", 0.0, duration_s)) for i in range(runs)]
    p0 = statistics.median(base)
    delay = TARGET_CHANGE * p0 / 1000.0
    plain, slowed = [], []
    for i in range(runs):
        plain.append(p50_us(run_load(deploybench, out / f"check-plain-{i}", 0.0, duration_s)))
        slowed.append(p50_us(run_load(deploybench, out / f"check-delay-{i}", delay, duration_s)))
    ratios = [s / b - 1.0 for s, b in zip(slowed, plain, strict=True)]
    say(
        f"P50 unchanged {p0:.0f} µs; delay {delay:.4f} ms; check pairs: P50 {_fmt(statistics.median(ratios))}"
    )
    return {"p50_us": base, "delay_ms": delay, "check_plain_p50_us": plain, "check_delay_p50_us": slowed,
            "check_change_median": statistics.median(ratios)}  # fmt: skip


def _p50_change(result: GateResult) -> float | None:
    return next((r.change for r in result.rows if r.metric == "p50"), None)


def _trial(result: GateResult) -> dict[str, Any]:
    return {
        "exit_code": result.exit_code,
        "p50_change": _p50_change(result),
        "regressions": [r.rule for r in result.regressions],
        "methods": sorted({r.method for r in result.rows}),
    }


ARMS = ("base", "aa", "slow")


def arm_order(round_no: int) -> tuple[str, ...]:
    """The order of the three arms in round ``round_no`` (1-based): every position rotates through every arm,
    and the two candidates swap order every 3 rounds, so no arm always runs first, last or after another."""
    k = (round_no - 1) % 3
    order = ARMS[k:] + ARMS[:k]
    return order if (round_no - 1) // 3 % 2 == 0 else order[::-1]


def trials_ab(
    repo: Path, deploybench: str, out: Path, k: int, rounds: int, delay_ms: float, say: Callable[[str], None]
) -> dict[str, Any]:
    """K trials; each is ``rounds`` rounds of three runs: the base, an unchanged candidate and a slowed
    candidate. The A/A trial gates the base against the unchanged candidate, the slowdown trial the same base
    runs against the slowed one (``deploybench ab``'s paired rounds and rules): two trials for 3 runs a round
    instead of 4. The two trials of one trial number share their base runs, so their outcomes are not
    independent of each other; each rate is over K independent trials."""
    rules = parse_rules(DEFAULT_RULES)
    zoo = shared_zoo(repo)
    delays = {"base": 0.0, "aa": 0.0, "slow": delay_ms}
    outcome: dict[str, list[dict[str, Any]]] = {"aa": [], "slow": []}
    for i in range(k):
        trial_dir = out / f"trial-{i + 1:02d}"
        got: list[dict[str, list[RunRecord]]] = []
        for r in range(1, rounds + 1):
            runs: dict[str, list[RunRecord]] = {}
            for arm in arm_order(r):
                command = ["sh", "-c", SIDE_SCRIPT, deploybench, f"{delays[arm]:.6f}", "{out}", *LOAD_ARGS]
                side = "base" if arm == "base" else "candidate"
                runs[arm], _wall = measure_once(
                    command, repo, trial_dir / f"round-{r:02d}" / arm, side, r,
                    timeout_s=600.0, zoo=zoo, log_name=arm,
                )  # fmt: skip
            got.append(runs)
        for kind in ("aa", "slow"):
            result = ab_gate([{"base": g["base"], "candidate": g[kind]} for g in got], rules)
            outcome[kind].append(_trial(result))
            say(f"ab trial {i + 1}/{k} {kind}: exit {result.exit_code}, P50 {_fmt(_p50_change(result))}")
    what = f"deploybench ab --rounds {rounds}, default rules; base, unchanged and slowed runs interleaved"
    return _summary("ab", what, outcome)


def trials_single(
    deploybench: str,
    out: Path,
    k: int,
    delay_ms: float,
    duration_s: float,
    baseline_runs: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    rules = parse_rules(DEFAULT_RULES)
    store = out / "baselines"
    base_records = [
        rec
        for i in range(baseline_runs)
        for rec in run_load(deploybench, out / f"baseline-{i + 1}", 0.0, duration_s)
    ]
    save_baseline(base_records, store, keep=baseline_runs)
    outcome: dict[str, list[dict[str, Any]]] = {"aa": [], "slow": []}
    for i in range(k):
        unchanged: list[RunRecord] = []
        for kind, delay in (
            (("aa", 0.0), ("slow", delay_ms)) if i % 2 == 0 else (("slow", delay_ms), ("aa", 0.0))
        ):
            current = run_load(deploybench, out / f"{kind}-{i + 1:02d}", delay, duration_s)
            baseline, notes = resolve_baseline([store], current)
            result = gate(baseline, current, rules, notes=notes)
            trial = _trial(result)
            trial["baseline_runs"] = [r.run_id for r in baseline]
            trial["notes"] = result.notes
            outcome[kind].append(trial)
            if kind == "aa":
                unchanged = current
            say(f"single trial {i + 1}/{k} {kind}: exit {result.exit_code}, P50 {_fmt(_p50_change(result))}")
        save_baseline(unchanged, store, append=True, keep=baseline_runs)  # the rolling baseline
    what = (
        f"a rolling baseline of the last {baseline_runs} unchanged run(s), one {duration_s:g} s run gated, "
        "default rules"
    )
    return _summary("single", what, outcome)


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:+.1%}"


def _summary(mode: str, what: str, outcome: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    k = len(outcome["aa"])
    alarms = sum(t["exit_code"] == 1 for t in outcome["aa"])
    caught = sum(t["exit_code"] == 1 for t in outcome["slow"])
    unsure = {kind: sum(t["exit_code"] == CANNOT_TELL_EXIT for t in outcome[kind]) for kind in ("aa", "slow")}
    p50 = [t["p50_change"] for t in outcome["slow"] if t["p50_change"] is not None]
    line = (
        f"{mode} ({what}): A/A false alarms {alarms} of {k}; +15 % detected {caught} of {k}"
        f" (median P50 change of the slowed runs {_fmt(statistics.median(p50) if p50 else None)})"
    )
    if any(unsure.values()):
        aa_unsure, slow_unsure = unsure["aa"], unsure["slow"]
        line += f"; cannot tell (exit {CANNOT_TELL_EXIT}): A/A {aa_unsure} of {k}, +15 % {slow_unsure} of {k}"
    met = alarms <= 0.05 * k and caught >= 0.9 * k
    achieved = statistics.median(p50) if p50 else None
    if achieved is not None and not 0.10 <= achieved <= 0.20:
        line += f" -- the slowed runs' P50 moved {_fmt(achieved)}, not about +15 %: rerun with --delay-ms"
    return {"mode": mode, "what": what, "trials": k, "aa_false_alarms": alarms, "slow_detected": caught,
            "targets_met": met, "line": line + ("" if met else " -- targets NOT met"),
            "aa_cannot_tell": unsure["aa"], "slow_cannot_tell": unsure["slow"],
            "aa": outcome["aa"], "slow": outcome["slow"]}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploybench.decisions.gate.trials", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--trials", type=int, default=20, help="trials per mode and kind (default 20)")
    parser.add_argument("--modes", default="ab,single", help="ab, single or both (default ab,single)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=WORKFLOW_ROUNDS,
        help=f"A/B rounds (default {WORKFLOW_ROUNDS}, the workflow's)",
    )
    parser.add_argument(
        "--baseline-runs", type=int, default=5, help="runs in the rolling stored baseline (default 5)"
    )
    parser.add_argument(
        "--single-duration", type=float, default=10.0, help="single-run --duration (default 10)"
    )
    parser.add_argument("--delay-ms", type=float, default=None, help="skip the delay calibration: use this")
    parser.add_argument("--calibration-runs", type=int, default=3, help="runs per side to set the delay")
    parser.add_argument(
        "--deploybench", default=None, help="the deploybench executable (default: beside python)"
    )
    parser.add_argument("--repo", default=".", help="the git working tree measured (default .)")
    parser.add_argument("--out", default=None, help="folder for records and trials.json")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    try:
        if not modes or set(modes) - {"ab", "single"}:
            raise UsageError(f"--modes: ab, single or ab,single; got {args.modes!r}")
        if not 1 <= args.trials <= 200 or not 1 <= args.rounds <= 100 or not 1 <= args.baseline_runs <= 50:
            raise UsageError("--trials 1..200, --rounds 1..100, --baseline-runs 1..50")
        exe = args.deploybench or str(Path(sys.executable).with_name("deploybench"))
        if not Path(exe).is_file() and not shutil.which(exe):
            raise UsageError(f"no deploybench executable at {exe}; pass --deploybench PATH")
        repo = repo_root(Path(args.repo))
        out = Path(args.out or repo / "results" / "gate-trials" / utc_stamp()).resolve()
        if out.exists() and any(out.iterdir()):
            raise UsageError(f"--out {out}: exists and is not empty")
        out.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()

        def say(msg: str) -> None:
            print(f"[{time.monotonic() - started:6.0f} s] {msg}", file=sys.stderr, flush=True)

        doc: dict[str, Any] = {
            "machine": os.uname().nodename,
            "load_args": LOAD_ARGS,
            "rules": list(DEFAULT_RULES),
        }
        if args.delay_ms is None:
            doc["delay"] = calibrate_delay(
                exe, out / "delay", args.single_duration, args.calibration_runs, say
            )
            delay = doc["delay"]["delay_ms"]
        else:
            delay = args.delay_ms
        doc["delay_ms"] = delay
        doc["modes"] = []
        if "ab" in modes:
            doc["modes"].append(trials_ab(repo, exe, out / "ab", args.trials, args.rounds, delay, say))
        if "single" in modes:
            doc["modes"].append(
                trials_single(
                    exe, out / "single", args.trials, delay, args.single_duration, args.baseline_runs, say
                )
            )
        doc["wall_s"] = round(time.monotonic() - started, 1)
        write_json_atomic(out / "trials.json", doc)
    except UsageError as exc:
        print(f"gate trials: error: {exc}", file=sys.stderr)
        return 2
    print(f"delay {delay:.4f} ms (target: candidate P50 +15 %); {doc['wall_s']:.0f} s; {out / 'trials.json'}")
    for m in doc["modes"]:
        print(m["line"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
