"""Upgrade in place (SIGUSR2) with real processes: a new master adopts the sockets, the old
one retires (gateway/upgrade.py).

The app answers ``"<its master's pid> <its pid>"`` (``os.getppid()``), so every response
says which master's workers served it. The new master is the old one's child, in its
process group: the fixtures' teardown kills that whole group, the new master with it.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from gateway.client import FastCGIClient, ping
from tests.process._load import alive, children, wait_until

WORKERS = 2

PARENT_APP = '''"""Written by tests/process: answers "<its master's pid> <its pid>"."""
import os


def app(environ, start_response):
    body = f"{os.getppid()} {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


#: PARENT_APP whose import waits (bounded) for a file named ``gate`` next to it
GATED_APP = (
    PARENT_APP
    + """
import pathlib
import time

for _ in range(600):
    if pathlib.Path(__file__).with_name("gate").exists():
        break
    time.sleep(0.05)
"""
)


def by_master(bodies: Counter[str]) -> dict[int, int]:
    """Responses counted by the pid of the master whose worker answered."""
    seen: dict[int, int] = {}
    for body, n in bodies.items():
        master = int(body.split()[0])
        seen[master] = seen.get(master, 0) + n
    return seen


def read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def master_of(address: str) -> int:
    with FastCGIClient(address) as client:
        return int(client.request("GET", "/").body.split()[0])


@pytest.mark.slow
def test_usr2_under_load_hands_over_to_a_new_master(served, wrk, app_module, tmp_path, sock_dir):
    pid_file = tmp_path / "gateway.pid"
    status = f"unix:{sock_dir}/status.sock"
    app_dir = app_module("parent_app", PARENT_APP)
    s = served(
        "parent_app:app",
        "-w",
        str(WORKERS),
        "--app-dir",
        str(app_dir),
        "--pid",
        str(pid_file),
        "--status-bind",
        status,
        keep_conn=True,
    )
    old = s.gateway.pid
    assert read_pid(pid_file) == old
    load = wrk(s.url + "/", duration=8, connections=8)
    time.sleep(1.5)  # the load is under way
    s.gateway.send_signal(signal.SIGUSR2)
    assert wait_until(lambda: read_pid(pid_file) not in (0, old), timeout=30), s.gateway.log_text()[-3000:]
    new = read_pid(pid_file)
    assert os.getpgid(new) == old  # the fixture's teardown (kill the group) reaches it
    assert s.gateway.wait(timeout=30) == 0  # the old master drained its workers and exited
    load_running = load.proc is not None and load.proc.poll() is None
    result = load.result()
    served_by = by_master(result.bodies)
    print(f"upgrade under load: {result.summary()}; by master {served_by} (old {old}, new {new})")
    assert result.failed == 0, result.summary() + "\n" + result.output
    assert set(served_by) <= {old, new} and old in served_by, served_by
    if load_running:  # the old master was gone before the end of the load
        assert new in served_by, served_by
    # Only the new master's workers answer now, on the same socket (its file still there).
    assert {int(s.get("/").text.split()[0]) for _ in range(20)} == {new}
    assert os.path.exists(s.gateway.socket_path)
    assert wait_until(lambda: len(children(new)) == WORKERS, timeout=10)
    assert ping(status) == (True, "200 OK")  # the status socket was handed over too
    assert os.path.exists(status.removeprefix("unix:"))
    log = s.gateway.log_text()
    assert f"upgrade: new master {new} serves; master {old} retires its workers" in log
    assert f"upgrade: master {new} takes over from master {old}" in log
    assert "[ERROR]" not in log, log[-3000:]
    # The new master owns the socket files and the pid file now: it removes them as it stops.
    os.kill(new, signal.SIGTERM)
    assert wait_until(lambda: not alive(new), timeout=30)
    assert not pid_file.exists() and not os.path.exists(s.gateway.socket_path)


@pytest.mark.parametrize("broken", ["app", "config"])
def test_a_new_master_that_fails_leaves_the_old_one_serving(gateway_factory, app_module, tmp_path, broken):
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f"workers = {WORKERS}\n")
    pid_file = tmp_path / "gateway.pid"
    app_dir = app_module("parent_app", PARENT_APP)
    gw = gateway_factory(
        "parent_app:app",
        "--config",
        str(cfg),
        "--app-dir",
        str(app_dir),
        "--pid",
        str(pid_file),
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    gw.wait_for_log(rf"{WORKERS} worker\(s\) ready")
    workers = children(gw.pid)
    if broken == "app":
        app_module("parent_app", 'raise RuntimeError("release 2 needs SETTINGS_MODULE")\n')
        status, cause = "exit status 4, the application cannot be loaded", "release 2 needs SETTINGS_MODULE"
    else:
        cfg.write_text('workers = "many"\n')
        status, cause = "exit status 2, bad configuration", "not a count from 1 to 512 or auto"
    gw.send_signal(signal.SIGUSR2)
    failed = gw.wait_for_log(
        r"upgrade failed: new master (\d+) exited before serving \((.*)\); master (\d+) serves on", timeout=30
    )
    assert failed.group(2) == status and int(failed.group(3)) == gw.pid, failed.group(0)
    assert cause in gw.log_text()  # the new master said why, in the same log
    assert not alive(int(failed.group(1)))
    assert gw.proc.poll() is None and read_pid(pid_file) == gw.pid
    assert children(gw.pid) == workers
    assert {master_of(gw.address) for _ in range(10)} == {gw.pid}
    # Fixed, the next SIGUSR2 upgrades (one failed upgrade does not block the next).
    if broken == "app":
        app_module("parent_app", PARENT_APP)
    else:
        cfg.write_text(f"workers = {WORKERS}\n")
    gw.send_signal(signal.SIGUSR2)
    assert wait_until(lambda: read_pid(pid_file) not in (0, gw.pid), timeout=30), gw.log_text()[-3000:]
    assert gw.wait(timeout=30) == 0
    assert master_of(gw.address) == read_pid(pid_file)


def test_usr2_during_an_upgrade_or_a_stop_is_ignored(gateway_factory, app_module):
    gate = app_module("gated_app", GATED_APP) / "gate"
    gate.touch()
    gw = gateway_factory("gated_app:app", "-w", "1", "--app-dir", str(gate.parent))
    gw.wait_for_log(r"1 worker\(s\) ready")
    gate.unlink()  # the new master's worker waits at import until the gate is back
    gw.send_signal(signal.SIGUSR2)
    new = int(gw.wait_for_log(r"upgrade: started new master (\d+)").group(1))
    gw.send_signal(signal.SIGUSR2)
    gw.wait_for_log(rf"upgrade \(SIGUSR2\) requested while the upgrade to new master {new} is in progress")
    gate.touch()
    assert gw.wait(timeout=30) == 0  # the upgrade went through: the old master retired
    assert gw.log_text().count("upgrade: started new master") == 1
    assert master_of(gw.address) == new
    # SIGQUIT and SIGUSR2 at once (held by SIGSTOP): the stop comes first, SIGUSR2 is ignored.
    os.kill(new, signal.SIGSTOP)
    os.kill(new, signal.SIGQUIT)
    os.kill(new, signal.SIGUSR2)
    os.kill(new, signal.SIGCONT)
    gw.wait_for_log(rf"\[{new}\] \[WARNING\] upgrade \(SIGUSR2\) requested during the stop; ignored")
    assert wait_until(lambda: not alive(new), timeout=30)
    assert "upgrade: started new master" not in gw.log_text().split(f"master {new} takes over")[1]


class NotifySocket:
    """A NOTIFY_SOCKET like systemd's that also records who sent each message
    (SO_PASSCRED), as systemd does to tell the main process from the others."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[int, list[str]]] = []

    def until(self, wanted, timeout: float = 30.0) -> tuple[int, list[str]]:
        """The first message, from now on, for which ``wanted(sender, fields)`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
            except TimeoutError:
                continue
            sender = 0
            for level, kind, raw in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    sender = struct.unpack("3i", raw[: struct.calcsize("3i")])[0]
            message = (sender, data.decode().split("\n"))
            self.messages.append(message)
            if wanted(*message):
                return message
        raise AssertionError(f"no such message within {timeout}s: {self.messages}")

    def close(self) -> None:
        self.sock.close()


def test_type_notify_new_master_sends_mainpid_and_ready(spawn, app_module, sock_dir, tmp_path):
    """Started as systemd would start the unit's ExecStart (the fcgi-gateway script, with a
    NOTIFY_SOCKET): the new master announces MAINPID=<its pid> and READY=1 itself, the old
    master forwards them, and nothing says STOPPING=1 while the service goes on."""
    script = Path(sys.executable).parent / "fcgi-gateway"
    assert script.exists(), f"{script} is not installed (scripts/setup-env installs the package)"
    notify = NotifySocket(str(sock_dir / "notify.sock"))
    app_dir = app_module("parent_app", PARENT_APP)
    address = f"unix:{sock_dir}/gw.sock"
    cmd = [str(script), "--bind", address, "-w", "1", "--app-dir", str(app_dir), "parent_app:app"]
    try:
        gw = spawn(cmd, env={"NOTIFY_SOCKET": notify.path}, cwd=str(tmp_path), stdin=subprocess.DEVNULL)
        old = gw.pid
        notify.until(lambda pid, fields: pid == old and "READY=1" in fields)
        os.kill(old, signal.SIGUSR2)
        notify.until(lambda pid, fields: pid == old and "RELOADING=1" in fields)
        new, _ = notify.until(lambda pid, fields: pid != old and f"MAINPID={pid}" in fields)
        notify.until(lambda pid, fields: pid == new and "READY=1" in fields)
        notify.until(lambda pid, fields: pid == old and f"MAINPID={new}" in fields and "READY=1" in fields)
        assert gw.proc.wait(timeout=30) == 0
        assert master_of(address) == new
        cmdline = Path(f"/proc/{new}/cmdline").read_bytes().split(b"\0")
        assert cmdline[:2] == [os.fsencode(sys.executable), os.fsencode(script)], cmdline
        assert not any("STOPPING=1" in f for _, f in notify.messages), notify.messages
        os.kill(new, signal.SIGTERM)  # now the service stops: from the new master
        notify.until(lambda pid, fields: pid == new and "STOPPING=1" in fields)
        assert wait_until(lambda: not alive(new), timeout=30)
        print("sd_notify:", notify.messages)
    finally:
        notify.close()


def test_the_new_master_runs_what_is_installed_at_the_interpreter_path_now(
    spawn, app_module, sock_dir, tmp_path
):
    """A rebuilt virtualenv or a new Python at the same path: here the interpreter path the
    gateway was started with becomes a script that marks its environment."""
    real = os.path.realpath(sys.executable)
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.symlink_to(real)
    app_dir = app_module(
        "interpreter_app",
        PARENT_APP.replace(
            'f"{os.getppid()} {os.getpid()}"', "f\"{os.getppid()} {os.environ.get('INTERPRETER', 'first')}\""
        ),
    )
    address = f"unix:{sock_dir}/gw.sock"
    cmd = [
        str(python),
        "-m",
        "gateway",
        "--bind",
        address,
        "-w",
        "1",
        "--app-dir",
        str(app_dir),
        "interpreter_app:app",
    ]
    gw = spawn(cmd, cwd=str(tmp_path), stdin=subprocess.DEVNULL)
    assert wait_until(lambda: "1 worker(s) ready" in gw.log_text(), timeout=15), gw.log_text()
    with FastCGIClient(address) as client:
        assert client.request("GET", "/").body == f"{gw.pid} first".encode()
    replacement = python.with_name("python.new")
    replacement.write_text(f'#!/bin/sh\nINTERPRETER=second exec {real} "$@"\n')
    replacement.chmod(0o755)
    os.replace(replacement, python)
    os.kill(gw.pid, signal.SIGUSR2)
    assert gw.proc.wait(timeout=30) == 0, gw.log_text()[-3000:]
    with FastCGIClient(address) as client:
        master, interpreter = client.request("GET", "/").body.decode().split()
    assert interpreter == "second" and int(master) != gw.pid


def test_a_stop_during_an_upgrade_stops_the_new_master_too(gateway_factory, app_module):
    gate = app_module("gated_app", GATED_APP) / "gate"
    gate.touch()
    gw = gateway_factory("gated_app:app", "-w", "1", "--app-dir", str(gate.parent))
    gw.wait_for_log(r"1 worker\(s\) ready")
    gate.unlink()  # the new master's worker waits at import: it never becomes ready
    gw.send_signal(signal.SIGUSR2)
    new = int(gw.wait_for_log(r"upgrade: started new master (\d+)").group(1))
    gw.send_signal(signal.SIGTERM)
    gw.wait_for_log(rf"upgrade abandoned \(this master is stopping\): stopping new master {new}")
    assert gw.wait(timeout=30) == 0
    assert wait_until(lambda: not alive(new), timeout=30), gw.log_text()[-3000:]
    assert not os.path.exists(gw.socket_path)  # the old master still owned it: removed
