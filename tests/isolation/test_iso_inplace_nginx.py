"""State written in place, behind nginx with default options: a dict entry, a class
attribute and a singleton's attribute are reported on the sync worker, through the WSGI
bridge and for an ASGI app; under ``repair`` (``--isolation-default-policy strict``) the
next request sees the snapshot again. Also: a 100,000-entry dict that changes, and
requests that change nothing."""

from __future__ import annotations

import time

import pytest
from conftest import findings, no_isolation_lines, wait_for_finding

RUNS = {
    "wsgi-sync": ("iso_inplace:app", ("--worker", "sync")),
    "wsgi-bridge": ("iso_inplace:app", ("--worker", "async", "--bridge-threads", "2")),
    "asgi": ("iso_inplace:asgi_app", ("--worker", "async")),
}
CLEAN = "dict=None class=None instance=default big=free"
#: path -> (kind, the place named in the log line)
WRITES = {
    "/dict": ("global-entry", "entry iso_inplace:STATE['user'] replaced during the request"),
    "/class": ("global-attribute", "class attribute iso_inplace:Registry.current assigned during the"),
    "/instance": ("global-attribute", "instance attribute iso_inplace:TENANT.name assigned during the"),
    "/big": ("global-entry", "entry iso_inplace:BIG[<int>] replaced during the request (str -> str)"),
}


def settle(run: str) -> None:
    """The async worker checks a request after its response (docs/isolation.md)."""
    if run != "wsgi-sync":
        time.sleep(0.1)


@pytest.mark.parametrize("run", RUNS)
def test_writes_in_place_are_reported_by_default(iso, run):
    app, args = RUNS[run]
    s = iso(app, *args)
    assert s.get("/read").text == CLEAN  # the warm-up
    settle(run)
    for n, (path, (kind, text)) in enumerate(WRITES.items(), 1):
        assert s.get(f"{path}?user=alice").status == 200
        lines = wait_for_finding(s.gateway, kind, count=1 + (n == 3) + (n == 4))
        [line] = [line for line in lines if text in line]
        assert f"after GET {path}" in line and "alice" not in line
        assert "repaired" not in line and "recycling" not in line  # the default: log
    assert s.get("/read").text == "dict=alice class=alice instance=alice big=alice"  # logged, not undone
    # the big dict is named at the snapshot as watched by its size and ends
    assert "iso_inplace:BIG holds 100000 items, more than 1000" in s.gateway.log_text()


@pytest.mark.parametrize("run", RUNS)
def test_writes_in_place_are_restored_under_repair(iso, run):
    app, args = RUNS[run]
    s = iso(app, *args, "--isolation-default-policy", "strict")
    assert s.get("/read").text == CLEAN
    settle(run)
    for path, (kind, text) in WRITES.items():
        answer = s.get(f"{path}?user=alice").text
        assert "alice" in answer  # the request itself saw its write
        settle(run)
        [line] = [line for line in wait_for_finding(s.gateway, kind) if text in line]
        assert line.endswith(" - repaired")
        assert s.get("/read").text == CLEAN  # the next request sees the snapshot
        settle(run)
    assert findings(s.gateway, "checker-error") == []
    assert "recycl" not in s.gateway.log_text()


@pytest.mark.parametrize("run", RUNS)
def test_requests_that_change_nothing_report_nothing(iso, run):
    app, args = RUNS[run]
    s = iso(app, *args)
    for _ in range(20):
        assert s.get("/nothing").text == CLEAN
    settle(run)
    assert no_isolation_lines(s.gateway)
