"""``fcgi-gateway ping``, ``request`` and ``check`` run as a user runs them (subprocesses).

ping and request talk to real gateways (both workers) and to stand-ins for broken
servers: a missing socket file, a socket nobody listens on (unix and TCP), a listener that
never answers, a server that breaks the protocol or hangs up, one that writes FCGI_STDERR.
check loads good and broken apps with the serve options and must neither bind nor serve.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.protocol import FastCGIConnection, ProtocolStatus
from gateway.protocol import records as wire

APPS = {"sync": "wsgi_app:app", "async": "asgi_app:app"}
APPS_DIR = Path(__file__).resolve().parent / "apps"


def cli(*args: str, input: bytes | None = None, cwd: Path | None = None, env: dict | None = None):
    """``python -m gateway *args`` to completion (stdout and stderr as text)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FCGI_GATEWAY_")}
    environ.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=input,
        capture_output=True,
        cwd=cwd,
        env=environ,
        timeout=30,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    proc.out, proc.err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")  # type: ignore[attr-defined]
    return proc


def failed_with(proc, *words: str) -> None:
    """Exit status 1 and one line on stderr naming the reason."""
    assert proc.returncode == 1, (proc.returncode, proc.out, proc.err)
    assert len(proc.err.strip().splitlines()) == 1, proc.err
    for word in words:
        assert word in proc.err, proc.err


class FakeServer:
    """A unix socket server answering each connection with ``handler(sock, codec)``."""

    def __init__(self, path: Path, handler: Callable[[socket.socket, FastCGIConnection], None]) -> None:
        self.address = f"unix:{path}"
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.handler = handler
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self.handler(conn, FastCGIConnection())
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(5)


def _read_request(sock: socket.socket, codec: FastCGIConnection) -> int:
    """Read until the request's body ended; its request id."""
    rid = 0
    while True:
        for ev in codec.feed(sock.recv(65536)):
            if type(ev).__name__ == "RequestReceived":
                rid = ev.request_id
            if type(ev).__name__ in ("StdinEnded", "ConnectionClosed"):
                return rid


def _garbage(sock: socket.socket, codec: FastCGIConnection) -> None:
    _read_request(sock, codec)
    sock.sendall(b"\x07" + b"\x00" * 7 + b"not FastCGI")


def _hang_up(sock: socket.socket, codec: FastCGIConnection) -> None:
    rid = _read_request(sock, codec)
    sock.sendall(codec.send_stdout(rid, b"Status: 200 OK\r\n\r\npart"))


def _with_stderr(sock: socket.socket, codec: FastCGIConnection) -> None:
    rid = _read_request(sock, codec)
    reply = b"Status: 503 Busy\r\nContent-Type: text/plain\r\n\r\ncome back later"
    sock.sendall(codec.send_stderr(rid, b"PHP Warning: disk almost full") + codec.send_response(rid, reply))


def _overloaded(sock: socket.socket, codec: FastCGIConnection) -> None:
    rid = _read_request(sock, codec)
    sock.sendall(wire.encode_end_request(rid, 0, ProtocolStatus.OVERLOADED))


@pytest.fixture
def fake_server(sock_dir: Path) -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def make(handler: Callable[[socket.socket, FastCGIConnection], None]) -> FakeServer:
        servers.append(FakeServer(sock_dir / f"fake{len(servers)}.sock", handler))
        return servers[-1]

    yield make
    for srv in servers:
        srv.close()


# -- ping ------------------------------------------------------------------------------


@pytest.mark.parametrize("worker", ["sync", "async"])
def test_ping_healthy_gateway_and_5xx(gateway_factory, worker):
    gw = gateway_factory(APPS[worker])
    ok = cli("ping", gw.address, "--path", "/pid")
    assert ok.returncode == 0, ok.err
    assert "200 OK" in ok.out and not ok.err
    assert cli("ping", gw.address).returncode == 0  # the app answers /ping with 404: alive
    failed_with(cli("ping", gw.address, "--path", "/raise-before"), "500")
    assert cli("ping", gw.address.removeprefix("unix:"), "--path", "/pid").returncode == 0


def test_ping_the_gateways_own_ping_page(gateway_factory):
    gw = gateway_factory(APPS["sync"], "--ping-path", "/healthz")
    proc = cli("ping", gw.address, "--path", "/healthz", "--timeout", "2")
    assert proc.returncode == 0 and "200" in proc.out, proc.err


def test_ping_dead_sockets(sock_dir, free_port):
    failed_with(cli("ping", f"unix:{sock_dir}/missing.sock"), "No such file")
    stale = socket.socket(socket.AF_UNIX)  # a socket file left by a dead server
    stale.bind(str(sock_dir / "stale.sock"))
    failed_with(cli("ping", f"unix:{sock_dir}/stale.sock"), "refused")
    stale.close()
    failed_with(cli("ping", f"127.0.0.1:{free_port}"), "refused")


def test_ping_times_out(sock_dir):
    never = socket.socket(socket.AF_UNIX)  # listens, never accepts: connect works, no answer
    never.bind(str(sock_dir / "never.sock"))
    never.listen(4)
    start = time.monotonic()
    proc = cli("ping", f"unix:{sock_dir}/never.sock", "--timeout", "500ms")
    failed_with(proc, "timed out")
    assert time.monotonic() - start < 5
    never.close()


def test_ping_protocol_error_and_early_close(fake_server):
    failed_with(cli("ping", fake_server(_garbage).address), "protocol error", "version 7")
    failed_with(cli("ping", fake_server(_hang_up).address), "closed", "before END_REQUEST")


def test_ping_bad_address_is_a_usage_error():
    proc = cli("ping", "host:notaport")
    assert proc.returncode == 2 and "invalid FastCGI address" in proc.err


def test_ping_help_shows_health_check_examples():
    out = cli("ping", "--help").out
    assert "HEALTHCHECK" in out and "livenessProbe" in out


# -- request ---------------------------------------------------------------------------


@pytest.mark.parametrize("worker", ["sync", "async"])
def test_request_prints_body_and_with_include_the_head(gateway_factory, tmp_path, worker):
    gw = gateway_factory(APPS[worker])
    plain = cli("request", gw.address, "/pid")
    assert plain.returncode == 0 and plain.stdout.isdigit(), plain.err
    head = cli("request", "-i", gw.address, "/echo", "-d", "hello", "-H", "Content-Type: text/x-test")
    assert head.returncode == 0, head.err
    text = head.stdout.decode()
    assert text.startswith("Status: 200 OK\r\n")
    assert "\r\ncontent-length: 5\r\n" in text.lower() and text.endswith("\r\n\r\nhello")
    body = bytes(range(256)) * 1000
    (tmp_path / "body.bin").write_bytes(body)
    from_file = cli("request", gw.address, "/echo", "--data", f"@{tmp_path / 'body.bin'}")
    assert from_file.returncode == 0 and from_file.stdout == body
    from_stdin = cli("request", "-X", "PUT", gw.address, "/echo", "-d", "@-", input=b"piped")
    assert from_stdin.returncode == 0 and from_stdin.stdout == b"piped"


def test_request_headers_params_method_and_query(gateway_factory):
    gw = gateway_factory(APPS["sync"])
    proc = cli(
        "request", gw.address, "/environ?a=1&b=2", "-X", "delete",
        "-H", "X-Trace: abc", "-H", "Host: example.org", "-p", "SERVER_NAME=example.org", "-p", "MY_PARAM=",
    )  # fmt: skip
    assert proc.returncode == 0, proc.err
    env = json.loads(proc.stdout)
    assert env["REQUEST_METHOD"] == "DELETE" and env["QUERY_STRING"] == "a=1&b=2"
    assert env["HTTP_X_TRACE"] == "abc" and env["HTTP_HOST"] == "example.org"
    assert env["SERVER_NAME"] == "example.org" and env["MY_PARAM"] == ""
    with_data = cli("request", gw.address, "/environ", "-d", "x")
    assert with_data.returncode == 0 and json.loads(with_data.stdout)["REQUEST_METHOD"] == "POST"


@pytest.mark.parametrize("worker", ["sync", "async"])
def test_request_exit_status_follows_the_http_status(gateway_factory, worker):
    gw = gateway_factory(APPS[worker])
    missing = cli("request", gw.address, "/no-such-page")
    assert missing.returncode == 0 and missing.stdout == b"not found"
    failed_with(cli("request", "--fail", gw.address, "/no-such-page"), "404")
    failed_with(cli("request", gw.address, "/raise-before"), "500")


def test_request_prints_fcgi_stderr_and_the_body_of_a_5xx(fake_server):
    address = fake_server(_with_stderr).address
    proc = cli("request", "-i", address, "/")
    assert proc.returncode == 1
    assert proc.stdout.startswith(b"Status: 503 Busy\r\n") and proc.stdout.endswith(b"come back later")
    assert proc.err.splitlines() == [
        "PHP Warning: disk almost full",
        f"fcgi-gateway request: {address}: 503 Busy",
    ]


def test_request_failures(sock_dir, fake_server, tmp_path):
    failed_with(cli("request", f"unix:{sock_dir}/missing.sock", "/"), "No such file")
    failed_with(cli("request", fake_server(_garbage).address, "/"), "protocol error")
    failed_with(cli("request", fake_server(_overloaded).address, "/"), "refused (OVERLOADED")
    for bad in (["-H", "no colon"], ["-p", "NOVALUE"], ["-d", f"@{tmp_path}/missing"]):
        proc = cli("request", f"unix:{sock_dir}/x.sock", "/", *bad)
        assert proc.returncode == 2, (bad, proc.err)
        assert "Invalid value" in proc.err


# -- check -----------------------------------------------------------------------------


def _rows(out: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, sep, v in (line.partition(":") for line in out.splitlines()) if sep}


@pytest.mark.parametrize(
    ("app", "interface", "worker"), [("wsgi_app:app", "wsgi", "sync"), ("asgi_app:app", "asgi", "async")]
)
def test_check_prints_what_would_run_without_binding(sock_dir, app, interface, worker):
    sock = sock_dir / "app.sock"
    proc = cli(
        "check", app, "--bind", f"unix:{sock}", "-w", "3", "--max-body-size", "10M", "--read-timeout", "2s",
        "--max-requests", "500", "--max-requests-jitter", "50", "--max-memory", "256M",
        "--isolation-policy", "leak=recycle", "--isolation-default-policy", "repair", cwd=APPS_DIR,
    )  # fmt: skip
    assert proc.returncode == 0, proc.err
    rows = _rows(proc.out)
    assert rows["interface"] == f"{interface} (detected)"
    assert rows["worker"].startswith(f"{worker} (auto), 3 processes")
    assert rows["binds"].startswith(f"unix:{sock}, mode 0660")
    assert rows["max body size"] == "10M" and rows["max params size"].startswith("256K")
    assert rows["read timeout"] == "2s" and rows["request timeout"] == "off"
    assert rows["max requests"] == "500 (+ up to 50)" and rows["max memory"] == "256M"
    globals_kinds = ", ".join(f"global-{k}=repair" for k in ("rebound", "attribute", "entry", "growth"))
    assert rows["isolation policies"] == f"{globals_kinds}, leak=recycle, other kinds repair"
    # default "auto": the globals checker, and the framework checkers of the libraries the
    # app imported (none here)
    assert rows["isolation checkers"] == "globals"
    assert proc.out.rstrip().endswith("fcgi-gateway check: OK")
    assert not sock.exists()  # nothing bound


@pytest.mark.parametrize(
    ("app", "env", "expected"),
    [
        ("iso_django:application", {"ISO_DJANGO_DB": "{tmp}/d.sqlite3"},
         "global-rebound=log, global-attribute=log, global-entry=log, global-growth=log, "
         "django-atomic-leak=repair, django-connection-open=repair, django-query-log=repair, "
         "django-conn-max-age=log"),
        ("iso_sqla:app", {"ISO_SQLA_DB": "{tmp}/s.sqlite3"},
         "global-rebound=log, global-attribute=log, global-entry=log, global-growth=log, "
         "sqlalchemy-scoped-session=repair, sqlalchemy-session-open=repair, "
         "sqlalchemy-connection-checked-out=repair"),
    ],
)  # fmt: skip
def test_check_prints_the_effective_policy_of_every_kind(tmp_path, app, env, expected):
    """No isolation option: each kind's own default (docs/isolation.md), printed by check;
    --isolation-policy and an explicit --isolation-default-policy override them."""
    env = {k: v.format(tmp=tmp_path) for k, v in env.items()}
    proc = cli("check", app, cwd=APPS_DIR, env=env)
    assert proc.returncode == 0, proc.err
    auto = "other kinds log (auto: each kind's own default)"
    assert _rows(proc.out)["isolation policies"] == f"{expected}, {auto}"
    first = expected.split("=")[0]
    proc = cli("check", app, "--isolation-policy", f"{first}=fail", cwd=APPS_DIR, env=env)
    assert _rows(proc.out)["isolation policies"].startswith(f"{first}=fail, ")
    proc = cli("check", app, "--isolation-default-policy", "log", cwd=APPS_DIR, env=env)
    assert "repair" not in _rows(proc.out)["isolation policies"]
    proc = cli("check", app, "--isolation-default-policy", "strict", cwd=APPS_DIR, env=env)
    policies = _rows(proc.out)["isolation policies"]
    assert "=log" not in policies
    assert policies.endswith("other kinds repair, recycling the worker when not repaired (strict)")


def test_check_reads_the_environment_and_the_config_file(tmp_path):
    toml = f'app = "wsgi_app:app"\napp-dir = "{APPS_DIR}"\nworkers = 5\nmax-body-size = "1M"\n'
    (tmp_path / "gateway.toml").write_text(toml)
    env = {"FCGI_GATEWAY_READ_TIMEOUT": "7s", "FCGI_GATEWAY_WORKER": "async"}
    proc = cli("check", "--config", str(tmp_path / "gateway.toml"), env=env)
    assert proc.returncode == 0, proc.err
    rows = _rows(proc.out)
    assert rows["app"] == "wsgi_app:app" and rows["config file"] == str(tmp_path / "gateway.toml")
    assert rows["worker"].startswith("async, 5 processes") and "WSGI bridge threads" in rows["worker"]
    assert rows["read timeout"] == "7s" and rows["max body size"] == "1M"


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("broken_runtime_app:app", "settings file /nonexistent/app.toml is missing"),
        ("broken_importerror_app:app", "this_name_does_not_exist"),
        ("broken_dependency_app:app", "fcgw_test_dependency_that_is_not_installed"),
        ("no_such_module_here:app", "no module named 'no_such_module_here'"),
        ("wsgi_app:no_such_attribute", "attribute 'no_such_attribute' not found"),
    ],
)
def test_check_broken_apps_exit_4(app, message):
    proc = cli("check", "--app-dir", str(APPS_DIR), app)
    assert proc.returncode == 4, (proc.out, proc.err)
    assert proc.err.startswith("fcgi-gateway check: cannot load the application:") and message in proc.err
    assert "check: OK" not in proc.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-body-size", "ten"], "invalid size"),
        (["--read-timeout", "1h30"], "invalid duration"),
        (["--workers", "0"], "--workers"),
        (["--isolation-policy", "leak"], "KIND=POLICY"),
        (["--isolation-checkers", "nosuch"], "unknown isolation checker"),
        (["--socket-mode", "0666"], "world-writable"),
        (["--interface", "asgi", "--worker", "sync"], "sync worker serves WSGI"),
        (["--bind", "[::1"], "invalid IPv6 bind"),
        (["--socket-owner", "no-such-user-fcgw"], "unknown socket owner"),
        ([], "missing APP"),
    ],
)
def test_check_bad_options_exit_2(args, message):
    app = [] if not args else ["wsgi_app:app"]
    proc = cli("check", "--app-dir", str(APPS_DIR), *args, *app)
    assert proc.returncode == 2, (proc.out, proc.err)
    assert message in proc.err


def test_check_unusable_bind_exits_3():
    proc = cli(
        "check", "--app-dir", str(APPS_DIR), "--bind", "unix:/nonexistent-dir/app.sock", "wsgi_app:app"
    )
    assert proc.returncode == 3 and "/nonexistent-dir does not exist" in proc.err


# -- speedups ----------------------------------------------------------------------------
# FCGI_GATEWAY_NO_SPEEDUPS (gateway/speedups.py) is not a serve option: check reports it,
# and so does the master's start-up log, once.

SPEEDUPS_OFF = "off (disabled by FCGI_GATEWAY_NO_SPEEDUPS)"


def _speedups_on() -> str:
    from gateway import speedups

    if not speedups.ENABLED:
        pytest.skip(f"speedups {speedups.DISABLED_REASON} for this run")
    built, reason = speedups.compiled_state()  # a build with FCGI_GATEWAY_MYPYC=1 (setup.py)
    if built and reason is None:
        return f"on (gateway.protocol._pairs; {built} modules compiled with mypyc)"
    return "on (gateway.protocol._pairs)"


def test_check_says_whether_the_speedups_are_on():
    on = _speedups_on()
    proc = cli("check", "--app-dir", str(APPS_DIR), "wsgi_app:app")
    assert proc.returncode == 0, proc.err
    assert _rows(proc.out)["speedups"] == on
    proc = cli("check", "--app-dir", str(APPS_DIR), "asgi_app:app", env={"FCGI_GATEWAY_NO_SPEEDUPS": "1"})
    assert proc.returncode == 0, proc.err
    assert _rows(proc.out)["speedups"] == SPEEDUPS_OFF


@pytest.mark.parametrize("worker", ["sync", "async"])
def test_the_start_up_log_says_once_whether_the_speedups_are_on(gateway_factory, worker):
    on = _speedups_on()
    for env, expected in (({}, on), ({"FCGI_GATEWAY_NO_SPEEDUPS": "1"}, SPEEDUPS_OFF)):
        gw = gateway_factory(APPS[worker], "-w", "2", env=env)
        assert cli("ping", gw.address, "--path", "/pid").returncode == 0
        gw.wait_for_log(r"worker\(s\) ready")
        lines = [line for line in gw.log_text().splitlines() if "speedups:" in line]
        assert len(lines) == 1 and lines[0].endswith(f"speedups: {expected}"), lines


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "static, 1 worker(s)"),
        (("--pm", "dynamic", "-w", "2", "--max-workers", "6", "--max-spare-workers", "4"),
         "dynamic, 2 at start, 1 to 4 idle, at most 6, started up to 32 a second"),
        (("--pm", "ondemand", "--max-workers", "5", "--process-idle-timeout", "30s", "--max-spawn-rate", "4"),
         "ondemand, none while idle (one at start and on reload proves the app loads), at most 5, "
         "started up to 4 a second, retired after 30s idle"),
    ],
)  # fmt: skip
def test_check_prints_the_process_manager(args, expected):
    proc = cli("check", "--app-dir", str(APPS_DIR), *args, "wsgi_app:app")
    assert proc.returncode == 0, proc.err
    assert _rows(proc.out)["process manager"] == expected


def test_check_refuses_impossible_process_manager_bounds():
    proc = cli(
        "check",
        "--app-dir",
        str(APPS_DIR),
        "--pm",
        "dynamic",
        "-w",
        "5",
        "--max-workers",
        "4",
        "wsgi_app:app",
    )
    assert proc.returncode == 2
    assert "--workers 5 (the start count) is above --max-workers 4" in proc.err
