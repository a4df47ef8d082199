"""Real processes for the deployment tests: gateways started from unit files, nginx and
Apache from the recipes, a systemd-style notify socket, HTTPS requests.

Every process starts in its own session (process group) with its output in a log file;
``stop()`` kills the whole group (``kill_group``: TERM, wait, KILL), so a gateway's
workers, or the processes mod_fcgid spawned inside Apache's group, never outlive a test.
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.integration.nginx import FASTCGI_PARAMS, NGINX, HTTPResult, can_connect, kill_group, read_text

#: Kept from the outer environment: the pure-Python pass of CI (gateway/speedups.py).
SPEEDUPS_VAR = "FCGI_GATEWAY_NO_SPEEDUPS"


APACHE = "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FCGI_GATEWAY_", "NOTIFY_SOCKET", "LISTEN_")) or k == SPEEDUPS_VAR
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Proc:
    """One process (and its group) with output in ``log``."""

    def __init__(
        self,
        argv: list[str],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Any = None,
        **popen: Any,
    ) -> None:
        self.argv, self.log = argv, log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=base_env(env),
                cwd=cwd,
                start_new_session=True,
                **popen,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return read_text(self.log)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        return kill_group(self.proc, timeout=5)

    def kill9(self) -> None:
        """SIGKILL to the whole group at once: master and workers die together."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


class NotifySocket:
    """A NOTIFY_SOCKET like systemd's: a unix datagram socket collecting sd_notify messages."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[dict[str, str]] = []

    def _drain(self, timeout: float) -> None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return
        self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line))

    def wait_for(self, key: str, value: str = "1", timeout: float = 20.0, proc: Proc | None = None) -> float:
        """Block until a message has ``key=value``; returns the wait in seconds."""
        start = time.monotonic()
        seen = len(self.messages)
        while True:
            for msg in self.messages[seen:]:
                if msg.get(key) == value:
                    return time.monotonic() - start
            seen = len(self.messages)
            left = start + timeout - time.monotonic()
            if left <= 0:
                log = proc.log_text()[-4000:] if proc else ""
                raise AssertionError(f"no {key}={value} within {timeout}s; got {self.messages}\n{log}")
            if proc is not None and proc.proc.poll() is not None:
                raise AssertionError(
                    f"exited ({proc.proc.returncode}) before {key}={value}:\n{proc.log_text()}"
                )
            self._drain(min(left, 0.2))

    def close(self) -> None:
        self.sock.close()


def free_prefix() -> str:
    """A port prefix P such that 127.0.0.1:P1, P2 and P3 are free (for the 900N recipes)."""
    for _ in range(200):
        prefix = str(random.randint(2000, 6400))
        socks = []
        try:
            for i in (1, 2, 3):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", int(prefix + str(i))))
            return prefix
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port prefix")


def wait_port(host: str, port: int, proc: Proc, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.argv[0]} exited with {proc.proc.returncode}:\n{proc.log_text()}")
        if can_connect(f"{host}:{port}"):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing accepts on {host}:{port} after {timeout}s:\n{proc.log_text()}")


# -- nginx ----------------------------------------------------------------------------


def nginx_main_conf(workdir: Path, http_body: str) -> str:
    """A minimal main config around ``http_body`` (server/upstream blocks), everything in workdir."""
    user = "user root;" if os.geteuid() == 0 else ""
    temps = "\n    ".join(
        f"{n}_temp_path {workdir}/{n}_temp;" for n in ("client_body", "fastcgi", "proxy", "uwsgi", "scgi")
    )
    return f"""{user}
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {workdir}/access.log;
    {temps}
{http_body}
}}
"""


def write_nginx(workdir: Path, http_body: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    params = workdir / "fastcgi_params"
    if not params.exists():
        params.write_text(Path(FASTCGI_PARAMS).read_text())  # `include fastcgi_params;` is relative
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_main_conf(workdir, http_body))
    return conf


def nginx_test(workdir: Path, http_body: str) -> subprocess.CompletedProcess[str]:
    conf = write_nginx(workdir, http_body)
    return subprocess.run(
        [NGINX, "-t", "-p", f"{workdir}/", "-c", str(conf), "-e", str(workdir / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )


def start_nginx(workdir: Path, http_body: str, ports: list[int]) -> Proc:
    conf = write_nginx(workdir, http_body)
    proc = Proc(
        [NGINX, "-p", f"{workdir}/", "-c", str(conf), "-e", str(workdir / "error.log")], workdir / "nginx.out"
    )
    proc.log = workdir / "error.log"
    for port in ports:
        wait_port("127.0.0.1", port, proc)
    return proc


# -- Apache ---------------------------------------------------------------------------


def apache_available() -> bool:
    return os.path.exists(APACHE) and os.path.exists(f"{APACHE_MODULES}/mod_proxy_fcgi.so")


def apache_conf(workdir: Path, port: int, vhost: str, modules: list[str]) -> Path:
    """httpd.conf for Debian's apache2: the recipe's vhost on 127.0.0.1:port, state in workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    user = os.environ.get("APACHE_RUN_USER", "www-data")
    group = os.environ.get("APACHE_RUN_GROUP", "www-data")
    loads = "\n".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in modules)
    fcgid = ""
    if "fcgid" in modules:
        (workdir / "fcgid").mkdir(exist_ok=True)
        subprocess.run(["chown", user, str(workdir / "fcgid")], check=False, capture_output=True)
        fcgid = f"FcgidIPCDir {workdir}/fcgid\nFcgidProcessTableFile {workdir}/fcgid/shm"
    (workdir / "vhost.conf").write_text(vhost)
    conf = workdir / "httpd.conf"
    conf.write_text(
        f"""ServerRoot {workdir}
DefaultRuntimeDir {workdir}
PidFile {workdir}/httpd.pid
ErrorLog {workdir}/error.log
LogLevel info
Listen 127.0.0.1:{port}
ServerName localhost
User {user}
Group {group}
LoadModule mpm_event_module {APACHE_MODULES}/mod_mpm_event.so
LoadModule authz_core_module {APACHE_MODULES}/mod_authz_core.so
{loads}
TypesConfig /etc/mime.types
LogFormat "%h \\"%r\\" %>s %b" short
CustomLog {workdir}/access.log short
{fcgid}
Include {workdir}/vhost.conf
"""
    )
    return conf


def apache_test(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([APACHE, "-t", "-f", str(conf)], capture_output=True, text=True, timeout=30)


def start_apache(conf: Path, port: int) -> Proc:
    proc = Proc([APACHE, "-f", str(conf), "-DFOREGROUND"], conf.parent / "apache.out")
    proc.log = conf.parent / "error.log"
    wait_port("127.0.0.1", port, proc)
    return proc


# -- HTTPS ----------------------------------------------------------------------------


def self_signed_cert(workdir: Path) -> None:
    """cert.pem/key.pem for 127.0.0.1 (openssl), where the Rewriter maps the recipe's paths."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-keyout", str(workdir / "key.pem"), "-out", str(workdir / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 30.0,
) -> HTTPResult:
    """One request on a fresh HTTP or HTTPS (certificate not verified) connection."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "https":
        ctx = ssl._create_unverified_context()
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=ctx
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return HTTPResult(resp.status, resp.reason, resp.getheaders(), resp.read())
    finally:
        conn.close()
