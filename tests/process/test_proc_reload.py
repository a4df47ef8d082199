"""Reloads with real processes (issue 4): rolling reload under load, failed reload, boot error.

The app is a module written into ``tmp_path`` (``--app-dir``) whose responses carry a
``VERSION`` constant and the worker pid; a reload rewrites the file first, so the workers
forked for the new generation import the new code (docs/protocol-notes.md, peer bugs 21
and 22). wrk drives nginx -> gateway (2 workers) the whole time; no request may fail.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.process._load import children, wait_until

WORKERS = 2


def versioned(version: int, extra: str = "") -> str:
    return f'''"""Written by tests/process: serves its VERSION and the worker pid."""
import os

VERSION = {version}
{extra}

def app(environ, start_response):
    body = f"v{{VERSION}} {{os.getpid()}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def versions(bodies) -> dict[int, int]:
    seen: dict[int, int] = {}
    for body, n in bodies.items():
        if body.startswith("v"):
            v = int(body.split()[0][1:])
            seen[v] = seen.get(v, 0) + n
    return seen


def start(served, app_module, source: str):
    app_dir = app_module("versioned_app", source)
    # PYTHONDONTWRITEBYTECODE: a .pyc is trusted when the source's mtime (in whole
    # seconds) and size match, so a same-size rewrite within one second would be missed.
    return served(
        "versioned_app:app",
        "-w",
        str(WORKERS),
        "--app-dir",
        str(app_dir),
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )


@pytest.mark.slow
def test_reload_under_load_switches_code_and_drops_nothing(served, wrk, app_module):
    s = start(served, app_module, versioned(0))
    master = s.gateway.pid
    load = wrk(s.url + "/", duration=20, connections=8)
    reload_times = []
    for version in range(1, 11):
        # ten reloads spread over the run (the last one about 3 s before its end)
        time.sleep(max(0.0, load.started + 1.5 * version - time.monotonic()))
        app_module("versioned_app", versioned(version))
        begun = time.monotonic()
        s.gateway.send_signal(signal.SIGHUP)
        s.gateway.wait_for_log(rf"reload complete: generation {version + 1} serving", timeout=10)
        reload_times.append(time.monotonic() - begun)
        r = s.get("/")
        assert r.status == 200 and r.text.startswith(f"v{version} "), r.text
    result = load.result()
    seen = versions(result.bodies)
    print(f"reload under load: {result.summary()}")
    print(f"responses per version: {dict(sorted(seen.items()))}")
    print(f"reload (SIGHUP -> old generation gone) took {min(reload_times):.2f}-{max(reload_times):.2f} s")
    assert result.failed == 0, result.summary() + "\n" + result.output
    assert result.requests > 1000
    assert set(seen) == set(range(11)), seen  # every version served, nothing else
    # after the last reload only the last version is served, by WORKERS new workers
    assert {s.get("/").text.split()[0] for _ in range(20)} == {"v10"}
    assert s.gateway.pid == master and len(children(master)) == WORKERS
    log = s.gateway.log_text()
    assert "[ERROR]" not in log, log[-3000:]


@pytest.mark.slow
def test_reload_during_a_reload(served, wrk, app_module):
    """A second SIGHUP while the first reload is still rolling: nothing dropped, the last
    code wins and the pool settles at its size."""
    s = start(served, app_module, versioned(1))
    load = wrk(s.url + "/", duration=4, connections=8)
    time.sleep(1)
    app_module("versioned_app", versioned(2))
    s.gateway.send_signal(signal.SIGHUP)
    time.sleep(0.03)  # the new workers are still importing the app
    app_module("versioned_app", versioned(3))
    s.gateway.send_signal(signal.SIGHUP)
    s.gateway.wait_for_log(r"reload complete: generation 3 serving", timeout=10)
    result = load.result()
    print(f"reload during a reload: {result.summary()}; versions {versions(result.bodies)}")
    assert result.failed == 0, result.summary()
    assert {s.get("/").text.split()[0] for _ in range(10)} == {"v3"}
    assert wait_until(lambda: len(children(s.gateway.pid)) == WORKERS, timeout=5)


@pytest.mark.slow
def test_failed_reload_keeps_the_old_generation_serving(served, wrk, app_module):
    s = start(served, app_module, versioned(1))
    old_workers = children(s.gateway.pid)
    load = wrk(s.url + "/", duration=5, connections=8)
    time.sleep(1.5)
    broken = versioned(2, extra='raise RuntimeError("release 2 needs SETTINGS_MODULE")')
    app_module("versioned_app", broken)
    s.gateway.send_signal(signal.SIGHUP)
    s.gateway.wait_for_log(r"reload failed", timeout=10)
    result = load.result()
    seen = versions(result.bodies)
    print(f"failed reload under load: {result.summary()}; versions {seen}")
    assert result.failed == 0, result.summary()
    assert seen == {1: result.requests}  # 100% served by the old generation
    assert children(s.gateway.pid) == old_workers
    log = s.gateway.log_text()
    assert "RuntimeError: release 2 needs SETTINGS_MODULE" in log
    # Fixing the code and reloading again works.
    app_module("versioned_app", versioned(3))
    s.gateway.send_signal(signal.SIGHUP)
    assert wait_until(lambda: s.get("/").text.startswith("v3 "), timeout=10), s.gateway.log_text()[-3000:]
    assert wait_until(
        lambda: len(children(s.gateway.pid)) == WORKERS and not children(s.gateway.pid) & old_workers
    )


@pytest.mark.parametrize("workers", [1, 3])
def test_boot_with_a_broken_app_exits_4_and_names_the_error(gateway_factory, app_module, workers):
    app_dir = app_module("broken_at_boot", 'raise RuntimeError("DATABASE_URL is not set")\n')
    gw = gateway_factory("broken_at_boot:app", "-w", str(workers), "--app-dir", str(app_dir), wait=False)
    assert gw.wait(timeout=15) == 4
    log = gw.log_text()
    assert "cannot load the application" in log
    assert "RuntimeError: DATABASE_URL is not set" in log


def test_boot_with_a_missing_module_exits_4(gateway_factory):
    gw = gateway_factory("no_such_module_here:app", "-w", "2", wait=False)
    assert gw.wait(timeout=15) == 4
    assert "no_such_module_here" in gw.log_text()
