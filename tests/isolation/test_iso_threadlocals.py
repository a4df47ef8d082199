"""Scenario 3 behind nginx: a thread-local set in one request is visible in the next on
the sync worker, under the a2wsgi bridge (a pool thread serves request after request) and
on the event loop thread (ASGI) — unless the thread-local guard resets it."""

from __future__ import annotations

import pytest
from conftest import OFF, findings, no_isolation_lines, wait_for_finding

SETUPS = {
    "sync": ("iso_wsgi:app",),
    "bridge": ("iso_wsgi:app", "--worker", "async", "--bridge-threads", "1"),
    "asgi": ("iso_asgi:app",),
}


@pytest.mark.parametrize("setup", SETUPS)
def test_thread_local_leaks_without_the_guard(iso, setup):
    s = iso(*SETUPS[setup], *OFF)
    assert s.get("/tl-set?v=secret").text == "set"
    assert s.get("/tl-get").text.split()[0] == "secret"
    assert no_isolation_lines(s.gateway)


@pytest.mark.parametrize("setup", SETUPS)
def test_thread_local_reset_and_reported_with_the_guard(iso, setup):
    s = iso(*SETUPS[setup], "--isolation-checkers", "threadlocals")
    assert s.get("/tl-set?v=secret").text == "set"
    [line] = wait_for_finding(s.gateway, "threadlocal-leak")
    assert "thread-local iso_wsgi.LOCAL" in line or "thread-local iso_asgi.LOCAL" in line
    assert "still had value set after the request" in line and "after GET /tl-set" in line
    for _ in range(3):
        assert s.get("/tl-get").text.split()[0] == "unset"
    assert len(findings(s.gateway, "threadlocal-leak")) == 1  # reading leaves nothing behind


def test_guard_is_opt_in(iso):
    s = iso("iso_wsgi:app")  # default checkers: auto
    s.get("/tl-set?v=secret")
    assert s.get("/tl-get").text.split()[0] == "secret"
    assert findings(s.gateway, "threadlocal-leak") == []
