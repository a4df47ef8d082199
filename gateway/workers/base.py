"""What every worker shares: the control channel to the master, the recycling limits, and
the codec's arguments from the Config (``CodecOptions``).

A worker runs in a child process forked by the arbiter. ``WorkerControl`` writes one-line
messages on a pipe shared with the master (each under PIPE_BUF, so writes from several
workers never interleave):

    <pid> ready                      the app is loaded and the worker is accepting
    <pid> beat                       heartbeat (the worker's loop is alive)
    <pid> recycle-soon <reason>      a limit is near: start my replacement now, but let me
                                     serve until I send ``recycle`` (or stop by myself)
    <pid> recycle <reason>           a limit was reached; please replace me gracefully
    <pid> boot-error <message>       the app could not be loaded (then the worker exits)
    <pid> stale <path>               a module file changed on disk since the worker started
    <pid> stale release <...>        its release is no longer the one --chdir/--app-dir name

``request_done`` is called between requests, never in the middle of one (docs/protocol-notes.md, peer bug
19): max requests (with jitter), max lifetime (with jitter) and max RSS. When one is
reached the worker asks once for a recycle and keeps serving until the master — once the
replacement is ready — sends SIGTERM (at max requests and max RSS the worker also stops
taking new work by itself). In the last tenth of ``--max-requests`` it only sends
``recycle-soon``: the replacement boots while this worker still serves, and the master
never retires it before it has served its ``--max-requests`` (a plain ``recycle`` there let
the master retire it as soon as the replacement was ready: 45 to 49 requests served for
``--max-requests 50``, seen by tests/process). ``request_recycle`` is the one function
other parts (the isolation layer's "recycle" policy, the request watchdog) call to ask for
a graceful replacement.

Each beat also checks that the master still lives (gateway/orphans.py): a worker whose
master died stops gracefully by itself.

With ``--max-memory`` the worker also says why it grew (gateway/isolation/leaks.py): a
census of its objects after the first request, compared once, when the limit is passed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..orphans import check_master
from ..protocol import FastCGIConnection

if TYPE_CHECKING:
    from ..config import Config


class CodecOptions:
    """``FastCGIConnection`` arguments for every connection of a worker, from the Config's
    limits, built once; FCGI_MAX_REQS is reported truthfully (1 without multiplexing).
    ``new()`` makes a codec by naming each argument: compiled, that is a direct call, where
    ``FastCGIConnection(**options)`` parses a keyword dict on every connection."""

    def __init__(self, config: Config, *, multiplex: bool, text_params: bool = False) -> None:
        self.multiplex = multiplex
        self.max_conns: int = config.max_connections
        self.max_reqs: int = config.max_connections if multiplex else 1
        self.max_params_bytes: int = config.max_params_bytes
        self.max_params_count: int = config.max_params_count
        self.max_requests: int | None = config.max_requests_per_connection
        self.text_params = text_params

    def new(self) -> FastCGIConnection:
        return FastCGIConnection(
            multiplex=self.multiplex,
            max_conns=self.max_conns,
            max_reqs=self.max_reqs,
            max_params_bytes=self.max_params_bytes,
            max_params_count=self.max_params_count,
            max_requests=self.max_requests,
            text_params=self.text_params,
        )


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


_statm: tuple[int, int] | None = None  # (pid, fd): /proc/self resolves at open time


def rss_bytes() -> int:
    """Resident set size of this process: one pread of /proc/<pid>/statm on a descriptor
    kept open (one pread, where opening the file each time costs three syscalls)."""
    global _statm
    pid = os.getpid()
    try:
        if _statm is None or _statm[0] != pid:
            if _statm is not None:
                os.close(_statm[1])
            _statm = (pid, os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC))
        return int(os.pread(_statm[1], 128, 0).split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


@dataclass(frozen=True)
class Limits:
    max_requests: int = 0
    max_requests_jitter: int = 0
    max_lifetime_s: float = 0.0
    max_lifetime_jitter_s: float = 0.0
    max_memory_bytes: int = 0


class WorkerControl:
    """The worker's side of the master <-> worker channel (a no-op without a master)."""

    def __init__(self, fd: int | None = None, limits: Limits | None = None, heartbeat_s: float = 1.0) -> None:
        self.fd = fd
        self.pid = os.getpid()
        self.limits = limits or Limits()
        self.heartbeat_s = heartbeat_s
        self.started = time.monotonic()
        self.requests = 0
        self.recycling: str | None = None
        self.recycling_soon: str | None = None
        self._last_beat = 0.0
        self.stale_detector: Any = None
        lim = self.limits
        self.request_limit = 0
        self.deadline = 0.0
        if lim.max_requests or lim.max_lifetime_s:
            import random  # only with a limit to jitter (an idle worker does not need it otherwise)

            if lim.max_requests:
                self.request_limit = lim.max_requests + random.randint(0, lim.max_requests_jitter)
            if lim.max_lifetime_s:
                jitter = random.uniform(0, lim.max_lifetime_jitter_s)
                self.deadline = self.started + lim.max_lifetime_s + jitter

    def _send(self, text: str) -> None:
        if self.fd is None:
            return
        data = f"{self.pid} {text}".replace("\n", " ")[:500].encode("utf-8", "replace") + b"\n"
        try:
            os.write(self.fd, data)
        except OSError:
            pass

    def ready(self) -> None:
        from ..codewatch import StaleCodeDetector

        # Snapshot of the imported module files, now that the app is loaded.
        self.stale_detector = StaleCodeDetector() if self.fd is not None else None
        self._send("ready")
        self._last_beat = time.monotonic()

    def beat(self) -> None:
        now = time.monotonic()
        if now - self._last_beat >= self.heartbeat_s:
            self._last_beat = now
            self._send("beat")
            check_master()  # a dead master: stop gracefully by ourselves (gateway/orphans.py)
            if self.stale_detector is not None:
                path = self.stale_detector.check()
                if path is not None:
                    self._send(f"stale {path}")
            if self.deadline and now >= self.deadline:
                self.request_recycle("max-lifetime")

    def finding(self, kind: str) -> None:
        """An isolation finding of ``kind`` (counted by the master for the status page)."""
        self._send(f"finding {kind}")

    def boot_error(self, message: str) -> None:
        self._send(f"boot-error {message}")

    def request_recycle(self, reason: str) -> None:
        """Ask the master to replace this worker gracefully (once)."""
        if self.recycling is None:
            self.recycling = reason
            self._send(f"recycle {reason}")

    def recycle_soon(self, reason: str) -> None:
        """Ask the master to start this worker's replacement now, without retiring it yet."""
        if self.recycling is None and self.recycling_soon is None:
            self.recycling_soon = reason
            self._send(f"recycle-soon {reason}")

    def last_on_connection(self) -> bool:
        """Whether the request ending now should be the last on its kept-alive connection:
        near or at a limit (request count, RSS), so no connection outlives this worker."""
        if self.recycling is not None or self.recycling_soon is not None:
            return True
        limit = self.request_limit
        if limit and self.requests + 1 >= limit - max(1, limit // 10):
            return True
        return bool(self.limits.max_memory_bytes) and rss_bytes() > self.limits.max_memory_bytes

    def _explain_memory(self, rss: int) -> None:
        """Log what grew since the warm-up (once: gateway/isolation/leaks.py)."""
        from ..isolation.leaks import tracker

        limit = self.limits.max_memory_bytes
        tracker().report(
            "max-memory",
            f"memory: worker {self.pid} over --max-memory ({rss / 1048576:.1f} MiB > "
            f"{limit / 1048576:.1f} MiB) after {self.requests} requests",
        )

    def request_done(self) -> bool:
        """Count a finished request and check the limits (between requests).

        Returns True when the worker must stop taking new work now (request limit reached,
        memory over the limit); the master is told and starts a replacement. Nearing the
        request limit (the last tenth) only asks for the replacement early.
        """
        self.requests += 1
        if self.recycling == "leak":
            return True  # the isolation layer found a leak: take no more work (recycle policy)
        limit = self.request_limit
        if limit:
            if self.requests >= limit:
                self.request_recycle("max-requests")
                return True
            if self.requests >= limit - max(1, limit // 10):
                self.recycle_soon("max-requests")
        if self.limits.max_memory_bytes:
            rss = rss_bytes()
            if rss > self.limits.max_memory_bytes:
                self._explain_memory(rss)
                self.finding("memory-limit")
                self.request_recycle("max-memory")
                return True
            if self.requests == 1:
                from ..isolation.leaks import tracker

                tracker().warm_up()  # the baseline the recycle's explanation compares with
        if self.deadline and time.monotonic() >= self.deadline:
            self.request_recycle("max-lifetime")
        return False
