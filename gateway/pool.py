"""The process manager: how many workers the pool wants, in the modes PHP-FPM users know.

``--pm static`` (the default): ``--workers`` workers, changed only by TTIN/TTOU; nothing
here runs. ``--pm dynamic``: the pool starts with ``--workers`` and keeps its idle workers
between ``--min-spare-workers`` and ``--max-spare-workers``, never above ``--max-workers``
(PHP-FPM's pm.max_children). ``--pm ondemand``: no worker while nothing comes; the master
watches the listening sockets and forks when a connection waits that no worker is free to
take; a worker idle for ``--process-idle-timeout`` leaves.

A worker is idle when its scoreboard slot says so (no request in flight: PHP-FPM's
definition, also for the async worker and ``--threads``); a worker still starting counts as
idle, as it will take the next connection. ``ProcessManager.turn`` runs from the arbiter's
loop once a second, as PHP-FPM's maintenance does:

- growth starts 1 worker, then 2, 4, ... while the pool stays short on later turns, up to
  ``--max-spawn-rate`` a turn (pm.max_spawn_rate); a turn that is not short resets the rate;
- shrinking retires one idle worker a turn, the one idle longest (dynamic), or every worker
  idle longer than the timeout (ondemand), through the arbiter's graceful retirement (the
  path recycling uses, which loses no request on kept-alive connections);
- a pool at ``--max-workers`` with no idle worker when it needs one counts "max children
  reached" once per episode, and logs a warning the first time.

The arbiter's invariant (gateway/arbiter.py) stays the one rule that starts and stops
workers: the manager only moves the wanted count (``arbiter.num_workers``), spawning the
growth itself so that it is not throttled like recycling, and naming the idle workers a
shrink retires. A reload or a recycle replaces workers one for one in every mode.

``ondemand`` still starts one worker with each generation (at boot and on reload): it
proves that the generation loads the application before the old one is let go, and it
leaves after the idle timeout like any other. TTIN and TTOU move ``--max-workers`` by one
in the adaptive modes (``--workers`` in static).
"""

from __future__ import annotations

import logging
import select
import socket
import time
from typing import TYPE_CHECKING

from .config import PM_MODES, Config

if TYPE_CHECKING:
    from .arbiter import Arbiter, Worker
    from .scoreboard import Scoreboard

logger = logging.getLogger("gateway.error")

#: How often the manager looks at the pool (PHP-FPM's maintenance runs once a second).
TURN_S = 1.0
#: A listening socket readable for this long with no free worker is a connection waiting.
WAIT_CONFIRM_S = 0.005
#: After a connection a busy worker took by itself, the sockets are not watched this long.
QUIET_S = 0.05


def start_count(config: Config) -> int:
    """Workers started with the first generation: ``--workers``, or in ondemand the one
    that proves the application loads."""
    return 1 if config.pm == "ondemand" else config.workers


def default_max_workers(config: Config, usable_cpus: int) -> int:
    """``--max-workers`` when not given: twice the usable CPUs, and at least ``--workers``
    and ``--max-spare-workers``."""
    return max(2 * usable_cpus, config.workers, config.max_spare_workers)


def describe(config: Config, usable_cpus: int) -> str:
    """The process manager as ``check`` prints it."""
    c = config
    if c.pm == "static":
        return f"static, {c.workers} worker(s)"
    most = (
        f"at most {c.max_workers}"
        if c.max_workers
        else (f"at most {default_max_workers(c, usable_cpus)} (twice the usable CPUs)")
    )
    rate = f"started up to {c.max_spawn_rate} a second"
    if c.pm == "dynamic":
        spare = min(c.max_spare_workers, c.max_workers or default_max_workers(c, usable_cpus))
        return f"dynamic, {c.workers} at start, {c.min_spare_workers} to {spare} idle, {most}, {rate}"
    return (
        f"ondemand, none while idle (one at start and on reload proves the app loads), {most}, "
        f"{rate}, retired after {c.process_idle_timeout_s:g}s idle"
    )


def _readable(socks: list[socket.socket], timeout: float) -> bool:
    """Whether a connection waits in one of ``socks`` (within ``timeout`` seconds)."""
    try:
        ready, _, _ = select.select(socks, [], [], timeout)
    except (InterruptedError, ValueError, OSError):
        return False
    return bool(ready)


class ProcessManager:
    """Moves the arbiter's wanted worker count in the ``dynamic`` and ``ondemand`` modes."""

    def __init__(self, config: Config, board: Scoreboard, max_workers: int) -> None:
        self.mode = config.pm
        self.board = board
        self.max_workers = max_workers
        self.configure(config)
        self.spawn_rate = 1
        self.reached = 0  # "max children reached" episodes
        self._at_max = False
        self._warned = False
        self._next_turn = 0.0
        self._quiet_until = 0.0

    def configure(self, config: Config) -> None:
        """The bounds, at start and when a reload read ``--config`` again (not the mode)."""
        if config.max_workers:
            self.max_workers = config.max_workers
        self.min_spare = config.min_spare_workers
        self.max_spare = min(config.max_spare_workers, self.max_workers)  # the default 3 above a small pool
        self.idle_timeout = config.process_idle_timeout_s
        self.max_spawn_rate = config.max_spawn_rate

    # -- what the pool looks like --------------------------------------------------------

    def _pool(self, arbiter: Arbiter) -> tuple[list[Worker], list[tuple[float, Worker]], int]:
        """(workers counted against --max-workers, idle ready workers with their idle-since
        time, idle count including the workers still starting)."""
        counted = [w for w in arbiter.workers.values() if not w.retiring]
        idle: list[tuple[float, Worker]] = []
        starting = 0
        for w in counted:
            if w.generation != arbiter.generation or w.recycle is not None or w.replace_soon is not None:
                continue  # being replaced already: not the manager's to count or retire
            if not w.ready:
                starting += 1
            elif (since := self.board.idle_since(w.slot)) is not None:
                idle.append((since, w))
        return counted, idle, starting + len(idle)

    def _short(self, arbiter: Arbiter, counted: int, wanted: int) -> None:
        """The pool needs ``wanted`` more workers: start what the rate and the ceiling allow."""
        room = self.max_workers - counted
        if room <= 0:
            self._note_max()
            self.spawn_rate = 1
            return
        self._at_max = False
        n = min(self.spawn_rate, wanted, room)
        if self.spawn_rate > 1 or n > 1:
            logger.info("process manager: starting %d worker(s) (rate %d)", n, self.spawn_rate)
        arbiter.num_workers += n
        for _ in range(n):
            arbiter.spawn()
        self.spawn_rate = min(self.spawn_rate * 2, self.max_spawn_rate)

    def _note_max(self) -> None:
        if not self._at_max:
            self._at_max = True
            self.reached += 1
            if not self._warned:
                self._warned = True
                logger.warning(
                    "pool reached --max-workers (%d) with no idle worker; consider raising it",
                    self.max_workers,
                )

    def _retire_idle(self, arbiter: Arbiter, worker: Worker, why: str) -> None:
        logger.info("process manager: retiring worker %d (%s)", worker.pid, why)
        arbiter.num_workers = max(0, arbiter.num_workers - 1)
        arbiter._retire(worker)

    # -- the loop's entry points ---------------------------------------------------------

    def turn(self, arbiter: Arbiter, now: float) -> None:
        """Once a second: grow or shrink toward the spare bounds (dynamic), retire the
        workers idle too long (ondemand)."""
        if now < self._next_turn or arbiter.stopping or not arbiter.booted:
            return
        self._next_turn = now + TURN_S
        counted, idle, n_idle = self._pool(arbiter)
        if self.mode == "ondemand":
            wall = time.time()
            for since, w in sorted(idle, key=lambda item: item[0]):
                if wall - since >= self.idle_timeout:
                    self._retire_idle(arbiter, w, f"idle for {wall - since:.0f}s")
            if n_idle:
                self._at_max = False
                self.spawn_rate = 1
            return
        if n_idle > self.max_spare and idle:
            since, w = min(idle, key=lambda item: item[0])
            self._retire_idle(arbiter, w, f"{n_idle} idle, above --max-spare-workers {self.max_spare}")
            self.spawn_rate = 1
        elif (wanted := max(0, self.min_spare - n_idle) + (self._queued(arbiter) if not n_idle else 0)) > 0:
            self._short(arbiter, len(counted), wanted)
        else:
            self._at_max = False
            self.spawn_rate = 1

    @staticmethod
    def _queued(arbiter: Arbiter) -> int:
        """Connections waiting in the listening sockets' accept queues (none when unknown)."""
        from .sockdiag import listen_queue

        return listen_queue(arbiter.sockets)[0]

    def watched(self, arbiter: Arbiter) -> list[socket.socket]:
        """ondemand: the listening sockets the master's select watches now. Only while no
        worker is idle or starting and the pool is below its ceiling: a connection then
        waits for a worker that the master must start (watching at other times would wake
        the master for connections a worker takes, or spin while the pool is full)."""
        if self.mode != "ondemand" or arbiter.stopping or not arbiter.booted:
            return []
        if time.monotonic() < self._quiet_until:
            return []
        counted, _idle, n_idle = self._pool(arbiter)
        if n_idle:
            return []
        if len(counted) >= self.max_workers:
            if _readable(arbiter.sockets, 0.0):
                self._note_max()  # a connection waits, and no worker may be started for it
            return []
        return arbiter.sockets

    def connection_waiting(self, arbiter: Arbiter, readable: list[socket.socket]) -> None:
        """ondemand: a listening socket was readable. With workers (all busy), confirm that
        a connection still waits a moment later: a busy async worker (or one finishing its
        request) may take it at once; if it did, the sockets are not watched for a moment,
        so that a steady stream of connections its workers take does not keep waking the
        master. Then start workers."""
        counted, _idle, n_idle = self._pool(arbiter)
        if not readable or n_idle:
            return
        if counted:
            time.sleep(WAIT_CONFIRM_S)
            if not _readable(readable, 0.0):
                self._quiet_until = time.monotonic() + QUIET_S
                return
        self._short(arbiter, len(counted), self.spawn_rate)

    def ttin(self) -> None:
        self.max_workers += 1
        logger.info("--max-workers: %d", self.max_workers)

    def ttou(self, arbiter: Arbiter) -> None:
        if self.max_workers <= 1:
            return
        self.max_workers -= 1
        self.max_spare = min(self.max_spare, self.max_workers)
        self.min_spare = min(self.min_spare, self.max_spare)
        logger.info("--max-workers: %d", self.max_workers)
        counted, idle, _ = self._pool(arbiter)
        if len(counted) > self.max_workers and idle:
            self._retire_idle(arbiter, min(idle, key=lambda item: item[0])[1], "above --max-workers")


__all__ = ["PM_MODES", "ProcessManager", "default_max_workers", "start_count"]
