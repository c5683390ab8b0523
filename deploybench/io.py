"""Small I/O helpers every layer shares: one atomic writer, one JSON-object reader, one CPU-list parser, one
comma-separated-list splitter and the UTC time stamps.

Parsers raise ValueError with a message meant for the user; argument parsing turns it into a usage error.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deploybench.errors import UsageError


# -- writing ---------------------------------------------------------------------------------------------
def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, renamed over ``path``.

    A reader sees the old file or the new one, never half of one. ``fsync`` also flushes the data to disk
    before the rename (model artifacts and their manifest: a crash must not leave a renamed empty file).
    The file gets the usual permissions (0666 less the umask), not mkstemp's 0600. Creates parent folders.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """``data`` as indented JSON (NaN refused), atomically (``write_atomic``)."""
    return write_atomic(path, json.dumps(data, indent=1, sort_keys=False, allow_nan=False) + "\n")


# -- reading ---------------------------------------------------------------------------------------------
def read_json_object(path: str | os.PathLike[str], what: str = "deploybench run record") -> dict[str, Any]:
    """A JSON object from ``path``, or a UsageError naming the file and the problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder, not a file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a {what}")
    return data


# -- parsing ---------------------------------------------------------------------------------------------
def parse_csv(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (items stripped, empty ones dropped; ``""`` -> ``[]``)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_cpu_list(text: str) -> list[int]:
    """``"0,2-3"`` -> ``[0, 2, 3]``: sorted, without duplicates. ValueError for bad or empty lists."""
    out: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-", 1)
                out.update(range(int(lo), int(hi) + 1))
            elif part:
                out.add(int(part))
    except ValueError:
        raise ValueError(f"expected CPU ids like '0,2-3', got {text!r}") from None
    if not out:
        raise ValueError("empty CPU list")
    return sorted(out)


def parse_host_port(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``[::1]:5557`` for IPv6) -> (host, port), port 0..65535 in digits. ValueError
    otherwise."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r}: write HOST:PORT, e.g. 127.0.0.1:5557")
    return host.strip("[]"), int(port)


# -- time stamps -----------------------------------------------------------------------------------------
def utc_now() -> str:
    """Now in UTC, ISO 8601 with microseconds: ``2026-11-28T01:50:11.123456Z`` (records, manifests)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_stamp(utc: str | None = None) -> str:
    """The compact form for file and folder names, ``20261128T015011Z``, of ``utc`` (a ``utc_now()``
    string) or of now."""
    utc = utc_now() if utc is None else utc
    return utc.replace("-", "").replace(":", "").split(".")[0] + "Z"
