#!/usr/bin/env python3
"""fcgi-gateway's benchmark: the gateway and its peers behind one nginx, measured with wrk.

    bench/run                        # set up what is missing, then the full run (~12 min)
    bench/run --tiny --no-install    # a smoke run with the current interpreter (the test)
    bench/run --help

Every backend serves the same app on a unix socket; one nginx (one worker, one generated
config) puts each (scenario, backend) pair on its own 127.0.0.1 port: ``fastcgi_pass`` for
the FastCGI servers, ``proxy_pass`` with HTTP/1.1 keepalive for gunicorn and uvicorn.
wrk (or, when wrk is missing, a small Python client) loads one port at a time, in
interleaved rounds (A B C A B C ...), so a machine that drifts during the run moves every
row alike. Results: median req/s over the rounds (and their spread), ratio to uWSGI in
the same scenario, p50/p99 latency, the backend's CPU time per request, non-2xx + socket
errors, and the backend's RSS (all of its processes, from /proc) idle before the load and
after it. See docs/benchmarks.md.

Standard library only; matplotlib for ``--chart``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
APPS = HERE / "apps"
DEFAULT_VENV = os.environ.get("FCGI_BENCH_VENV", "/tmp/fcgi-gateway-bench-venv")
#: What the bench venv holds besides this project (``pip install -e REPO``). httptools is
#: what ``uvicorn[standard]`` adds for HTTP parsing: uvicorn as people deploy it.
VENV_PACKAGES = (
    "uwsgi",
    "flup",
    "fcgisgi",
    "gunicorn",
    "uvicorn",
    "httptools",
    "uvloop",
    "flask",
    "django",
    "matplotlib",
)
UPLOAD_BYTES = 10 * 1024 * 1024
BIG_BYTES = 1024 * 1024
NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")

# -- backends ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    name: str
    protocol: str  # "fastcgi" or "http" (behind proxy_pass)
    interface: str  # "wsgi" or "asgi": which of the app's callables it serves
    requires: tuple[str, ...]  # importable modules, or "bin:NAME" for an executable beside python
    multiprocess: bool = True  # has a worker-count option
    description: str = ""


BACKENDS: tuple[Backend, ...] = (
    Backend("project-wsgi", "fastcgi", "wsgi", ("gateway",), description="fcgi-gateway, sync worker, WSGI"),
    Backend("project-asgi", "fastcgi", "asgi", ("gateway",), description="fcgi-gateway, async worker, ASGI"),
    Backend(
        "project-wsgi-bridge",
        "fastcgi",
        "wsgi",
        ("gateway",),
        description="fcgi-gateway, async worker, WSGI app through a2wsgi",
    ),
    Backend("uwsgi", "fastcgi", "wsgi", ("bin:uwsgi",), description="uWSGI --fastcgi-socket --master"),
    Backend("flup", "fastcgi", "wsgi", ("flup",), multiprocess=False, description="flup threaded WSGIServer"),
    Backend(
        "fcgisgi-wsgi",
        "fastcgi",
        "wsgi",
        ("fcgisgi",),
        multiprocess=False,
        description="fcgisgi, WSGI adapter",
    ),
    Backend(
        "fcgisgi-asgi",
        "fastcgi",
        "asgi",
        ("fcgisgi",),
        multiprocess=False,
        description="fcgisgi, ASGI adapter",
    ),
    Backend("gunicorn", "http", "wsgi", ("gunicorn",), description="gunicorn sync worker, proxy_pass"),
    Backend("uvicorn", "http", "asgi", ("uvicorn",), description="uvicorn, proxy_pass"),
)
BACKEND = {b.name: b for b in BACKENDS}
PROJECT_ROWS = ("project-wsgi", "project-asgi", "project-wsgi-bridge")
REFERENCE = "uwsgi"

#: The apps, by family: interface -> MODULE:ATTR (importable from bench/apps), and the
#: modules the family needs in the backend's interpreter.
APPS_BY_FAMILY = {
    "hello": ({"wsgi": "hello:wsgi_app", "asgi": "hello:asgi_app"}, ()),
    "flask": ({"wsgi": "flask_app:wsgi_app"}, ("flask",)),
    "django": ({"wsgi": "djangosite.wsgi:application", "asgi": "djangosite.asgi:application"}, ("django",)),
}


def backend_command(
    backend: Backend, python: str, sock: str, app: str, workers: int, gateway_args: tuple[str, ...] = ()
) -> list[str]:
    """The command line that serves ``app`` on unix socket ``sock`` with ``workers`` processes
    (``gateway_args``: extra options of the gateway rows)."""
    bindir = os.path.dirname(python)
    if backend.name.startswith("project-"):
        kind = "sync" if backend.name == "project-wsgi" else "async"
        return [
            python,
            "-m",
            "gateway",
            "--bind",
            f"unix:{sock}",
            "--workers",
            str(workers),
            "--worker",
            kind,
            "--app-dir",
            str(APPS),
            "--log-level",
            "warning",
            *gateway_args,
            app,
        ]
    if backend.name == "uwsgi":
        return [
            os.path.join(bindir, "uwsgi"),
            "--fastcgi-socket",
            sock,
            "--pythonpath",
            str(APPS),
            "--module",
            app,
            "--processes",
            str(workers),
            "--master",
            "--disable-logging",
            "--die-on-term",
            "--need-app",
        ]
    if backend.name in ("flup", "fcgisgi-wsgi", "fcgisgi-asgi"):
        return [python, str(HERE / "peers.py"), backend.name, sock, str(APPS), app]
    if backend.name == "gunicorn":
        return [
            python,
            "-m",
            "gunicorn",
            "--workers",
            str(workers),
            "--bind",
            f"unix:{sock}",
            "--chdir",
            str(APPS),
            "--log-level",
            "warning",
            app,
        ]
    if backend.name == "uvicorn":
        extra = ["--workers", str(workers)] if workers > 1 else []
        return [
            python,
            "-m",
            "uvicorn",
            "--uds",
            sock,
            "--app-dir",
            str(APPS),
            "--no-access-log",
            "--log-level",
            "warning",
            *extra,
            app,
        ]
    raise ValueError(backend.name)


# -- scenarios -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    family: str  # key of APPS_BY_FAMILY
    backends: tuple[str, ...]
    title: str  # a few words, for the chart
    description: str
    method: str = "GET"
    path: str = "/"
    body_bytes: int = 0
    workers: int = 1
    keep_conn: bool = False  # FastCGI: fastcgi_keep_conn on + upstream keepalive
    max_conns: int | None = None  # cap on --conns (large bodies)
    expect: str = "hello"  # what the start-up check wants in the response


ALL_ROWS = tuple(b.name for b in BACKENDS)
FASTCGI_ROWS = tuple(b.name for b in BACKENDS if b.protocol == "fastcgi")
MULTI_ROWS = tuple(b.name for b in BACKENDS if b.multiprocess)
CORE_ROWS = (*PROJECT_ROWS, "uwsgi", "gunicorn", "uvicorn")

# Ordered so that scenarios sharing backend processes (same app family and worker count)
# are adjacent: those processes start once for the group.
SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "hello", "hello", ALL_ROWS, "hello world, 1 worker",
        "GET / -> 13 bytes; 1 worker; a new FastCGI connection per request",
    ),
    Scenario(
        "hello-keepconn", "hello", FASTCGI_ROWS, "hello world, fastcgi_keep_conn on",
        "as hello, with fastcgi_keep_conn on + upstream keepalive (FastCGI rows only)", keep_conn=True,
    ),
    Scenario(
        "big", "hello", CORE_ROWS, "1 MiB response", "GET /big -> a 1 MiB response; 1 worker",
        path="/big", expect="big",
    ),
    Scenario(
        "upload", "hello", CORE_ROWS, "10 MiB upload, 8 connections",
        "POST /upload with a 10 MiB body, answered with its length; 1 worker; at most 8 connections",
        method="POST", path="/upload", body_bytes=UPLOAD_BYTES, max_conns=8, expect="upload",
    ),
    Scenario(
        "hello-2w", "hello", MULTI_ROWS, "hello world, 2 workers", "as hello, with 2 worker processes",
        workers=2,
    ),
    Scenario(
        "flask", "flask", ("project-wsgi", "project-wsgi-bridge", "uwsgi", "gunicorn"),
        "Flask: template + SQLite query",
        "Flask view: Jinja template over 10 rows of a SQLite query; 1 worker",
        expect="posts",
    ),
    Scenario(
        "django", "django", ("project-wsgi", "project-asgi", "uwsgi", "gunicorn", "uvicorn"),
        "Django: template + ORM query",
        "Django view: template over an ORM query on SQLite; 1 worker (ASGI rows: asgi.py)", expect="posts",
    ),
)  # fmt: skip
SCENARIO = {s.name: s for s in SCENARIOS}
TINY_SCENARIOS = ("hello", "hello-keepconn")


def app_for(scenario: Scenario, backend: Backend) -> str | None:
    return APPS_BY_FAMILY[scenario.family][0].get(backend.interface)


# -- results -------------------------------------------------------------------------------


@dataclass
class Sample:
    """One load run against one port."""

    rps: float
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    non2xx: int
    socket_errors: int
    cpu_s: float | None = None  # CPU time (user + system) the backend's processes used during the run


@dataclass
class Row:
    scenario: str
    backend: str
    protocol: str
    interface: str
    workers: int
    keep_conn: bool
    app: str
    command: list[str] = field(default_factory=list)
    status: str = "ok"  # "ok", or why the row has no numbers
    samples: list[Sample] = field(default_factory=list)
    rps: float | None = None
    ratio_to_uwsgi: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    non2xx: int = 0
    socket_errors: int = 0
    rss_idle_mib: float | None = None
    rss_after_mib: float | None = None
    processes: int | None = None
    nginx_errors: int = 0  # [error] lines nginx logged for this row's port during its load
    cpu_us_per_request: float | None = None  # median over the rounds

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors

    @property
    def spread_pct(self) -> float | None:
        """(fastest round - slowest round) / median, in %: how much the machine drifted."""
        if not self.samples or not self.rps:
            return None
        values = [s.rps for s in self.samples]
        return (max(values) - min(values)) / self.rps * 100

    def summarize(self) -> None:
        if not self.samples:
            return
        self.rps = statistics.median(s.rps for s in self.samples)
        self.p50_ms = _median([s.p50_ms for s in self.samples])
        self.p99_ms = _median([s.p99_ms for s in self.samples])
        self.non2xx = sum(s.non2xx for s in self.samples)
        self.socket_errors = sum(s.socket_errors for s in self.samples)
        self.cpu_us_per_request = _median(
            [s.cpu_s / s.requests * 1e6 if s.cpu_s is not None and s.requests else None for s in self.samples]
        )


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


# -- load generators -----------------------------------------------------------------------

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(output: str) -> Sample:
    """The numbers of one ``wrk --latency`` run."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rps is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    total = re.search(r"(\d+) requests in", output)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    pct = {
        p: float(v) * _UNIT_MS[u]
        for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    }
    return Sample(
        rps=float(rps.group(1)),
        requests=int(total.group(1)) if total else 0,
        p50_ms=pct.get("50"),
        p99_ms=pct.get("99"),
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
    )


class Load:
    """Runs one load test: ``wrk`` when installed, else a Python client (much slower, but
    it lets the test run where wrk is not installed)."""

    def __init__(self, client: str, tmp: Path) -> None:
        self.client = client
        self.lua = tmp / "upload.lua"
        self.lua.write_text(
            "-- POST a body of FCGI_BENCH_BODY_BYTES bytes (the 10 MiB upload scenario)\n"
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/octet-stream"\n'
            'wrk.body = string.rep("x", tonumber(os.getenv("FCGI_BENCH_BODY_BYTES")))\n'
        )

    def run(self, port: int, scenario: Scenario, seconds: float, conns: int) -> Sample:
        if scenario.max_conns:
            conns = min(conns, scenario.max_conns)
        if self.client == "wrk":
            return self._wrk(port, scenario, seconds, conns)
        return python_load(port, scenario, seconds, conns)

    def _wrk(self, port: int, scenario: Scenario, seconds: float, conns: int) -> Sample:
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "--latency"]
        env = dict(os.environ)
        if scenario.method == "POST":
            cmd += ["-s", str(self.lua)]
            env["FCGI_BENCH_BODY_BYTES"] = str(scenario.body_bytes)
        cmd.append(f"http://127.0.0.1:{port}{scenario.path}")
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
        return parse_wrk(done.stdout)


def python_load(port: int, scenario: Scenario, seconds: float, conns: int) -> Sample:
    """A closed-loop client: ``conns`` threads, each a keep-alive http.client connection."""
    body = b"x" * scenario.body_bytes if scenario.body_bytes else None
    headers = {"Content-Type": "application/octet-stream"} if body else {}
    latencies: list[list[float]] = [[] for _ in range(conns)]
    failures = [[0, 0] for _ in range(conns)]  # [non2xx, socket errors] per thread
    start = time.monotonic()
    deadline = start + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                conn.request(scenario.method, scenario.path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                failures[i][1] += 1
                conn.close()
                continue
            latencies[i].append((time.perf_counter() - t0) * 1000)
            if not 200 <= resp.status < 400:
                failures[i][0] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    elapsed = time.monotonic() - start
    flat = sorted(x for per in latencies for x in per)
    pct = (lambda q: flat[min(len(flat) - 1, int(q * len(flat)))]) if flat else (lambda q: None)
    return Sample(
        rps=len(flat) / elapsed,
        requests=len(flat),
        p50_ms=pct(0.50),
        p99_ms=pct(0.99),
        non2xx=sum(f[0] for f in failures),
        socket_errors=sum(f[1] for f in failures),
    )


def check_response(port: int, scenario: Scenario, timeout: float) -> None:
    """One request through nginx, retried until the backend answers it right (start-up)."""
    body = b"x" * scenario.body_bytes if scenario.body_bytes else None
    deadline = time.monotonic() + timeout
    problem = "no answer"
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request(scenario.method, scenario.path, body=body)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
        except (OSError, http.client.HTTPException) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
            continue
        problem = _unexpected(scenario.expect, resp.status, data)
        if not problem:
            return
        if resp.status not in (502, 503, 504):  # nginx answers 502 until the backend listens
            break
        time.sleep(0.2)
    raise RuntimeError(f"start-up check of {scenario.method} {scenario.path} failed: {problem}")


def _unexpected(expect: str, status: int, data: bytes) -> str:
    if status != 200:
        return f"status {status}: {data[:300]!r}"
    ok = {
        "hello": data == b"Hello, world!",
        "big": len(data) == BIG_BYTES,
        "upload": data == str(UPLOAD_BYTES).encode(),
        "posts": b"Post number 49" in data and b"10 posts shown" in data,
    }[expect]
    return "" if ok else f"unexpected body ({len(data)} bytes): {data[:300]!r}"


# -- processes -----------------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(root: int) -> float:
    """User + system CPU time of ``root``'s process tree so far (exited children not included:
    backends keep their workers during a run)."""
    total = 0
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _TICKS


def rss_mib(root: int) -> tuple[float, int]:
    """Sum of VmRSS over the process tree (MiB), and how many processes it has. Shared pages
    (a forking server's copy-on-write memory) count once per process, as ``ps`` shows them."""
    total_kb, count = 0, 0
    for pid in process_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        if m:
            total_kb += int(m.group(1))
            count += 1
    return total_kb / 1024, count


def stop_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """TERM the process group (each backend leads its own session), then KILL what is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def can_connect_unix(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(path)
        except OSError:
            return False
    return True


@dataclass
class Instance:
    """One running backend: ``backend`` serving ``app`` with ``workers`` processes."""

    backend: Backend
    app: str
    workers: int
    sock: str
    command: list[str]
    log: Path
    proc: subprocess.Popen | None = None
    error: str = ""

    def start(self, env: dict[str, str]) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(APPS),
                start_new_session=True,
            )

    def wait_listening(self, deadline: float) -> None:
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with status {self.proc.returncode}")
            if can_connect_unix(self.sock):
                return
            time.sleep(0.05)
        raise RuntimeError("not listening after the start-up timeout")

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


# -- nginx ---------------------------------------------------------------------------------

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
            f"    # {scenario.name} / {inst.backend.name}\n"
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
        "    client_max_body_size 16m;\n"
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
) -> tuple[subprocess.Popen, dict]:
    """Writes the config and starts nginx; returns it and {(scenario, backend): port}."""
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
            if (conf_dir / "nginx.pid").exists() and all(_tcp_open(p) for p in ports):
                return proc, {(sc.name, inst.backend.name): port for port, sc, inst in sites}
            time.sleep(0.05)
        stop_group(proc)
        log = (
            (conf_dir / "error.log").read_text(errors="replace") if (conf_dir / "error.log").exists() else ""
        )
        if "Address already in use" not in log or attempt == 4:
            raise RuntimeError(f"nginx did not start:\n{log[-3000:]}")
    raise AssertionError("unreachable")


def _tcp_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


# -- environment ---------------------------------------------------------------------------


def probe(python: str, names: list[str], project: Path) -> dict[str, bool]:
    """Which modules (or ``bin:NAME`` executables beside python) the interpreter has."""
    mods = [n for n in names if not n.startswith("bin:")]
    code = (
        "import importlib.util, json, sys\n"
        "def has(m):\n    try:\n        return importlib.util.find_spec(m) is not None\n"
        "    except Exception:\n        return False\n"
        "print(json.dumps({m: has(m) for m in sys.argv[1:]}))"
    )
    out = subprocess.run(
        [python, "-c", code, *mods], capture_output=True, text=True, env=backend_env(project)
    )
    found = json.loads(out.stdout) if out.returncode == 0 else dict.fromkeys(mods, False)
    bindir = os.path.dirname(python)
    for n in names:
        if n.startswith("bin:"):
            found[n] = os.access(os.path.join(bindir, n[4:]), os.X_OK)
    return found


def backend_env(project: Path, data_dir: Path | None = None) -> dict[str, str]:
    """The environment of every backend: ``project`` first on the path (the gateway under
    test is that checkout's code), no FCGI_GATEWAY_* from outside, the database directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCGI_GATEWAY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project), env.get("PYTHONPATH")]))
    if data_dir is not None:
        env["FCGI_BENCH_DATA"] = str(data_dir)
    return env


def _run(cmd: list[str]) -> None:
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def ensure_system_tools(need_wrk: bool) -> None:
    """nginx and wrk from apt when missing."""
    missing = [
        p for p, ok in (("nginx", find_nginx()), ("wrk", shutil.which("wrk") or not need_wrk)) if not ok
    ]
    if not missing:
        return
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    env_prefix = ["env", "DEBIAN_FRONTEND=noninteractive"]
    _run([*prefix, "apt-get", "update", "-qq"])
    _run([*prefix, *env_prefix, "apt-get", "install", "-y", "-qq", *missing])


def ensure_venv(venv: Path) -> str:
    """The bench venv with the peers and this project (editable); reinstalled when
    pyproject.toml or this list changed."""
    python = venv / "bin" / "python"
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(venv)])
    want = " ".join(VENV_PACKAGES) + "\n" + str(REPO) + "\n"
    stamp = venv / ".fcgi-bench-installed"
    current = stamp.read_text() if stamp.exists() else ""
    if current != want or (REPO / "pyproject.toml").stat().st_mtime > stamp.stat().st_mtime:
        if not shutil.which("gcc") and not shutil.which("cc"):  # uWSGI is built from source
            prefix = [] if os.geteuid() == 0 else ["sudo"]
            _run([*prefix, "apt-get", "update", "-qq"])
            _run([*prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", "gcc"])
        _run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
        _run([str(python), "-m", "pip", "install", "-q", *VENV_PACKAGES, "-e", str(REPO)])
        stamp.write_text(want)
    return str(python)


def machine_info(python: str, nginx: str | None, client: str, project: Path) -> dict:
    cpu = ""
    with contextlib.suppress(OSError):
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1).strip() if m else ""

    def out(cmd: list[str], any_status: bool = False) -> str:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, env=backend_env(project))
        except (OSError, subprocess.TimeoutExpired):
            return ""
        text = (done.stdout + done.stderr).strip()  # nginx -v writes to stderr
        return text.splitlines()[0] if text and (done.returncode == 0 or any_status) else ""

    versions = subprocess.run(
        [
            python,
            "-c",
            "import sys, importlib.metadata as m\nfor n in sys.argv[1:]:\n"
            "    try: print(n, m.version(n))\n    except Exception: pass",
            "fcgi-gateway",
            *VENV_PACKAGES,
        ],
        capture_output=True,
        text=True,
        env=backend_env(project),
    ).stdout.split()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": out([python, "-c", "import sys; print(sys.version.split()[0])"]),
        "nginx": out([nginx, "-v"]) if nginx else "",
        "client": " ".join(out(["wrk", "-v"], any_status=True).split()[:2])
        if client == "wrk"
        else "python client (no wrk)",
        "project": str(project),
        "git": out(["git", "-C", str(project), "describe", "--always", "--dirty"]),
        "packages": dict(zip(versions[::2], versions[1::2], strict=False)),
    }


# -- the run -------------------------------------------------------------------------------


def plan_rows(args: argparse.Namespace, available: dict[str, bool]) -> tuple[list[Scenario], list[Row]]:
    """The (scenario, backend) rows to measure; rows whose server or framework is not
    installed are left out (and listed)."""
    scenarios = [SCENARIO[n] for n in args.scenarios]
    rows, skipped = [], []
    for sc in scenarios:
        for name in sc.backends:
            if args.only and name not in args.only:
                continue
            backend = BACKEND[name]
            app = app_for(sc, backend)
            if app is None:
                continue
            needs = [*backend.requires, *APPS_BY_FAMILY[sc.family][1]]
            missing = [n for n in needs if not available.get(n)]
            if missing:
                skipped.append(f"{sc.name}/{name} ({', '.join(missing)} not installed)")
                continue
            workers = sc.workers if backend.multiprocess else 1
            rows.append(Row(sc.name, name, backend.protocol, backend.interface, workers, sc.keep_conn, app))
    if skipped:
        print("not measured:", "; ".join(skipped), flush=True)
    return [s for s in scenarios if any(r.scenario == s.name for r in rows)], rows


class BenchRun:
    """One run: the backends of each scenario group, one nginx in front of all of them."""

    def __init__(
        self, args: argparse.Namespace, rows: list[Row], scenarios: list[Scenario], client: str
    ) -> None:
        self.args = args
        self.rows = rows
        self.scenarios = scenarios
        self.tmp = Path(tempfile.mkdtemp(prefix="fcgi-bench-"))
        (self.tmp / "sock").mkdir()
        (self.tmp / "logs").mkdir()
        self.env = backend_env(args.project, self.tmp / "data")
        self.load = Load(client, self.tmp)
        self.error_log = self.tmp / "nginx" / "error.log"
        self.ports: dict[tuple[str, str], int] = {}
        # One process (tree) per (backend, app, workers): scenarios of one group share it.
        self.instances: dict[tuple[str, str, int], Instance] = {}
        for row in rows:
            key = self._key(row)
            if key not in self.instances:
                n = len(self.instances)
                sock = str(self.tmp / "sock" / f"{n}.sock")
                cmd = backend_command(
                    BACKEND[row.backend], args.python, sock, row.app, row.workers, tuple(args.gateway_args)
                )
                log = self.tmp / "logs" / f"{n}-{row.backend}.log"
                self.instances[key] = Instance(BACKEND[row.backend], row.app, row.workers, sock, cmd, log)
            row.command = self.instances[key].command

    @staticmethod
    def _key(row: Row) -> tuple[str, str, int]:
        return (row.backend, row.app, row.workers)

    def execute(self, nginx: str) -> None:
        nginx_proc = None
        try:
            plan = [(SCENARIO[r.scenario], self.instances[self._key(r)]) for r in self.rows]
            nginx_proc, self.ports = start_nginx(nginx, self.tmp, plan)
            groups: list[list[Scenario]] = []
            for sc in self.scenarios:
                if groups and (groups[-1][0].family, groups[-1][0].workers) == (sc.family, sc.workers):
                    groups[-1].append(sc)
                else:
                    groups.append([sc])
            for group in groups:
                self.measure_group(group)
        finally:
            for inst in self.instances.values():
                if inst.proc is not None and inst.proc.poll() is None:
                    stop_group(inst.proc)
            if nginx_proc is not None:
                stop_group(nginx_proc)
            if self.args.keep_tmp:
                print(f"kept {self.tmp} (nginx config and logs, backend logs)")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        for sc in self.scenarios:
            mine = [r for r in self.rows if r.scenario == sc.name]
            ref = next((r.rps for r in mine if r.backend == REFERENCE and r.rps), None)
            for r in mine:
                if r.rps is not None and ref:
                    r.ratio_to_uwsgi = r.rps / ref

    def measure_group(self, group: list[Scenario]) -> None:
        """Start the group's backends, check that each row answers right, then the rounds."""
        names = {s.name for s in group}
        rows = [r for r in self.rows if r.scenario in names]
        running = list({id(i): i for i in (self.instances[self._key(r)] for r in rows)}.values())
        print(f"\n== {', '.join(s.name for s in group)}: starting {len(running)} backends", flush=True)
        for inst in running:
            inst.start(self.env)
        try:
            self._start_up(rows, running)
            idle = {id(inst): rss_mib(inst.proc.pid)[0] for inst in running if not inst.error}
            for sc in group:
                live = [r for r in rows if r.scenario == sc.name and r.status == "ok"]
                if live:
                    self.measure_scenario(sc, live)
                for r in live:
                    inst = self.instances[self._key(r)]
                    r.rss_idle_mib = idle[id(inst)]
                    r.rss_after_mib, r.processes = rss_mib(inst.proc.pid)
                    r.summarize()
        finally:
            for inst in running:
                if inst.proc is not None:
                    stop_group(inst.proc)

    def _start_up(self, rows: list[Row], running: list[Instance]) -> None:
        deadline = time.monotonic() + self.args.startup_timeout
        for inst in running:
            try:
                inst.wait_listening(deadline)
            except RuntimeError as exc:
                inst.error = str(exc)
                print(f"!! {inst.backend.name} ({inst.app}) {exc}:\n{inst.log_tail()}", flush=True)
        for row in rows:
            inst = self.instances[self._key(row)]
            if inst.error:
                row.status = "failed to start"
                continue
            port = self.ports[(row.scenario, row.backend)]
            try:
                check_response(port, SCENARIO[row.scenario], max(5.0, deadline - time.monotonic()))
            except RuntimeError as exc:
                row.status = "failed the start-up check"
                print(f"!! {row.scenario}/{row.backend}: {exc}\n{inst.log_tail()}", flush=True)

    def measure_scenario(self, sc: Scenario, rows: list[Row]) -> None:
        """A warm-up run per row, then ``--rounds`` rounds of one run per row (A B C A B C)."""
        print(f"-- {sc.name}: {sc.description}", flush=True)
        mark = self.error_log.stat().st_size if self.error_log.exists() else 0
        if self.args.warmup > 0:
            for r in rows:
                self.load.run(self.ports[(sc.name, r.backend)], sc, self.args.warmup, self.args.conns)
        for n in range(self.args.rounds):
            for r in rows:
                pid = self.instances[self._key(r)].proc.pid
                cpu = cpu_seconds(pid)
                sample = self.load.run(
                    self.ports[(sc.name, r.backend)], sc, self.args.seconds, self.args.conns
                )
                sample.cpu_s = cpu_seconds(pid) - cpu
                r.samples.append(sample)
                err = sample.non2xx + sample.socket_errors
                note = f"  {err} errors" if err else ""
                print(f"   round {n + 1}  {r.backend:20} {sample.rps:9.0f} req/s{note}", flush=True)
        logged = nginx_errors_by_port(self.error_log, mark)
        for r in rows:
            r.nginx_errors = logged.get(self.ports[(sc.name, r.backend)], 0)


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


def run(args: argparse.Namespace) -> list[Row]:
    nginx = find_nginx()
    if nginx is None:
        raise SystemExit("nginx is not installed (run without --no-install to install it)")
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    wanted = {n for b in BACKENDS for n in b.requires}
    wanted |= {m for _, mods in APPS_BY_FAMILY.values() for m in mods}
    scenarios, rows = plan_rows(args, probe(args.python, sorted(wanted), args.project))
    if not rows:
        raise SystemExit(f"nothing to measure: no requested backend is installed for {args.python}")
    meta = args.meta = machine_info(args.python, nginx, client, args.project)
    print(f"{meta['date']}: {meta['nproc']} CPUs ({meta['cpu']}), Python {meta['python']}, {meta['nginx']}")
    plan = f"{len(rows)} rows x {args.rounds} rounds x {args.seconds:g} s, {args.conns} connections"
    print(f"{plan}, {meta['client']}", flush=True)
    BenchRun(args, rows, scenarios, client).execute(nginx)
    return rows


# -- output --------------------------------------------------------------------------------

COLUMNS = (
    "scenario",
    "backend",
    "req/s",
    "spread",
    "vs uWSGI",
    "p50",
    "p99",
    "CPU/req",
    "errors",
    "nginx errs",
    "procs",
    "RSS idle",
    "RSS after",
)


def table_cells(row: Row) -> list[str]:
    def ms(v: float | None) -> str:
        return "-" if v is None else (f"{v:.2f}ms" if v < 10 else f"{v:.1f}ms" if v < 100 else f"{v:.0f}ms")

    def mib(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}M"

    if row.rps is None:  # the reason is printed below the table
        return [row.scenario, row.backend, "FAILED", *["-"] * (len(COLUMNS) - 3)]
    ratio = "-" if row.ratio_to_uwsgi is None else f"{row.ratio_to_uwsgi:.2f}"
    return [
        row.scenario,
        row.backend,
        f"{row.rps:.0f}",
        "-" if row.spread_pct is None else f"{row.spread_pct:.0f}%",
        ratio,
        ms(row.p50_ms),
        ms(row.p99_ms),
        "-" if row.cpu_us_per_request is None else f"{row.cpu_us_per_request:.0f}us",
        str(row.errors),
        str(row.nginx_errors),
        str(row.processes or "-"),
        mib(row.rss_idle_mib),
        mib(row.rss_after_mib),
    ]


def print_table(rows: list[Row]) -> None:
    cells = [list(COLUMNS)] + [table_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    print()
    for i, line in enumerate(cells):
        if i > 0 and line[0] != cells[i - 1][0] and i > 1:
            print()
        print(
            "  ".join(
                c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(COLUMNS) - 2)) + "|",
    ]
    for r in rows:
        cells = table_cells(r)
        if r.backend.startswith("project-"):
            cells[1] = f"**{cells[1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_chart(rows: list[Row], path: str, meta: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed in {sys.executable}: no chart", file=sys.stderr)
        return
    names = [s.name for s in SCENARIOS if any(r.scenario == s.name and r.rps for r in rows)]
    if not names:
        return
    ncols = 2 if len(names) > 1 else 1
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 0.32 * 9 * nrows + 0.8), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        sc_rows = [r for r in rows if r.scenario == name and r.rps]
        labels = [r.backend for r in sc_rows][::-1]
        values = [r.rps for r in sc_rows][::-1]
        colors = [
            "#1f77b4"
            if r.backend.startswith("project-")
            else "#ff7f0e"
            if r.backend == REFERENCE
            else "#9a9a9a"
            for r in sc_rows
        ][::-1]
        bars = ax.barh(labels, values, color=colors)
        top = max(values)
        for bar, r in zip(bars, sc_rows[::-1], strict=True):
            note = f"{r.rps:,.0f}" + (f"  ({r.ratio_to_uwsgi:.2f}x)" if r.ratio_to_uwsgi else "")
            if r.cpu_us_per_request is not None:
                note += f"  {r.cpu_us_per_request:,.0f} us CPU/req"
            ax.text(
                bar.get_width() + top * 0.01,
                bar.get_y() + bar.get_height() / 2,
                note,
                va="center",
                fontsize=7,
            )
        ax.set_xlim(0, top * 1.6)
        ax.set_title(f"{name}: {SCENARIO[name].title}", fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        ax.set_xlabel("req/s (median of rounds); (x) = ratio to uWSGI; backend CPU per request", fontsize=7)
    fig.suptitle(
        f"fcgi-gateway vs peers behind nginx, {meta.get('nproc')} CPUs, {meta.get('date', '')}", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    print(f"chart: {path} ({os.path.getsize(path) // 1024} KiB)")


def load_json(path: str) -> tuple[list[Row], dict]:
    """Rows and meta of a ``--json`` file (to print or chart it again with ``--report``)."""
    data = json.loads(Path(path).read_text())
    names = set(Row.__dataclass_fields__)
    rows = []
    for item in data["results"]:
        row = Row(**{k: v for k, v in item.items() if k in names})
        row.samples = [Sample(**x) for x in item["samples"]]
        rows.append(row)
    return rows, data["meta"]


def write_json(rows: list[Row], path: str, args: argparse.Namespace) -> None:
    data = {
        "meta": {  # from --report: the measured run's own meta wins
            "command": args.command,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "conns": args.conns,
            "warmup": args.warmup,
            **args.meta,
        },
        "results": [{**asdict(r), "errors": r.errors, "spread_pct": r.spread_pct} for r in rows],
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


# -- command line --------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmark fcgi-gateway against its peers behind one nginx (docs/benchmarks.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios:\n"
        + "\n".join(f"  {s.name:15} {s.description}" for s in SCENARIOS)
        + "\nrows:\n"
        + "\n".join(f"  {b.name:20} {b.description}" for b in BACKENDS),
    )
    ap.add_argument("--scenarios", help="comma-separated scenarios (default: all; --tiny: hello ones)")
    ap.add_argument("--only", help="comma-separated rows (backends) to measure (default: all)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per scenario (default 5)")
    ap.add_argument("--seconds", type=float, default=3, help="length of one load run (default 3)")
    ap.add_argument(
        "--warmup", type=float, default=1, help="unmeasured run per row before the rounds (default 1)"
    )
    ap.add_argument("--conns", type=int, default=32, help="concurrent connections (wrk -t1 -cN; default 32)")
    ap.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (auto: wrk when installed)",
    )
    ap.add_argument("--json", metavar="FILE", help="write machine-readable results here")
    ap.add_argument("--markdown", metavar="FILE", help="write the table as Markdown here")
    ap.add_argument("--chart", metavar="FILE.png", help="write a bar chart of req/s (needs matplotlib)")
    ap.add_argument("--report", metavar="FILE.json", help="measure nothing: print (and chart) a --json file")
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="smoke run: 1 round of 1 s, hello scenarios, gateway rows (+ uwsgi when installed)",
    )
    ap.add_argument(
        "--python", help="interpreter whose installed servers are benchmarked (implies --no-install)"
    )
    ap.add_argument(
        "--no-install",
        action="store_true",
        help="install nothing: use --python (default: this interpreter) and what it has",
    )
    ap.add_argument(
        "--venv", default=DEFAULT_VENV, help="bench venv (default $FCGI_BENCH_VENV or %(default)s)"
    )
    ap.add_argument(
        "--project",
        type=Path,
        default=REPO,
        help="checkout whose gateway is measured (default: this one); e.g. a `git worktree` of another "
        "revision, to compare two",
    )
    ap.add_argument(
        "--gateway-args",
        type=shlex.split,
        default=[],
        help="extra options for the gateway rows, one quoted string (e.g. '--isolation-checkers none')",
    )
    ap.add_argument("--startup-timeout", type=float, default=60, help="seconds for the backends to come up")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    args = ap.parse_args(argv)
    if args.tiny:
        args.rounds, args.seconds, args.warmup = 1, 1.0, min(args.warmup, 0.5)
        args.scenarios = args.scenarios or ",".join(TINY_SCENARIOS)
        args.only = args.only or ",".join((*PROJECT_ROWS, REFERENCE))
    args.scenarios = args.scenarios or ",".join(s.name for s in SCENARIOS)
    args.only = args.only or ""
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in args.scenarios if s not in SCENARIO]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIO)}")
    args.only = [b for b in args.only.split(",") if b]
    unknown = [b for b in args.only if b not in BACKEND]
    if unknown:
        ap.error(f"unknown row(s) {', '.join(unknown)}; known: {', '.join(BACKEND)}")
    if args.python or args.report:
        args.no_install = True
    args.project = args.project.resolve()
    if not (args.project / "gateway" / "__init__.py").exists():
        ap.error(f"--project {args.project}: no gateway package there")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.command = os.environ.get("FCGI_BENCH_COMMAND") or shlex.join(["bench/run", *argv])
    if not args.no_install:
        ensure_system_tools(need_wrk=args.client != "python")
        python = ensure_venv(Path(args.venv))
        if os.path.realpath(sys.prefix) != os.path.realpath(args.venv):
            # Go on inside the venv (matplotlib for --chart is there).
            env = {**os.environ, "FCGI_BENCH_COMMAND": args.command}
            os.execve(python, [python, str(Path(__file__).resolve()), *argv, "--no-install"], env)
        args.python = python
    args.python = args.python or sys.executable
    if args.report:
        rows, args.meta = load_json(args.report)
    else:
        rows = run(args)
    print_table(rows)
    if args.json:
        write_json(rows, args.json, args)
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(rows))
    if args.chart:
        write_chart(rows, args.chart, args.meta)
    bad = [
        f"{r.scenario}/{r.backend}: {r.status if r.rps is None else f'{r.errors} errors'}"
        for r in rows
        if r.rps is None or r.errors
    ]
    if bad:
        print("\nFAILED rows (errors must be 0): " + "; ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
