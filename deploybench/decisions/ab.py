"""Same-job A/B: measure a base git ref and the working tree interleaved on one machine, gate on the ratio.

``deploybench ab --base-ref main -- deploybench bench --profile tiny --out {out}``

1. ``git worktree add --detach`` the base ref into a temporary folder (removed at the end, always).
2. Run the measurement command ``--rounds`` times on each side, interleaved and counterbalanced
   (round 1: base then candidate, round 2: candidate then base, ...), so slow drifts of a shared runner
   (thermal, neighbours) hit both sides alike. Each run gets its own empty output folder: ``{out}`` in the
   command is replaced by it, and ``$DEPLOYBENCH_RESULTS`` points to it; ``{side}`` / ``$DEPLOYBENCH_AB_SIDE``
   is ``base`` or ``candidate``. The command runs in the side's tree, with that tree first on ``PYTHONPATH``
   (so ``deploybench`` / ``python -m`` run the side's code), and the model zoo shared: ``$DEPLOYBENCH_ZOO``
   is set to the candidate's zoo unless already set or ``--separate-zoo``.
3. Per round and series, ``candidate / base`` of each rule's statistic (difference for absolute rules): the
   paired rounds are the independent units. The change is the geometric mean over rounds, its CI and
   one-sided p-value a paired t over rounds (``deploybench.stats.paired_estimate``); verdicts, the Holm
   correction over all rules x series and exit codes as ``deploybench gate``
   (``deploybench.decisions.gate.judge``): 0 pass, 1 regression, 2 usage error / incomparable (different
   configs between the sides, a failed or timed-out measurement, no records written).

Calibration (``same_tree=True``, ``calibrate``): both sides measure the working tree (A/A), and the spread of
the per-round change between rounds is the machine's noise floor for each rule's statistic; from it, the
change a gate of ``gate_rounds`` rounds catches 9 times in 10 (``deploybench.stats.detectable_shift``, with
the Holm level of the same family of rules x series) and the rounds needed to catch 1.5x each rule's limit.

Records of every run are kept under ``--out`` (default ``results/ab/<UTC time>/round-NN/<side>/``) with the
command's log, plus ``ab.json`` (the verdicts).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploybench.decisions.gate.judge import LOST, apply_estimate, change, finalize, metric_unit, point_value
from deploybench.decisions.gate.matching import (
    check_env,
    check_records,
    config_identity,
    identity_key,
    pair_groups,
    pair_series,
)
from deploybench.decisions.gate.rules import Rule
from deploybench.errors import UsageError
from deploybench.paths import zoo_dir
from deploybench.procs import stop_process_group, tail_text
from deploybench.progress import LoadFigures, figures_from_series
from deploybench.record import RunRecord, load_records
from deploybench.stats import detectable_shift, paired_estimate, t_critical
from deploybench.verdicts import GateResult, Row

SIDES = ("base", "candidate")
LAYOUT_PAD_ENV = "DEPLOYBENCH_LAYOUT_PAD"
LAYOUT_PAD_MAX = 4096  # a page: every alignment of the stack's start
_LAYOUT_RNG = random.SystemRandom()
KILL_GRACE_S = 5.0


@dataclass
class ABRuns:
    """Records of every round: ``rounds[i]["base"]`` / ``rounds[i]["candidate"]``."""

    base_ref: str
    base_commit: str
    command: list[str]
    out_dir: Path
    rounds: list[dict[str, list[RunRecord]]] = field(default_factory=list)
    wall_s: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})


def _git(repo: Path, *args: str, timeout_s: float = 60.0) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"git {' '.join(args)}: {exc}") from None
    if out.returncode != 0:
        raise UsageError(f"git {' '.join(args)} failed: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip()


def repo_root(path: Path) -> Path:
    return Path(_git(path, "rev-parse", "--show-toplevel"))


def resolve_ref(repo: Path, ref: str) -> str:
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except UsageError:
        raise UsageError(
            f"--base-ref {ref!r}: not a commit in {repo} (fetch it first, e.g. git fetch origin {ref})"
        ) from None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the measurement we started: its own process group, SIGTERM then SIGKILL after a grace period."""
    stop_process_group(proc, KILL_GRACE_S)


def _tail(path: Path, n_chars: int = 1500) -> str:
    return tail_text(path, n_chars).strip()


def _is_record(path: Path) -> bool:
    """A run record (has schema_version), not e.g. pytest-benchmark's raw JSON or a summary."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "schema_version" in data and "series" in data


def measure_once(
    command: Sequence[str],
    tree: Path,
    out: Path,
    side: str,
    round_no: int,
    *,
    timeout_s: float,
    zoo: Path | None,
    log_name: str | None = None,
    sink: Any = None,
) -> tuple[list[RunRecord], float]:
    """Run the measurement once in ``tree``, writing into the empty folder ``out``: records + wall time.
    ``sink``: a ``deploybench.progress.Progress`` given the run's elapsed time and, while a record in ``out``
    is still "running" (a ``deploybench load`` writes its own as it goes), its figures."""
    out.mkdir(parents=True, exist_ok=False)
    argv = [a.replace("{out}", str(out)).replace("{side}", side) for a in command]
    env = dict(os.environ)
    env["DEPLOYBENCH_RESULTS"] = str(out)
    env["DEPLOYBENCH_AB_SIDE"] = side
    env["DEPLOYBENCH_AB_ROUND"] = str(round_no)
    # A random-length variable moves where the process's stack (and what follows from it) starts: incidental
    # differences between the sides (a longer path or argument, another variable's value) shift memory
    # layout, and a layout can be a few % faster or slower on its own ("Producing wrong data without doing
    # anything obviously wrong!", Mytkowicz et al., ASPLOS 2009). Seen here, likely for that reason:
    # identical code run as "--inject-delay-ms 0 --out .../base" vs "... 0.000000 --out .../aa" read P50
    # +3.4 % over 27 rounds (19 slower). Drawn afresh for every run, a layout is noise, not a side's bias.
    env[LAYOUT_PAD_ENV] = "x" * _LAYOUT_RNG.randrange(LAYOUT_PAD_MAX)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])
    if zoo is not None:
        env["DEPLOYBENCH_ZOO"] = str(zoo)
    log_path = out.parent / f"{log_name or side}.log"
    start_ns = time.perf_counter_ns()
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(
                argv, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        except OSError as exc:
            raise UsageError(
                f"cannot run the measurement command {argv[0]!r}: {exc.strerror or exc}"
            ) from None
        try:
            rc = proc.wait(timeout=timeout_s) if sink is None else _wait_watching(proc, timeout_s, out, sink)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise UsageError(
                f"measurement ({side}, round {round_no}) ran past --round-timeout-s {timeout_s:g}; "
                f"log {log_path}"
            ) from None
        except BaseException:
            _kill_group(proc)
            raise
    wall_s = (time.perf_counter_ns() - start_ns) / 1e9
    if rc != 0:
        raise UsageError(
            f"measurement failed ({side}, round {round_no}, exit {rc}): {' '.join(argv)}\n"
            f"--- log tail ({log_path}) ---\n{_tail(log_path)}"
        )
    files = [f for f in sorted(out.rglob("*.json")) if not f.name.startswith(".") and _is_record(f)]
    if not files:
        raise UsageError(
            f"measurement ({side}, round {round_no}) wrote no records into {out}: the command must write "
            "run records into {out} or $DEPLOYBENCH_RESULTS"
        )
    return load_records(files), wall_s


WATCH_POLL_S = 0.2
WATCH_READ_S = 1.0  # the running record is read at most this often (its figures only: nothing decoded)


def _wait_watching(proc: subprocess.Popen[bytes], timeout_s: float, out: Path, sink: Any) -> int:
    """``proc.wait(timeout_s)``, telling ``sink`` how the measurement goes meanwhile (TimeoutExpired as
    ``wait``)."""
    start = time.monotonic()
    next_read = start
    series: list[Any] = []
    warmup_s, planned_s = 0.0, None
    while True:
        try:
            return proc.wait(timeout=WATCH_POLL_S)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now - start > timeout_s:
            raise subprocess.TimeoutExpired(proc.args, timeout_s)
        if now >= next_read:
            next_read = now + WATCH_READ_S
            rec = _running_record(out)
            if rec is not None:
                series = rec.series
                warmup_s = float(rec.config.get("warmup_s") or 0.0)
                duration = rec.config.get("duration_s")
                planned_s = warmup_s + float(duration) if duration else None
                window = max((float(x.duration_s or 0.0) for x in series), default=0.0)
                sink.update(figures_from_series(series, warmup_s + window, planned_s, warmup_s))
            elif not series:
                sink.update(LoadFigures(elapsed_s=now - start, stage="running"))


def _running_record(out: Path) -> RunRecord | None:
    """The newest record in ``out`` still being written ("running"), or None."""
    best: tuple[float, Path] | None = None
    for f in out.rglob("*.json"):
        with contextlib.suppress(OSError):
            m = f.stat().st_mtime
            if best is None or m > best[0]:
                best = (m, f)
    if best is None:
        return None
    try:
        rec = load_records([best[1]])[0]
    except (UsageError, OSError, ValueError):
        return None
    return rec if rec.kind == "load" and rec.status == "running" else None


def shared_zoo(repo: Path) -> Path:
    """The zoo both sides measure: ``$DEPLOYBENCH_ZOO`` when set, else the candidate tree's (full path)."""
    zoo = Path(os.environ["DEPLOYBENCH_ZOO"]) if os.environ.get("DEPLOYBENCH_ZOO") else repo / zoo_dir()
    return zoo.resolve()


def run_ab(
    repo: Path,
    base_ref: str,
    command: Sequence[str],
    *,
    rounds: int,
    out_dir: Path,
    timeout_s: float = 900.0,
    share_zoo: bool = True,
    keep_worktree: bool = False,
    progress: Callable[[str], None] | None = None,
    same_tree: bool = False,
    sink: Any = None,
) -> ABRuns:
    """Measure base (a temporary worktree of ``base_ref``) and candidate (``repo``'s tree) interleaved.
    ``same_tree``: both sides measure ``repo``'s tree (A/A calibration; no worktree is made).
    ``progress``: called with a line as each run starts; ``sink``: a ``deploybench.progress.Progress``
    told the round and side (``phase``) and the running measurement's figures."""
    if rounds < 1:
        raise UsageError("--rounds must be at least 1 (3 or more for a confidence interval worth having)")
    if not command:
        raise UsageError(
            "no measurement command: deploybench ab --base-ref REF -- COMMAND ... ({out} = folder)"
        )
    repo = repo_root(repo)
    commit = resolve_ref(repo, base_ref)
    out_dir = out_dir.resolve()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UsageError(f"--out {out_dir}: exists and is not empty")
    zoo: Path | None = None
    if share_zoo:
        zoo = shared_zoo(repo)
    runs = ABRuns(base_ref, commit, list(command), out_dir)
    tmp = Path(tempfile.mkdtemp(prefix="deploybench-ab-"))
    worktree = tmp / "base"
    created = False
    try:
        if not same_tree:
            _git(repo, "worktree", "add", "--detach", str(worktree), commit, timeout_s=300)
            created = True
        trees = {"base": repo if same_tree else worktree, "candidate": repo}
        for i in range(1, rounds + 1):
            order = SIDES if i % 2 == 1 else SIDES[::-1]
            got: dict[str, list[RunRecord]] = {}
            for side in order:
                if progress:
                    progress(f"round {i}/{rounds}: {side} ...")
                if sink is not None:
                    sink.phase(f"round {i}/{rounds}: {side}")
                got[side], wall = measure_once(
                    command,
                    trees[side],
                    out_dir / f"round-{i:02d}" / side,
                    side,
                    i,
                    timeout_s=timeout_s,
                    zoo=zoo,
                    sink=sink,
                )
                runs.wall_s[side].append(wall)
            runs.rounds.append(got)
    finally:
        if created and not keep_worktree:
            with contextlib.suppress(UsageError):
                _git(repo, "worktree", "remove", "--force", str(worktree), timeout_s=120)
        if not keep_worktree:
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(UsageError):
                _git(repo, "worktree", "prune")
    return runs


def _round_values(
    rounds: Sequence[dict[str, list[RunRecord]]],
    rules: Sequence[Rule],
    result: GateResult,
    force: bool,
    series_filter: Sequence[str],
) -> tuple[dict[tuple[str, str, str], list[tuple[float, float]]], dict[tuple[str, str, str], str]]:
    """values[(config key, series key, rule text)] = [(base, candidate) per round], and the series labels."""
    values: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    labels: dict[tuple[str, str, str], str] = {}
    for i, rnd in enumerate(rounds, 1):
        base, cand = rnd["base"], rnd["candidate"]
        check_records(base, f"round {i} base", force, result.notes)
        check_records(cand, f"round {i} candidate", force, result.notes)
        for b_runs, c_runs in pair_groups(base, cand, force, result.notes):
            check_env(b_runs, c_runs, force, result.notes)
            cfg = identity_key(config_identity(c_runs[0]))
            series_pairs = pair_series(
                b_runs, c_runs, result.notes, series_filter=series_filter, prefix=f"round {i}: "
            )
            for pair in series_pairs:
                bs, cs = pair.base[-1], pair.current[-1]
                for rule in rules:
                    bv, cv = point_value(bs, rule.metric), point_value(cs, rule.metric)
                    k = (cfg, pair.key, rule.text)
                    labels[k] = pair.label
                    if bv is None or cv is None:
                        values.setdefault(k, [])
                        continue
                    values.setdefault(k, []).append((bv, cv))
    return values, labels


def ab_gate(
    rounds: Sequence[dict[str, list[RunRecord]]],
    rules: Sequence[Rule],
    *,
    confidence: float = 0.95,
    force: bool = False,
    series_filter: Sequence[str] = (),
) -> GateResult:
    """Paired rounds as the units: per-round candidate/base ratios (differences for absolute rules) ->
    change, paired t interval, one-sided p-value; Holm over all rows
    (``deploybench.decisions.gate.judge.finalize``)."""
    result = GateResult(confidence=confidence, title=f"A/B gate ({len(rounds)} rounds)")
    values, labels = _round_values(rounds, rules, result, force, series_filter)
    rule_by_text = {r.text: r for r in rules}
    for (_cfg, _key, text), pairs in values.items():
        rule = rule_by_text[text]
        label = labels[(_cfg, _key, text)]
        row = Row(rule.text, rule.metric, label, metric_unit(rule), None, None, None, None, "no data", "")
        row.method = f"A/B {len(pairs)} rounds (t)"
        if len(pairs) >= min(2, len(rounds)):  # a statistic seen in one round of several is no evidence
            b = [p[0] for p in pairs]
            c = [p[1] for p in pairs]
            row.baseline, row.current = float(np.median(b)), float(np.median(c))
            est = paired_estimate(b, c, relative=rule.relative)
            if est is None:  # a zero statistic in some round: no per-round ratio
                row.change = change(rule, row.baseline, row.current)
                row.note = "zero statistic: no per-round ratio"
                if all(v == 0 for v in c) and all(v > 0 for v in b) and not rule.higher_is_worse:
                    row.method, row.verdict = LOST, "regression"  # e.g. throughput 0 in every round
                    row.note = "candidate measured 0 in every round where the base did not"
            else:
                apply_estimate(row, rule, est, confidence)
                if not est.has_spread:
                    row.note = "1 round: no CI, no significance"
        if len(pairs) < len(rounds):
            row.note = "; ".join(
                filter(None, [row.note, f"statistic missing in {len(rounds) - len(pairs)} round(s)"])
            )
        result.rows.append(row)
    if not result.rows:
        raise UsageError(
            "A/B: no series measured on both sides" + (" (after --series)" if series_filter else "")
        )
    finalize(result, rules)
    return result


MAX_ROUNDS = 100
DETECT_FACTOR = 1.5  # calibration: rounds needed to catch 1.5x a rule's limit 9 times in 10


def calibrate(
    rounds: Sequence[dict[str, list[RunRecord]]],
    rules: Sequence[Rule],
    *,
    gate_rounds: int,
    confidence: float = 0.95,
    force: bool = False,
    series_filter: Sequence[str] = (),
) -> dict[str, Any]:
    """A/A rounds (both sides the same tree) -> per series and rule: the noise floor (the spread between
    rounds of the per-round change, on the test scale and as a change), the CI half-width and the change
    caught 9 times in 10 by a gate of ``gate_rounds`` rounds (Holm level of this family), and the rounds such
    a gate needs to catch 1.5x the rule's limit. Plus the A/A gate verdict on the calibration rounds."""
    if len(rounds) < 3:
        raise UsageError("--calibrate needs at least 3 rounds (10 or more give a usable noise floor)")
    if not 2 <= gate_rounds <= MAX_ROUNDS:
        raise UsageError(f"--gate-rounds must be between 2 and {MAX_ROUNDS}; got {gate_rounds}")
    scratch = GateResult(confidence=confidence)
    values, labels = _round_values(rounds, rules, scratch, force, series_filter)
    rule_by_text = {r.text: r for r in rules}
    alpha = round(1.0 - confidence, 12)
    family = max(1, len(values))
    level = alpha / family
    out_rows: list[dict[str, Any]] = []
    for k, pairs in values.items():
        rule = rule_by_text[k[2]]
        entry: dict[str, Any] = {"rule": rule.text, "metric": rule.metric, "series": labels[k],
                                 "rounds": len(pairs), "limit": rule.limit_value}  # fmt: skip
        est = paired_estimate([p[0] for p in pairs], [p[1] for p in pairs], relative=rule.relative)
        if est is None or not est.has_spread or len(pairs) < 3:
            entry["note"] = "statistic missing or zero in some rounds: no noise floor"
            out_rows.append(entry)
            continue
        sd = est.se * math.sqrt(len(pairs))  # spread of one round's change (test scale)
        se = sd / math.sqrt(gate_rounds)
        shift = detectable_shift(se, gate_rounds - 1, level, rule.limit_on_scale)
        need = next(
            (
                r
                for r in range(2, MAX_ROUNDS + 1)
                if detectable_shift(sd / math.sqrt(r), r - 1, level, rule.limit_on_scale)
                <= _scale_of(rule, DETECT_FACTOR * rule.limit_value)
            ),
            None,
        )
        entry.update(
            {
                "aa_change": rule.from_scale(est.diff),
                "noise_sd": sd,
                "noise_one_round": rule.from_scale(rule.bad_sign * sd),
                "ci_half_width": rule.from_scale(t_critical(confidence, gate_rounds - 1) * se),
                "detectable": rule.from_scale(rule.bad_sign * shift) if math.isfinite(shift) else None,
                "rounds_for_1_5x_limit": need,
            }
        )
        out_rows.append(entry)
    aa = ab_gate(rounds, rules, confidence=confidence, force=force, series_filter=series_filter)
    return {
        "title": f"A/B calibration ({len(rounds)} A/A rounds; gate of {gate_rounds} rounds)",
        "rounds": len(rounds),
        "gate_rounds": gate_rounds,
        "confidence": confidence,
        "alpha": alpha,
        "family": family,
        "holm_first_level": level,
        "power": 0.9,
        "rows": out_rows,
        "aa_gate": {
            "result": "regression" if aa.regressions else "pass",
            "regressions": [r.rule + " " + r.series for r in aa.regressions],
        },
        "notes": scratch.notes,
    }


def _scale_of(rule: Rule, limit_value: float) -> float:
    """A limit magnitude (rule terms) on the test scale, as ``Rule.limit_on_scale`` for the rule's own."""
    if not rule.relative:
        return limit_value
    if rule.higher_is_worse:
        return math.log1p(limit_value)
    return -math.log1p(-limit_value) if limit_value < 1.0 else math.inf
