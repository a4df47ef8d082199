"""Scenarios 7 and 8 behind nginx (SQLite in tmp_path): a ``scoped_session`` never removed
lets request B commit request A's change; an unclosed Session keeps its pooled connection.
Flask-SQLAlchemy: its teardown is respected (no false finding) and a leaked connection
is reported and returned."""

from __future__ import annotations

import pytest
from conftest import OFF, findings, no_isolation_lines, wait_for_finding

SETUPS = {
    "sync": (),
    "bridge": ("--worker", "async", "--bridge-threads", "1"),
}
REPAIR = ("--isolation-checkers", "sqlalchemy", "--isolation-default-policy", "repair")


@pytest.fixture
def db_env(tmp_path):
    return {"ISO_SQLA_DB": str(tmp_path / "sqla.sqlite3")}


@pytest.mark.parametrize("setup", SETUPS)
def test_scoped_session_not_removed_commits_the_previous_request(iso, db_env, setup):
    s = iso("iso_sqla:app", *SETUPS[setup], *OFF, env=db_env)
    assert s.get("/stage?name=from-request-A").text == "staged"
    assert s.get("/add?name=from-request-B").text == "added"
    assert s.get("/names").json() == ["from-request-A", "from-request-B"]  # B committed A's change
    assert no_isolation_lines(s.gateway)


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("options", ["default", "explicit"])
def test_scoped_session_removed_by_the_layer(iso, db_env, setup, options):
    """By default (no isolation option: auto checkers, each kind's own policy) as with the
    options spelled out, request B never commits request A's pending change."""
    s = iso("iso_sqla:app", *SETUPS[setup], *(REPAIR if options == "explicit" else ()), env=db_env)
    assert s.get("/stage?name=from-request-A").text == "staged"
    [line] = wait_for_finding(s.gateway, "sqlalchemy-scoped-session")
    assert "scoped_session iso_sqla.ScopedSession not removed after the request (1 pending change(s)" in line
    assert line.endswith("- repaired")
    assert s.get("/add?name=from-request-B").text == "added"
    assert s.get("/names").json() == ["from-request-B"]
    assert findings(s.gateway, "sqlalchemy-session-open") == []  # one leak, one finding


def test_scoped_session_reported_under_log(iso, db_env):
    s = iso("iso_sqla:app", "--isolation-default-policy", "log", env=db_env)
    s.get("/stage?name=a")
    assert len(wait_for_finding(s.gateway, "sqlalchemy-scoped-session")) == 1
    s.get("/add?name=b")
    s.get("/names")
    assert len(findings(s.gateway, "sqlalchemy-scoped-session")) == 1  # /add removed it


@pytest.mark.parametrize("setup", SETUPS)
def test_unclosed_session_keeps_its_connection_without_the_layer(iso, db_env, setup):
    s = iso("iso_sqla:app", *SETUPS[setup], *OFF, env=db_env)
    assert s.get("/unclosed").text == "left open"
    assert s.get("/pool").text == "1"
    assert s.get("/unclosed").text == "left open"
    assert s.get("/pool").text == "2"  # the pool (size 2, no overflow) is exhausted
    assert no_isolation_lines(s.gateway)


@pytest.mark.parametrize("setup", SETUPS)
def test_unclosed_session_reported_and_connection_returned(iso, db_env, setup):
    s = iso("iso_sqla:app", *SETUPS[setup], *REPAIR, env=db_env)
    for _ in range(3):
        assert s.get("/unclosed").text == "left open"
        assert s.get("/pool").text == "0"
    lines = wait_for_finding(s.gateway, "sqlalchemy-connection-checked-out", count=3)
    assert "1 pooled connection(s) checked out during the request and not returned" in lines[0]
    assert "(pool checkedout(): 1)" in lines[0] and lines[0].endswith("- repaired")
    sessions = findings(s.gateway, "sqlalchemy-session-open")
    assert len(sessions) == 3 and "Session left with an open transaction" in sessions[0]


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("layer", ["off", "default"])
def test_flask_sqlalchemy(iso, db_env, layer, setup):
    s = iso("iso_flask:app", *SETUPS[setup], *(OFF if layer == "off" else ()), env=db_env)
    assert s.get("/stage?body=pending").text == "staged"
    assert s.get("/add?body=committed").text == "added"
    assert s.get("/notes").json() == ["committed"]  # Flask-SQLAlchemy's teardown removed it
    assert findings(s.gateway, "sqlalchemy-scoped-session") == []
    assert findings(s.gateway, "sqlalchemy-session-open") == []
    assert s.get("/connect").text == "connected"
    if layer == "off":
        assert s.get("/pool").text == "1"
        assert no_isolation_lines(s.gateway)
    else:
        assert s.get("/pool").text == "0"
        [line] = wait_for_finding(s.gateway, "sqlalchemy-connection-checked-out")
        assert "after GET /connect" in line and line.endswith("- repaired")
