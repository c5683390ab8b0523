"""Baseline store: saved run records keyed by environment and config, found again by ``deploybench gate``.

Layout (a folder, ``baselines/`` by default)::

    baselines/
      <env-hash>/                  # sha256 of deploybench.env.env_key(env): CPU, cores, Python, libraries
        env.json                   # the key fields (readable), plus the hostname it was saved from
        <config-slug>-<hash>/      # one per config (deploybench.decisions.gate.matching.config_identity)
          config.json
          runs/<run_id>.json       # one or more records: several runs = repeated-run baseline

``deploybench baseline save RECORDS...`` replaces the runs of each (environment, config) it is given
(``--append`` adds to them: repeated runs; ``--keep N`` then keeps the newest N: a rolling baseline of runs
saved at different times, e.g. one per push to main); ``deploybench baseline show`` lists the store and marks
the environment of this machine. ``deploybench gate --baseline DIR`` picks, for each current record, the runs
saved for the current record's environment and config; none -> exit 2 with how to create one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deploybench.decisions.gate.matching import (
    IncomparableError,
    config_identity,
    describe_identity,
    identity_diff,
    identity_key,
    latest_runs,
    load_inputs,
)
from deploybench.env import env_key, env_mismatch
from deploybench.errors import UsageError
from deploybench.io import write_json_atomic
from deploybench.record import RunRecord, load_record

DEFAULT_BASELINE = "baselines"


def env_hash(env: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(env_key(env), sort_keys=True, default=str).encode()).hexdigest()[:12]


def config_folder(identity: dict[str, Any]) -> str:
    slug_parts = [str(identity[k]) for k in ("kind", "framework", "server", "model", "format", "scenario")
                  if identity.get(k) is not None]  # fmt: skip
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(slug_parts))[:80] or "run"
    digest = hashlib.sha256(identity_key(identity).encode()).hexdigest()[:8]
    return f"{slug}-{digest}"


def is_store(path: Path) -> bool:
    return path.is_dir() and any(p.is_file() for p in path.glob("*/env.json"))


def save_baseline(
    records: Sequence[RunRecord], store: Path, *, append: bool = False, keep: int = 0
) -> list[Path]:
    """Copy records into the store (see module doc). ``keep`` > 0: afterwards only the newest ``keep`` runs
    (by start time) of each (environment, config) written to stay: a rolling baseline of runs saved at
    different times. Returns the written record paths that remain."""
    if not records:
        raise UsageError("no records to save")
    if keep < 0:
        raise UsageError(f"--keep must be >= 0 (0: keep every run); got {keep}")
    bad = [r.run_id for r in records if r.status != "complete"]
    if bad:
        raise UsageError(f"only complete runs can be a baseline; not complete: {', '.join(bad)}")
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((env_hash(r.env), config_folder(config_identity(r))), []).append(r)
    written: list[Path] = []
    for (eh, cfg), runs in groups.items():
        env_dir = store / eh
        write_json_atomic(
            env_dir / "env.json", {"env_key": env_key(runs[0].env), "hostname": runs[0].env.get("hostname")}
        )
        folder = env_dir / cfg
        runs_dir = folder / "runs"
        write_json_atomic(
            folder / "config.json", {"identity": config_identity(runs[0]), "config": runs[0].config}
        )
        # Replacing: write the new runs into a temp sibling, then swap, so a failure keeps the old runs.
        target = runs_dir if append else Path(tempfile.mkdtemp(prefix=".runs.new-", dir=folder))
        names: list[str] = []
        try:
            for r in runs:
                path = target / f"{_safe(r.run_id)}.json"
                n = 1
                while path.exists():
                    n += 1
                    path = target / f"{_safe(r.run_id)}-{n}.json"
                r.save(path)
                names.append(path.name)
            if not append:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(target, 0o777 & ~umask)  # mkdtemp makes 0700
                _swap_in(target, runs_dir)
        except BaseException:
            if not append:
                shutil.rmtree(target, ignore_errors=True)
            raise
        written.extend(runs_dir / name for name in names)
        if keep:
            dropped = _trim(runs_dir, keep)
            written = [p for p in written if p not in dropped]
    return written


def _trim(runs_dir: Path, keep: int) -> set[Path]:
    """Delete all but the newest ``keep`` runs of a config folder (by the records' start time, then name)."""
    files = sorted(runs_dir.glob("*.json"), key=lambda f: (load_record(f).started_utc, f.name))
    dropped = set(files[:-keep]) if len(files) > keep else set()
    for f in dropped:
        f.unlink()
    return dropped


def _swap_in(new: Path, dest: Path) -> None:
    """Put folder ``new`` at ``dest``: the old one is renamed aside, then deleted once ``new`` is in place."""
    if not dest.exists():
        new.rename(dest)
        return
    old = Path(tempfile.mkdtemp(prefix=".runs.old-", dir=dest.parent)) / dest.name
    dest.rename(old)
    try:
        new.rename(dest)
    except BaseException:
        old.rename(dest)
        raise
    shutil.rmtree(old.parent, ignore_errors=True)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "run"


def _env_dirs(store: Path) -> list[Path]:
    return sorted(p.parent for p in store.glob("*/env.json"))


def _read_env_key(env_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((env_dir / "env.json").read_text()).get("env_key", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        raise UsageError(f"{env_dir / 'env.json'}: unreadable baseline store entry") from None


def _read_identity(cfg_dir: Path) -> dict[str, Any]:
    try:
        identity = json.loads((cfg_dir / "config.json").read_text()).get("identity", {})
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise UsageError(f"{cfg_dir / 'config.json'}: unreadable baseline store entry") from None
    if not isinstance(identity, dict):
        raise UsageError(f"{cfg_dir / 'config.json'}: unreadable baseline store entry")
    return identity


def how_to_create(store: Path) -> str:
    return f"create one with: deploybench baseline save RECORDS... --dir {store} (on this machine)"


def find_baseline(
    store: Path, current: Sequence[RunRecord], *, force: bool = False
) -> tuple[list[RunRecord], list[str]]:
    """Baseline runs for each (environment, config) of the current records."""
    notes: list[str] = []
    out: list[RunRecord] = []
    seen: set[Path] = set()
    for cur in current:
        ident = config_identity(cur)
        eh = env_hash(cur.env)
        env_dirs = [store / eh] if (store / eh / "env.json").is_file() else []
        if not env_dirs:
            others = _env_dirs(store)
            nearest = min(others, key=lambda d: len(env_mismatch(_read_env_key(d), cur.env)), default=None)
            detail = ""
            if nearest is not None:
                diff = env_mismatch(_read_env_key(nearest), cur.env)
                detail = "; nearest saved environment differs in " + "; ".join(
                    f"{k}: {a!r} vs {b!r}" for k, (a, b) in diff.items()
                )
            if not force or nearest is None:
                raise IncomparableError(
                    f"no baseline for this environment ({_describe_env(cur.env)}) in {store}{detail}; "
                    + how_to_create(store)
                    + ("" if nearest is None else " (or --force to use another environment's)")
                )
            notes.append(f"forced: baseline from another environment ({nearest.name}){detail}")
            env_dirs = sorted(others, key=lambda d: len(env_mismatch(_read_env_key(d), cur.env)))
        folder = None
        for env_dir in env_dirs:
            candidate = env_dir / config_folder(ident) / "runs"
            if candidate.is_dir():
                folder = candidate
                break
        if folder is None:
            saved = [p.parent for d in env_dirs for p in d.glob("*/config.json")]
            if force and len(saved) == 1:
                folder = saved[0] / "runs"
                notes.append(f"forced: baseline of another config ({saved[0].name})")
            else:
                closest = ""
                if saved:
                    diffs = [identity_diff(_read_identity(p), ident) for p in saved]
                    best = min(diffs, key=len)
                    closest = "; closest saved config differs in " + "; ".join(
                        f"{k}: {a!r} vs {b!r}" for k, (a, b) in best.items()
                    )
                raise IncomparableError(
                    f"no baseline for config ({describe_identity(ident)}) in {env_dirs[0]}{closest}; "
                    + how_to_create(store)
                )
        if folder not in seen:
            seen.add(folder)
            files = sorted(folder.glob("*.json"))
            if not files:
                raise IncomparableError(f"{folder}: baseline folder has no records; " + how_to_create(store))
            out.extend(load_record(f) for f in files)
    return out, notes


def _describe_env(env: dict[str, Any]) -> str:
    key = env_key(env)
    return ", ".join(f"{k}={v}" for k, v in key.items() if k in ("cpu_model", "cpu_count", "python", "torch"))


def resolve_baseline(
    paths: Sequence[str | Path], current: Sequence[RunRecord], *, force: bool = False, last: int = 0
) -> tuple[list[RunRecord], list[str]]:
    """``--baseline``: one store folder (all its saved runs), or record files/folders (the ``last`` latest
    runs per config; 0: all)."""
    paths = [Path(p) for p in paths]
    missing = [p for p in paths if not p.exists()]
    if missing:
        store = missing[0]
        raise UsageError(f"baseline {store}: no such file or folder; " + how_to_create(store))
    if len(paths) == 1 and is_store(paths[0]):
        return find_baseline(paths[0], current, force=force)
    if any(is_store(p) for p in paths):
        raise UsageError("--baseline: give one baseline store folder, or record files/folders, not both")
    records, notes = load_inputs(paths)
    records, latest_notes = latest_runs(records, last, "baseline")
    return records, notes + latest_notes


def render_store(store: Path, this_env: str) -> str:
    lines = [f"baseline store {store}"]
    for env_dir in _env_dirs(store):
        mark = "  <- this machine" if env_dir.name == this_env else ""
        lines.append(f"env {env_dir.name}{mark}")
        lines.append("  " + ", ".join(f"{k}={v}" for k, v in _read_env_key(env_dir).items()))
        for cfg in sorted(p.parent for p in env_dir.glob("*/config.json")):
            files = sorted((cfg / "runs").glob("*.json"))
            lines.append(f"  {cfg.name}: {len(files)} run(s)")
            for f in files:
                r = load_record(f)
                git = r.env.get("git") or {}
                commit = (git.get("commit") or "?")[:10] + ("+dirty" if git.get("dirty") else "")
                lines.append(f"    {r.run_id}  {r.started_utc}  commit {commit}  {len(r.series)} series")
    return "\n".join(lines) + "\n"
