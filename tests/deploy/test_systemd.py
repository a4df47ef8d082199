"""The systemd recipes without systemd: the units' commands run the way systemd runs them.

- ``Type=notify``: fcgi-gateway-flask.service's ExecStart with a NOTIFY_SOCKET (a unix
  datagram socket in the temp dir): READY=1 only once the socket serves, WATCHDOG=1 pings; ExecReload=
  (SIGHUP) gives RELOADING=1 then READY=1 with new workers; KillSignal= gives STOPPING=1
  and exit status 0 well within TimeoutStopSec=.
- Socket activation: fcgi-gateway-flask.socket's ListenStream= handed to the service's
  ExecStart by ``systemd-socket-activate`` (which, like systemd, starts the program on the
  first connection): the request that triggered the start is served, --bind is ignored, and
  the socket file is left in place. Then, with the socket held by the test as systemd
  holds it, the service restarts under POST load behind nginx without losing a request.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.client import FastCGIClient
from tests.deploy._procs import NotifySocket, base_env, start_nginx
from tests.deploy._render import FLASK_DEPLOY, Rewriter, Unit, duration_s, listen_on, option
from tests.integration.nginx import free_port
from tests.process._load import Wrk, children, wait_until

SERVICE = FLASK_DEPLOY / "fcgi-gateway-flask.service"
SOCKET = FLASK_DEPLOY / "fcgi-gateway-flask.socket"
ACTIVATE = shutil.which("systemd-socket-activate")


def get(address: str, path: str = "/health"):
    with FastCGIClient(address, timeout=10) as client:
        return client.request("GET", path)


def test_type_notify_ready_reload_stopping(workdir: Path, unit_gateway) -> None:
    rewrite = Rewriter.for_dir(workdir)
    # WATCHDOG_USEC is what systemd sets for WatchdogSec=: the master pings at half of it.
    gw = unit_gateway(SERVICE, rewrite=rewrite, env={"WATCHDOG_USEC": "1000000"})  # returns on READY=1
    gw.notify.wait_for("WATCHDOG", timeout=5, proc=gw.proc)
    workers = int(option(gw.argv, "--workers") or "1")
    ready = next(m for m in gw.notify.messages if m.get("READY") == "1")
    assert f"{workers} worker" in ready.get("STATUS", ""), gw.notify.messages
    address = option(gw.argv, "--bind")
    assert address and address.startswith(f"unix:{workdir}/run/")
    r = get(address)  # READY=1 means serving: no retry loop here
    assert r.status == 200
    old = children(gw.pid)
    assert json.loads(r.body)["pid"] in old

    reload_cmd = [a.replace("$MAINPID", str(gw.pid)) for a in gw.unit.command("ExecReload", rewrite)]
    subprocess.run(reload_cmd, check=True, timeout=10)
    gw.notify.wait_for("RELOADING", proc=gw.proc)
    gw.notify.wait_for("READY", proc=gw.proc)
    assert wait_until(lambda: not (children(gw.pid) & old) and len(children(gw.pid)) == workers, timeout=20)
    assert get(address).status == 200

    kill_signal = getattr(signal, gw.unit.get("Service", "KillSignal") or "SIGTERM")
    timeout_stop = duration_s(gw.unit.get("Service", "TimeoutStopSec") or "90")
    graceful = duration_s(option(gw.argv, "--graceful-timeout") or "30")
    assert timeout_stop > graceful, "systemd would SIGKILL before the graceful timeout ends"
    t0 = time.monotonic()
    os.kill(gw.pid, kill_signal)  # KillMode=mixed: the main process only
    gw.notify.wait_for("STOPPING", proc=None)
    assert gw.proc.wait(timeout_stop) == 0
    print(f"Type=notify: stopped in {time.monotonic() - t0:.2f}s; messages {gw.notify.messages}")
    assert not Path(address.removeprefix("unix:")).exists()  # its own socket file is removed


def activation_env(service: Unit, rewrite: Rewriter, notify: NotifySocket) -> dict[str, str]:
    env = {**service.environment(rewrite), "NOTIFY_SOCKET": notify.path, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    return env


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed (package systemd)")
def test_socket_activation_with_systemd_socket_activate(workdir: Path, launch) -> None:
    rewrite = Rewriter.for_dir(workdir)
    listen = rewrite(Unit.load(SOCKET).get("Socket", "ListenStream") or "")
    service = Unit.load(SERVICE)
    argv = service.command("ExecStart", rewrite)
    assert option(argv, "--bind") == f"unix:{listen}", "the service's --bind and the socket differ"
    notify = NotifySocket(workdir / "notify.sock")
    env = activation_env(service, rewrite, notify)
    cmd = [ACTIVATE, "-l", listen, *(f"--setenv={k}={v}" for k, v in env.items()), *argv]
    proc = launch(cmd, "socket-activate", cwd=rewrite(service.get("Service", "WorkingDirectory") or "/"))
    assert wait_until(lambda: os.path.exists(listen), timeout=10), proc.log_text()
    inode = os.stat(listen).st_ino
    time.sleep(0.3)
    assert not notify.messages and "Execing" not in proc.log_text()  # started on demand only
    r = get(f"unix:{listen}")  # queued in the backlog until the gateway has started
    assert r.status == 200, proc.log_text()
    notify.wait_for("READY", proc=proc)
    assert json.loads(r.body)["pid"] in children(proc.pid)
    assert os.stat(listen).st_ino == inode  # served on the inherited socket, not a new bind
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.log_text()
    assert os.path.exists(listen), "the gateway removed the socket file it was handed"
    notify.close()


_SHIM = (
    "import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); os.close(fd); "
    "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='flask.sock'); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def start_activated(launch, argv: list[str], env: dict[str, str], listener: socket.socket, cwd: str):
    """What systemd does for a service with a .socket: the socket as fd 3, LISTEN_FDS=1 and
    LISTEN_PID=<the service's pid> (set by a shim that then execs the service in place)."""
    fd = listener.fileno()
    return launch(
        [sys.executable, "-c", _SHIM, str(fd), *argv], "activated", env=env, cwd=cwd, pass_fds=(fd,)
    )


@pytest.mark.slow
def test_socket_held_by_systemd_makes_restarts_lossless(workdir: Path, launch, tmp_path: Path) -> None:
    """Restart the service under POST load: with systemd holding the listening socket,
    connections wait in its backlog for the new process; nginx sees no error at all."""
    rewrite = Rewriter.for_dir(workdir)
    path = rewrite(Unit.load(SOCKET).get("Socket", "ListenStream") or "")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(int(Unit.load(SOCKET).get("Socket", "Backlog") or 128))
    service = Unit.load(SERVICE)
    argv = service.command("ExecStart", rewrite)
    cwd = rewrite(service.get("Service", "WorkingDirectory") or "/")
    notify = NotifySocket(workdir / "notify.sock")
    env = base_env(activation_env(service, rewrite, notify))
    gw = start_activated(launch, argv, env, listener, cwd)
    notify.wait_for("READY", proc=gw)
    port = free_port()
    http_body = listen_on(rewrite((FLASK_DEPLOY / "nginx.conf").read_text()), {8080: port})
    nginx = start_nginx(workdir / "nginx", http_body, [port])
    run = Wrk(tmp_path, f"http://127.0.0.1:{port}/upload", duration=7, connections=4, threads=1,
              method="POST", body=b"note=restart").start()  # fmt: skip
    time.sleep(2)
    for _ in range(2):
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.wait(30) == 0
        gw = start_activated(launch, argv, env, listener, cwd)
        notify.wait_for("READY", proc=gw)
        time.sleep(1)
    result = run.result()
    print(f"restarts behind a held socket: {result.summary()}")
    nginx.stop()
    listener.close()
    notify.close()
    assert result.ok > 200
    assert result.failed == 0, result.output + nginx.log_text()[-3000:]
