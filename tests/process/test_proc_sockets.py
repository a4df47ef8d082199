"""Inherited listening sockets with real processes (issue 4): systemd socket activation
(LISTEN_FDS/LISTEN_PID, the socket on fd 3) and ``--bind fd://N``, behind a real nginx.

The test binds the socket, as systemd would, and hands it over: for socket activation a
``sh`` moves it from stdin to fd 3 and sets ``LISTEN_PID=$$`` before ``exec``-ing the
gateway, so LISTEN_PID is the gateway's own pid. The gateway must serve on it and must not
remove a socket file it did not create.
"""

from __future__ import annotations

import shlex
import signal
import socket
import sys

from tests.integration.nginx import can_connect, http_request
from tests.process._load import children, wait_until


def listening_unix_socket(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(128)
    return sock


def gateway_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway", *args]


def check_serving(spawned, nginx_factory, path: str) -> None:
    assert wait_until(lambda: "serving WSGI on" in spawned.log_text(), timeout=15), spawned.log_text()
    nginx = nginx_factory(f"unix:{path}")
    pids = {http_request("GET", nginx.url + "/pid").text for _ in range(10)}
    assert pids and pids <= {str(p) for p in children(spawned.pid)}, (pids, spawned.log_text())


def test_systemd_socket_activation(spawn, nginx_factory, sock_dir):
    path = str(sock_dir / "activated.sock")
    sock = listening_unix_socket(path)
    inner = shlex.join(gateway_cmd("-w", "2", "--bind", f"unix:{sock_dir}/unused.sock", "proc_apps:app"))
    script = f"exec 3<&0 0</dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec {inner}"
    spawned = spawn(["sh", "-c", script], stdin=sock.fileno())
    sock.close()  # the gateway holds it now
    check_serving(spawned, nginx_factory, path)
    assert f"unix:{path}" in spawned.log_text()
    assert not (sock_dir / "unused.sock").exists()  # the --bind was not used
    spawned.proc.send_signal(signal.SIGTERM)
    assert spawned.proc.wait(10) == 0
    assert (sock_dir / "activated.sock").exists()  # systemd's socket file is not ours to remove


def test_listen_pid_of_another_process_is_ignored(spawn, sock_dir):
    """LISTEN_FDS leaked from some parent (LISTEN_PID not ours): bind as configured."""
    path = str(sock_dir / "inherited.sock")
    sock = listening_unix_socket(path)
    own = f"{sock_dir}/own.sock"
    inner = shlex.join(gateway_cmd("--bind", f"unix:{own}", "proc_apps:app"))
    script = f"exec 3<&0 0</dev/null; LISTEN_PID=1 LISTEN_FDS=1 exec {inner}"
    spawned = spawn(["sh", "-c", script], stdin=sock.fileno())
    sock.close()
    assert wait_until(lambda: can_connect(f"unix:{own}"), timeout=15), spawned.log_text()
    spawned.proc.send_signal(signal.SIGTERM)
    assert spawned.proc.wait(10) == 0


def test_bind_fd(spawn, nginx_factory, sock_dir):
    path = str(sock_dir / "passed.sock")
    sock = listening_unix_socket(path)
    fd = sock.fileno()
    spawned = spawn(gateway_cmd("-w", "2", "--bind", f"fd://{fd}", "proc_apps:app"), pass_fds=(fd,))
    sock.close()
    check_serving(spawned, nginx_factory, path)
    spawned.proc.send_signal(signal.SIGTERM)
    assert spawned.proc.wait(10) == 0


def test_bind_fd_that_is_not_a_socket_exits_3(spawn, tmp_path):
    with open(tmp_path / "plain.txt", "w") as f:
        spawned = spawn(gateway_cmd("--bind", f"fd://{f.fileno()}", "proc_apps:app"), pass_fds=(f.fileno(),))
    assert spawned.proc.wait(15) == 3
    assert "not a socket" in spawned.log_text() or "not a listening" in spawned.log_text()
