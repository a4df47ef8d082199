"""Recycling under load (issue 4): ``--max-requests`` with jitter and ``--max-memory``.

wrk drives nginx -> gateway (2 workers) for a bounded time; every response carries the
pid of the worker that served it, so wrk's tally gives the requests served per worker.
Workers recycled half a second before the load ends are complete: each must have served
between ``--max-requests`` and ``--max-requests + --max-requests-jitter`` requests; the
others (alive at the end, or recycled while wrk was stopping and dropping the responses
still in flight) are partial and only bounded above. Done for GET and for POST on
nginx keep-alive connections (``fastcgi_keep_conn on``: nginx does not retry a POST that
fails on a cached connection the recycled worker just closed; docs/protocol-notes.md,
nginx fact 10), on the sync worker (WSGI) and the async worker (ASGI).
"""

from __future__ import annotations

import re
import time

import pytest

from tests.process._load import children

MAX_REQUESTS, JITTER = 50, 10
DURATION = 20.0


def per_worker(bodies) -> dict[int, int]:
    counts: dict[int, int] = {}
    for body, n in bodies.items():
        first = body.split()[0] if body.split() else ""
        if first.isdigit():  # an error page is not a pid (and is counted as a failure)
            counts[int(first)] = counts.get(int(first), 0) + n
    return counts


def error_context(log: str) -> str:
    """The ERROR lines of a gateway log with the traceback lines that follow them."""
    lines = log.splitlines()
    out = []
    for i, line in enumerate(lines):
        if "[ERROR]" in line:
            out.append(line)
            out.extend(x for x in lines[i + 1 : i + 30] if not x.startswith("["))
    return "\n".join(out[:60])


CASES = [
    pytest.param("wsgi_app:app", "sync", "GET", False, DURATION, id="sync-get"),
    pytest.param("wsgi_app:app", "sync", "POST", True, DURATION, id="sync-post-keepconn"),
    pytest.param("asgi_app:app", "async", "GET", False, DURATION, id="async-get"),
    pytest.param("asgi_app:app", "async", "POST", True, DURATION / 2, id="async-post-keepconn"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("app", "worker", "method", "keep_conn", "duration"), CASES)
def test_max_requests_under_load(served, wrk, app, worker, method, keep_conn, duration):
    s = served(
        app,
        "--worker",
        worker,
        "-w",
        "2",
        "--max-requests",
        str(MAX_REQUESTS),
        "--max-requests-jitter",
        str(JITTER),
        keep_conn=keep_conn,
    )
    body = b"a=1&b=2" if method == "POST" else None
    load = wrk(s.url + "/pid", duration=duration, connections=8, method=method, body=body)
    # Workers gone half a second before wrk stops are complete: every response they sent
    # reached wrk (at the end wrk drops the responses still in flight, so the tally of
    # the last workers is short; they are only bounded above).
    time.sleep(max(0.0, load.started + duration - 0.5 - time.monotonic()))
    settled = s.gateway.log_text()
    result = load.result()
    asked = set(map(int, re.findall(r"worker (\d+) asks to be recycled \(max-requests\)", settled)))
    gone = set(map(int, re.findall(r"worker (\d+) (?:recycled|exited)", settled)))
    counts = per_worker(result.bodies)
    recycled = {pid: n for pid, n in counts.items() if pid in asked & gone}
    partial = {pid: n for pid, n in counts.items() if pid not in recycled}
    print(f"{worker} {method} keep_conn={keep_conn}: {result.summary()}")
    print(f"recycled workers: {len(recycled)}; requests each: {sorted(recycled.values())}")
    print(f"the others (partial): {sorted(partial.values())}")
    log = s.gateway.log_text()
    assert "[ERROR]" not in log, error_context(log)
    assert result.errors == 0, result.summary()
    assert len(recycled) >= 10, "too few recycles to say anything"
    assert result.failed == 0, result.summary() + "\n" + result.output
    assert result.ok == result.requests
    # On a kept-alive connection nginx may already have written the next request when the
    # worker reaches its limit: that one cannot be refused, so one more is allowed there.
    low, high = MAX_REQUESTS, MAX_REQUESTS + JITTER + (1 if keep_conn else 0)
    # And a connection the worker accepted before its limit, whose request was still on the
    # way (nginx connects, then writes), is served when the request comes, after the limit
    # (closing it unanswered would be a 502): a rare race, seen in CI. So a few workers, not
    # a steady share, may serve one more.
    counts_all = {**recycled, **partial}
    wrong = {pid: n for pid, n in recycled.items() if n < low}
    wrong.update({pid: n for pid, n in counts_all.items() if n > high + 1})
    assert not wrong, f"workers outside [{low}, {high + 1}]: {wrong}"
    one_more = {pid: n for pid, n in counts_all.items() if n == high + 1}
    assert len(one_more) <= max(1, len(recycled) // 100), f"{len(one_more)} workers over {high}: {one_more}"


LEAK_APP = '''"""Leaks 2 MiB per request (written by tests/process); answers "pid rss"."""
import os

LEAK = []
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def app(environ, start_response):
    LEAK.append(bytearray(b"\\x01") * (2 << 20))  # filled, so the pages are resident
    body = f"{os.getpid()} {rss()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

MiB = 1 << 20
CONNECTIONS = 4


@pytest.mark.slow
def test_max_memory_recycles_before_the_limit_is_exceeded(served, wrk, app_module):
    """Each response reports the RSS after its 2 MiB: none may be over 64M + 2M + slack."""
    app_dir = app_module("leaky_app", LEAK_APP)
    s = served("leaky_app:app", "-w", "2", "--app-dir", str(app_dir), "--max-memory", "64M")
    result = wrk(s.url + "/", duration=6, connections=CONNECTIONS).result()
    alive = children(s.gateway.pid)
    rss: dict[int, list[int]] = {}
    for body, n in result.bodies.items():
        pid, value = map(int, body.split())
        assert n == 1, f"one RSS figure twice? {body!r}"
        rss.setdefault(pid, []).append(value)
    recycled = {pid: max(v) for pid, v in rss.items() if pid not in alive}
    highest = max(max(v) for v in rss.values())
    print(f"max-memory: {result.summary()}; {len(recycled)} workers recycled")
    print(
        f"highest RSS reported: {highest / MiB:.1f} MiB; per recycled worker (MiB): "
        f"{sorted(round(v / MiB, 1) for v in recycled.values())}"
    )
    print(f"requests per recycled worker: {sorted(len(rss[p]) for p in recycled)}")
    assert result.failed == 0, result.summary()
    assert len(recycled) >= 5
    # The request that crosses the limit grows the worker by its 2 MiB plus what the
    # interpreter's own heap took meanwhile: up to one pymalloc arena (1 MiB; seen, rarely).
    # A check missed between two requests would add 2 MiB more.
    assert highest <= 64 * MiB + 2 * MiB + MiB, f"{highest / MiB:.1f} MiB"
    # Each one was recycled for max-memory, not for something else ...
    log = s.gateway.log_text()
    asked = {int(pid) for pid in re.findall(r"worker (\d+) asks to be recycled \(max-memory\)", log)}
    assert set(recycled) <= asked, sorted(set(recycled) - asked)
    # ... and at the limit: its highest report is within one 2 MiB step of it. When wrk
    # stops it drops the responses still in flight, one per connection, and one worker may
    # have served several of those (seen in CI: 3 of one worker's last ones). Such a worker
    # reports lower, by no more steps than responses were dropped in all.
    near = 64 * MiB - 2 * MiB - MiB // 2
    short = {pid: v for pid, v in recycled.items() if v <= near}
    assert sum(round((highest - v) / (2 * MiB)) for v in short.values()) <= CONNECTIONS, short
    assert "[ERROR]" not in log, error_context(log)
