"""100 MB through a real nginx, both directions, on both workers: the worker's RSS must
not grow by 16 MB or more (issue 7).

- upload: a 100 MB POST that the app reads in 64 KiB pieces (hashing them, keeping
  nothing), with nginx buffering the request body (the default: it then sends the body
  as fast as the gateway takes it) and without (the body streams through as the client
  sends it, chunked);
- download: a 100 MB response the app streams in 256 KiB pieces of one preallocated
  buffer, read by the client 1 MiB at a time, with nginx buffering the response (to a
  temp file: it reads as fast as the gateway sends) and without (``fastcgi_buffering
  off``: nginx reads only as fast as the client, which pauses after every MiB).

The app, written to a temp dir by this module, reads its input slower than loopback
delivers it (10 ms of sleep per MiB), and the unbuffered download is paced by the client,
so a gateway that buffered instead of applying backpressure would show it. The peak RSS
is the kernel's high-water mark (VmHWM, reset through /proc/PID/clear_refs before each
transfer), with a sampling thread as a second source. Each transfer takes about a second.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MiB = 1024 * 1024
SIZE = 100 * MiB
LIMIT_KB = 16 * 1024

APP = '''"""Large bodies without keeping them (written by tests/integration/test_memory_large_bodies.py)."""
import hashlib
import os
import time

CHUNK = bytes(range(256)) * 1024  # 256 KiB, allocated once


def _size(query):
    for part in query.split("&"):
        if part.startswith("size="):
            return int(part[5:])
    return 1024 * 1024


def wsgi_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/upload":
        stream, digest, total, mark = environ["wsgi.input"], hashlib.sha256(), 0, 0
        while True:
            data = stream.read(65536)
            if not data:
                break
            digest.update(data)
            total += len(data)
            if total - mark >= 1024 * 1024:  # slower than loopback: backpressure matters
                mark = total
                time.sleep(0.01)
        body = f"{total} {digest.hexdigest()}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/download":
        size = _size(environ.get("QUERY_STRING", ""))
        headers = [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
        start_response("200 OK", headers)

        def gen():
            sent = 0
            while sent < size:
                n = min(len(CHUNK), size - sent)
                yield CHUNK if n == len(CHUNK) else CHUNK[:n]
                sent += n

        return gen()
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/upload":
        import asyncio

        digest, total, mark = hashlib.sha256(), 0, 0
        while True:
            message = await receive()
            data = message.get("body", b"")
            digest.update(data)
            total += len(data)
            if total - mark >= 1024 * 1024:
                mark = total
                await asyncio.sleep(0.01)
            if not message.get("more_body"):
                break
        body = f"{total} {digest.hexdigest()}".encode()
    elif path == "/download":
        size = _size(scope["query_string"].decode())
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/octet-stream"), (b"content-length", str(size).encode())]})
        sent = 0
        while sent < size:
            n = min(len(CHUNK), size - sent)
            sent += n
            await send({"type": "http.response.body", "body": CHUNK if n == len(CHUNK) else CHUNK[:n],
                        "more_body": sent < size})
        return
    else:
        body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
'''

PATTERN = bytes(range(256)) * 1024


def status_kb(pid: int, field: str) -> int:
    m = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert m, f"no {field} for {pid}"
    return int(m.group(1))


class PeakRSS:
    """Peak VmRSS of ``pid`` while the ``with`` block runs: VmHWM after resetting it, and
    the highest of samples taken every 5 ms (in case clear_refs is not permitted)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, status_kb(self.pid, "VmRSS"))

    def __enter__(self) -> PeakRSS:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # reset VmHWM to VmRSS
            self._hwm = True
        except OSError:
            self._hwm = False
        self.before = self.peak = status_kb(self.pid, "VmRSS")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._hwm:
            self.peak = max(self.peak, status_kb(self.pid, "VmHWM"))

    @property
    def growth_kb(self) -> int:
        return self.peak - self.before


def body_chunks(size: int) -> Iterator[bytes]:
    """``size`` bytes (a multiple of 1 MiB) of the byte pattern the app's downloads send."""
    block = PATTERN * 4  # 1 MiB
    for _ in range(size // len(block)):
        yield block


def expected_sha(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in body_chunks(size):
        digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("memapp")
    (path / "memory_app.py").write_text(APP)
    return path


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def serve(served, app_dir: Path, kind: str, **nginx_kwargs):
    app = "memory_app:wsgi_app" if kind == "sync" else "memory_app:asgi_app"
    s = served(app, "--app-dir", str(app_dir), "--worker", kind, **nginx_kwargs)
    pid = int(s.get("/pid").text)
    assert pid != s.gateway.pid  # the worker, not the master
    return s, pid


def upload(s, size: int, chunked: bool) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", s.nginx.port, timeout=60)
    try:
        conn.putrequest("POST", "/upload", skip_accept_encoding=True)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader(*(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(size))))
        conn.endheaders()
        for chunk in body_chunks(size):
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked:
            conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        assert resp.status == 200, (resp.status, resp.read()[:500])
        return resp.read().decode()
    finally:
        conn.close()


def download(s, size: int, pause: float = 0.0) -> str:
    """``"<bytes received> <sha256>"``, like the upload's answer; ``pause`` after each MiB."""
    conn = http.client.HTTPConnection("127.0.0.1", s.nginx.port, timeout=60)
    try:
        conn.request("GET", f"/download?size={size}")
        resp = conn.getresponse()
        assert resp.status == 200
        digest, received = hashlib.sha256(), 0
        while data := resp.read(MiB):
            digest.update(data)
            received += len(data)
            if pause:
                time.sleep(pause)
        return f"{received} {digest.hexdigest()}"
    finally:
        conn.close()


@pytest.mark.parametrize("buffering", [True, False], ids=["nginx-buffers-body", "streamed-chunked"])
def test_100mb_upload_keeps_worker_memory_flat(served, app_dir, kind, buffering):
    s, pid = serve(served, app_dir, kind, fastcgi_request_buffering=buffering)
    assert upload(s, 4 * MiB, chunked=not buffering).startswith(f"{4 * MiB} ")  # warm up
    started = time.monotonic()
    with PeakRSS(pid) as rss:
        answer = upload(s, SIZE, chunked=not buffering)
    took = time.monotonic() - started
    print(f"{kind} upload (buffering={buffering}): {took:.1f}s, RSS {rss.before} kB, +{rss.growth_kb} kB")
    assert answer == f"{SIZE} {expected_sha(SIZE)}"
    assert rss.growth_kb < LIMIT_KB, f"worker RSS grew {rss.growth_kb} kB during a 100 MB upload"


@pytest.mark.parametrize("buffering", [True, False], ids=["nginx-buffers-response", "client-paced"])
def test_100mb_download_keeps_worker_memory_flat(served, app_dir, kind, buffering):
    extra = "" if buffering else "fastcgi_buffering off;"
    s, pid = serve(served, app_dir, kind, extra_location=extra)
    assert download(s, 4 * MiB).startswith(f"{4 * MiB} ")  # warm up
    started = time.monotonic()
    with PeakRSS(pid) as rss:
        answer = download(s, SIZE, pause=0.0 if buffering else 0.003)
    took = time.monotonic() - started
    print(f"{kind} download (buffering={buffering}): {took:.1f}s, RSS {rss.before} kB, +{rss.growth_kb} kB")
    assert answer == f"{SIZE} {expected_sha(SIZE)}"
    assert rss.growth_kb < LIMIT_KB, f"worker RSS grew {rss.growth_kb} kB during a 100 MB download"
