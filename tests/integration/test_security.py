"""Security options with real processes: --allowed-clients (and FCGI_WEB_SERVER_ADDRS),
--max-connections, --user/--group privilege drop, --forward-stderr."""

from __future__ import annotations

import pwd
import socket
import time
from pathlib import Path

import pytest

from gateway.client import ClientError, FastCGIClient

APPS = {"sync": "wsgi_app:app", "async": "asgi_app:app"}


def _tcp_gateway(gateway_factory, free_port, kind, *args, env=None):
    return gateway_factory(APPS[kind], *args, bind=f"127.0.0.1:{free_port}", env=env)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_allowed_clients_refuses_other_addresses(gateway_factory, free_port, kind):
    gw = _tcp_gateway(gateway_factory, free_port, kind, "--allowed-clients", "10.0.0.0/8")
    with pytest.raises(ClientError):
        FastCGIClient(gw.address, timeout=5).request("GET", "/pid")
    gw.wait_for_log(r"connection from 127\.0\.0\.1 refused: not in --allowed-clients")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_allowed_clients_lets_listed_addresses_in(gateway_factory, free_port, kind):
    gw = _tcp_gateway(
        gateway_factory, free_port, kind, "--allowed-clients", "10.0.0.1", "--allowed-clients", "127.0.0.0/8"
    )
    assert FastCGIClient(gw.address, timeout=5).request("GET", "/pid").status == 200


def test_fcgi_web_server_addrs_is_honoured(gateway_factory, free_port):
    gw = _tcp_gateway(
        gateway_factory, free_port, "sync", env={"FCGI_WEB_SERVER_ADDRS": "192.0.2.1,192.0.2.2"}
    )
    with pytest.raises(ClientError):
        FastCGIClient(gw.address, timeout=5).request("GET", "/pid")
    gw.wait_for_log("not in --allowed-clients")


def test_bad_allowed_clients_entry_is_a_config_error(gateway_factory):
    gw = gateway_factory("wsgi_app:app", "--allowed-clients", "not-an-ip", wait=False)
    assert gw.wait(20) == 2


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_max_connections_closes_the_extra_ones(gateway_factory, kind):
    gw = gateway_factory(APPS[kind], "--max-connections", "2")
    held = []
    for _ in range(2):
        s = socket.socket(socket.AF_UNIX)
        s.connect(gw.socket_path)
        held.append(s)
    time.sleep(0.3)  # accepted by the worker
    with pytest.raises(ClientError):
        FastCGIClient(gw.address, timeout=5).request("GET", "/pid")
    gw.wait_for_log(r"connection refused: 2 connections open \(--max-connections\)")
    for s in held:
        s.close()
    time.sleep(0.3)
    assert FastCGIClient(gw.address, timeout=5).request("GET", "/pid").status == 200


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_workers_drop_privileges(gateway_factory, kind):
    nobody = pwd.getpwnam("nobody")
    # --preload and no isolation checkers: nothing is imported after the drop (this
    # machine's Python lives under /root, which nobody cannot read).
    gw = gateway_factory(
        APPS[kind], "--user", "nobody", "--group", "nogroup", "--preload", "--isolation-checkers", "none"
    )
    pid = int(FastCGIClient(gw.address, timeout=5).request("GET", "/pid").body)
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert set(map(int, uids)) == {nobody.pw_uid}
    master = Path(f"/proc/{gw.pid}/status").read_text()
    assert "Uid:\t0\t" in master  # the master keeps root (it owns the sockets)


def test_unknown_user_is_a_config_error(gateway_factory):
    gw = gateway_factory("wsgi_app:app", "--user", "no-such-user-fcgw", wait=False)
    assert gw.wait(20) == 2


def test_forward_stderr_sends_wsgi_errors_to_the_web_server(gateway_factory):
    gw = gateway_factory("wsgi_app:app", "--forward-stderr")
    r = FastCGIClient(gw.address, timeout=5).request("GET", "/errors")
    assert r.status == 200
    assert b"app wrote to wsgi.errors" in r.stderr
    gw.wait_for_log("app wrote to wsgi.errors")  # still in the error log too
    plain = gateway_factory("wsgi_app:app")
    assert FastCGIClient(plain.address, timeout=5).request("GET", "/errors").stderr == b""
