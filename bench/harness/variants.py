"""Gateway variants: the gateway rows measured once per set of options, side by side
(``--variant LABEL=ARGS``; ``--isolation-cost`` is a preset), and what each variant costs
against the first one, the reference.

A :class:`Variant` is a label and extra gateway options (added after ``--gateway-args``).
With variants, every gateway row of the plan becomes one row per variant (``Row.variant``;
shown as ``project-wsgi/LABEL``), each on its own processes and nginx port, measured in the
same interleaved rounds as the other rows; every other round runs the rows in reverse
order (A B, B A, A B, ...), so that neither variant always follows the other. Peers
(uWSGI, ...) are measured once, as without variants.

:func:`variant_costs` pairs each variant's rounds with the reference's rounds of the same
scenario and backend and gives, per round, the variant's CPU time per request ÷ the
reference's (the gateway's master + workers, from ``/proc/PID/stat``) and its req/s ÷ the
reference's; :func:`cost_table` shows the median of those ratios with their min and max.
CPU per request is the number to read: other jobs on the machine barely move it, while
they move req/s by tens of percent. ``--instructions`` counts each variant too
(instructions.py), a second, timing-free measure of the same difference.
"""

from __future__ import annotations

import shlex
import statistics
from dataclasses import dataclass
from typing import Any

from .results import Row, Sample


@dataclass(frozen=True)
class Variant:
    label: str
    args: tuple[str, ...] = ()


def parse_variant(text: str) -> Variant:
    """``LABEL=ARGS`` (ARGS one shell-quoted string, may be empty) -> a :class:`Variant`."""
    label, sep, args = text.partition("=")
    if not sep or not label or "/" in label or any(c.isspace() for c in label):
        raise ValueError(f"--variant {text!r}: expected LABEL=ARGS, LABEL without spaces or '/'")
    return Variant(label, tuple(shlex.split(args)))


#: ``--isolation-cost``: the default isolation layer against no checkers at all (issue 15's
#: cost target), on hello world (sync worker) and the Flask and Django views.
ISOLATION_COST = (Variant("checkers-none", ("--isolation-checkers", "none")), Variant("default"))
ISOLATION_COST_SCENARIOS = ("hello", "flask", "django")
ISOLATION_COST_ROWS = ("project-wsgi",)


@dataclass
class Cost:
    """One variant row against the reference variant's row (same scenario and backend)."""

    scenario: str
    backend: str
    variant: str
    reference: str
    cpu_us: float | None  # the variant's CPU time per request, median over its rounds
    rps: float | None  # its req/s, median over its rounds
    cpu_ratios: list[float]  # per round: its CPU/request ÷ the reference's in that round
    rps_ratios: list[float]  # per round: its req/s ÷ the reference's in that round


def reference_variant(meta: dict[str, Any]) -> str | None:
    """The reference of a run: its first variant (``meta["variants"]``: label -> options)."""
    return next(iter(meta.get("variants") or {}), None)


def _cpu_us(sample: Sample) -> float | None:
    return sample.cpu_s / sample.requests * 1e6 if sample.cpu_s and sample.requests else None


def variant_costs(rows: list[Row], reference: str | None = None) -> list[Cost]:
    """A :class:`Cost` for each variant row (the reference's own rows included, with no
    ratios); ``reference`` defaults to the first variant among ``rows``."""
    varied = [r for r in rows if r.variant]
    if not varied:
        return []
    reference = reference or varied[0].variant
    refs = {(r.scenario, r.backend): r for r in varied if r.variant == reference}
    costs = []
    for row in varied:
        ref = refs.get((row.scenario, row.backend))
        if ref is None:
            continue
        cpu, rps = [], []
        if row is not ref:
            for mine, theirs in zip(row.samples, ref.samples, strict=False):  # the same round
                a, b = _cpu_us(mine), _cpu_us(theirs)
                if a is not None and b:
                    cpu.append(a / b)
                if mine.rps and theirs.rps:
                    rps.append(mine.rps / theirs.rps)
        costs.append(
            Cost(row.scenario, row.backend, row.variant, reference, row.cpu_us_per_request, row.rps, cpu, rps)
        )
    return costs


def relative(ratio: float) -> str:
    """A ratio as a signed change: 1.023 -> ``+2.3%``."""
    return f"{(ratio - 1) * 100:+.1f}%"


def _spread(ratios: list[float]) -> list[str]:
    if not ratios:
        return ["-", "-", "-"]
    return [relative(statistics.median(ratios)), relative(min(ratios)), relative(max(ratios))]


def cost_table(costs: list[Cost]) -> str:
    """A Markdown table: each variant's CPU/request and req/s, and their per-round ratios to
    the reference variant (median, min, max)."""
    ref = costs[0].reference
    head = (
        f"| scenario | backend | variant | rounds | CPU/req | CPU/req vs {ref} | min | max "
        f"| req/s | req/s vs {ref} | min | max |"
    )
    lines = [
        f"Variants against {ref}: CPU time per request of the gateway's processes and req/s, "
        "as ratios to the reference in the same round (median over the rounds, min, max)",
        "",
        head,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in costs:
        cpu = "-" if c.cpu_us is None else f"{c.cpu_us:.1f}us" if c.cpu_us < 1000 else f"{c.cpu_us:,.0f}us"
        rps = "-" if c.rps is None else f"{c.rps:,.0f}"
        if c.variant == c.reference:
            cells = [cpu, "(reference)", "", "", rps, "(reference)", "", ""]
            rounds = "-"
        else:
            cells = [cpu, *_spread(c.cpu_ratios), rps, *_spread(c.rps_ratios)]
            rounds = str(len(c.cpu_ratios))
        lines.append("| " + " | ".join([c.scenario, c.backend, c.variant, rounds, *cells]) + " |")
    return "\n".join(lines) + "\n"
