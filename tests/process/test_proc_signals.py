"""Signals to the master with real processes (issue 4): graceful SIGTERM with requests in
flight and in the listen backlog, TTIN/TTOU, sd_notify messages, and the --pid file.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter

from tests.process._load import children, socket_fds, wait_until


def in_parallel(fn, n: int) -> tuple[list, list[threading.Thread]]:
    results: list = [None] * n

    def run(i: int) -> None:
        try:
            results[i] = fn()
        except Exception as exc:  # recorded, asserted by the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return results, threads


def upstream_connections(master: int) -> int:
    """Connections the workers hold (their sockets minus the listening one)."""
    return sum(max(0, socket_fds(pid) - 1) for pid in children(master))


def test_sigterm_lets_20_in_flight_requests_finish(served):
    """Async workers: 20 requests of 2 s in flight; SIGTERM; all 20 get 200, exit 0."""
    s = served("proc_apps:asgi_app", "-w", "2", "--graceful-timeout", "10s")
    results, threads = in_parallel(lambda: s.get("/sleep?s=2", timeout=20), 20)
    assert wait_until(lambda: upstream_connections(s.gateway.pid) >= 20, timeout=5)
    sent = time.monotonic()
    s.gateway.send_signal(signal.SIGTERM)
    status = s.gateway.wait(timeout=15)
    took = time.monotonic() - sent
    for t in threads:
        t.join(5)
    print(f"SIGTERM with 20 in flight: master exited {status} after {took:.2f} s")
    assert status == 0
    assert took < 10
    assert [getattr(r, "status", r) for r in results] == [200] * 20


def test_sigterm_serves_the_connections_waiting_in_the_backlog(served):
    """Two sync workers take 2 requests at a time; 18 more wait in the listen backlog when
    SIGTERM arrives: they are served (not reset) before the master exits 0."""
    s = served("proc_apps:app", "-w", "2", "--worker", "sync", "--graceful-timeout", "15s")
    workers = children(s.gateway.pid)
    results, threads = in_parallel(lambda: s.get("/sleep?s=0.5", timeout=30), 20)
    assert wait_until(lambda: upstream_connections(s.gateway.pid) >= 2, timeout=5)
    time.sleep(0.2)  # nginx has connected all 20 by now: 2 being served, 18 queued
    sent = time.monotonic()
    s.gateway.send_signal(signal.SIGTERM)
    status = s.gateway.wait(timeout=30)
    took = time.monotonic() - sent
    for t in threads:
        t.join(5)
    statuses = [getattr(r, "status", repr(r)) for r in results]
    served_by = Counter(int(r.text) for r in results if getattr(r, "status", 0) == 200)
    print(f"SIGTERM with 18 queued: exit {status} after {took:.2f} s; served per worker {dict(served_by)}")
    assert statuses == [200] * 20, statuses
    assert set(served_by) <= workers
    assert status == 0
    assert took < 15


def test_ttin_ttou_change_the_worker_count(gateway_factory):
    gw = gateway_factory("proc_apps:app", "-w", "2")
    master = gw.pid

    def count_becomes(n: int) -> None:
        assert wait_until(lambda: len(children(master)) == n, timeout=10), (n, children(master))
        time.sleep(0.3)  # and stays there (no extra spawn or retire follows)
        assert len(children(master)) == n
        with gw.client() as c:
            assert c.request("GET", "/pid").status == 200

    # One signal at a time: POSIX merges a signal sent again while the first is still
    # pending, so two kills a microsecond apart may count once (as with every prefork server).
    count_becomes(2)
    for n in (3, 4):
        gw.send_signal(signal.SIGTTIN)
        count_becomes(n)
    for n in (3, 2, 1):
        gw.send_signal(signal.SIGTTOU)
        count_becomes(n)
    gw.send_signal(signal.SIGTTOU)  # never below one worker
    count_becomes(1)
    gw.send_signal(signal.SIGTTIN)
    count_becomes(2)


def test_sd_notify_ready_reloading_stopping(gateway_factory, sock_dir):
    path = str(sock_dir / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(0.2)
    messages: list[tuple[float, list[str]]] = []

    def until(field: str, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = listener.recv(4096)
            except TimeoutError:
                continue
            fields = data.decode().split("\n")
            messages.append((time.monotonic(), fields))
            if field in fields:
                return fields
        raise AssertionError(f"no {field} in {messages}")

    try:
        gw = gateway_factory("proc_apps:app", "-w", "2", env={"NOTIFY_SOCKET": path})
        until("READY=1")
        gw.send_signal(signal.SIGHUP)
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        reloading = until("RELOADING=1")
        stamps = [int(f.split("=", 1)[1]) for f in reloading if f.startswith("MONOTONIC_USEC=")]
        assert len(stamps) == 1 and abs(stamps[0] - now_usec) < 5_000_000, reloading
        until("READY=1")  # the new generation serves
        gw.send_signal(signal.SIGTERM)
        until("STOPPING=1")
        assert gw.wait(timeout=10) == 0
    finally:
        listener.close()
    print("sd_notify:", [fields for _, fields in messages])


def test_pid_file_holds_the_master_pid_and_is_removed(gateway_factory, tmp_path):
    pid_file = tmp_path / "run" / "gateway.pid"
    pid_file.parent.mkdir()
    gw = gateway_factory("proc_apps:app", "-w", "2", "--pid", str(pid_file))
    assert pid_file.read_text().strip() == str(gw.pid)
    # The master listens (which the factory waits for) before it forks its workers.
    assert os.getpid() != gw.pid and wait_until(lambda: children(gw.pid), timeout=5)
    gw.send_signal(signal.SIGTERM)
    assert gw.wait(timeout=10) == 0
    assert not pid_file.exists()


def test_pid_file_is_removed_after_a_boot_failure(gateway_factory, tmp_path):
    pid_file = tmp_path / "gateway.pid"
    gw = gateway_factory("no_such_module_here:app", "--pid", str(pid_file), wait=False)
    assert gw.wait(timeout=15) == 4
    assert not pid_file.exists()
