"""The results as text: the terminal table, the Markdown table, and the JSON file (which
``--report`` reads back).

Memory columns (MiB; see results.py): ``worker RSS idle`` / ``worker RSS after`` are the
largest worker process before the load and after this scenario, ``worker RSS growth`` its
peak since idle minus idle (the memory scenarios' number); ``procs`` and ``RSS sum
idle`` / ``RSS sum after`` are the backend's whole process tree (master + workers). A
``--variant`` run also writes each variant's cost against the reference (variants.py).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .results import RENAMED_FIELDS, Row, Sample
from .variants import reference_variant, variant_costs

COLUMNS = (
    "scenario",
    "backend",
    "req/s",
    "spread",
    "vs uWSGI",
    "p50",
    "p99",
    "CPU/req",
    "errors",
    "nginx errs",
    "worker RSS idle",
    "worker RSS after",
    "worker RSS growth",
    "procs",
    "RSS sum idle",
    "RSS sum after",
)


def table_cells(row: Row) -> list[str]:
    def ms(v: float | None) -> str:
        return "-" if v is None else (f"{v:.2f}ms" if v < 10 else f"{v:.1f}ms" if v < 100 else f"{v:.0f}ms")

    def mib(v: float | None, fmt: str = ".0f") -> str:
        return "-" if v is None else f"{v:{fmt}}M"

    if row.rps is None:  # the reason is printed below the table
        return [row.scenario, row.label, "FAILED", *["-"] * (len(COLUMNS) - 3)]
    ratio = "-" if row.ratio_to_uwsgi is None else f"{row.ratio_to_uwsgi:.2f}"
    return [
        row.scenario,
        row.label,
        f"{row.rps:.0f}" if row.rps >= 10 else f"{row.rps:.2f}",
        "-" if row.spread_pct is None else f"{row.spread_pct:.0f}%",
        ratio,
        ms(row.p50_ms),
        ms(row.p99_ms),
        "-" if row.cpu_us_per_request is None else f"{row.cpu_us_per_request:.0f}us",
        str(row.errors),
        str(row.nginx_errors),
        mib(row.rss_worker_idle_mib, ".1f"),
        mib(row.rss_worker_after_mib, ".1f"),
        mib(row.rss_worker_growth_mib, "+.1f"),
        str(row.processes or "-"),
        mib(row.rss_total_idle_mib),
        mib(row.rss_total_after_mib),
    ]


def print_table(rows: list[Row]) -> None:
    cells = [list(COLUMNS)] + [table_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    print()
    for i, line in enumerate(cells):
        if i > 0 and line[0] != cells[i - 1][0] and i > 1:
            print()
        print(
            "  ".join(
                c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(COLUMNS) - 2)) + "|",
    ]
    for r in rows:
        cells = table_cells(r)
        if r.backend.startswith("project-"):
            cells[1] = f"**{cells[1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def failures(rows: list[Row]) -> list[str]:
    """The rows that make the run fail: no numbers, or a client-visible error."""
    return [
        f"{r.scenario}/{r.label}: {r.status if r.rps is None else f'{r.errors} errors'}"
        for r in rows
        if r.rps is None or r.errors
    ]


def load_json(path: str) -> tuple[list[Row], dict[str, Any]]:
    """Rows and meta of a ``--json`` file (to print or chart it again with ``--report``);
    files of earlier versions (total RSS as ``rss_idle_mib``/``rss_after_mib``) load too."""
    data = json.loads(Path(path).read_text())
    names = set(Row.__dataclass_fields__)
    rows = []
    for item in data["results"]:
        item = {RENAMED_FIELDS.get(k, k): v for k, v in item.items()}
        row = Row(**{k: v for k, v in item.items() if k in names})
        row.samples = [Sample(**x) for x in item["samples"]]
        rows.append(row)
    return rows, data["meta"]


def write_json(rows: list[Row], path: str, args: argparse.Namespace) -> None:
    data = {
        "meta": {  # from --report: the measured run's own meta wins
            "command": args.command,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "conns": args.conns,
            "warmup": args.warmup,
            **args.meta,
        },
        "results": [{**asdict(r), "errors": r.errors, "spread_pct": r.spread_pct} for r in rows],
    }
    costs = variant_costs(rows, reference_variant(args.meta))
    if costs:  # --variant runs: each variant against the reference, per round (variants.py)
        data["costs"] = [asdict(c) for c in costs]
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
