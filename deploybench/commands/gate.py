"""`deploybench gate`: compare current records with a baseline under rules; exit 1 on a regression.
The rule and significance options are shared with `deploybench ab`. Significance comes from runs (2+ on a
side), else from time blocks within one run (which cannot see drift between the runs: said in the output);
see ``deploybench.decisions.gate.judge``."""

from __future__ import annotations

import argparse
from pathlib import Path

from deploybench.decisions.gate.baseline import DEFAULT_BASELINE, resolve_baseline
from deploybench.decisions.gate.judge import gate
from deploybench.decisions.gate.matching import latest_runs, load_inputs
from deploybench.decisions.gate.rules import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_RULES,
    Rule,
    check_confidence,
    load_rules_file,
    parse_rules,
)
from deploybench.errors import UsageError
from deploybench.paths import results_dir
from deploybench.reports.gate_render import render_table, write_outputs
from deploybench.verdicts import DEFAULT_CONFIDENCE


def add_rule_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``gate`` and ``ab``."""
    g = parser.add_argument_group("rules and significance")
    g.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="RULE",
        help="METRIC:CHANGE, repeatable, e.g. p99:+10%%, p95:+5ms, throughput:-5%%, error_ratio:+1pp "
        f"(default: {' '.join(DEFAULT_RULES).replace('%', '%%')})",
    )
    g.add_argument("--rules-file", metavar="FILE", help='TOML or JSON: rules = ["p99:+10%%", ...]')
    g.add_argument(
        "--confidence",
        type=float,
        default=None,
        help="CI level (default 0.95); 1 - confidence is the family-wise one-sided false-alarm level over "
        "all rules x series (Holm)",
    )
    g.add_argument(
        "--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples (default 2000)"
    )
    g.add_argument("--seed", type=int, default=0, help="bootstrap seed (verdicts are deterministic per seed)")
    g.add_argument("--force", action="store_true", help="compare different configs/environments (noted)")
    g.add_argument("--series", action="append", default=[], metavar="GLOB", help="only series matching GLOB")
    g.add_argument(
        "--markdown", metavar="FILE", help="also write the table as Markdown (e.g. $GITHUB_STEP_SUMMARY)"
    )
    g.add_argument("--json", dest="json_out", metavar="FILE", help="also write the result as JSON")


def rules_from_args(args: argparse.Namespace) -> tuple[list[Rule], float]:
    rules: list[Rule] = []
    confidence: float | None = None
    if args.rules_file:
        rules, confidence = load_rules_file(args.rules_file)
    if args.rule:
        rules = parse_rules([*(r.text for r in rules), *args.rule])
    if not rules:
        rules = parse_rules(DEFAULT_RULES)
    if args.confidence is not None:
        confidence = check_confidence(args.confidence)
    if not 100 <= args.bootstrap <= 100_000:
        raise UsageError(f"--bootstrap must be between 100 and 100000; got {args.bootstrap}")
    return rules, confidence if confidence is not None else DEFAULT_CONFIDENCE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--baseline",
        nargs="+",
        default=[DEFAULT_BASELINE],
        metavar="PATH",
        help="a baseline store (deploybench baseline save) or record files/folders (default: baselines)",
    )
    parser.add_argument(
        "--current",
        nargs="+",
        default=None,
        metavar="PATH",
        help="current record files or folders (default: $DEPLOYBENCH_RESULTS/bench, i.e. results/bench)",
    )
    parser.add_argument(
        "--last",
        type=int,
        default=1,
        metavar="N",
        help="per config, use the latest N current runs (and baseline record files); 0: all (default 1)",
    )
    add_rule_arguments(parser)


def run(args: argparse.Namespace) -> int:
    rules, confidence = rules_from_args(args)
    current_paths = args.current or [results_dir() / "bench"]
    missing = [str(p) for p in current_paths if not Path(p).exists()]
    if missing:
        raise UsageError(
            f"no current records at {', '.join(missing)}: run a measurement first (nox -s bench, "
            "deploybench load) or pass --current FILES"
        )
    loaded, notes = load_inputs(current_paths)
    current, latest_notes = latest_runs(loaded, args.last, "current")
    baseline, base_notes = resolve_baseline(args.baseline, current, force=args.force, last=args.last)
    notes += latest_notes + base_notes
    result = gate(
        baseline,
        current,
        rules,
        force=args.force,
        confidence=confidence,
        n_boot=args.bootstrap,
        seed=args.seed,
        series_filter=args.series,
        notes=notes,
    )
    print(render_table(result), end="")
    write_outputs(result, args.markdown, args.json_out)
    return result.exit_code
