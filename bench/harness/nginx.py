"""The one nginx in front of every backend: its generated config, starting it on free
ports, and counting the errors it logged for each port.

One http block; one ``server`` (its own 127.0.0.1 port) per (scenario, backend):
``fastcgi_pass`` for the FastCGI rows (through a keepalive upstream with
``fastcgi_keep_conn on`` when the scenario asks for it), ``proxy_pass`` with HTTP/1.1
keepalive for the HTTP rows. Everything else is nginx's default, except
``client_max_body_size`` (the memory scenarios send 100 MiB).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .procs import stop_group

if TYPE_CHECKING:
    from .procs import Instance
    from .scenarios import Scenario

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")
MAX_BODY = "128m"  # above the largest request body (mem-upload: 100 MiB)

FASTCGI_PARAMS = """\
fastcgi_param QUERY_STRING $query_string;
fastcgi_param REQUEST_METHOD $request_method;
fastcgi_param CONTENT_TYPE $content_type;
fastcgi_param CONTENT_LENGTH $content_length;
fastcgi_param SCRIPT_NAME "";
fastcgi_param PATH_INFO $uri;
fastcgi_param REQUEST_URI $request_uri;
fastcgi_param DOCUMENT_URI $document_uri;
fastcgi_param DOCUMENT_ROOT $document_root;
fastcgi_param SERVER_PROTOCOL $server_protocol;
fastcgi_param REQUEST_SCHEME $scheme;
fastcgi_param GATEWAY_INTERFACE CGI/1.1;
fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;
fastcgi_param REMOTE_ADDR $remote_addr;
fastcgi_param REMOTE_PORT $remote_port;
fastcgi_param SERVER_ADDR $server_addr;
fastcgi_param SERVER_PORT $server_port;
fastcgi_param SERVER_NAME $server_name;"""


def nginx_config(tmp: Path, sites: list[tuple[int, Scenario, Instance]]) -> str:
    """One http block; one server (own port) per (scenario, backend)."""
    upstreams, servers = [], []
    for i, (port, scenario, inst) in enumerate(sites):
        if inst.backend.protocol == "fastcgi":
            if scenario.keep_conn:
                upstreams.append(f"upstream u{i} {{ server unix:{inst.sock}; keepalive 16; }}")
                location = f"fastcgi_pass u{i};\n            fastcgi_keep_conn on;"
            else:
                location = f"fastcgi_pass unix:{inst.sock};"
            location = "include fastcgi_bench_params;\n            " + location
        else:
            upstreams.append(f"upstream u{i} {{ server unix:{inst.sock}; keepalive 16; }}")
            location = (
                f"proxy_pass http://u{i};\n            proxy_http_version 1.1;\n"
                '            proxy_set_header Connection "";\n'
                "            proxy_set_header Host $host;"
            )
        servers.append(
            f"    # {scenario.name} / {inst.label}\n"
            f"    server {{\n        listen 127.0.0.1:{port};\n"
            f"        location / {{\n            {location}\n        }}\n    }}"
        )
    temps = "\n".join(
        f"    {n}_temp_path {tmp}/nginx/{n};" for n in ("client_body", "fastcgi", "proxy", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    upstream_text = "\n".join(f"    {u}" for u in upstreams)
    server_text = "\n".join(servers)
    return (
        f"{user}worker_processes 1;\ndaemon off;\nmaster_process on;\n"
        f"pid {tmp}/nginx/nginx.pid;\nlock_file {tmp}/nginx/nginx.lock;\n"
        f"error_log {tmp}/nginx/error.log warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n"
        "    access_log off;\n"
        f"    client_max_body_size {MAX_BODY};\n"
        f"{temps}\n{upstream_text}\n{server_text}\n}}\n"
    )


def find_nginx() -> str | None:
    for candidate in NGINX_CANDIDATES:
        path = shutil.which(candidate)
        if path:
            return path
    return None


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_nginx(
    nginx: str, tmp: Path, plan: list[tuple[Scenario, Instance]]
) -> tuple[subprocess.Popen, dict[tuple[str, str], int]]:
    """Writes the config and starts nginx; returns it and {(scenario, row label): port}."""
    conf_dir = tmp / "nginx"
    conf_dir.mkdir(exist_ok=True)
    (conf_dir / "fastcgi_bench_params").write_text(FASTCGI_PARAMS + "\n")
    for attempt in range(5):
        ports = free_ports(len(plan))
        sites = [(port, sc, inst) for port, (sc, inst) in zip(ports, plan, strict=True)]
        (conf_dir / "nginx.conf").write_text(nginx_config(tmp, sites))
        cmd = [
            nginx,
            "-p",
            f"{conf_dir}/",
            "-c",
            str(conf_dir / "nginx.conf"),
            "-e",
            str(conf_dir / "error.log"),
        ]
        with open(conf_dir / "stderr.log", "ab") as err:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if (conf_dir / "nginx.pid").exists() and all(tcp_open(p) for p in ports):
                return proc, {(sc.name, inst.label): port for port, sc, inst in sites}
            time.sleep(0.05)
        stop_group(proc)
        log = (
            (conf_dir / "error.log").read_text(errors="replace") if (conf_dir / "error.log").exists() else ""
        )
        if "Address already in use" not in log or attempt == 4:
            raise RuntimeError(f"nginx did not start:\n{log[-3000:]}")
    raise AssertionError("unreachable")


def tcp_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def nginx_errors_by_port(error_log: Path, offset: int) -> dict[int, int]:
    """[error]-or-worse lines of nginx's log after ``offset``, by the server port they name."""
    try:
        with open(error_log, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return {}
    counts: dict[int, int] = {}
    for m in re.finditer(r"\[(?:error|crit|alert|emerg)\].*host: \"127\.0\.0\.1:(\d+)\"", text):
        port = int(m.group(1))
        counts[port] = counts.get(port, 0) + 1
    return counts
