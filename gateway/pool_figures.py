"""The pool-wide figures the master publishes in the scoreboard's header every loop turn.

What the status page shows about the pool as a whole (listen queue, max active processes,
max children reached, ready workers, generation, reloads, respawns by cause, isolation
findings) is sampled here from the arbiter's state and the workers' slots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .scoreboard import STATE_RUNNING
from .sockdiag import listen_queue

if TYPE_CHECKING:
    from .arbiter import Arbiter
    from .scoreboard import Scoreboard


def publish(arbiter: Arbiter, board: Scoreboard) -> None:
    """Sample the pool's figures into ``board``'s header."""
    active = sum(1 for s in board.read() if s.state == STATE_RUNNING)
    head = board.header()
    all_busy = active >= arbiter.num_workers
    # PHP-FPM counts the times the pool ran out of free processes: count transitions (the
    # adaptive modes count when the pool needed a worker above --max-workers, gateway/pool.py).
    reached = head["max_children_reached"] + (1 if all_busy and not arbiter._all_busy else 0)
    arbiter._all_busy = all_busy
    if arbiter.pool is not None:
        reached = arbiter.pool.reached
    arbiter.max_active = max(arbiter.max_active, active)
    r = arbiter.respawns
    if arbiter.findings:
        board.set_findings(arbiter.findings)
    board.update(
        max_listen_queue=max(head["max_listen_queue"], listen_queue(arbiter.sockets)[0]),
        ready_workers=sum(1 for w in arbiter.workers.values() if w.ready and not w.retiring),
        max_active=arbiter.max_active,
        max_children_reached=reached,
        generation=arbiter.generation,
        workers_wanted=arbiter.num_workers,
        max_workers=arbiter.pool.max_workers if arbiter.pool is not None else 0,
        reloads=arbiter.reloads,
        stale_workers=sum(1 for pid in arbiter.stale if pid in arbiter.workers),
        respawn_crash=r.get("crash", 0),
        respawn_max_requests=r.get("max-requests", 0),
        respawn_max_memory=r.get("max-memory", 0),
        respawn_max_lifetime=r.get("max-lifetime", 0),
        respawn_timeout=r.get("timeout", 0),
        respawn_leak=r.get("leak", 0),
    )
