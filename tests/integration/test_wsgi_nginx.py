"""The WSGI test app behind a real nginx, on both workers: ``--worker sync`` (the native
sync worker) and ``--worker async`` (the a2wsgi bridge).

``wsgi_app:validated`` (wsgiref.validate: a PEP 3333 violation raises, so it shows as a
500) serves the conformance paths; ``wsgi_app:app`` the ones the validator gets in the way
of (``read()`` without a size, file_wrapper, deliberate header injection).
"""

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

APP = "wsgi_app:app"
VALIDATED = "wsgi_app:validated"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def wait_for_text(path: Path, prefix: str, timeout: float = 10.0) -> str:
    """The content of ``path`` once it starts with ``prefix`` (AssertionError after timeout)."""
    deadline = time.monotonic() + timeout
    while not (text := path.read_text() if path.exists() else "").startswith(prefix):
        assert time.monotonic() < deadline, f"{path} holds {text!r}, not {prefix!r}..., after {timeout}s"
        time.sleep(0.02)
    return text


@pytest.fixture(params=["sync", "async"])
def worker(request) -> str:
    return request.param


@pytest.fixture
def serve(served, worker):
    """``serve(app=VALIDATED, *gateway_args, **nginx_kwargs)`` on the parametrized worker
    (``--interface wsgi``: the validator's ``lint_app(*args)`` defeats auto-detection)."""

    def make(app: str = VALIDATED, *args: str, **kwargs):
        return served(app, "--worker", worker, "--interface", "wsgi", *args, **kwargs)

    return make


# -- the environ -----------------------------------------------------------------------


def test_get_with_query_and_unicode_path(serve, worker):
    s = serve()
    r = s.get("/environ/caf%C3%A9%20x?q=1&r=%C3%A9", headers={"X-Foo-Bar": "d"})
    assert r.status == 200
    env = r.json()
    assert env["PATH_INFO"] == "/environ/café x".encode().decode("latin-1")  # WSGI bytes-as-str
    assert env["SCRIPT_NAME"] == ""
    assert env["QUERY_STRING"] == "q=1&r=%C3%A9"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_X_FOO_BAR"] == "d"
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True  # reading to EOF is safe (PEP 3333 extension)
    # nginx sends them empty on a GET: absent from the environ, never the HTTP_ forms
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
        assert key not in env
    # truthful: the sync worker calls the app on one thread of one process
    assert env["wsgi.multithread"] is (worker == "async")
    if worker == "sync":
        assert env["wsgi.multiprocess"] is False


def test_multiprocess_with_two_workers(serve):
    env = serve(VALIDATED, "--workers", "2").get("/environ").json()
    assert env["wsgi.multiprocess"] is True


def test_root_path_splits_script_name_and_path_info(serve):
    s = serve(VALIDATED, "--root-path", "/app")
    env = s.get("/app/environ/caf%C3%A9").json()
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/environ/caf\xc3\xa9")
    env = s.get("/app?dump-environ=1").json()
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "")
    # Outside the mount point (not at a segment boundary): the full path, never "lication"
    env = s.get("/application/environ?dump-environ=1").json()
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/application/environ")


def test_raw_non_ascii_bytes_in_path_and_query(serve):
    s = serve()
    with socket.create_connection(("127.0.0.1", s.nginx.port), timeout=10) as sock:
        sock.sendall(
            b"GET /environ/caf\xc3\xa9%20x?q=\xc3\xa9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        status, env = resp.status, json.loads(resp.read())
    assert status == 200
    assert env["PATH_INFO"] == "/environ/caf\xc3\xa9 x"
    assert env["QUERY_STRING"] == "q=\xc3\xa9"


def test_both_workers_build_the_same_environ(served):
    envs = []
    for worker in ("sync", "async"):
        s = served(VALIDATED, "--worker", worker, "--interface", "wsgi", "--root-path", "/app")
        r = s.get("/app/environ/caf%C3%A9?x=%20&y", headers=[("Cookie", "a=1"), ("Cookie", "b=2")])
        env = r.json()
        assert env.pop("DOCUMENT_ROOT") == f"{s.nginx.dir}/html"
        for key in ("REMOTE_PORT", "SERVER_PORT", "HTTP_HOST", "pid"):
            del env[key]  # per connection / per nginx
        envs.append(env)
    sync, bridge = envs
    assert (sync.pop("wsgi.multithread"), bridge.pop("wsgi.multithread")) == (False, True)
    assert (sync.pop("wsgi.multiprocess"), bridge.pop("wsgi.multiprocess")) == (False, False)  # one worker
    assert sync == bridge


def test_duplicate_cookies_are_joined(serve):
    s = serve()
    env = s.get("/environ", headers=[("Cookie", "a=1"), ("Cookie", "b=2")]).json()
    assert env["HTTP_COOKIE"] == "a=1; b=2"


def test_fastcgi_params_reach_the_environ(serve):
    # Custom params and SCRIPT_FILENAME / DOCUMENT_ROOT / HTTPS: the bridge re-injects them.
    s = serve(
        extra_location=(
            "fastcgi_param APP_ENV staging;\n"
            "fastcgi_param SCRIPT_FILENAME /srv/app$fastcgi_script_name;\n"
            "fastcgi_param HTTPS on;"
        )
    )
    env = s.get("/environ").json()
    assert env["APP_ENV"] == "staging"
    assert env["SCRIPT_FILENAME"] == "/srv/app/environ"
    assert env["DOCUMENT_ROOT"]  # $document_root from the stock fastcgi_params
    assert env["HTTPS"] == "on"
    assert env["wsgi.url_scheme"] == "https"


# -- request bodies --------------------------------------------------------------------


def test_10mb_post_echoed_intact(serve):
    s = serve(APP)  # /echo calls read() without a size, which wsgiref.validate forbids
    body = os.urandom(10 * 1024 * 1024)
    r = s.request("POST", "/echo", body=body, headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200
    assert r.header("X-Sha256") == hashlib.sha256(body).hexdigest()
    assert r.body == body


def test_chunked_upload_without_request_buffering_is_read_to_the_end(serve):
    s = serve(fastcgi_request_buffering=False)
    chunks = [os.urandom(100_000) for _ in range(20)]
    whole = b"".join(chunks)

    def slowly(parts):
        yield parts[0]
        time.sleep(0.2)  # nginx starts the request before it knows the body's length
        yield from parts[1:]

    # No CONTENT_LENGTH at all: the app's read(n) loop runs until the empty STDIN.
    r = s.request("POST", "/environ", body=slowly([b"abc", b"def"]))
    assert "CONTENT_LENGTH" not in r.json()
    assert r.json()["HTTP_TRANSFER_ENCODING"] == "chunked"
    r = s.request("POST", "/echo-chunks?n=65536", body=slowly(chunks))
    assert r.status == 200
    assert r.text == f"{len(whole)} {hashlib.sha256(whole).hexdigest()}"


def test_body_over_max_body_size_is_a_413_and_the_connection_serves_on(serve):
    s = serve(APP, "--max-body-size", "1M", keep_conn=True)
    conn = http.client.HTTPConnection("127.0.0.1", s.nginx.port, timeout=10)
    for body, status, answer in [
        (b"z" * 2_000_000, 413, b"Request Entity Too Large\n"),
        (b"ok", 200, b"ok"),
    ] * 2:
        conn.request("POST", "/echo", body=body)
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (status, answer)
    conn.close()
    s.gateway.wait_for_log(r"over --max-body-size")
    assert "[ERROR]" not in s.gateway.log_text()  # a client gone while reading is not an app error


def test_input_readline_iteration_and_read_loops(serve):
    s = serve()
    lines = [b"first\n", b"\n", b"x" * 100_000 + b"\n", b"last without newline"]
    body = b"".join(lines)
    expected = [len(x) for x in lines]
    for query in ("", "?readlines=1"):
        r = s.request("POST", "/echo-lines" + query, body=body, headers={"Content-Type": "text/plain"})
        assert (r.status, r.json()) == (200, expected)
    r = s.request("POST", "/echo-lines?size=40000", body=body)  # readline(size)
    assert r.json() == [6, 1, 40000, 40000, 20001, 20]
    r = s.request("POST", "/echo-chunks?n=7", body=body)
    assert r.text == f"{len(body)} {hashlib.sha256(body).hexdigest()}"
    assert s.request("POST", "/echo-lines?readlines=1", body=b"").json() == []


def test_input_lines_when_the_body_end_arrives_alone(serve):
    s = serve(fastcgi_request_buffering=False)

    def body():
        yield b"a\n"
        yield b"bb\n"
        time.sleep(0.3)  # the terminating chunk, hence the empty STDIN, comes on its own

    for query in ("", "?size=10"):
        r = s.request("POST", "/echo-lines" + query, body=body())
        assert (r.status, r.json()) == (200, [2, 3])


# -- responses -------------------------------------------------------------------------


def test_50mb_streaming_response_with_flat_memory(serve):
    s = serve()
    pid = int(s.get("/pid").text)  # the worker process (the gateway's pid may be a master)
    s.get("/stream?size=1048576")  # warm up
    before = rss_kb(pid)
    size = 50 * 1024 * 1024
    conn = http.client.HTTPConnection("127.0.0.1", s.nginx.port, timeout=60)
    conn.request("GET", f"/stream?size={size}")
    resp = conn.getresponse()
    assert resp.status == 200
    received, peak = 0, before
    while data := resp.read(1024 * 1024):
        received += len(data)
        peak = max(peak, rss_kb(pid))
    conn.close()
    assert received == size
    assert peak - before < 16 * 1024, f"RSS grew {peak - before} kB while streaming"


def test_write_callable(serve):
    r = serve().get("/write")
    assert (r.status, r.body) == (200, b"written-returned")


def test_start_response_with_exc_info_replaces_the_status(serve):
    s = serve()
    r = s.get("/exc-info")
    assert r.status == 500
    assert r.body == b"replaced by the error response"


def test_close_is_called(serve, tmp_path):
    marker = tmp_path / "closed"
    r = serve().get(f"/close?marker={marker}")
    assert (r.status, r.body) == (200, b"ab")
    assert wait_for_text(marker, "closed", 5) == "closed"


def test_close_is_called_when_the_client_aborts_mid_stream(serve, tmp_path):
    marker = tmp_path / "closed"
    # Unbuffered, nginx writes each chunk to the client at once, so it sees the abort on
    # the next write and closes the FastCGI connection (buffered, it keeps reading).
    s = serve(extra_location="fastcgi_buffering off;")
    sock = socket.create_connection(("127.0.0.1", s.nginx.port), timeout=10)
    sock.sendall(f"GET /slow-stream?n=200&s=0.05&marker={marker} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert b"000000" in sock.recv(65536)  # the response is under way
    sock.close()  # the client gives up mid-stream; nginx closes the FastCGI connection
    done, total = map(int, wait_for_text(marker, "closed after ", 15).split()[2::2])
    assert (done < 100, total) == (True, 200), "the app kept iterating after the client left"
    assert s.get("/pid").status == 200


def test_file_wrapper_body_intact(serve):
    r = serve(APP).get("/file?n=100000")
    assert r.status == 200
    assert r.body == b"0123456789" * 100000


def test_wsgi_errors_reach_the_gateway_log(serve):
    s = serve()
    assert s.get("/errors").status == 200
    s.gateway.wait_for_log(r"\[ERROR\] app wrote to wsgi\.errors")


def test_set_cookie_headers_are_not_joined(serve):
    r = serve().get("/cookies")
    assert r.status == 200
    assert r.header_list("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]


# -- errors ----------------------------------------------------------------------------


def test_exception_before_start_gives_500_and_worker_keeps_serving(serve):
    s = serve()
    pid = s.get("/pid").text
    r = s.get("/raise-before")
    assert r.status == 500
    assert b"boom" not in r.body and b"Traceback" not in r.body
    s.gateway.wait_for_log(r"exception in (WSGI|ASGI) application for GET /raise-before")
    assert "RuntimeError: boom before start" in s.gateway.log_text()
    r = s.get("/pid")
    assert (r.status, r.text) == (200, pid)


def test_exception_after_start_ends_the_response_and_is_logged(serve):
    s = serve()
    start = time.monotonic()
    r = s.get("/raise-after")
    assert time.monotonic() - start < 5  # ended, not left to fastcgi_read_timeout
    assert (r.status, r.body) == (200, b"partial")
    s.gateway.wait_for_log(r"exception in (WSGI|ASGI) application for GET /raise-after")
    assert "RuntimeError: boom after start" in s.gateway.log_text()
    assert s.get("/pid").status == 200


@pytest.mark.parametrize("path", ["/bad-header", "/bad-header-stream?n=50"])
def test_header_injection_refused_with_500(serve, path):
    s = serve(APP)  # wsgiref.validate would refuse the header itself
    r = s.get(path)
    assert r.status == 500
    assert r.header("X-Evil") is None and r.header("Set-Cookie") is None
    s.gateway.wait_for_log(r"header injection refused")
    assert s.get("/pid").status == 200


# -- connections, concurrency, lifecycle -----------------------------------------------


def test_keep_conn_500_sequential_requests_on_one_connection(serve):
    s = serve(keep_conn=True)
    conn = http.client.HTTPConnection("127.0.0.1", s.nginx.port, timeout=10)
    for i in range(500):
        conn.request("GET", f"/environ?i={i}")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200
        assert json.loads(body)["QUERY_STRING"] == f"i={i}"
    conn.close()


def test_concurrent_clients(serve):
    s = serve()
    results: list[int] = []

    def client():
        for _ in range(20):
            results.append(s.get("/sleep?s=0.005").status)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 160


def test_each_request_gets_a_fresh_context(serve):
    s = serve()
    assert s.get("/contextvar?v=first").text == "unset"
    assert s.get("/contextvar?v=second").text == "unset"


def test_sigterm_finishes_the_in_flight_request(serve, tmp_path):
    s = serve()
    marker = tmp_path / "started"
    result = {}

    def slow():
        result["r"] = http_request("GET", s.url + f"/sleep?s=1.5&marker={marker}")

    t = threading.Thread(target=slow)
    t.start()
    wait_for_text(marker, "started")
    s.gateway.send_signal(15)
    t.join(10)
    assert (result["r"].status, result["r"].body) == (200, b"slept")
    assert s.gateway.wait(10) == 0
    assert "stopping: SIGTERM" in s.gateway.log_text()
