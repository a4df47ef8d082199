"""The command line of ``bench/run``: its options (:func:`parse_args`) and :func:`main`,
which installs what is missing (then re-executes itself inside the bench venv), runs or
reloads the results, prints the table (and, with ``--variant``/``--isolation-cost``, the
cost of each variant), writes ``--json``/``--markdown``/``--chart``, and exits 1 when a
row failed or had a client-visible error.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

from . import ENTRY, REPO
from .backends import BACKEND, BACKENDS, PROJECT_ROWS, REFERENCE
from .chart import write_chart
from .environment import DEFAULT_VENV, ensure_system_tools, ensure_venv
from .instructions import count_instructions, instructions_table
from .report import failures, load_json, markdown_table, print_table, write_json
from .runner import run
from .scenarios import SCENARIO, SCENARIOS, TINY_SCENARIOS
from .variants import (
    ISOLATION_COST,
    ISOLATION_COST_ROWS,
    ISOLATION_COST_SCENARIOS,
    cost_table,
    parse_variant,
    reference_variant,
    variant_costs,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmark fcgi-gateway against its peers behind one nginx (docs/benchmarks.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios:\n"
        + "\n".join(f"  {s.name:15} {s.description}" for s in SCENARIOS)
        + "\nrows:\n"
        + "\n".join(f"  {b.name:20} {b.description}" for b in BACKENDS),
    )
    ap.add_argument("--scenarios", help="comma-separated scenarios (default: all; --tiny: hello ones)")
    ap.add_argument("--only", help="comma-separated rows (backends) to measure (default: all)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per scenario (default 5)")
    ap.add_argument("--seconds", type=float, default=3, help="length of one load run (default 3)")
    ap.add_argument(
        "--warmup", type=float, default=1, help="unmeasured run per row before the rounds (default 1)"
    )
    ap.add_argument("--conns", type=int, default=32, help="concurrent connections (wrk -t1 -cN; default 32)")
    ap.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (auto: wrk when installed)",
    )
    ap.add_argument(
        "--instructions",
        type=int,
        metavar="N",
        help="instead of load runs: count the instructions per request of each row under valgrind, "
        "over N requests (hello, hello-keepconn, flask, django; docs/benchmarks.md)",
    )
    ap.add_argument("--json", metavar="FILE", help="write machine-readable results here")
    ap.add_argument("--markdown", metavar="FILE", help="write the table as Markdown here")
    ap.add_argument(
        "--chart",
        metavar="FILE.png",
        help="write a bar chart of req/s (memory scenarios: worker RSS growth; needs matplotlib)",
    )
    ap.add_argument("--report", metavar="FILE.json", help="measure nothing: print (and chart) a --json file")
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="smoke run: 1 round of 1 s, hello scenarios, gateway rows (+ uwsgi when installed)",
    )
    ap.add_argument(
        "--python", help="interpreter whose installed servers are benchmarked (implies --no-install)"
    )
    ap.add_argument(
        "--no-install",
        action="store_true",
        help="install nothing: use --python (default: this interpreter) and what it has",
    )
    ap.add_argument(
        "--venv", default=DEFAULT_VENV, help="bench venv (default $FCGI_BENCH_VENV or %(default)s)"
    )
    ap.add_argument(
        "--project",
        type=Path,
        default=REPO,
        help="checkout whose gateway is measured (default: this one); e.g. a `git worktree` of another "
        "revision, to compare two",
    )
    ap.add_argument(
        "--gateway-args",
        type=shlex.split,
        default=[],
        help="extra options for the gateway rows, one quoted string (e.g. '--isolation-checkers none')",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=ARGS",
        help="measure every gateway row once per variant: LABEL names it, ARGS are gateway options "
        "(one quoted string, may be empty; after --gateway-args); repeatable, the first is the "
        "reference the others' CPU/request and req/s are compared to, round by round",
    )
    ap.add_argument(
        "--isolation-cost",
        action="store_true",
        help="the isolation layer's cost: --variant checkers-none='--isolation-checkers none' "
        "--variant default= (then any other --variant), on --scenarios "
        f"{','.join(ISOLATION_COST_SCENARIOS)} --only {','.join(ISOLATION_COST_ROWS)} unless given "
        "(add uwsgi to --only for the ratio to uWSGI)",
    )
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="start the backends anew before every round (after the first), each warmed up again: "
        "rounds then sample several processes, not one (a process's memory layout and hash seed "
        "move its CPU time per request for its whole life); the memory columns then mix the first "
        "and the last processes: do not read them",
    )
    ap.add_argument("--startup-timeout", type=float, default=60, help="seconds for the backends to come up")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    args = ap.parse_args(argv)
    try:
        args.variants = [parse_variant(v) for v in args.variant]
    except ValueError as exc:
        ap.error(str(exc))
    if args.isolation_cost:
        args.variants = [*ISOLATION_COST, *args.variants]
        args.scenarios = args.scenarios or ",".join(ISOLATION_COST_SCENARIOS)
        args.only = args.only or ",".join(ISOLATION_COST_ROWS)
    labels = [v.label for v in args.variants]
    if len(set(labels)) != len(labels):
        ap.error(f"--variant labels must differ: {', '.join(labels)}")
    if args.tiny:
        args.rounds, args.seconds, args.warmup = 1, 1.0, min(args.warmup, 0.5)
        args.scenarios = args.scenarios or ",".join(TINY_SCENARIOS)
        args.only = args.only or ",".join((*PROJECT_ROWS, REFERENCE))
    args.scenarios = args.scenarios or ",".join(s.name for s in SCENARIOS)
    args.only = args.only or ""
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in args.scenarios if s not in SCENARIO]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIO)}")
    args.only = [b for b in args.only.split(",") if b]
    unknown = [b for b in args.only if b not in BACKEND]
    if unknown:
        ap.error(f"unknown row(s) {', '.join(unknown)}; known: {', '.join(BACKEND)}")
    if args.python or args.report:
        args.no_install = True
    args.project = args.project.resolve()
    if not (args.project / "gateway" / "__init__.py").exists():
        ap.error(f"--project {args.project}: no gateway package there")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.command = os.environ.get("FCGI_BENCH_COMMAND") or shlex.join(["bench/run", *argv])
    if not args.no_install:
        ensure_system_tools(need_wrk=args.client != "python", need_valgrind=bool(args.instructions))
        python = ensure_venv(Path(args.venv))
        if os.path.realpath(sys.prefix) != os.path.realpath(args.venv):
            # Go on inside the venv (matplotlib for --chart is there).
            env = {**os.environ, "FCGI_BENCH_COMMAND": args.command}
            os.execve(python, [python, str(ENTRY), *argv, "--no-install"], env)
        args.python = python
    args.python = args.python or sys.executable
    if args.instructions:
        counts = count_instructions(args)
        table = instructions_table(counts, args.variants[0].label if args.variants else None)
        print(table)
        if args.markdown:
            Path(args.markdown).write_text(table)
        if args.json:
            Path(args.json).write_text(json.dumps([asdict(c) for c in counts], indent=1) + "\n")
        return 1 if any(c.per_request is None for c in counts) else 0
    if args.report:
        rows, args.meta = load_json(args.report)
    else:
        rows = run(args)
    print_table(rows)
    costs = variant_costs(rows, reference_variant(args.meta))
    if costs:
        print("\n" + cost_table(costs), end="")
    if args.json:
        write_json(rows, args.json, args)
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(rows) + ("\n" + cost_table(costs) if costs else ""))
    if args.chart:
        write_chart(rows, args.chart, args.meta)
    bad = failures(rows)
    if bad:
        print("\nFAILED rows (errors must be 0): " + "; ".join(bad), file=sys.stderr)
        return 1
    return 0
