"""PEP 3333 conformance of the sync worker, without nginx.

One gateway serves ``wsgi_app:validated`` (the test app inside ``wsgiref.validate``, which
raises AssertionError or warns WSGIWarning on any violation by the server or the app) and
``gateway.client.FastCGIClient`` sends it requests the way nginx would, covering every
environ key PEP 3333 names plus the ``write()``, ``exc_info`` and ``close()`` paths. A
violation shows as a 500 and in the log, which must mention neither AssertionError nor
WSGIWarning at the end.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from gateway.client import FastCGIClient, Response

APP = "wsgi_app:validated"


@pytest.fixture
def gw(gateway_factory):
    gw = gateway_factory(APP, "--worker", "sync", "--interface", "wsgi")
    yield gw
    log = gw.log_text()
    assert "AssertionError" not in log and "WSGIWarning" not in log, log[-4000:]


def call(gw, method: str = "GET", path: str = "/environ", **kwargs) -> Response:
    with FastCGIClient(gw.address, timeout=10) as client:
        return client.request(method, path, **kwargs)


def environ(gw, method: str = "GET", path: str = "/environ", **kwargs) -> dict:
    r = call(gw, method, path, **kwargs)
    assert r.status == 200, r.body
    return json.loads(r.body)


def test_required_keys_of_a_plain_get(gw):
    env = environ(gw)
    assert env["REQUEST_METHOD"] == "GET"
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("", "/environ", "")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("localhost", "80")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_HOST"] == "localhost"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.url_scheme"] == "http"
    assert (env["wsgi.multithread"], env["wsgi.multiprocess"], env["wsgi.run_once"]) == (False, False, False)
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
        assert key not in env  # nginx sends the first two empty on a GET


def test_request_method(gw):
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        r = call(gw, method, "/environ")
        assert r.status == 200
        if r.body:  # HEAD: the web server drops the body anyway
            assert json.loads(r.body)["REQUEST_METHOD"] == method


def test_path_and_query_in_the_wsgi_form(gw):
    env = environ(gw, path="/environ/caf%C3%A9%20x%2Fy?q=%C3%A9&r=1+2&empty=")
    # percent-decoded bytes as latin-1 (%2F decoded too: PATH_INFO is decoded in CGI)
    assert env["PATH_INFO"] == "/environ/caf\xc3\xa9 x/y"
    assert env["QUERY_STRING"] == "q=%C3%A9&r=1+2&empty="  # raw
    assert env["SCRIPT_NAME"] == ""


def test_script_name_and_path_info_sent_by_the_web_server(gw):
    # A server's own split (fastcgi_split_path_info, lighttpd, Apache SetHandler) is not a
    # mount point: the path comes from REQUEST_URI, the mount point from --root-path only.
    env = environ(gw, path="/environ?x=1", params={"SCRIPT_NAME": "/index.py", "PATH_INFO": "/environ"})
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("", "/environ", "x=1")
    env = environ(gw, params={"SCRIPT_NAME": "/", "PATH_INFO": "/environ"})
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/environ")  # never SCRIPT_NAME="/"


def test_root_path(gateway_factory):
    gw = gateway_factory(APP, "--worker", "sync", "--interface", "wsgi", "--root-path", "/mnt/")
    env = environ(gw, path="/mnt/environ")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/mnt", "/environ")
    env = environ(gw, path="/mnt?dump-environ=1")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/mnt", "")  # never SCRIPT_NAME="/"
    assert "AssertionError" not in gw.log_text()


def test_content_type_and_length(gw):
    body = b"a=1&b=%C3%A9"
    env = environ(gw, "POST", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert env["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert env["CONTENT_LENGTH"] == str(len(body))
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_content_length_that_is_not_a_number_is_dropped(gateway_factory):
    # Only a non-nginx client can send one; with --max-body-size it used to kill the worker.
    gw = gateway_factory(APP, "--worker", "sync", "--interface", "wsgi", "--max-body-size", "1M")
    for bad in ("abc", "-5", " 7", "\u0663"):
        r = call(gw, "POST", "/echo-chunks", body=b"12345", params={"CONTENT_LENGTH": bad.encode()})
        assert r.body.decode() == f"5 {hashlib.sha256(b'12345').hexdigest()}", bad
    env = environ(gw, "POST", body=b"", params={"CONTENT_LENGTH": "x"})
    assert "CONTENT_LENGTH" not in env
    assert "AssertionError" not in gw.log_text() and "[ERROR]" not in gw.log_text()


def test_server_name_port_and_protocol(gw):
    env = environ(gw, params={"SERVER_NAME": "", "SERVER_PORT": ""}, headers={"Host": "example.com:8080"})
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "80")
    env = environ(gw, params={"SERVER_NAME": "", "SERVER_PORT": "", "HTTPS": "on"}, headers={"Host": "[::1]"})
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("[::1]", "443")
    env = environ(gw, params={"SERVER_NAME": "app.example", "SERVER_PORT": "8443"})
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("app.example", "8443")
    assert environ(gw, params={"SERVER_PROTOCOL": "HTTP/1.0"})["SERVER_PROTOCOL"] == "HTTP/1.0"


def test_http_headers(gw):
    headers = [
        ("X-Custom-Header", "v"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
        ("Accept", "a"),
        ("Accept", "b"),
    ]
    env = environ(gw, headers=headers)
    assert env["HTTP_X_CUSTOM_HEADER"] == "v"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_ACCEPT"] == "a, b"


def test_url_scheme(gw):
    cases = [({"HTTPS": "on"}, "https"), ({"HTTPS": "1"}, "https"), ({"HTTPS": "off"}, "http")]
    cases += [({"REQUEST_SCHEME": "https"}, "https"), ({}, "http")]
    for params, scheme in cases:
        assert environ(gw, params=params)["wsgi.url_scheme"] == scheme, params


def test_input_read_readline_and_iteration(gw):
    body = b"".join(b"line %d\n" % i for i in range(5000)) + b"tail"
    r = call(gw, "POST", "/echo-chunks?n=4093", body=body)
    assert r.body.decode() == f"{len(body)} {hashlib.sha256(body).hexdigest()}"
    lines = json.loads(call(gw, "POST", "/echo-lines", body=body).body)
    assert lines == [len(x) for x in body.splitlines(keepends=True)]
    lines = json.loads(call(gw, "POST", "/echo-lines?size=4", body=b"abcdefghij\nk").body)
    assert lines == [4, 4, 3, 1]
    assert json.loads(call(gw, "POST", "/echo-lines?readlines=1", body=b"").body) == []


def test_input_ends_at_the_empty_stdin_record(gw):
    # chunked (no CONTENT_LENGTH) and a CONTENT_LENGTH smaller than the STDIN stream
    chunks = [b"x" * 70_000, b"y" * 10, b"z" * 200_000]
    whole = b"".join(chunks)
    r = call(gw, "POST", "/echo-chunks", body=iter(chunks))
    assert r.body.decode() == f"{len(whole)} {hashlib.sha256(whole).hexdigest()}"
    r = call(gw, "POST", "/echo-chunks", body=whole, params={"CONTENT_LENGTH": "5"})
    assert r.body.decode() == f"{len(whole)} {hashlib.sha256(whole).hexdigest()}"


def test_errors_stream(gw):
    assert call(gw, path="/errors").status == 200
    gw.wait_for_log(r"\[ERROR\] app wrote to wsgi\.errors")


def test_write_callable(gw):
    r = call(gw, path="/write")
    assert (r.status, r.body) == (200, b"written-returned")


def test_start_response_with_exc_info(gw):
    r = call(gw, path="/exc-info")
    assert (r.status, r.body) == (500, b"replaced by the error response")


def test_close_is_called(gw, tmp_path: Path):
    marker = tmp_path / "closed"
    r = call(gw, path=f"/close?marker={marker}")
    assert (r.status, r.body) == (200, b"ab")
    deadline = time.monotonic() + 5  # close() runs after the response went out
    while (marker.read_text() if marker.exists() else "") != "closed":
        assert time.monotonic() < deadline, "close() was not called"
        time.sleep(0.01)


def test_errors_in_the_app_still_close_the_response(gw):
    r = call(gw, path="/raise-before")
    assert r.status == 500 and b"Traceback" not in r.body
    r = call(gw, path="/raise-after")
    assert (r.status, r.body, r.app_status) == (200, b"partial", 1)
    gw.wait_for_log(r"exception in WSGI application for GET /raise-after")
    # the validator asserts in __del__ when an iterable is never closed
    time.sleep(0.2)
    assert call(gw, path="/pid").status == 200


def test_streamed_and_file_wrapper_bodies(gw):
    r = call(gw, path="/stream?size=300000&chunk=70000")
    assert (r.status, r.body) == (200, b"x" * 300000)
    r = call(gw, path="/file?n=20000")
    assert (r.status, r.body) == (200, b"0123456789" * 20000)


def test_keep_conn_requests_on_one_connection(gw):
    with FastCGIClient(gw.address, timeout=10, keep_conn=True) as client:
        for i in range(50):
            r = client.request("GET", f"/environ?i={i}")
            assert json.loads(r.body)["QUERY_STRING"] == f"i={i}"
        assert client.connects == 1
