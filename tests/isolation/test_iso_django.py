"""Scenarios 5 and 6 behind nginx, with a real Django (SQLite in tmp_path): a view that
leaves ``transaction.atomic()`` open, under the WSGI handler (sync worker and the a2wsgi
bridge) and under Django's ASGI handler; ``CONN_MAX_AGE > 0`` under ASGI; the ORM used
outside Django's request cycle (connection never closed, query log growing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import OFF, findings, no_isolation_lines, wait_for_finding

WSGI = {
    "sync": ("iso_django:application",),
    "bridge": ("iso_django:application", "--worker", "async", "--bridge-threads", "1"),
}
ASGI = "iso_django:asgi_application"


@pytest.fixture
def db_env(tmp_path):
    return {"ISO_DJANGO_DB": str(tmp_path / "django.sqlite3")}


@pytest.mark.parametrize("worker", WSGI)
def test_wsgi_atomic_leak_poisons_later_requests_without_the_layer(iso, db_env, worker):
    s = iso(*WSGI[worker], *OFF, env=db_env)
    assert s.get("/count").text == "0"
    assert s.get("/leak").status == 200
    later = [s.get("/count") for _ in range(3)]
    assert [r.status for r in later] == [500, 500, 500]  # "Cannot operate on a closed database"
    assert no_isolation_lines(s.gateway)


@pytest.mark.parametrize("worker", WSGI)
def test_wsgi_atomic_leak_repaired_by_default(iso, db_env, worker):
    """No isolation option at all: the Django checker is on (auto: the app imports Django)
    and a leaked atomic() is rolled back (docs/isolation.md, the default policies)."""
    s = iso(*WSGI[worker], env=db_env)
    assert s.get("/count").text == "0"
    assert s.get("/leak").status == 200
    [line] = wait_for_finding(s.gateway, "django-atomic-leak")
    assert "database connection 'default' left in an atomic() block by the request" in line
    assert "after GET /leak" in line and line.endswith("- repaired")
    later = [s.get("/count") for _ in range(3)]
    assert [(r.status, r.text) for r in later] == [(200, "0")] * 3  # the write rolled back


def test_wsgi_atomic_leak_logged_once(iso, db_env):
    s = iso(*WSGI["sync"], "--isolation-default-policy", "log", env=db_env)
    assert s.get("/leak").status == 200
    assert [s.get("/count").status for _ in range(3)] == [500, 500, 500]  # reported, not undone
    [line] = findings(s.gateway, "django-atomic-leak")
    assert "after GET /leak" in line


def test_wsgi_atomic_leak_recycle_policy(iso, db_env):
    s = iso(*WSGI["sync"], "--isolation-checkers", "django", "--isolation-default-policy", "recycle",
            env=db_env)  # fmt: skip
    first = s.get("/pid").status  # 404 from Django, but served
    assert first == 404
    assert s.get("/leak").status == 200
    s.gateway.wait_for_log(r"asks to be recycled \(leak\)")
    # the leaking worker stops taking work at once and exits ("recycled"), or is retired
    s.gateway.wait_for_log(r"worker \d+ (exited|recycled)")
    assert [s.get("/count").status for _ in range(3)] == [200, 200, 200]


@pytest.mark.parametrize("layer", ["off", "on"])
def test_asgi_atomic_leak_and_conn_max_age(iso, db_env, layer):
    env = {**db_env, "ISO_DJANGO_CONN_MAX_AGE": "60"}
    s = iso(ASGI, *(OFF if layer == "off" else ("--isolation-checkers", "django")), env=env)
    assert s.get("/count").text == "0"
    assert s.get("/leak").status == 200
    # each ASGI request runs in a thread of its own: later requests are not poisoned
    assert [s.get("/count").text for _ in range(2)] == ["0", "0"]
    if layer == "off":
        assert no_isolation_lines(s.gateway)
        return
    [warning] = findings(s.gateway, "django-conn-max-age")
    assert "database 'default' has CONN_MAX_AGE=60 under ASGI" in warning
    [line] = wait_for_finding(s.gateway, "django-atomic-leak")
    assert "left in an atomic() block" in line and "after GET /leak" in line
    # persistent connections opened in per-request threads: each one leaks
    assert len(wait_for_finding(s.gateway, "django-connection-open", count=3)) >= 3


def test_asgi_atomic_leak_repaired_by_default(iso, db_env):
    s = iso(ASGI, env=db_env)  # no isolation option
    assert s.get("/leak").status == 200
    [line] = wait_for_finding(s.gateway, "django-atomic-leak")
    assert line.endswith("- repaired")
    assert findings(s.gateway, "django-conn-max-age") == []  # CONN_MAX_AGE=0
    later = [s.get("/count") for _ in range(3)]
    assert [(r.status, r.text) for r in later] == [(200, "0")] * 3


@pytest.mark.parametrize("layer", ["off", "on"])
def test_orm_outside_the_request_cycle(iso, db_env, layer):
    env = {**db_env, "ISO_DJANGO_DEBUG": "1"}
    s = iso("iso_django:plain_wsgi", *(OFF if layer == "off" else ("--isolation-checkers", "django",
            "--isolation-default-policy", "repair")), env=env)  # fmt: skip
    # the log already holds the CREATE TABLE run at import
    logged = [int(s.get("/").text.split()[1]) for _ in range(4)]
    if layer == "off":
        assert logged == [2, 3, 4, 5]  # the query log only grows
        assert no_isolation_lines(s.gateway)
        return
    assert logged == [2, 1, 1, 1]
    lines = wait_for_finding(s.gateway, "django-query-log", count=4)
    assert len(lines) == 4 and "query log of database 'default' holds 2 queries" in lines[0]
    opened = wait_for_finding(s.gateway, "django-connection-open", count=4)
    assert "still open after the request: CONN_MAX_AGE is 0" in opened[0]


# The default layer of a Django WSGI app, built as the worker builds it, in a process of
# its own (Django's settings are configured once per process).
_LAYER = """
import sys
sys.path.insert(0, sys.argv[1])
import iso_django
from django.core.signals import request_started
from gateway.isolation.setup import build_layer
layer = build_layer("auto", (), {}, "auto", worker="sync")
layer.after_load(iso_django.application)
print(layer.light, [c.name for c in layer._thread_enter], [c.name for c in layer._thread_exit],
      sum(str(r[0][0]).startswith("fcgi-gateway") for r in request_started.receivers))
"""


@pytest.mark.parametrize("debug", [False, True])
def test_wsgi_needs_hooks_before_the_app_only_for_the_debug_query_log(db_env, debug):
    """Only the query log check (DEBUG on) asks whether Django's request_started ran. With
    DEBUG off the checker neither receives that signal nor runs before the app, so the
    default layer is light: the sync worker calls it once, after the request, without
    describing the request."""
    apps = Path(__file__).resolve().parents[1] / "apps"
    env = {**os.environ, **db_env, "ISO_DJANGO_DEBUG": "1" if debug else "0"}
    out = subprocess.run(
        [sys.executable, "-c", _LAYER, str(apps)], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    expected = "False ['django'] ['globals', 'django'] 1" if debug else "True [] ['globals', 'django'] 0"
    assert out.stdout.strip() == expected
