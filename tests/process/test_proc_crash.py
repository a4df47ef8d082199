"""Dying workers with real processes (issue 4): kill -9 under load, a worker crashing
itself, and a crash loop that must stop the master instead of respawning forever.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from gateway.client import ClientError
from tests.process._load import children, socket_fds, wait_until


@pytest.mark.slow
@pytest.mark.parametrize(("app", "worker"), [("proc_apps:app", "sync"), ("proc_apps:asgi_app", "async")])
def test_kill_9_under_load(served, wrk, app, worker):
    """Failures <= the killed worker's in-flight requests; its replacement serves in < 1 s."""
    s = served(app, "--worker", worker, "-w", "2")
    master = s.gateway.pid
    before = children(master)
    load = wrk(s.url + "/sleep?s=0.005", duration=4, connections=8)
    time.sleep(1.5)
    victim = min(before)
    in_flight = max(0, socket_fds(victim) - 1)  # its connections (minus the listener)
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    replacement: set[int] = set()

    def replaced() -> bool:
        replacement.update(children(master) - before)
        return bool(replacement)

    assert wait_until(replaced, timeout=5, interval=0.005)
    spawned = time.monotonic() - killed

    def serves() -> bool:
        return s.get("/pid", timeout=5).text in {str(p) for p in replacement}

    assert wait_until(serves, timeout=5, interval=0.005)
    serving = time.monotonic() - killed
    result = load.result()
    print(
        f"kill -9 {worker}: {result.summary()}; the victim had {in_flight} connection(s); "
        f"replacement forked after {spawned * 1000:.0f} ms, serving after {serving * 1000:.0f} ms"
    )
    assert result.errors == 0, result.summary()
    assert result.failed <= max(in_flight, 1), result.summary()
    assert serving < 1.0
    assert len(children(master)) == 2
    assert re.search(rf"worker {victim} died unexpectedly \(killed by SIGKILL\)", s.gateway.log_text())


def test_crashed_worker_is_replaced(gateway_factory):
    gw = gateway_factory("proc_apps:app", "-w", "1")
    with gw.client() as c:
        first = int(c.request("GET", "/pid").body)
    with gw.client() as c, pytest.raises(ClientError, match=r"closed .* before END_REQUEST"):
        c.request("GET", "/exit?code=7")  # no response: the process is gone
    assert wait_until(lambda: children(gw.pid) - {first}, timeout=5)
    with gw.client() as c:
        second = int(c.request("GET", "/pid").body)
    assert second != first
    gw.wait_for_log(rf"worker {first} died unexpectedly \(exit status 7\)")
    assert gw.proc.poll() is None


def test_crash_loop_stops_the_master(gateway_factory):
    """Workers that die right after boot: the master gives up with a non-zero status (not
    the boot-error code 4) well within 30 s, instead of respawning them forever."""
    started = time.monotonic()
    gw = gateway_factory("proc_crashloop_app:app", "-w", "2", env={"PROC_CRASHLOOP": "1"}, wait=False)
    status = gw.wait(timeout=30)
    took = time.monotonic() - started
    log = gw.log_text()
    booted = len(re.findall(r"booted worker", log))
    print(f"crash loop: exit status {status} after {took:.1f} s and {booted} workers")
    assert status not in (0, 4)
    assert "crash loop" in log
    assert took < 30
    assert not children(gw.pid)
