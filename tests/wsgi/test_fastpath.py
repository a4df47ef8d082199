"""The sync worker's C fast path (gateway/wsgi/_fastpath.c) against the reference paths.

``whole_request`` must give exactly what the codec (FastCGIConnection with text params) and
``build_environ`` give for the same bytes — same request id, keep-conn flag, body, and the
environ's items in the same order — and answer None only for the cases its contract lists
(anything but one whole RESPONDER request, a repeated HTTP_ name, a limit exceeded). A
percent-encoded path is decoded as ``wsgi_path`` decodes it; other repeated names (nginx
configs that set SCRIPT_NAME again after ``include fastcgi_params``) and names the base has
are answered, the last value winning. ``header_block`` must give wsgi_header_block's block,
start_response's Content-Length and the status code, and None wherever the reference
raises. The module must be built where the tests run (setup-env installs the project,
which compiles it).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.protocol import FastCGIConnection
from gateway.protocol.records import encode_pairs
from gateway.response import InvalidResponse, wsgi_header_block
from gateway.wsgi import fastpath
from gateway.wsgi.environ import build_environ
from tests.capture import captured_requests
from tests.fastpath_frames import NOT_ONE_WHOLE_REQUEST, codec_whole, listening_sync_worker, request_bytes

C_SOURCE = Path(fastpath.__file__).with_name("_fastpath.c")
BASE = {"wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.run_once": False}
LIMITS = (256 * 1024, 1000)


def test_built():
    assert fastpath.whole_request is not None and fastpath.header_block is not None, (
        "gateway/wsgi/_fastpath.c is not built: run `pip install -e .` (or "
        "`python setup.py build_ext --inplace`) with a C compiler"
    )


def test_the_c_sources_do_no_io():
    """Only Python.h and the project's own headers, which include only Python.h."""
    includes = re.findall(r"#include\s*[<\"]([^>\"]+)", C_SOURCE.read_text())
    assert includes == [
        "../protocol/_pairs_items.h",
        "../protocol/_whole_request.h",
        "../protocol/_unquote.h",
        "_environ_fixups.h",
    ]
    for header in includes:
        text = (C_SOURCE.parent / header).read_text()
        assert re.findall(r"#include\s*[<\"]([^>\"]+)", text) == ["Python.h"], header


def reference(data: bytes, root_path: str = "", limits: tuple[int, int] = LIMITS):
    """What the ordinary path makes of ``data``: (rid, keep, environ items, body), or
    None when it is not exactly one whole request (or an error)."""
    codec = FastCGIConnection(max_params_bytes=limits[0], max_params_count=limits[1], text_params=True)
    got = codec_whole(codec, data)
    if got is None:
        return None
    req, body = got
    environ = build_environ(req.params, BASE, root_path=root_path)
    return req.request_id, req.keep_conn, list(environ.items()), body


def fast(data: bytes, root_path: str = "", limits: tuple[int, int] = LIMITS):
    got = fastpath.whole_request(data, BASE, root_path, *limits)
    if got is None:
        return None
    rid, keep, environ, body = got
    return rid, keep, list(environ.items()), body


def test_captured_nginx_requests():
    answered = 0
    for path, params in captured_requests().items():
        text = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in params]
        for keep in (False, True):
            data = request_bytes(params, b"a=1&b=2", rid=1, keep=keep)
            assert (fast(data) is not None) == expect_answer(text), path
            assert fast(data) in (None, reference(data)), path
            answered += fast(data) is not None
    assert answered >= 12


def test_bodies_in_several_records_and_padding():
    params = captured_requests()["/form"]
    data = request_bytes(params, b"x" * 70_000, params_cuts=(5, 100), body_cuts=(1, 65_000), padding=3)
    assert fast(data) is not None
    assert fast(data) == reference(data)
    assert fast(data)[3] == b"x" * 70_000


def test_params_set_again_after_the_stock_file_are_answered():
    """``include fastcgi_params; fastcgi_param SCRIPT_NAME ""; fastcgi_param PATH_INFO
    $fastcgi_script_name;`` repeats two names on every request: the last value wins, in the
    C path as in build_environ (taking the codec path instead cost a third of hello's req/s)."""
    params = captured_requests()["/keep/1"]
    assert b"SCRIPT_NAME" in dict(params)
    again = [*params, (b"SCRIPT_NAME", b""), (b"PATH_INFO", b"/keep/1"), (b"wsgi.run_once", b"x")]
    got = fast(request_bytes(again))
    assert got is not None
    assert got == reference(request_bytes(again))
    env = dict(got[2])
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["wsgi.run_once"]) == ("", "/keep/1", "x")
    cookies = [*params, (b"HTTP_COOKIE", b"a=1"), (b"HTTP_COOKIE", b"b=2")]
    assert fast(request_bytes(cookies)) is None  # joined with "; " by build_environ


@pytest.mark.parametrize(
    "uri",
    [b"/caf%C3%A9/%2541?x=%20", b"/caf\xc3\xa9%20x", b"/%zz%4", b"/%%41%", b"/a%2Fb%2f", b"/%",
     b"/x%4g%g4%FF%00", b"/app/%41pp?%41"],
)  # fmt: skip
@pytest.mark.parametrize("root", ["", "/app"])
def test_percent_encoded_paths_are_decoded_in_c(uri, root):
    params = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", uri), (b"SCRIPT_NAME", uri.partition(b"?")[0])]
    data = request_bytes(params)
    got = fast(data, root)
    assert got is not None
    assert got == reference(data, root)
    env = dict(got[2])
    decoded = unquote_to_bytes(uri.partition(b"?")[0]).decode("latin-1")
    assert decoded in (env["PATH_INFO"], env["SCRIPT_NAME"] + env["PATH_INFO"])


@pytest.mark.parametrize("mangle", NOT_ONE_WHOLE_REQUEST)
def test_not_one_whole_request(mangle):
    data = mangle(request_bytes(captured_requests()["/keep/1"]))
    assert fast(data) is None


def test_more_than_16_records_of_a_stream_are_left_to_the_codec():
    params = captured_requests()["/keep/1"]
    sixteen = request_bytes(params, b"y" * 160, body_cuts=tuple(range(10, 160, 10)))
    seventeen = request_bytes(params, b"y" * 170, body_cuts=tuple(range(10, 170, 10)))
    assert fast(sixteen) == reference(sixteen) and fast(sixteen) is not None
    assert fast(seventeen) is None and reference(seventeen) is not None


def test_every_truncation_is_left_to_the_codec():
    """A request cut anywhere (a partial read) is never taken: the codec waits for more."""
    data = request_bytes(captured_requests()["/form"], b"a=1&b=2", params_cuts=(50,), padding=2)
    assert fast(data) is not None
    for cut in range(len(data)):
        assert fast(data[:cut]) is None, cut


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data):
    got = fast(data)
    if got is not None:
        assert got == reference(data)


def test_limits_leave_it_to_the_codec():
    params = captured_requests()["/keep/1"]
    data = request_bytes(params)
    size = len(encode_pairs(params))
    assert fast(data, limits=(size, len(params))) is not None
    assert fast(data, limits=(size - 1, len(params))) is None
    assert fast(data, limits=(size, len(params) - 1)) is None


NAMES = [
    "CONTENT_TYPE",
    "HTTP_CONTENT_TYPE",
    "CONTENT_LENGTH",
    "HTTP_CONTENT_LENGTH",
    "PATH_INFO",
    "SCRIPT_NAME",
    "REQUEST_URI",
    "QUERY_STRING",
    "HTTPS",
    "REQUEST_SCHEME",
    "SERVER_NAME",
    "SERVER_PORT",
    "HTTP_HOST",
    "SERVER_ADDR",
    "REQUEST_METHOD",
    "SERVER_PROTOCOL",
    "HTTP_COOKIE",
    "HTTP_X",
    "wsgi.run_once",
]
VALUES = st.sampled_from(
    ["", "/", "/app", "/app/x", "/apple", "app", "/a?b=1", "/a%20b?c", "?", "x?y?z", "off", "OFF",
     "On", "https", "http", "12", "012", "1x", "\u00b2", "[::1]:8080", "[::1]", "h:80", ":80",
     "example.org", "caf\u00e9", "\u00ff%", "/caf%C3%a9?x=%41", "/%zz%4", "/%%41%", "/a%2Fb%"]
)  # fmt: skip
PARAMS = st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=12)


def expect_answer(params: list[tuple[str, str]]) -> bool:
    """Where the contract says the fast path must answer (not None)."""
    headers = [n for n, _ in params if n.startswith("HTTP_")]
    return len(set(headers)) == len(headers)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    params=PARAMS,
    body=st.binary(max_size=40),
    rid=st.integers(1, 65535),
    keep=st.booleans(),
    root=st.sampled_from(["", "/app", "/app/x"]),
    cuts=st.tuples(st.integers(0, 400), st.integers(0, 400)),
    padding=st.integers(0, 7),
)
def test_same_as_codec_and_build_environ(params, body, rid, keep, root, cuts, padding):
    raw = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in params]
    data = request_bytes(raw, body, rid, keep, params_cuts=cuts, body_cuts=cuts[::-1], padding=padding)
    got = fast(data, root)
    assert (got is not None) == expect_answer(params)
    if got is not None:
        assert got == reference(data, root)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mangled_bytes_never_differ(data):
    raw = request_bytes(captured_requests()["/keep/1"], b"body")
    pos = data.draw(st.integers(0, len(raw) - 1))
    byte = data.draw(st.integers(0, 255))
    mangled = raw[:pos] + bytes([byte]) + raw[pos + 1 :]
    got = fast(mangled)
    if got is not None:
        assert got == reference(mangled)


# -- header_block ---------------------------------------------------------------------


def header_reference(status, headers):
    try:
        block = wsgi_header_block(status, headers)
    except InvalidResponse:
        return None
    length = None
    for name, value in headers:
        if len(name) == 14 and name.lower() == "content-length" and value.isascii() and value.isdigit():
            length = int(value)
            break
    try:
        code = int(status[:3])
    except ValueError:  # "²²² X" passes isdigit(); start_response then raises
        return None
    return block, length, code


def test_header_block_ordinary():
    headers = [("Content-Type", "text/plain"), ("Content-Length", "13"), ("X-A", "caf\u00e9")]
    got = fastpath.header_block("200 OK", headers)
    assert got == header_reference("200 OK", headers)
    block = b"Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nX-A: caf\xe9\r\n\r\n"
    assert got == (block, 13, 200)
    assert fastpath.header_block("404", []) == (b"Status: 404\r\n\r\n", None, 404)


TEXT = st.sampled_from(
    ["", "OK", "200 OK", "200", "20", "2000", "200x", "\u00b2\u00b2\u00b2 X", "Content-Length",
     "content-LENGTH", "CONTENT-LENGTH ", "13", "013", "-1", "1 3", "a\r\nb", "a\nb", "a\0b",
     "\u20ac", "caf\u00e9", "X-Y"]
)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(TEXT, st.lists(st.tuples(TEXT, TEXT), max_size=5))
def test_header_block_same_as_reference(status, headers):
    got = fastpath.header_block(status, headers)
    want = header_reference(status, headers)
    if want is None:
        assert got is None
    else:
        assume(got is not None)  # (None is allowed: the reference then runs)
        assert got == want


def test_header_block_leaves_the_unusual_to_the_reference():
    assert fastpath.header_block(b"200 OK", []) is None
    assert fastpath.header_block("200 OK", (("A", "b"),)) is None  # a tuple, not a list
    assert fastpath.header_block("200 OK", [["A", "b"]]) is None
    assert fastpath.header_block("200 OK", [("A", "\u20ac")]) is None
    assert fastpath.header_block("200 OK", [("A", "b\r\nSet-Cookie: x")]) is None


# -- the worker: the same bytes out, fast path or not ----------------------------------


def hello_app(environ, start_response):
    body = repr(sorted((k, v) for k, v in environ.items() if type(v) is str)).encode()
    body += b"|" + environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def serve_once(tmp_path, data: bytes, use_fast: bool, keep_second: bytes = b"") -> tuple[bytes, bool]:
    """One connection through a real SyncWorker's accept path, and ``keep_second`` sent on
    it afterwards: (bytes back up to request 3's END_REQUEST, whether the fast path
    answered every request)."""
    import socket

    from gateway.config import Config

    path = str(tmp_path / f"w{int(use_fast)}.sock")
    worker, listener = listening_sync_worker(path, hello_app, Config(app="x:y"))
    calls = []
    if use_fast:
        real = worker._whole
        assert real is fastpath.whole_request

        def counting(*args):
            got = real(*args)
            calls.append(got is not None)
            return got

        worker._whole = counting
    else:
        worker._whole = None
    client = socket.socket(socket.AF_UNIX)
    try:
        client.connect(path)
        client.sendall(data)
        worker._accept(listener)
        if keep_second:  # the next request on the kept connection (worker._readable)
            conn = next(iter(worker._conns.values()))
            client.sendall(keep_second)
            worker._readable(conn)
        client.settimeout(5)
        out = b""
        while not out.endswith(b"\x01\x03\x00\x03\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"):
            chunk = client.recv(65536)
            if not chunk:
                break
            out += chunk
        return out, calls == [True] * (2 if keep_second else 1)
    finally:
        client.close()
        for conn in list(worker._conns.values()):
            worker._close(conn)
        worker._ep.close()
        listener.close()


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("path", ["/keep/1", "/form"])
def test_worker_answers_the_same_with_the_fast_path(tmp_path, path, keep):
    data = request_bytes(captured_requests()[path], b"a=1&b=2", rid=3, keep=keep)
    fast_out, took_fast = serve_once(tmp_path, data, True)
    slow_out, _ = serve_once(tmp_path, data, False)
    assert took_fast
    assert fast_out == slow_out
    assert b"Status: 200 OK" in fast_out and b"|a=1&b=2" in fast_out


def test_worker_fast_path_on_a_kept_connection(tmp_path):
    first = request_bytes(captured_requests()["/keep/1"], rid=1, keep=True)
    second = request_bytes(captured_requests()["/keep/2"], b"second", rid=3, keep=True)
    fast_out, took_fast = serve_once(tmp_path, first, True, second)
    slow_out, _ = serve_once(tmp_path, first, False, second)
    assert took_fast
    assert fast_out == slow_out
    assert fast_out.count(b"Status: 200 OK") == 2 and b"|second" in fast_out


def test_adopt_needs_an_idle_codec():
    from gateway.protocol import LocalProtocolError

    codec = FastCGIConnection(max_requests=1)
    assert codec.idle
    codec.adopt(1, True)
    assert not codec.idle
    with pytest.raises(LocalProtocolError):
        codec.adopt(2, True)
    codec.send_response(1, b"Status: 200 OK\r\n\r\n")
    assert not codec.idle and codec.should_close  # max_requests=1 reached
    fresh = FastCGIConnection()
    fresh.receive_data(b"\x01")  # a partial header pending
    assert not fresh.idle
