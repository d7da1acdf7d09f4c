"""``python -m bench``: list the scenarios, run one, compare two reports.

Exit status of ``run``: 0 when the run completed, whatever the figures (with
``--strict``, 1 when a check failed); 3 when the node could not be started or
reached; 130 when interrupted. ``compare``: 1 when B regresses beyond a threshold.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_NODE = 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="edge-node benchmark suite",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2] if __doc__ else None,
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("list", help="the scenarios, one a line, name first")

    run = verbs.add_parser("run", help="run a scenario and write a report")
    run.add_argument("--scenario", required=True, help="a name from `python -m bench list`")
    run.add_argument(
        "--seconds", type=float, default=None, help="seconds per run (default: the scenario's)"
    )
    run.add_argument(
        "--runs",
        type=int,
        default=None,
        help="repetitions; figures are medians over them (default 3; smoke: 1)",
    )
    run.add_argument("--target", help="drive the node at this URL instead of starting one")
    run.add_argument("--out", required=True, type=Path, help="directory for the report")
    run.add_argument(
        "--warmup",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wait this long after the node streams, before run 1 (default 2)",
    )
    run.add_argument("--no-peer", action="store_true", help="skip the peer (ffmpeg) runs")
    run.add_argument("--strict", action="store_true", help="exit 1 when a check failed")

    cmp = verbs.add_parser("compare", help="compare report B against report A")
    cmp.add_argument("a", help="report dir (or report.json) of the baseline")
    cmp.add_argument("b", help="report dir (or report.json) to judge")
    return p


def _list() -> int:
    from bench.scenarios import discover

    scenarios = discover()
    width = max(len(name) for name in scenarios)
    for name, s in scenarios.items():
        print(f"{name:<{width}}  {s.description}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from bench import runner
    from bench.node import NodeStartError
    from bench.scenarios import get

    try:
        scenario = get(args.scenario)
    except KeyError as exc:
        print(f"bench: {exc.args[0]}", file=sys.stderr)
        return 2
    seconds = args.seconds if args.seconds is not None else scenario.default_seconds
    runs = args.runs if args.runs is not None else scenario.default_runs
    if seconds <= 0 or runs < 1:
        print("bench: --seconds must be > 0 and --runs >= 1", file=sys.stderr)
        return 2
    try:
        suite = asyncio.run(
            runner.run_suite(
                scenario,
                seconds,
                runs,
                args.out,
                target=args.target,
                with_peer=not args.no_peer,
                warmup_s=args.warmup if args.warmup is not None else runner.WARMUP_S,
            )
        )
    except NodeStartError as exc:
        print(f"bench: the node could not be started or reached: {exc}", file=sys.stderr)
        return EXIT_NODE
    except KeyboardInterrupt:
        print("bench: interrupted; every process the bench started was stopped", file=sys.stderr)
        return 130
    plots = runner.write_report(suite, args.out)
    print(
        f"report: {args.out / 'report.json'}, {args.out / 'report.md'}, plots: {', '.join(plots)}"
    )
    failed = [c for r in suite.runs for c in r.checks if not c.ok]
    if failed:
        print(f"bench: {len(failed)} check(s) failed (see report.md)", file=sys.stderr)
        if args.strict:
            return 1
    return 0


def _compare(args: argparse.Namespace) -> int:
    from bench.compare import has_regression, load_report, render

    try:
        a, b = load_report(args.a), load_report(args.b)
    except (OSError, ValueError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    print(render(str(args.a), str(args.b), a, b))
    return 1 if has_regression(a, b) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.verb == "list":
        return _list()
    if args.verb == "run":
        return _run(args)
    return _compare(args)
