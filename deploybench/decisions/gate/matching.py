"""Which records and series a gate compares: records grouped by config (``CONFIG_KEYS`` + kind), checked
for status and environment, paired baseline-to-current by config, and their series paired by name + params.

Different configs, environments (``deploybench.env.env_mismatch``) or incomplete records are refused
(``IncomparableError``, exit 2) unless ``force`` (then compared, with a note).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploybench.env import env_mismatch
from deploybench.errors import UsageError
from deploybench.record import RunRecord, Series, load_records

# Config fields that must be equal for two records to be compared (plus the record kind).
CONFIG_KEYS = (
    "framework", "server", "workers", "threads", "intra_op_threads", "model", "format", "scenario",
    "load_model", "users", "rate_rps", "profile",
    "max_batch_size", "max_queue_delay_us", "inter_op_threads", "ort_opt_level",
)  # fmt: skip
# Keys added later, left out of the identity at their defaults: a record made before them (without the key)
# still matches a new one with the same target (batching off, onnxruntime's defaults).
LATER_KEY_DEFAULTS: dict[str, Any] = {
    "max_batch_size": 0, "max_queue_delay_us": 0, "inter_op_threads": 1, "ort_opt_level": "all",
}  # fmt: skip


class IncomparableError(UsageError):
    """Records that must not be compared (config, environment, status): exit code 2."""


def _config_value(config: dict[str, Any], key: str) -> Any:
    if key in config:
        return config[key]
    for v in config.values():  # one level of nesting, e.g. config["target"] = TargetConfig.to_dict()
        if isinstance(v, dict) and key in v:
            return v[key]
    return None


def config_identity(record: RunRecord) -> dict[str, Any]:
    """The config fields that must match (None-valued ones left out), plus the record kind."""
    out: dict[str, Any] = {"kind": record.kind}
    for key in CONFIG_KEYS:
        value = _config_value(record.config, key)
        if value is not None and (key not in LATER_KEY_DEFAULTS or value != LATER_KEY_DEFAULTS[key]):
            out[key] = value
    return out


def identity_key(identity: dict[str, Any]) -> str:
    return json.dumps(identity, sort_keys=True, default=str)


def describe_identity(identity: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in identity.items())


def group_by_config(records: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(identity_key(config_identity(r)), []).append(r)
    return groups


def identity_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def series_key(s: Series) -> str:
    params = json.dumps(s.params, sort_keys=True, default=str) if s.params else ""
    return f"{s.name}\x1f{params}"


def series_label(s: Series, ambiguous: bool) -> str:
    """The series name, plus its params when ``ambiguous`` (another series has the same name)."""
    if not ambiguous or not s.params:
        return s.name
    return s.name + " [" + ",".join(f"{k}={v}" for k, v in sorted(s.params.items())) + "]"


def check_records(records: Sequence[RunRecord], side: str, force: bool, notes: list[str]) -> None:
    bad = [r for r in records if r.status != "complete"]
    for r in bad:
        msg = f"{side} record {r.run_id} has status {r.status!r}" + (f" ({r.error})" if r.error else "")
        if not force:
            raise IncomparableError(f"{msg}; only complete runs are compared (use --force to compare anyway)")
        notes.append(f"forced: {msg}")


def check_env(base: Sequence[RunRecord], cur: Sequence[RunRecord], force: bool, notes: list[str]) -> None:
    diff = env_mismatch(base[0].env, cur[0].env)
    for r in cur[1:]:
        diff = diff or env_mismatch(base[0].env, r.env)
    if not diff:
        return
    text = "; ".join(f"{k}: baseline {a!r} vs current {b!r}" for k, (a, b) in diff.items())
    if not force:
        raise IncomparableError(
            f"environments differ ({text}); measure the baseline on the same machine/software, "
            "use same-job A/B (deploybench ab), or --force to compare anyway"
        )
    notes.append(f"forced: environments differ ({text})")


def pair_groups(
    base: Sequence[RunRecord], cur: Sequence[RunRecord], force: bool, notes: list[str]
) -> list[tuple[list[RunRecord], list[RunRecord]]]:
    """(baseline runs, current runs) per config; refuses configs without a matching baseline."""
    if not base:
        raise IncomparableError("no baseline records")
    if not cur:
        raise IncomparableError("no current records")
    bg, cg = group_by_config(base), group_by_config(cur)
    pairs = []
    for key, cur_runs in cg.items():
        if key in bg:
            pairs.append((bg[key], cur_runs))
            continue
        ident = config_identity(cur_runs[0])
        closest = min(bg.values(), key=lambda runs: len(identity_diff(config_identity(runs[0]), ident)))
        diff = identity_diff(config_identity(closest[0]), ident)
        text = "; ".join(f"{k}: baseline {a!r} vs current {b!r}" for k, (a, b) in diff.items())
        if force and len(bg) == 1 and len(cg) == 1:
            notes.append(f"forced: configs differ ({text})")
            pairs.append((closest, cur_runs))
            continue
        raise IncomparableError(
            f"no baseline with the current config ({describe_identity(ident)}); closest differs in {text}"
            + ("; use --force to compare anyway" if len(bg) == 1 and len(cg) == 1 else "")
        )
    for key, runs in bg.items():
        if key not in cg:
            notes.append(f"baseline config not measured now: {describe_identity(config_identity(runs[0]))}")
    return pairs


def latest_runs(records: Sequence[RunRecord], last: int, side: str) -> tuple[list[RunRecord], list[str]]:
    """Keep the ``last`` most recent runs (by start time) of each config; ``last <= 0`` keeps all."""
    if last <= 0:
        return list(records), []
    out: list[RunRecord] = []
    notes: list[str] = []
    for runs in group_by_config(records).values():
        keep = sorted(runs, key=lambda r: r.started_utc)[-last:]
        if len(keep) < len(runs):
            ident = describe_identity(config_identity(runs[0]))
            notes.append(
                f"{side}: using the latest {len(keep)} of {len(runs)} runs of {ident} (--last 0: all)"
            )
        out.extend(keep)
    return out, notes


def load_inputs(paths: Sequence[str | Path]) -> tuple[list[RunRecord], list[str]]:
    """Record files, and the records directly in folders (other JSON there, e.g. summary.json: skipped)."""
    records: list[RunRecord] = []
    notes: list[str] = []
    for p in map(Path, paths):
        if not p.is_dir():
            records.extend(load_records([p]))
            continue
        files = sorted(f for f in p.glob("*.json") if not f.name.startswith("."))
        skipped = 0
        for f in files:
            try:
                data = json.loads(f.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                data = None
            if isinstance(data, dict) and "schema_version" in data:
                records.extend(load_records([f]))
            else:
                notes.append(f"skipped {f}: not a run record")
                skipped += 1
        if not files or skipped == len(files):
            raise UsageError(f"{p}: no run records (*.json) in this folder")
    return records, notes


def _series_by_key(runs: Sequence[RunRecord]) -> dict[str, list[Series]]:
    out: dict[str, list[Series]] = {}
    for r in runs:
        for s in r.series:
            out.setdefault(series_key(s), []).append(s)
    return out


@dataclass
class SeriesPair:
    """One series measured on both sides: its key (name + params), its label and its runs on each side."""

    key: str
    label: str
    base: list[Series]
    current: list[Series]


def pair_series(
    base_runs: Sequence[RunRecord],
    cur_runs: Sequence[RunRecord],
    notes: list[str],
    *,
    series_filter: Sequence[str] = (),
    prefix: str = "",
) -> list[SeriesPair]:
    """The series of ``cur_runs`` matched with those of ``base_runs`` by name + params, in the current runs'
    order. Series measured on one side only are noted (``prefix`` first, e.g. "round 2: ") and left out, as
    are series whose label matches none of the ``series_filter`` globs."""
    base_series = _series_by_key(base_runs)
    cur_series = _series_by_key(cur_runs)
    names = [ss[0].name for ss in cur_series.values()]
    pairs: list[SeriesPair] = []
    for key, cur_list in cur_series.items():
        label = series_label(cur_list[0], names.count(cur_list[0].name) > 1)
        if series_filter and not any(fnmatch.fnmatchcase(label, pat) for pat in series_filter):
            continue
        if key not in base_series:
            notes.append(f"{prefix}series {label!r} has no baseline (new?): not gated")
            continue
        pairs.append(SeriesPair(key, label, base_series[key], cur_list))
    for key, base_list in base_series.items():
        if key not in cur_series:
            notes.append(f"{prefix}baseline series {base_list[0].name!r} missing in the current run")
    return pairs
