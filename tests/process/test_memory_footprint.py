"""What an idle worker holds (issue 7): the modules resident in a forked worker, which are
those the master had when it forked plus the worker's own.

Asserted on module names (``sys.modules`` of the worker, reported by the app itself), not
on RSS figures, which depend on the machine's Python build (bench/ measures those):

- no worker and no master ever has click (``python -m gateway`` parses the command line in
  a short-lived child, gateway/__main__.py), nor ``logging.config`` without --log-config;
- with ``--worker sync``, no async machinery: asyncio (and ssl), uvloop, a2wsgi, asgiref,
  the async worker;
- with ``--worker async`` and an ASGI 3 app: neither the sync worker, nor a2wsgi (the WSGI
  bridge), nor asgiref; and, with the default options, none of what only an option needs:
  the status pages (with json), the scoreboard (mmap) and the queue time (gateway/queueing.py)
  without --status-path, --max-queue-time or an access log, the hooks without --hooks, the slow
  log's watchdog without timeouts, the isolation layer when no checker runs;
- the master's objects are frozen for the worker's garbage collector (gc.freeze before
  fork: its collections do not copy-on-write the pages shared with the master).
"""

from __future__ import annotations

import json

import pytest

APP = '''"""Reports the worker's modules (written by tests/process/test_memory_footprint.py)."""
import gc
import json
import os
import sys


def _report():
    return json.dumps({"pid": os.getpid(), "modules": sorted(sys.modules),
                       "frozen": gc.get_freeze_count()}).encode()


def wsgi_app(environ, start_response):
    body = _report()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = _report()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
'''

NEVER = {"click", "gateway.cli", "gateway.cli_tools", "logging.config", "gateway.status_server"}
#: imported only when an option asks for them (json is not listed: the report above uses it)
ASYNC_OPTIONAL = {
    "gateway.status",
    "gateway.scoreboard",
    "gateway.queueing",
    "mmap",
    "gateway.watchdog",
    "gateway.isolation.base",
    "gateway.isolation.globals",
    "gateway.isolation.tasks",
    "gateway.hooks",
}
ASYNC_ONLY = {"uvloop", "a2wsgi", "asgiref", "gateway.workers.async_worker", "gateway.wsgi.bridge"}


@pytest.fixture
def report(gateway_factory, tmp_path):
    (tmp_path / "footprint_app.py").write_text(APP)

    def get(app: str, *args: str) -> dict:
        gw = gateway_factory(f"footprint_app:{app}", "--app-dir", str(tmp_path), *args)
        with gw.client() as c:
            data = json.loads(c.request("GET", "/").body)
        assert data["pid"] != gw.pid  # answered by a worker
        return data

    return get


def top_level(modules: list[str]) -> set[str]:
    return set(modules) | {m.split(".")[0] for m in modules}


def test_sync_worker_holds_no_async_machinery(report):
    data = report("wsgi_app", "--worker", "sync")
    modules = top_level(data["modules"])
    assert "gateway.workers.sync_worker" in modules
    assert not modules & NEVER, sorted(modules & NEVER)
    assert not modules & ASYNC_ONLY, sorted(modules & ASYNC_ONLY)
    assert data["frozen"] > 1000  # the master's objects, frozen before fork
    assert "asyncio" not in modules and "ssl" not in modules


def test_async_worker_holds_no_sync_worker_nor_bridge(report):
    # the isolation layer's globals checker is on by default: switched off here, so that
    # only what the other options ask for would be loaded
    data = report("asgi_app", "--worker", "async", "--isolation-checkers", "none")
    modules = top_level(data["modules"])
    assert "gateway.workers.async_worker" in modules
    assert not modules & NEVER, sorted(modules & NEVER)
    unexpected = {"gateway.workers.sync_worker", "gateway.workers.sync_threads", "a2wsgi", "asgiref"}
    assert not modules & unexpected, sorted(modules & unexpected)
    assert not modules & ASYNC_OPTIONAL, sorted(modules & ASYNC_OPTIONAL)
    assert data["frozen"] > 1000


def test_async_worker_loads_what_options_ask_for(report):
    """The lazily imported modules still come when asked: status page, isolation checkers."""
    data = report(
        "asgi_app", "--worker", "async", "--status-path", "/status", "--isolation-checkers", "globals"
    )
    modules = top_level(data["modules"])
    expected = {"gateway.status", "gateway.scoreboard", "gateway.isolation.base", "gateway.isolation.globals"}
    assert expected <= modules, sorted(expected - modules)


def test_the_default_isolation_layer_is_loaded(report):
    modules = top_level(report("asgi_app", "--worker", "async")["modules"])
    assert {"gateway.isolation.base", "gateway.isolation.globals"} <= modules
    assert "gateway.isolation.threadlocals" not in modules  # opt-in


def test_auto_worker_kind_holds_no_cli(report):
    """``auto``: the master cannot know the app's interface, so it holds both worker
    modules (see gateway/server.py); click and the CLI still stay out."""
    for app in ("wsgi_app", "asgi_app"):
        modules = top_level(report(app)["modules"])
        assert not modules & NEVER, (app, sorted(modules & NEVER))
        assert "a2wsgi" not in modules and "asgiref" not in modules
