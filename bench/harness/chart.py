"""The chart (``--chart FILE.png``): one panel of horizontal bars per scenario, the
gateway rows in blue, uWSGI in orange, the other peers in grey. Throughput scenarios show
req/s (with the ratio to uWSGI and the CPU per request); memory scenarios show the
worker's RSS growth in MiB. Needs matplotlib (in the bench venv); without it, no chart.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

from .backends import REFERENCE
from .results import Row
from .scenarios import SCENARIO, SCENARIOS

GROWTH_MARK_MIB = 16.0  # the memory panels draw this line (the project's target: growth below it)


def _value(row: Row) -> float | None:
    """What a bar shows: req/s, or for a memory scenario the worker's RSS growth."""
    if SCENARIO[row.scenario].kind == "memory":
        return None if row.rss_worker_growth_mib is None else max(row.rss_worker_growth_mib, 0.0)
    return row.rps or None


def _note(row: Row) -> str:
    if SCENARIO[row.scenario].kind == "memory":
        assert row.rss_worker_growth_mib is not None
        note = f"+{row.rss_worker_growth_mib:,.1f} MiB"
        return note + (f"  (idle {row.rss_worker_idle_mib:.1f} MiB)" if row.rss_worker_idle_mib else "")
    assert row.rps is not None
    note = f"{row.rps:,.0f}" + (f"  ({row.ratio_to_uwsgi:.2f}x)" if row.ratio_to_uwsgi else "")
    if row.cpu_us_per_request is not None:
        note += f"  {row.cpu_us_per_request:,.0f} us CPU/req"
    return note


def write_chart(rows: list[Row], path: str, meta: dict[str, Any]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed in {sys.executable}: no chart", file=sys.stderr)
        return
    names = [s.name for s in SCENARIOS if any(r.scenario == s.name and _value(r) is not None for r in rows)]
    if not names:
        return
    ncols = 2 if len(names) > 1 else 1
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 0.32 * 9 * nrows + 0.8), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        sc_rows = [r for r in rows if r.scenario == name and _value(r) is not None][::-1]
        values = [_value(r) or 0.0 for r in sc_rows]
        colors = [
            "#1f77b4"
            if r.backend.startswith("project-")
            else "#ff7f0e"
            if r.backend == REFERENCE
            else "#9a9a9a"
            for r in sc_rows
        ]
        bars = ax.barh([r.label for r in sc_rows], values, color=colors)
        top = max(values) or 1.0
        for bar, r in zip(bars, sc_rows, strict=True):
            ax.text(
                bar.get_width() + top * 0.01,
                bar.get_y() + bar.get_height() / 2,
                _note(r),
                va="center",
                fontsize=7,
            )
        ax.set_title(f"{name}: {SCENARIO[name].title}", fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        if SCENARIO[name].kind == "memory":
            ax.set_xlim(0, max(top * 1.6, GROWTH_MARK_MIB * 1.25))
            ax.axvline(GROWTH_MARK_MIB, color="#d62728", linestyle="--", linewidth=0.8)
            ax.set_xlabel(
                f"worker RSS growth, MiB (peak since idle - idle); dashed: {GROWTH_MARK_MIB:g} MiB",
                fontsize=7,
            )
        else:
            ax.set_xlim(0, top * 1.6)
            ax.set_xlabel(
                "req/s (median of rounds); (x) = ratio to uWSGI; backend CPU per request", fontsize=7
            )
    fig.suptitle(
        f"fcgi-gateway vs peers behind nginx, {meta.get('nproc')} CPUs, {meta.get('date', '')}", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    print(f"chart: {path} ({os.path.getsize(path) // 1024} KiB)")
