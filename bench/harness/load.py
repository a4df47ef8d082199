"""Load clients: what sends the requests and how their numbers are read.

* :class:`Load` runs one throughput run against one port: ``wrk --latency`` when
  installed (:func:`parse_wrk` reads its output), else :func:`python_load`, a closed-loop
  client on threads (much slower, but the test runs where wrk is missing).
* :func:`check_response`: the start-up check, one request retried until the backend
  answers it right.
* :func:`memory_request`: one very large request of a memory scenario, streamed both ways
  so that the client never holds more than a chunk.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import threading
import time
from pathlib import Path

from .results import Sample
from .scenarios import Scenario, unexpected

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
MEMORY_CHUNK = 1024 * 1024  # what memory_request sends or reads at a time


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
        problem = unexpected(scenario, resp.status, data)
        if not problem:
            return
        if resp.status not in (502, 503, 504):  # nginx answers 502 until the backend listens
            break
        time.sleep(0.2)
    raise RuntimeError(f"start-up check of {scenario.method} {scenario.path} failed: {problem}")


def memory_request(port: int, scenario: Scenario, timeout: float) -> tuple[Sample, str]:
    """One request of a memory scenario: the body (if any) sent and the response read
    ``MEMORY_CHUNK`` bytes at a time, given up after ``timeout`` seconds. Returns a
    one-request sample (rps = 1 / its duration; a wrong answer counts as non-2xx, a failed
    exchange as a socket error) and what was wrong ("" when nothing)."""
    deadline = time.monotonic() + timeout

    def in_time() -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done after {timeout:g} s")

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=min(timeout, 60))
    t0 = time.perf_counter()
    try:
        conn.putrequest(scenario.method, scenario.path)
        if scenario.body_bytes:
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Length", str(scenario.body_bytes))
        conn.endheaders()
        chunk, left = b"x" * MEMORY_CHUNK, scenario.body_bytes
        while left > 0:
            in_time()
            conn.send(chunk if left >= MEMORY_CHUNK else chunk[:left])
            left -= min(left, MEMORY_CHUNK)
        resp = conn.getresponse()
        head, size = b"", 0
        while data := resp.read(MEMORY_CHUNK):
            in_time()
            head += data[: max(0, 300 - len(head))]
            size += len(data)
    except (OSError, http.client.HTTPException) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        return Sample(rps=0.0, requests=0, p50_ms=None, p99_ms=None, non2xx=0, socket_errors=1), problem
    finally:
        conn.close()
    elapsed = time.perf_counter() - t0
    problem = unexpected(scenario, resp.status, head, size)
    ms = elapsed * 1000
    sample = Sample(
        rps=1 / elapsed, requests=1, p50_ms=ms, p99_ms=ms, non2xx=int(bool(problem)), socket_errors=0
    )
    return sample, problem
