"""Logging set-up: the ``gateway.error`` logger (and ``gateway.access``) on stderr.

Call ``configure`` once in the process that serves; it replaces handlers it installed
before, so a re-exec or a worker can call it again safely.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
LEVELS = ("critical", "error", "warning", "info", "debug")

_installed: list[logging.Handler] = []


def configure(level: str = "info", stream=None, slow_log: str | None = None) -> None:
    root = logging.getLogger("gateway")
    slow = logging.getLogger("gateway.slow")
    for handler in _installed:
        root.removeHandler(handler)
        slow.removeHandler(handler)
    _installed.clear()
    if slow_log:
        slow_handler = logging.FileHandler(slow_log)
        slow_handler.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S %z"))
        slow.addHandler(slow_handler)
        slow.propagate = False
        _installed.append(slow_handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S %z"))
    root.addHandler(handler)
    _installed.append(handler)
    root.setLevel(level.upper())
    root.propagate = False
