"""Memory checker: RSS growth per request (one read of /proc/self/statm after each).

Reports ``memory-growth`` when one request grew the worker's RSS by more than the
threshold (``FCGI_GATEWAY_MEMORY_GROWTH``, default 8 MiB): the signature of a cache or a
list that grows with every request. The ``--max-memory`` recycle of the process manager
is reported as the finding kind ``memory-limit`` by the worker itself.

The first ``memory-growth`` after the warm-up request also logs its cause (what grew
since the warm-up census the checker takes after the first request; see
gateway/isolation/leaks.py): once per worker, whatever the policy.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import parse_size
from ..workers.base import rss_bytes
from .base import Checker, Finding, RequestInfo
from .leaks import tracker


class MemoryChecker(Checker):
    name = "memory"
    kinds = ("memory-growth",)

    def __init__(self, threshold: int | None = None) -> None:
        if threshold is None:
            threshold = parse_size(os.environ.get("FCGI_GATEWAY_MEMORY_GROWTH", "8M"))
        self.threshold = threshold
        self.last = 0
        self.requests = 0

    def after_load(self, app: Any) -> list[Finding]:
        self.last = rss_bytes()
        return []

    def after_request(self, info: RequestInfo) -> list[Finding]:
        now = rss_bytes()
        growth = now - self.last
        self.last = now
        self.requests += 1
        if self.requests == 1:
            # the census after the first request (its lazy initialisation is not a leak),
            # not counted in the next request's growth
            tracker().warm_up()
            self.last = rss_bytes()
        if now and growth > self.threshold:
            if self.requests > 1:
                tracker().report(
                    "memory-growth",
                    f"memory: worker {os.getpid()}: RSS grew by {growth / 1048576:.1f} MiB during "
                    f"{info.method} {info.path} (now {now / 1048576:.0f} MiB)",
                )
            return [
                Finding(
                    "memory-growth",
                    f"RSS grew by {growth / 1048576:.1f} MiB during the request "
                    f"(now {now / 1048576:.0f} MiB)",
                    {"growth_bytes": growth, "rss_bytes": now},
                    self.name,
                )
            ]
        return []
