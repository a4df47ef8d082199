"""How the master reads the end of a worker: its exit status in words, and the lifespan
error a worker's start-up may raise (named here without importing asyncio).
"""

from __future__ import annotations

import signal
import sys


def lifespan_error() -> type[Exception]:
    """``gateway.asgi.lifespan.LifespanError`` when that module is loaded, else a class
    nothing raises: importing it would import asyncio (with ssl, several MB) into the master
    and the sync workers, and no LifespanError exists in a process that never imported it.
    For ``except`` clauses, evaluated only when an exception is being matched."""
    module = sys.modules.get("gateway.asgi.lifespan")
    error: type[Exception] = module.LifespanError if module is not None else _NeverRaised
    return error


class _NeverRaised(Exception):
    pass


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


__all__ = ["describe_exit", "lifespan_error"]
