"""How reproducible is the main job: read several ``compare.json`` runs of the same matrix and print, per
choice, each run's max rate under the SLO with its 95 % interval, its distance to the median of the runs,
whether each run's interval contains the other runs' estimates, and each run's verdict.

    python -m tests.measurements.compare_runs results/compare/<run1> results/compare/<run2> ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any


def figures(doc: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
    """{choice label: (estimate, lo, hi)} of one compare document (choices without repeats left out)."""
    out: dict[str, tuple[float, float, float]] = {}
    for r in doc["results"]:
        rep = (r.get("saturation") or {}).get("repeats") or {}
        if rep.get("center_rps"):
            out[r["label"]] = (rep["center_rps"], rep["lo_rps"], rep["hi_rps"])
    return out


def summarize(docs: list[dict[str, Any]]) -> dict[str, Any]:
    runs = [figures(d) for d in docs]
    labels = sorted(set().union(*runs), key=lambda k: -statistics.median(r[k][0] for r in runs if k in r))
    choices = []
    within = contained = pairs = 0
    for label in labels:
        got = [r.get(label) for r in runs]
        estimates = [g[0] for g in got if g]
        med = statistics.median(estimates)
        devs = [round(100 * (e / med - 1), 1) for e in estimates]
        within += sum(abs(d) <= 10 for d in devs)
        misses = []
        for i, gi in enumerate(got):
            for j, gj in enumerate(got):
                if i != j and gi and gj:
                    pairs += 1
                    if gi[1] <= gj[0] <= gi[2]:
                        contained += 1
                    else:
                        misses.append(f"run {i + 1}'s interval misses run {j + 1}'s estimate")
        choices.append({
            "choice": label, "estimates_rps": [round(e) for e in estimates],
            "intervals_rps": [[round(g[1]), round(g[2])] if g else None for g in got],
            "median_rps": round(med), "vs_median_percent": devs, "misses": misses,
        })  # fmt: skip
    n = sum(len(c["estimates_rps"]) for c in choices)
    return {
        "choices": choices,
        "within_10_percent_of_median": f"{within} of {n}",
        "intervals_containing_other_runs_estimates": f"{contained} of {pairs}",
        "verdicts": [d.get("verdict") for d in docs],
        "wall_s": [round(d.get("wall_s") or 0) for d in docs],
        "commits": sorted({(d.get("env") or {}).get("git", {}).get("commit", "?") for d in docs}),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.measurements.compare_runs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("runs", nargs="+", type=Path, help="compare result folders (or their compare.json)")
    args = p.parse_args(argv)
    docs = [json.loads((r / "compare.json" if r.is_dir() else r).read_text()) for r in args.runs]
    json.dump(summarize(docs), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
