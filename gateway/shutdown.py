"""How the master stops: the optional shutdown delay, then the drain (graceful or quick).

Strategy
--------
The signal handlers only record the signal (gateway/arbiter.py); the loop calls
``handle_sigterm`` & co., which ask ``stop_action`` what the signal means now:

=========  =======================================  =======================================
signal     ``--shutdown-delay 0`` (the default)     ``--shutdown-delay D``
=========  =======================================  =======================================
SIGTERM    graceful drain                           the delay, then the graceful drain; a
                                                    second SIGTERM during the delay ends it
SIGQUIT    graceful drain                           graceful drain at once (skips the delay)
SIGINT     quick stop (1 s, then SIGKILL)           quick stop
=========  =======================================  =======================================

**The delay** (``Stopping.delaying``) is for platforms that keep sending traffic for a few
seconds after they sent SIGTERM (a Kubernetes Service removes the pod's endpoint
asynchronously, docs/deployment.md "Kubernetes"): the master keeps its listeners, the unix
socket stays on disk, workers keep accepting and are still replaced when they crash or
recycle; only the readiness page changes: the scoreboard's ``draining`` flag is set at
once, so ``--ping-path`` answers ``503 draining``. A reload (SIGHUP) during the delay is
ignored. The delay is skipped when no worker was ever ready (nothing to keep serving).

**The drain** (``_begin_stop``): the master closes its copies of the listening sockets
(unix socket files first) and sends SIGTERM to every worker; each serves what is queued,
finishes in-flight requests and exits; whatever is left at the deadline
(``--graceful-timeout``, 1 s for a quick stop) is killed. So a stop lasts at most
``--shutdown-delay`` + ``--graceful-timeout`` (plus a loop turn): the grace period a
platform gives before SIGKILL (``terminationGracePeriodSeconds``, ``docker
--stop-timeout``, systemd's ``TimeoutStopSec``) must be longer; ``fcgi-gateway check
--grace-period`` checks it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING

from . import systemd
from .sockets import cleanup_unix_sockets

if TYPE_CHECKING:
    from .arbiter import Worker
    from .config import Config
    from .scoreboard import Scoreboard

logger = logging.getLogger("gateway.error")

#: What a stop signal does (``stop_action``)
DELAY, DRAIN, QUICK = "delay", "drain", "quick"


def stop_action(sig: int, *, stopping: bool, delaying: bool, delay_s: float) -> str | None:
    """``DELAY``, ``DRAIN``, ``QUICK`` or None (nothing new) for ``sig`` received now."""
    if sig == signal.SIGINT:
        return QUICK
    if stopping:
        return None
    if sig == signal.SIGTERM and delay_s > 0 and not delaying:
        return DELAY
    return DRAIN


def stop_bound_s(config: Config) -> float:
    """The longest a stop can take: the delay plus the graceful timeout."""
    return config.shutdown_delay_s + config.graceful_timeout_s


class Stopping:
    """The arbiter's stop: its state and its stop-signal handlers (a mixin of Arbiter)."""

    config: Config
    board: Scoreboard | None
    sockets: list[socket.socket]
    workers: dict[int, Worker]
    booted: bool
    #: draining: the listeners are closed and the workers told to stop
    stopping: bool = False
    stop_deadline: float = 0.0
    #: monotonic time the shutdown delay ends (0: not in a delay)
    delay_until: float = 0.0

    @property
    def delaying(self) -> bool:
        return bool(self.delay_until) and not self.stopping

    def _stop_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        delay = self.config.shutdown_delay_s if self.booted else 0.0
        action = stop_action(sig, stopping=self.stopping, delaying=self.delaying, delay_s=delay)
        if action == DELAY:
            logger.info("master received %s: serving on for the shutdown delay (%gs), ping 503", name, delay)
            self.delay_until = time.monotonic() + delay
            self._mark_draining()
            systemd.notify(f"STATUS=shutdown delay ({delay:g}s), then stopping")
        elif action is not None:
            how = "quick stop" if action == QUICK else "graceful stop"
            extra = " (shutdown delay ended early)" if self.delaying else ""
            logger.info("master received %s: %s%s", name, how, extra)
            self._begin_stop(quick=action == QUICK)

    def _delay_over(self, now: float) -> None:
        """Called every loop turn: the drain begins once the shutdown delay has passed."""
        if self.delaying and now >= self.delay_until:
            logger.info("shutdown delay over: graceful stop")
            self._begin_stop()

    def _mark_draining(self) -> None:
        if self.board is not None:
            self.board.update(draining=1)  # the ping page answers 503 from now on

    def _begin_stop(self, quick: bool = False) -> None:
        if self.stopping and not quick:
            return
        self.stopping = True
        self._mark_draining()
        timeout = 1.0 if quick else self.config.graceful_timeout_s
        self.stop_deadline = time.monotonic() + timeout
        systemd.notify("STOPPING=1")
        # The master never accepts: drop its copies of the listening sockets now (unix socket
        # files first), so each socket closes as soon as the workers have drained theirs.
        cleanup_unix_sockets(self.sockets)
        for sock in self.sockets:
            sock.close()
        for w in list(self.workers.values()):
            w.retiring = True
            self._signal(w, signal.SIGTERM)

    def _signal(self, worker: Worker, sig: int) -> None:
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass

    def handle_sigterm(self) -> None:
        self._stop_signal(signal.SIGTERM)

    def handle_sigquit(self) -> None:
        self._stop_signal(signal.SIGQUIT)

    def handle_sigint(self) -> None:
        self._stop_signal(signal.SIGINT)


__all__ = ["DELAY", "DRAIN", "QUICK", "Stopping", "stop_action", "stop_bound_s"]
