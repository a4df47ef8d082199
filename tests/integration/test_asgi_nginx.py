"""The async worker serving ASGI apps behind a real nginx (issue: core)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.integration.nginx import http_request

APP = "asgi_app:app"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def asgi(served):
    return served(APP)


def test_get_with_query_and_unicode_path(asgi):
    r = asgi.get("/app/caf%C3%A9%20x?q=1&r=%C3%A9")
    assert r.status == 200
    info = r.json()
    assert info["path"] == "/app/café x"
    assert info["raw_path"] == "/app/caf%C3%A9%20x"
    assert info["query_string"] == "q=1&r=%C3%A9"
    assert info["root_path"] == ""
    assert info["state"] == "hello from lifespan"
    assert info["http_version"] == "1.1"
    names = [h[0] for h in info["headers"]]
    assert "content-length" not in names and "content-type" not in names


def test_duplicate_cookies_are_joined(asgi):
    r = asgi.get("/info", headers=[("Cookie", "a=1"), ("Cookie", "b=2"), ("X-Foo-Bar", "d")])
    headers = dict(r.json()["headers"])
    assert headers["cookie"] == "a=1; b=2"
    assert headers["x-foo-bar"] == "d"


def test_set_cookie_headers_are_not_joined(asgi):
    r = asgi.get("/cookies")
    assert r.status == 200
    assert r.header_list("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]


def test_10mb_post_echoed_intact(asgi):
    body = os.urandom(10 * 1024 * 1024)
    r = asgi.request("POST", "/echo", body=body, headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200
    assert len(r.body) == len(body)
    assert r.body == body
    assert r.header("X-Sha256") == hashlib.sha256(body).hexdigest()


def test_chunked_upload_without_request_buffering(served):
    s = served(APP, fastcgi_request_buffering=False)
    chunks = [os.urandom(100_000) for _ in range(20)]
    r = s.request("POST", "/echo", body=iter(chunks))
    assert r.status == 200
    assert r.body == b"".join(chunks)


def test_50mb_streaming_response_with_flat_memory(asgi):
    pid = int(asgi.get("/pid").text)  # the worker process (the master only supervises)
    asgi.get("/stream?size=1048576")  # warm up
    before = rss_kb(pid)
    size = 50 * 1024 * 1024
    conn = http.client.HTTPConnection("127.0.0.1", asgi.nginx.port, timeout=60)
    conn.request("GET", f"/stream?size={size}")
    resp = conn.getresponse()
    assert resp.status == 200
    received = 0
    peak = before
    while True:
        data = resp.read(1024 * 1024)
        if not data:
            break
        received += len(data)
        peak = max(peak, rss_kb(pid))
    conn.close()
    assert received == size
    # The worker must not buffer the response: growth stays far below the 50 MB sent.
    assert peak - before < 16 * 1024, f"RSS grew {peak - before} kB while streaming"


def test_app_exception_gives_500_and_a_log_line(asgi):
    r = asgi.get("/raise-before")
    assert r.status == 500
    assert b"boom" not in r.body and b"Traceback" not in r.body
    asgi.gateway.wait_for_log(r"exception in ASGI application for GET /raise-before")
    assert "RuntimeError: boom before start" in asgi.gateway.log_text()
    assert asgi.get("/pid").status == 200  # the worker survives


def test_exception_after_start_ends_response_and_logs(asgi):
    # The request is ended (empty STDOUT + END_REQUEST), so nginx finishes the response
    # with what was sent instead of waiting for fastcgi_read_timeout.
    start = time.monotonic()
    r = asgi.get("/raise-after")
    assert (r.status, r.body) == (200, b"partial")
    assert time.monotonic() - start < 5
    asgi.gateway.wait_for_log(r"exception in ASGI application for GET /raise-after")
    assert asgi.get("/pid").status == 200


def test_app_returning_without_response_gives_500(asgi):
    r = asgi.get("/no-response")
    assert r.status == 500
    asgi.gateway.wait_for_log(r"returned without a response for GET /no-response")


def test_partial_body_then_return_is_ended(asgi):
    r = asgi.get("/partial")
    assert r.status == 200
    assert r.body == b"partial"
    asgi.gateway.wait_for_log(r"returned before finishing the response body for GET /partial")


def test_header_injection_refused_with_500(asgi):
    r = asgi.get("/bad-header")
    assert r.status == 500
    assert r.header("X-Evil") is None
    assert r.header("Set-Cookie") is None
    asgi.gateway.wait_for_log(r"header injection refused")


def test_client_abort_reaches_app_as_disconnect(asgi, tmp_path):
    marker = tmp_path / "disconnect"
    sock = socket.create_connection(("127.0.0.1", asgi.nginx.port))
    sock.sendall(f"GET /disconnect?marker={marker} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    started = Path(f"{marker}.started")
    deadline = time.monotonic() + 10
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    sock.close()  # the client gives up while the app is still working
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == "http.disconnect"


def test_keep_conn_1000_sequential_requests_reuse_connections(served):
    s = served(APP, keep_conn=True)
    conn = http.client.HTTPConnection("127.0.0.1", s.nginx.port, timeout=10)
    connections = set()
    for i in range(1000):
        conn.request("GET", f"/info?i={i}")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200
        info = json.loads(body)
        assert info["query_string"] == f"i={i}"
        connections.add(info["connection"])
    conn.close()
    assert len(connections) <= 2, f"nginx opened {len(connections)} FastCGI connections for 1000 requests"


def test_keep_conn_background_work_does_not_break_next_request(served):
    # The app keeps running after its response; the next request reuses id 1 on the same
    # connection and must get its own body (docs/protocol-notes.md, peer bug 2).
    s = served(APP, keep_conn=True)
    conn = http.client.HTTPConnection("127.0.0.1", s.nginx.port, timeout=10)
    for i in range(50):
        body = f"body-{i}".encode() * 100
        conn.request("POST", "/background", body=body)
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read() == body
    conn.close()


def test_concurrent_requests(asgi):
    results = []

    def worker():
        for _ in range(20):
            results.append(asgi.get("/sleep?s=0.01").status)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 160


def test_each_request_gets_a_fresh_context(asgi):
    assert asgi.get("/contextvar?v=first").text == "unset"
    assert asgi.get("/contextvar?v=second").text == "unset"


def test_root_path_option(served):
    s = served(APP, "--root-path", "/app")
    info = s.get("/app/x").json()
    assert info["root_path"] == "/app"
    assert info["path"] == "/app/x"


def test_sigterm_finishes_in_flight_request_and_runs_lifespan_shutdown(served, tmp_path):
    marker = tmp_path / "shutdown"
    s = served(APP, env={"TEST_SHUTDOWN_MARKER": str(marker)})
    result = {}

    def slow():
        result["r"] = http_request("GET", s.url + "/sleep?s=1.5")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    s.gateway.send_signal(15)
    t.join()
    assert result["r"].status == 200
    assert result["r"].body == b"slept"
    assert s.gateway.wait(10) == 0
    assert marker.read_text() == "shutdown"
    assert "stopping: SIGTERM" in s.gateway.log_text()
