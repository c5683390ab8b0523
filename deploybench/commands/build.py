"""`deploybench build`: export every model x format once into the zoo, with a manifest.

deploybench build [--models a,b] [--formats x,y] [--weights resnet50=FILE] [--force] [--quiet]
                  [--zoo-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from deploybench import paths
from deploybench.errors import UsageError
from deploybench.io import parse_csv
from deploybench.targets.catalog import MODELS, manifest_path
from deploybench.targets.zoo import AgreementError, ParityError, build_zoo
from deploybench.vocabulary import MODEL_FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models", type=parse_csv, default=None, help=f"comma-separated subset of: {', '.join(MODELS)}"
    )
    parser.add_argument(
        "--formats",
        type=parse_csv,
        default=None,
        help=f"comma-separated subset of: {', '.join(MODEL_FORMATS)}",
    )
    parser.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="MODEL=FILE",
        help="torchvision-style state_dict file for resnet18/resnet50 (strict load); repeatable",
    )
    parser.add_argument("--force", action="store_true", help="rebuild artifacts that are up to date")
    parser.add_argument("--quiet", action="store_true", help="no per-artifact progress lines")
    parser.add_argument(
        "--zoo",
        "--zoo-dir",
        dest="zoo_dir",
        type=Path,
        default=None,
        help=f"output folder (default {paths.zoo_dir()}, or $DEPLOYBENCH_ZOO)",
    )


def parse_weights(items: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in items:
        model, sep, file = item.partition("=")
        if not sep or not model.strip() or not file.strip():
            raise UsageError(f"--weights expects MODEL=FILE, got {item!r}")
        if model.strip() in out:
            raise UsageError(f"--weights given twice for {model.strip()}")
        out[model.strip()] = Path(file.strip())
    return out


def _check_names(kind: str, given: list[str] | None, known: Any) -> None:
    if given is None:
        return
    if not given:
        raise UsageError(f"--{kind} is empty")
    unknown = [name for name in given if name not in known]
    if unknown:
        raise UsageError(f"unknown {kind} {', '.join(unknown)} (known: {', '.join(known)})")


def check_cells(entry: dict[str, Any]) -> tuple[str, str]:
    """(max|diff|, tolerance) of an artifact's build check: parity with the reference model, or for a
    quantized artifact the probability difference to its float32 source and its top-1 agreement >= floor."""
    if "agreement" in entry:
        a = entry["agreement"]
        return f"{a['max_abs_prob_diff']:.2e}", f"top1={a['top1_agreement']:.3f}>={a['top1_floor']:g}"
    return f"{entry['parity']['max_abs_diff']:.2e}", f"{entry['parity']['tolerance']:.0e}"


def format_table(result: dict[str, Any]) -> str:
    """The artifacts this build touched: model, format, size_bytes, export_s, max|diff|, tolerance (a
    quantized artifact: top-1 agreement with its float32 source >= the floor), status."""
    artifacts = result["manifest"]["artifacts"]
    status = {key: "built" for key in result["built"]} | {key: "up to date" for key in result["skipped"]}
    header = ("model", "format", "size_bytes", "export_s", "max|diff|", "tolerance", "status")
    rows = [header]

    def order(key: str) -> tuple[int, int]:
        model, fmt = key.split("/")
        return list(MODELS).index(model), MODEL_FORMATS.index(fmt)

    for key in sorted(status, key=order):
        e = artifacts[key]
        rows.append(
            (
                e["model"],
                e["format"],
                f"{e['size_bytes']:,}",
                f"{e['export_s']:.2f}",
                *check_cells(e),
                status[key],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {2, 3, 4, 5}
    lines = [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    _check_names("models", args.models, MODELS)
    _check_names("formats", args.formats, MODEL_FORMATS)
    weights = parse_weights(args.weights)
    _check_names("weights model", list(weights) or None, MODELS)

    def show(event: dict[str, Any]) -> None:
        where = f"{event['model']:<9} {event['format']:<11}"
        if event["event"] == "start":
            print(f"building   {where}", flush=True)
        elif event["event"] == "built":
            e = event["entry"]
            a = e.get("agreement")
            check = (
                f"top-1 agreement {a['top1_agreement']:.3f} (floor {a['top1_floor']:g}), "
                f"max|diff| {a['max_abs_prob_diff']:.1e}"
                if a
                else f"max|diff| {e['parity']['max_abs_diff']:.1e}"
            )
            print(
                f"built      {where} {e['size_bytes']:>12,} bytes  {e['export_s']:6.2f} s  {check}",
                flush=True,
            )
        else:
            print(f"up to date {where}", flush=True)

    try:
        result = build_zoo(
            args.zoo_dir,
            models=args.models,
            formats=args.formats,
            weights=weights,
            force=args.force,
            progress=None if args.quiet else show,
        )
    except ParityError as exc:
        check = "agreement" if isinstance(exc, AgreementError) else "parity"
        print(f"deploybench build: {check} check failed: {exc}", file=sys.stderr)
        return 1
    for key, reason in result.get("unavailable", {}).items():
        print(f"not built  {key}: {reason}")
    print(format_table(result))
    print(
        f"{len(result['built'])} built, {len(result['skipped'])} up to date in {result['wall_s']:.1f} s; "
        f"manifest {manifest_path(result['zoo_dir'])}"
    )
    return 0
