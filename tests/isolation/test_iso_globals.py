"""Scenarios 1, 2 and 11 behind nginx: a view storing the request's user in a module
global, a module-level list growing every request, and the ``fail`` policy."""

from __future__ import annotations

import time

import pytest
from conftest import OFF, findings, no_isolation_lines, wait_for_finding

WORKERS = {"sync": (), "bridge": ("--worker", "async", "--bridge-threads", "2")}


def settle(worker: str) -> None:
    """On the async worker the checks of a request run after its response, concurrently
    with the next request (documented in docs/isolation.md): let them finish."""
    if worker != "sync":
        time.sleep(0.1)


@pytest.mark.parametrize("worker", WORKERS)
def test_user_in_a_module_global_leaks_without_the_layer(iso, worker):
    s = iso("iso_wsgi:app", *WORKERS[worker], *OFF)
    assert s.get("/whoami").text == "anonymous"  # warm-up
    assert s.get("/login?user=alice").text == "hello alice"
    assert s.get("/whoami").text == "alice"  # a second client sees alice
    assert no_isolation_lines(s.gateway)


@pytest.mark.parametrize("worker", WORKERS)
def test_user_in_a_module_global_detected_and_repaired(iso, worker):
    s = iso("iso_wsgi:app", *WORKERS[worker], "--isolation-checkers", "globals",
            "--isolation-policy", "global-rebound=repair")  # fmt: skip
    assert s.get("/whoami").text == "anonymous"  # warm-up: the snapshot is taken after it
    settle(worker)
    assert s.get("/login?user=alice").text == "hello alice"
    # The check runs after the response: on the async worker the next request could
    # otherwise overtake it (documented).
    [line] = wait_for_finding(s.gateway, "global-rebound")
    assert s.get("/whoami").text == "anonymous"
    assert "module global iso_wsgi:CURRENT_USER rebound during the request (NoneType -> str)" in line
    assert "after GET /login" in line and line.endswith("- repaired")
    assert "alice" not in line  # values never reach the log


def test_rebinding_logged_once_per_change_under_log(iso):
    s = iso("iso_asgi:app", "--isolation-checkers", "globals")
    s.get("/whoami")
    s.get("/login?user=alice")
    assert s.get("/whoami").text == "alice"  # log policy: reported, not undone
    s.get("/whoami")
    s.get("/login?user=bob")
    s.get("/whoami")
    assert len(wait_for_finding(s.gateway, "global-rebound", count=2)) == 2


@pytest.mark.parametrize("layer", ["off", "on"])
def test_module_level_list_growth(iso, layer):
    s = iso("iso_wsgi:app", *(OFF if layer == "off" else ("--isolation-checkers", "globals")))
    assert [s.get("/append").text for _ in range(4)] == ["1", "2", "3", "4"]
    if layer == "off":
        assert findings(s.gateway, "global-growth") == []
    else:  # the first request is the warm-up
        lines = wait_for_finding(s.gateway, "global-growth", count=3)
        assert len(lines) == 3
        assert "iso_wsgi:SEEN grew from 2 to 3 items during the request" in lines[1]


def test_allowlist(iso):
    s = iso("iso_wsgi:app", "--isolation-checkers", "globals",
            env={"FCGI_GATEWAY_ISOLATION_ALLOW": "iso_wsgi:SEEN, iso_wsgi:CURRENT_*"})  # fmt: skip
    for path in ("/", "/append", "/login?user=a", "/append", "/login?user=b"):
        assert s.get(path).status == 200
    assert no_isolation_lines(s.gateway)


@pytest.mark.parametrize("worker", WORKERS)
def test_fail_policy_answers_500_naming_the_leak(iso, worker):
    s = iso("iso_wsgi:app", *WORKERS[worker], "--isolation-checkers", "globals",
            "--isolation-policy", "global-rebound=fail")  # fmt: skip
    assert s.get("/whoami").status == 200
    r = s.get("/login?user=alice")
    assert r.status == 500
    assert "[global-rebound] module global iso_wsgi:CURRENT_USER rebound" in r.text
    assert "policy 'fail'" in r.text
    assert "hello alice" not in r.text
    assert s.get("/whoami").status == 200  # nothing new leaked: answered normally
