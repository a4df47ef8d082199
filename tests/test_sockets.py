"""gateway.sockets: bind address parsing, unix socket permissions and stale files, adopting
inherited listening sockets (fd://N, systemd LISTEN_FDS, fd 0), and a real gateway
started by socket activation.

systemd passes its sockets from fd 3 on, with LISTEN_PID set to the pid of the process
that must use them; the subprocess tests put a listening socket on fd 3 and exec the code
under test with LISTEN_PID equal to its own pid, as systemd does.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.client import FastCGIClient
from gateway.config import Config
from gateway.errors import BindError, ConfigError
from gateway.sockets import (
    BindSpec,
    adopt_fd,
    bind_socket,
    cleanup_unix_sockets,
    create_sockets,
    parse_bind,
    systemd_sockets,
)
from tests.integration.nginx import kill_group

# -- parse_bind --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9000", BindSpec("tcp", host="127.0.0.1", port=9000)),
        ("  0.0.0.0:80 ", BindSpec("tcp", host="0.0.0.0", port=80)),
        ("localhost:0", BindSpec("tcp", host="localhost", port=0)),
        (":9001", BindSpec("tcp", host="127.0.0.1", port=9001)),
        ("example.test", BindSpec("tcp", host="example.test", port=9000)),
        ("[::1]:9002", BindSpec("tcp", host="::1", port=9002)),
        ("[::]:65535", BindSpec("tcp", host="::", port=65535)),
        ("unix:/run/app.sock", BindSpec("unix", path="/run/app.sock")),
        ("/run/app.sock", BindSpec("unix", path="/run/app.sock")),
        ("fd://3", BindSpec("fd", fd=3)),
        ("fd://0", BindSpec("fd", fd=0)),
    ],
)
def test_parse_bind(text, expected):
    spec = parse_bind(text)
    assert spec == expected
    assert parse_bind(str(spec)) == spec  # str() gives a bind address back


def test_parse_bind_relative_unix_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_bind("unix:app.sock") == BindSpec("unix", path=str(tmp_path / "app.sock"))


@pytest.mark.parametrize(
    "bad",
    ["", "   ", "unix:", "fd://", "fd://x", "fd://-1", "fd://3.0", "[::1]", "[::1]9000", "[::1]:",
     "host:", "host:http", "host:70000", "host:-1", "127.0.0.1:9000:1", "::1:9000"],
)  # fmt: skip
def test_parse_bind_rejects(bad):
    with pytest.raises(ConfigError):
        parse_bind(bad)


# -- unix sockets ------------------------------------------------------------------------------


def mode_of(path: Path) -> int:
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode)
    return stat.S_IMODE(st.st_mode)


def test_unix_socket_default_mode_0660_and_cleanup(sock_dir):
    path = sock_dir / "a.sock"
    sock = bind_socket(parse_bind(f"unix:{path}"))
    try:
        assert mode_of(path) == 0o660
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        cleanup_unix_sockets([sock])
        assert not path.exists()
    finally:
        sock.close()


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o666])
def test_unix_socket_mode_is_honoured(sock_dir, mode):
    path = sock_dir / "m.sock"
    with bind_socket(parse_bind(str(path)), mode=mode):
        assert mode_of(path) == mode


def test_unix_socket_owner(sock_dir):
    path = sock_dir / "o.sock"
    with bind_socket(parse_bind(str(path)), owner="nobody:www-data"):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (pwd.getpwnam("nobody").pw_uid, grp.getgrnam("www-data").gr_gid)
    with bind_socket(parse_bind(str(sock_dir / "g.sock")), owner=":www-data"):
        assert os.lstat(sock_dir / "g.sock").st_gid == grp.getgrnam("www-data").gr_gid
    with pytest.raises(ConfigError, match="unknown socket owner"):
        bind_socket(parse_bind(str(sock_dir / "p.sock")), owner="fcgw-no-such-user")


def test_world_writable_mode_refused_unless_allowed():
    with pytest.raises(ConfigError, match="world-writable"):
        Config(socket_mode=0o666)
    with pytest.raises(ConfigError, match="world-writable"):
        Config(socket_mode=0o777)
    assert Config(socket_mode=0o666, extra={"allow_world_writable_socket": True}).socket_mode == 0o666
    assert Config(socket_mode=0o664).socket_mode == 0o664


def test_stale_socket_file_is_removed_and_rebound(sock_dir):
    path = sock_dir / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays behind, nobody listens
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    with bind_socket(parse_bind(str(path))) as sock:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(path))
        conn, _ = sock.accept()
        conn.close()
        client.close()


def test_live_socket_is_refused(sock_dir):
    path = sock_dir / "live.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen(1)
        with pytest.raises(BindError, match="already listening"):
            bind_socket(parse_bind(str(path)))
        assert path.exists()  # the other server's socket was left alone


def test_non_socket_file_is_refused(sock_dir):
    path = sock_dir / "data.sock"
    path.write_text("precious")
    with pytest.raises(BindError, match="not a socket"):
        bind_socket(parse_bind(str(path)))
    assert path.read_text() == "precious"


def test_cleanup_leaves_a_socket_file_it_did_not_create(sock_dir):
    path = sock_dir / "theirs.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as theirs:
        theirs.bind(str(path))
        theirs.listen(1)
        cleanup_unix_sockets([theirs])
        assert path.exists()


def test_tcp_port_in_use_is_a_bind_error():
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        with pytest.raises(BindError, match=r"cannot bind 127\.0\.0\.1:"):
            bind_socket(parse_bind(f"127.0.0.1:{port}"))


def test_create_sockets_binds_all_or_nothing(sock_dir):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        taken = f"127.0.0.1:{other.getsockname()[1]}"
        first = sock_dir / "first.sock"
        with pytest.raises(BindError):
            create_sockets((f"unix:{first}", taken), backlog=8, mode=0o660, owner=None)
    socks = create_sockets((f"unix:{first}", "[::1]:0", "127.0.0.1:0"), backlog=8, mode=0o600, owner=None)
    try:
        assert [s.family for s in socks] == [socket.AF_UNIX, socket.AF_INET6, socket.AF_INET]
        assert mode_of(first) == 0o600
    finally:
        cleanup_unix_sockets(socks)
        for s in socks:
            s.close()
    assert not first.exists()


# -- inherited sockets ---------------------------------------------------------------------------


def test_adopt_fd_on_a_listening_socket():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with adopt_fd(os.dup(listener.fileno())) as adopted:
            assert adopted.getsockname() == listener.getsockname()
        fd = os.dup(listener.fileno())
        with bind_socket(parse_bind(f"fd://{fd}")) as adopted:  # --bind fd://N
            assert adopted.fileno() == fd
            assert adopted.getsockname() == listener.getsockname()


def test_adopt_fd_refuses_non_listening_sockets_and_other_files(tmp_path):
    with socket.socket() as unbound:
        with pytest.raises(BindError, match="not a listening stream socket"):
            adopt_fd(unbound.fileno())
        unbound.getsockname()  # not closed by the refusal
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        with pytest.raises(BindError):
            adopt_fd(udp.fileno())
    with open(tmp_path / "f", "w") as f, pytest.raises(BindError, match="not a socket"):
        adopt_fd(f.fileno())


def test_systemd_variables_for_another_process_are_ignored():
    assert systemd_sockets({"LISTEN_PID": "1", "LISTEN_FDS": "1"}) == []
    assert systemd_sockets({"LISTEN_FDS": "1"}) == []  # no LISTEN_PID: not for us (sd_listen_fds)
    assert systemd_sockets({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0"}) == []
    assert systemd_sockets({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "many"}) == []


# Puts the listening socket passed as fd N on fd 3, exports LISTEN_PID (its own pid, which
# exec keeps) and LISTEN_FDS=1, then execs argv[2:] like systemd's socket activation.
ACTIVATE = textwrap.dedent(
    """
    import os, sys
    fd = int(sys.argv[1])
    if fd != 3:
        os.dup2(fd, 3)
        os.close(fd)
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="app")
    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
    """
)

SHOW_SYSTEMD_SOCKETS = textwrap.dedent(
    """
    import os
    from gateway.sockets import describe, systemd_sockets
    socks = systemd_sockets()
    print([(s.fileno(), describe(s)) for s in socks])
    print(sorted(k for k in os.environ if k.startswith("LISTEN_")))
    """
)


def test_systemd_sockets_in_an_activated_process(sock_dir):
    path = sock_dir / "activated.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(4)
        out = subprocess.run(
            [sys.executable, "-c", ACTIVATE, str(listener.fileno()), "-c", SHOW_SYSTEMD_SOCKETS],
            pass_fds=(listener.fileno(),),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"[(3, 'unix:{path}')]", "[]"]


def test_gateway_serves_on_a_socket_activated_listener(sock_dir, tmp_path):
    path = sock_dir / "activated.sock"
    log = tmp_path / "gateway.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(16)
        # --bind names an address that would fail: the inherited socket must be used instead
        cmd = [sys.executable, "-c", ACTIVATE, str(listener.fileno()), "-m", "gateway"]
        cmd += ["--bind", "unix:/nonexistent-dir/never.sock", "asgi_app:app"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                pass_fds=(listener.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    try:  # the listener is closed here: only the gateway holds it now
        with FastCGIClient(f"unix:{path}", timeout=10) as client:
            resp = client.request("GET", "/pid")
        assert resp.status == 200
        assert resp.body.isdigit()
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        kill_group(proc)
    text = log.read_text()
    assert f"serving ASGI on unix:{path}" in text
    assert "never.sock" not in text
    assert path.exists(), "the socket file belongs to the activating manager and must stay"


def test_gateway_uses_a_listening_socket_on_fd_0(sock_dir, tmp_path):
    """The FCGI_LISTENSOCK_FILENO convention (spawn-fcgi, mod_fcgid): stdin is the listener."""
    path = sock_dir / "fd0.sock"
    log = tmp_path / "gateway.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener, open(log, "wb") as out:
        listener.bind(str(path))
        listener.listen(16)
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--bind", "unix:/nonexistent-dir/never.sock", "wsgi_app:app"],
            stdin=listener,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with FastCGIClient(f"unix:{path}", timeout=10) as client:
            assert client.request("GET", "/pid").body.isdigit()
    finally:
        kill_group(proc)
    assert f"serving WSGI on unix:{path}" in log.read_text()
