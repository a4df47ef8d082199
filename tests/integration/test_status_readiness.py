"""Readiness and queue depth, with real gateways (and nginx for the queue):

- the ping page answers ``503 draining`` from the moment the master receives SIGTERM,
  SIGQUIT or SIGINT, on ``--status-bind`` and on a worker's keep-alive connection, and
  ``fcgi-gateway ping`` exits 1 saying so; the drain still ends with exit status 0;
- the master's ping answers ``503 no ready worker`` until a worker has loaded the app;
- on a unix socket, the requests nginx queued behind one busy sync worker show as the
  status page's ``listen queue`` (sock_diag), ``max listen queue`` keeps the peak the
  master sampled, and ``listen queue len`` is the backlog.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from gateway.client import FastCGIClient, ping
from tests.integration.nginx import can_connect


def ping_cli(address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "ping", address, "--timeout", "3"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def wait_for(get, until=bool, timeout: float = 10.0, what: str = "condition"):
    """``get()`` once ``until(get())`` holds (polled every 20 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached after {timeout}s (last: {value!r})")
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("worker", "sig"),
    [("sync", signal.SIGTERM), ("sync", signal.SIGQUIT), ("async", signal.SIGTERM), ("sync", signal.SIGINT)],
)
def test_ping_answers_503_draining_while_the_server_stops(gateway_factory, sock_dir, worker, sig):
    status = f"unix:{sock_dir}/status.sock"
    app = "proc_apps:app" if worker == "sync" else "proc_apps:asgi_app"
    gw = gateway_factory(app, "-w", "1", "--worker", worker, "--ping-path", "/ping", "--status-bind", status)
    wait_for(lambda: ping(status)[0], what="master ping 200")
    keep = FastCGIClient(gw.address, keep_conn=True, timeout=10)
    assert (r := keep.request("GET", "/ping")).status == 200 and r.body == b"pong"
    slow: dict[str, int] = {}

    def slow_request() -> None:
        try:
            slow["status"] = gw.client(timeout=10).request("GET", "/sleep?s=1.5").status
        except Exception as exc:  # the quick stop (SIGINT) kills it
            slow["error"] = repr(exc)  # type: ignore[assignment]

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.3)  # the slow request runs: the drain lasts until it ends
    try:
        gw.send_signal(sig)
        got = wait_for(lambda: ping(status), lambda r: not r[0], what="master ping 503")
        assert got == (False, "503 Service Unavailable: draining")
        proc = ping_cli(status)
        assert proc.returncode == 1, (proc.stdout, proc.stderr)
        assert "503" in proc.stderr and "draining" in proc.stderr
        if worker == "sync" and sig != signal.SIGINT:
            # a ping already queued on a worker's keep-alive connection: answered after the
            # slow request, by the worker, from the same flag
            r = keep.request("GET", "/ping")
            assert (r.status, r.body) == (503, b"draining")
    finally:
        keep.close()
        t.join()
    assert gw.wait(15) == 0
    if sig != signal.SIGINT:
        assert slow == {"status": 200}


def test_master_ping_is_503_until_a_worker_is_ready(gateway_factory, sock_dir):
    status = f"unix:{sock_dir}/status.sock"
    gw = gateway_factory(
        "slow_boot_app:app", "-w", "2", "--status-bind", status, env={"SLOW_BOOT_S": "2"}, wait=False
    )
    wait_for(lambda: can_connect(status), what="status socket")
    assert ping(status) == (False, "503 Service Unavailable: no ready worker")
    assert ping_cli(status).returncode == 1
    wait_for(lambda: ping(status)[0], timeout=20, what="master ping 200")
    assert ping_cli(status).returncode == 0
    assert gw.client().request("GET", "/pid").status == 200


def test_unix_listen_queue_counts_requests_waiting_behind_a_busy_worker(served, sock_dir):
    status_sock = sock_dir / "status.sock"
    s = served(
        "proc_apps:app",
        "-w",
        "1",
        "--worker",
        "sync",
        "--backlog",
        "64",
        "--status-path",
        "/status",
        "--status-bind",
        f"unix:{status_sock}",
        locations={
            "/": "",
            "= /fpm-status": f"fastcgi_pass unix:{status_sock};\nfastcgi_param REQUEST_URI /status;",
        },
    )
    wait_for(lambda: ping(f"unix:{status_sock}")[0], what="master ping 200")

    def status() -> dict:
        return s.get("/fpm-status?json").json()

    assert (status()["listen queue"], status()["listen queue len"]) == (0, 64)
    waiting = 8
    results: list[int] = []
    busy = threading.Thread(target=lambda: results.append(s.get("/sleep?s=3").status))
    busy.start()
    wait_for(status, lambda d: d["active processes"] == 1, what="the worker busy")
    queued = [threading.Thread(target=lambda: results.append(s.get("/pid").status)) for _ in range(waiting)]
    for t in queued:
        t.start()
    try:
        data = wait_for(status, lambda d: d["listen queue"] >= waiting, what="8 waiting")
        assert data["listen queue"] == waiting and data["listen queue len"] == 64
        assert data["max listen queue"] >= waiting - 1  # sampled by the master every turn
        text = s.get("/fpm-status").text
        assert f"listen queue:         {waiting}" in text
    finally:
        busy.join()
        for t in queued:
            t.join()
    assert results == [200] * (waiting + 1)
    after = status()
    assert after["listen queue"] == 0
    assert after["max listen queue"] >= waiting - 1
