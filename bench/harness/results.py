"""The numbers of a run: :class:`Sample` (one load run against one port) and :class:`Row`
(one scenario x backend, or x backend x variant when gateway options are compared: its
samples, their summary, and the backend's memory).

Memory fields, all in MiB, from ``/proc`` (see procs.py): ``processes`` and the
``rss_total_*`` sums cover the backend's whole process tree (master + workers);
``rss_worker_*`` are the largest *worker* process (the one that serves requests: the
master's children, or the single process of a one-process server). ``rss_worker_peak_mib``
is the highest worker RSS seen since the idle reading (VmHWM, reset at the idle reading,
and sampling during memory scenarios); ``rss_worker_growth_mib`` = peak - idle.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Sample:
    """One load run against one port."""

    rps: float
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    non2xx: int
    socket_errors: int
    cpu_s: float | None = None  # CPU time (user + system) the backend's processes used during the run


@dataclass
class Row:
    scenario: str
    backend: str
    protocol: str
    interface: str
    workers: int
    keep_conn: bool
    app: str
    command: list[str] = field(default_factory=list)
    status: str = "ok"  # "ok", or why the row has no numbers
    samples: list[Sample] = field(default_factory=list)
    rps: float | None = None
    ratio_to_uwsgi: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    non2xx: int = 0
    socket_errors: int = 0
    processes: int | None = None  # processes in the backend's tree after the load
    rss_total_idle_mib: float | None = None  # sum over those processes, before any load
    rss_total_after_mib: float | None = None  # ... and after this scenario's load
    rss_worker_idle_mib: float | None = None  # the largest worker process, before any load
    rss_worker_after_mib: float | None = None  # ... and after this scenario's load
    rss_worker_peak_mib: float | None = None  # the highest worker RSS since the idle reading
    rss_worker_growth_mib: float | None = None  # peak - idle
    nginx_errors: int = 0  # [error] lines nginx logged for this row's port during its load
    cpu_us_per_request: float | None = None  # median over the rounds
    variant: str = ""  # a gateway row's --variant label ("" when the run has no variants)

    @property
    def label(self) -> str:
        """The row's name in tables: the backend, with its variant (``project-wsgi/default``)."""
        return f"{self.backend}/{self.variant}" if self.variant else self.backend

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors

    @property
    def spread_pct(self) -> float | None:
        """(fastest round - slowest round) / median, in %: how much the machine drifted."""
        if not self.samples or not self.rps:
            return None
        values = [s.rps for s in self.samples]
        return (max(values) - min(values)) / self.rps * 100

    def summarize(self) -> None:
        if not self.samples:
            return
        self.rps = statistics.median(s.rps for s in self.samples)
        self.p50_ms = median([s.p50_ms for s in self.samples])
        self.p99_ms = median([s.p99_ms for s in self.samples])
        self.non2xx = sum(s.non2xx for s in self.samples)
        self.socket_errors = sum(s.socket_errors for s in self.samples)
        self.cpu_us_per_request = median(
            [s.cpu_s / s.requests * 1e6 if s.cpu_s is not None and s.requests else None for s in self.samples]
        )


#: JSON keys of earlier runs -> today's field names (``--report`` of an old file).
RENAMED_FIELDS = {"rss_idle_mib": "rss_total_idle_mib", "rss_after_mib": "rss_total_after_mib"}


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None
