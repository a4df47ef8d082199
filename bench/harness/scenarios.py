"""What the benchmark measures: the scenarios, their sizes, and what a right answer is.

A :class:`Scenario` is one request shape (method, path, body), the app family that serves
it, the rows it runs on and how: ``kind="load"`` scenarios are throughput runs (wrk, in
interleaved rounds); ``kind="memory"`` scenarios send a few very large requests one at a
time to fresh backend processes and report how much the worker's RSS grew.
:func:`unexpected` tells a right response from a wrong one (start-up check, memory runs).
"""

from __future__ import annotations

from dataclasses import dataclass

from .backends import ALL_ROWS, APPS_BY_FAMILY, CORE_ROWS, FASTCGI_ROWS, MULTI_ROWS, Backend

HELLO = b"Hello, world!"
UPLOAD_BYTES = 10 * 1024 * 1024
BIG_BYTES = 1024 * 1024
MEMORY_BYTES = 100 * 1024 * 1024  # the memory scenarios: one request moves this much
MEMORY_REQUESTS = 3  # requests per row in a memory scenario (fewer when --rounds is lower)
MEMORY_TIMEOUT_S = 120.0  # a memory request that takes longer fails (a socket error)


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
    expect: str = "hello"  # what a right response is (see unexpected())
    response_bytes: int = 0  # expect="stream": the length of the body
    kind: str = "load"  # "load" (throughput rounds) or "memory" (few big requests, RSS growth)

    @property
    def own_processes(self) -> bool:
        """Memory scenarios get backend processes of their own (a fresh idle baseline)."""
        return self.kind == "memory"


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
    Scenario(
        "mem-upload", "hello", CORE_ROWS, "100 MiB upload: worker RSS growth",
        "memory: POST /upload with a 100 MiB body (the app reads and counts it), a few requests one "
        "at a time on fresh processes; worker RSS growth",
        method="POST", path="/upload", body_bytes=MEMORY_BYTES, expect="upload", kind="memory",
    ),
    Scenario(
        "mem-download", "hello", CORE_ROWS, "100 MiB streamed download: worker RSS growth",
        "memory: GET /stream -> 100 MiB the app yields in 64 KiB chunks, a few requests one at a time "
        "on fresh processes; worker RSS growth",
        path=f"/stream?bytes={MEMORY_BYTES}", expect="stream", response_bytes=MEMORY_BYTES, kind="memory",
    ),
)  # fmt: skip
SCENARIO = {s.name: s for s in SCENARIOS}
TINY_SCENARIOS = ("hello", "hello-keepconn")


def app_for(scenario: Scenario, backend: Backend) -> str | None:
    return APPS_BY_FAMILY[scenario.family][0].get(backend.interface)


def startup_check(scenario: Scenario) -> Scenario:
    """The request that checks a row before it is measured: the scenario's own, except for
    memory scenarios (a 100 MiB request would spoil the idle RSS): a plain hello."""
    return SCENARIO["hello"] if scenario.kind == "memory" else scenario


def unexpected(scenario: Scenario, status: int, data: bytes, size: int | None = None) -> str:
    """Why a response is not the scenario's right answer ("" when it is). ``size``: the body's
    length when the client did not keep the body (``data`` is then its beginning)."""
    size = len(data) if size is None else size
    if status != 200:
        return f"status {status}: {data[:300]!r}"
    ok = {
        "hello": data == HELLO,
        "big": size == BIG_BYTES,
        "upload": data == str(scenario.body_bytes).encode(),
        "stream": size == scenario.response_bytes,
        "posts": b"Post number 49" in data and b"10 posts shown" in data,
    }[scenario.expect]
    return "" if ok else f"unexpected body ({size} bytes): {data[:300]!r}"
