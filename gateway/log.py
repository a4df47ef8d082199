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


def configure(level: str = "info", stream=None) -> None:
    root = logging.getLogger("gateway")
    for handler in _installed:
        root.removeHandler(handler)
    _installed.clear()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S %z"))
    root.addHandler(handler)
    _installed.append(handler)
    root.setLevel(level.upper())
    root.propagate = False
