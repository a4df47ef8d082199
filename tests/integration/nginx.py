"""Test helpers for real processes: a real nginx on loopback, process-group cleanup, HTTP.

``Nginx`` writes a config into its own temp dir (pid, logs and every *_temp_path there),
listens on a free 127.0.0.1 port and ``fastcgi_pass``-es to an upstream address. It runs
in its own process group, and ``stop()`` kills the whole group (TERM, a short wait, KILL)
with ``kill_group``, which the gateway helper in ``tests/conftest.py`` uses as well.
``http_request`` is a tiny http.client wrapper that sends the path exactly as given.
The fixtures (``nginx_factory``, ``served``) live in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

NGINX = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
FASTCGI_PARAMS = "/etc/nginx/fastcgi_params"


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind-then-close; callers retry on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def can_connect(address: str, timeout: float = 0.5) -> bool:
    """True if ``unix:/path`` / ``/path`` / ``host:port`` accepts a connection now."""
    try:
        if address.startswith(("unix:", "/")):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(address.removeprefix("unix:"))
        else:
            host, _, port = address.rpartition(":")
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError:
        return False
    return True


def kill_group(proc: subprocess.Popen, timeout: float = 5.0) -> int | None:
    """TERM the process group of ``proc`` (leader of a new session), wait, then KILL.
    Returns the leader's exit status."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            continue
        try:  # stragglers (e.g. workers) left in the group after the leader exited
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        break
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _address_of(upstream: Any) -> str:
    addr = getattr(upstream, "address", upstream)
    return f"unix:{addr}" if str(addr).startswith("/") else str(addr)


# -- nginx -----------------------------------------------------------------------------


class Nginx:
    """A real nginx (master + 1 worker) in front of one FastCGI upstream.

    ``locations``: None -> one ``location /``; else a list of location specs
    (``"/"``, ``"= /ping"``, ``"/nobuf/"``) or a mapping spec -> extra directives, each
    location passing to the upstream. ``extra_location`` goes into every one of them;
    a directive named there replaces this class's default for it (timeouts, buffering,
    keep_conn), so tests can e.g. set ``fastcgi_read_timeout 2s;``.
    ``static_alias``: ``(url_prefix, directory)`` or a directory served at ``/static/``.
    """

    def __init__(self, workdir: Path, upstream: Any, **options: Any) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf_path = self.dir / "nginx.conf"
        self.error_log = self.dir / "error.log"
        self.access_log = self.dir / "access.log"
        self.options: dict[str, Any] = {
            "keep_conn": False,
            "extra_http": "",
            "extra_location": "",
            "locations": None,
            "client_max_body_size": "200m",
            "fastcgi_request_buffering": True,
            "static_alias": None,
            "error_log_level": "info",
        }
        unknown = set(options) - set(self.options)
        if unknown:
            raise TypeError(f"unknown nginx options: {sorted(unknown)}")
        self.options.update(options)
        self.upstream = _address_of(upstream)
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def render(self) -> str:
        o, d = self.options, self.dir
        keep = o["keep_conn"]
        target = "fcgi_upstream" if keep else self.upstream
        upstream = f"upstream fcgi_upstream {{ server {self.upstream}; keepalive 16; }}" if keep else ""
        locs = o["locations"] or ["/"]
        locs = locs if isinstance(locs, Mapping) else dict.fromkeys(locs, "")
        blocks = [self._location(spec, extra, target) for spec, extra in locs.items()]
        if o["static_alias"]:
            alias = o["static_alias"]
            prefix, directory = alias if isinstance(alias, tuple | list) else ("/static/", alias)
            directory = str(directory).rstrip("/") + ("/" if prefix.endswith("/") else "")
            blocks.append(f"location {prefix} {{ alias {directory}; }}")
        user = "user root;" if os.geteuid() == 0 else ""
        temps = "\n    ".join(
            f"{n}_temp_path {d}/{n}_temp;" for n in ("client_body", "fastcgi", "proxy", "uwsgi", "scgi")
        )
        body = "\n        ".join(blocks)
        mime = "include /etc/nginx/mime.types;" if os.path.exists("/etc/nginx/mime.types") else ""
        return f"""{user}
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
lock_file {d}/nginx.lock;
error_log {self.error_log} {o["error_log_level"]};
events {{ worker_connections 1024; }}
http {{
    {mime}
    default_type application/octet-stream;
    access_log {self.access_log};
    {temps}
    {upstream}
    {o["extra_http"]}
    server {{
        listen 127.0.0.1:{self.port};
        client_max_body_size {o["client_max_body_size"]};
        send_timeout 120s;
        {body}
    }}
}}
"""

    def _location(self, spec: str, extra: str, target: str) -> str:
        o = self.options
        own = f"{extra}\n{o['extra_location']}"
        defaults = {
            "fastcgi_connect_timeout": "10s",
            "fastcgi_read_timeout": "120s",
            "fastcgi_send_timeout": "120s",
            "fastcgi_request_buffering": "on" if o["fastcgi_request_buffering"] else "off",
        }
        if o["keep_conn"]:
            defaults["fastcgi_keep_conn"] = "on"
        lines = [f"include {FASTCGI_PARAMS};"]
        if not re.search(r"(^|[\s;{])fastcgi_pass\s", own):  # a location may name its own upstream
            lines.append(f"fastcgi_pass {target};")
        lines += [f"{k} {v};" for k, v in defaults.items() if not re.search(rf"(^|[\s;{{]){k}\s", own)]
        inner = "\n            ".join([*lines, own.strip()])
        return f"location {spec} {{\n            {inner}\n        }}"

    def write_conf(self) -> None:
        self.conf_path.write_text(self.render())

    def start(self, timeout: float = 10.0) -> Nginx:
        for attempt in range(5):
            self.port = free_port()
            self.write_conf()
            pidfile = self.dir / "nginx.pid"
            pidfile.unlink(missing_ok=True)
            mark = len(read_text(self.error_log))
            with open(self.dir / "nginx.out", "ab") as out:
                self.proc = subprocess.Popen(
                    [NGINX, "-p", f"{self.dir}/", "-c", str(self.conf_path), "-e", str(self.error_log)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    log = read_text(self.error_log)[mark:] + read_text(self.dir / "nginx.out")
                    if "Address already in use" in log and attempt < 4:
                        break
                    raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{log}")
                if pidfile.exists() and can_connect(f"127.0.0.1:{self.port}"):
                    return self
                time.sleep(0.02)
            else:
                self.stop()
                raise RuntimeError(
                    f"nginx not accepting on {self.port} after {timeout}s:\n{self.error_log_text()}"
                )
        raise RuntimeError("nginx could not find a free port")

    def reload(self, timeout: float = 10.0, **changes: Any) -> None:
        """Rewrite the config (with ``changes`` to the options, ``upstream=`` included) and
        SIGHUP the master; returns once the new workers serve. Raises if nginx rejected it."""
        assert self.proc is not None and self.proc.poll() is None, "nginx is not running"
        if "upstream" in changes:
            self.upstream = _address_of(changes.pop("upstream"))
        self.options.update(changes)
        self.write_conf()
        mark = len(self.error_log_text())
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = self.error_log_text()[mark:]
            if "[emerg]" in new:
                raise RuntimeError(f"nginx rejected the new config:\n{new}")
            # new workers up, and the old one stopped accepting (else it may take a request)
            if "start worker process" in new and "gracefully shutting down" in new:
                return
            time.sleep(0.02)
        raise RuntimeError(f"nginx did not reload within {timeout}s:\n{self.error_log_text()[mark:]}")

    def error_log_text(self) -> str:
        return read_text(self.error_log)

    def access_log_text(self) -> str:
        return read_text(self.access_log)

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)


# -- HTTP ------------------------------------------------------------------------------


@dataclass
class HTTPResult:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str, default: str | None = None) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), default)

    def header_list(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    body: bytes | Iterable[bytes] | None = None,
    timeout: float = 30.0,
) -> HTTPResult:
    """One HTTP/1.1 request on a fresh connection. The path and query go out byte for
    byte; an iterable body without Content-Length is sent chunked."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        hdrs = list(headers.items() if isinstance(headers, Mapping) else headers or [])
        names = {k.lower() for k, _ in hdrs}
        chunked = body is not None and not isinstance(body, bytes) and "content-length" not in names
        if chunked and "transfer-encoding" not in names:
            hdrs.append(("Transfer-Encoding", "chunked"))
        elif (
            isinstance(body, bytes) and "content-length" not in names and (body or method in ("POST", "PUT"))
        ):
            hdrs.append(("Content-Length", str(len(body))))
        for k, v in hdrs:
            conn.putheader(k, v)
        conn.endheaders()
        if isinstance(body, bytes):
            conn.send(body)
        elif body is not None:
            for chunk in body:
                if not chunked:
                    conn.send(chunk)
                elif chunk:
                    conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if chunked:
                conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        return HTTPResult(resp.status, resp.reason, resp.getheaders(), resp.read())
    finally:
        conn.close()


def http_get(url: str, **kwargs: Any) -> HTTPResult:
    return http_request("GET", url, **kwargs)
