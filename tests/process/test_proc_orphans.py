"""No orphans (issue 17): ``kill -9`` of the master while a slow request is in flight.

Before: the workers kept serving for good, unmanaged, and a new master on the same socket
exited 3 ("another server is already listening"), so a supervisor restarted it in a loop.
Now each worker notices from its heartbeat that its parent changed, stops accepting,
finishes what it has and exits; the new master, started at once, waits for them (naming
them) and then binds and serves. Real processes behind a real nginx.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from gateway.errors import BindError
from gateway.orphans import PROBATION_S
from gateway.sockets import BindSpec, bind_socket
from tests.integration.nginx import free_port
from tests.process._load import alive, children, wait_until

GRACEFUL_S = 10
SLOW_S = 3

SLOW_APP = f'''"""Written by tests/process: /slow takes {SLOW_S} s; every answer names the worker pid."""
import os
import time


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        time.sleep({SLOW_S})
    body = f"ok {{os.getpid()}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.mark.slow
@pytest.mark.parametrize(
    ("worker", "family"), [("sync", "unix"), ("async", "unix"), ("sync", "tcp"), ("async", "tcp")]
)
def test_kill_9_master_in_flight_request_finishes_workers_exit_new_master_serves(
    served, gateway_factory, app_module, worker, family
):
    app_dir = app_module("slow_app", SLOW_APP)
    args = ("-w", "2", "--worker", worker, "--graceful-timeout", str(GRACEFUL_S), "--app-dir", str(app_dir))
    s = served("slow_app:app", *args, bind=f"127.0.0.1:{free_port()}" if family == "tcp" else None)
    master = s.gateway.pid
    workers = children(master)
    assert len(workers) == 2

    answers: list = []
    slow = threading.Thread(target=lambda: answers.append(s.get("/slow", timeout=30)))
    slow.start()
    time.sleep(0.5)  # the request is in the app now
    s.gateway.proc.send_signal(signal.SIGKILL)
    s.gateway.wait(timeout=5)
    killed = time.monotonic()

    # A supervisor restarts the master at once, on the same socket.
    new = gateway_factory("slow_app:app", *args, bind=s.gateway.address, wait=False)

    slow.join(timeout=30)
    assert answers and answers[0].status == 200, answers
    assert answers[0].text.split()[1] in {str(pid) for pid in workers}  # served by an orphan
    assert wait_until(lambda: not any(alive(pid) for pid in workers), timeout=GRACEFUL_S + 2), [
        pid for pid in workers if alive(pid)
    ]
    print(f"orphaned {worker} workers gone {time.monotonic() - killed:.1f} s after kill -9 of the master")

    new.wait_ready(timeout=GRACEFUL_S + 10)
    r = s.get("/")
    assert r.status == 200 and int(r.text.split()[1]) in children(new.pid), r.text
    log = new.log_text()
    assert f"held by workers of master {master}, which is gone" in log or "already listening" not in log, log
    assert new.proc.poll() is None


def _kill_group(proc: subprocess.Popen) -> None:
    """Teardown of a test's listener script: its group (the orphan it forked too) killed."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.stdout.close()


def test_a_socket_held_by_orphans_is_named_when_they_outstay_the_wait(sock_dir):
    """A listener whose ``listen()`` caller is dead and whose holder does not exit: the
    bind waits ``orphan_wait_s`` then fails naming the holder (it used to fail at once with
    "another server is already listening", naming nobody)."""
    path = str(sock_dir / "held.sock")
    script = (
        "import os, socket, sys, time\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)\n"
        "if os.fork() == 0:\n"
        "    print(os.getpid(), flush=True); time.sleep(60)\n"  # the orphan, holding the socket
        "else:\n"
        "    os._exit(0)\n"  # the master, gone
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, path], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        orphan = int(proc.stdout.readline())
        proc.wait(timeout=5)
        begun = time.monotonic()
        with pytest.raises(BindError) as info:
            bind_socket(BindSpec("unix", path=path), orphan_wait_s=0.5)
        assert time.monotonic() - begun >= 0.5
        assert f"held by orphaned workers of master {proc.pid}" in str(info.value)
        assert f"pids {orphan}" in str(info.value) and f"kill -TERM {orphan}" in str(info.value)
        # once the orphan is gone, the same bind succeeds
        os.kill(orphan, signal.SIGKILL)
        assert wait_until(lambda: not alive(orphan), timeout=5)
        bind_socket(BindSpec("unix", path=path), orphan_wait_s=0.5).close()
    finally:
        _kill_group(proc)


@pytest.mark.parametrize("worker", ["sync", "async"])
def test_a_live_gateway_is_still_refused_at_once(gateway_factory, worker):
    """Its master holds the socket (and is the listener, or the listener's parent)."""
    gw = gateway_factory("wsgi_app:app", "-w", "2", "--worker", worker)
    begun = time.monotonic()
    with pytest.raises(BindError, match=r"another server \(pid \d+\) is already listening"):
        bind_socket(BindSpec("unix", path=gw.socket_path), orphan_wait_s=10)
    assert time.monotonic() - begun < 5  # at once: not after the orphans' wait (10 s here)
    assert gw.proc.poll() is None


def test_a_live_server_of_another_kind_is_refused_after_a_short_probation(sock_dir):
    """A single process listening (its parent does not hold the socket): it might be an
    orphaned async worker about to stop listening, so it gets PROBATION_S, not the wait."""
    path = str(sock_dir / "other.sock")
    script = "import socket, sys, time\ns = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", script + "print(flush=True); time.sleep(60)", path],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        proc.stdout.readline()
        begun = time.monotonic()
        with pytest.raises(BindError, match=rf"another server \(pid {proc.pid}\) is already listening"):
            bind_socket(BindSpec("unix", path=path), orphan_wait_s=30)
        assert time.monotonic() - begun < PROBATION_S + 2
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_live_gateway_on_tcp_is_refused_at_once_naming_its_processes(gateway_factory):
    port = free_port()
    gw = gateway_factory("wsgi_app:app", "-w", "2", bind=f"127.0.0.1:{port}")
    begun = time.monotonic()
    with pytest.raises(BindError, match=r"Address already in use \(held by pids ") as info:
        bind_socket(BindSpec("tcp", host="127.0.0.1", port=port), orphan_wait_s=10)
    assert time.monotonic() - begun < 5  # a master and its workers: no wait
    assert str(gw.pid) in str(info.value)
    assert gw.proc.poll() is None


def test_a_tcp_port_held_by_an_orphan_is_bound_once_it_stops_listening():
    """A listener whose master is gone and which closes its socket a moment later (what an
    orphaned worker does once it notices): the bind waits for it instead of failing."""
    port = free_port()
    script = (
        "import os, socket, sys, time\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(8)\n"
        "if os.fork() == 0:\n"
        "    print(os.getpid(), flush=True); time.sleep(1); s.close(); time.sleep(60)\n"
        "else:\n"
        "    os._exit(0)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(port)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        orphan = int(proc.stdout.readline())
        proc.wait(timeout=5)
        sock = bind_socket(BindSpec("tcp", host="127.0.0.1", port=port), orphan_wait_s=10)
        sock.close()
        assert alive(orphan)  # it still runs (finishing its requests); it only let the port go
    finally:
        _kill_group(proc)
