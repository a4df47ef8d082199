"""Fixtures for the isolation-layer tests: the nginx fixtures of tests/integration, and
``iso`` — one gateway behind nginx, started with the layer off or on — plus log helpers."""

from __future__ import annotations

import re
import time

import pytest

from tests.integration.conftest import nginx_factory, served  # noqa: F401  (fixtures)

#: the layer "off": no checker at all (the per-request context reset stays: always on)
OFF = ("--isolation-checkers", "none")


def findings(gateway, kind: str) -> list[str]:
    """The gateway's log lines reporting a finding of ``kind``."""
    return [line for line in gateway.log_text().splitlines() if f"[{kind}]" in line]


def wait_for_finding(gateway, kind: str, count: int = 1, timeout: float = 5.0) -> list[str]:
    """The log lines of ``kind`` once there are ``count`` of them (or after ``timeout``):
    checks run after the response, so a finding may be logged just after the client got
    its answer."""
    deadline = time.monotonic() + timeout
    while True:
        lines = findings(gateway, kind)
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def no_isolation_lines(gateway) -> bool:
    """No finding was logged (the info lines of the snapshot are not findings)."""
    return not re.search(r"\[(WARNING|ERROR)\] isolation", gateway.log_text())


@pytest.fixture
def iso(served):  # noqa: F811  (the fixture imported above)
    """``iso(app, *args, env=None)``: a one-worker gateway behind nginx."""

    def make(app, *args, env=None, **nginx_kwargs):
        return served(app, "-w", "1", *args, env=env, **nginx_kwargs)

    return make
