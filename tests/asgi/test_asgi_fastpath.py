"""The async worker's C fast path (gateway/asgi/_fastpath.c) against the reference paths.

``whole_request`` must give exactly what the codec (FastCGIConnection, bytes params) gives
for the same bytes — request id, keep-conn flag, the params list, the body — and None for
anything but one whole RESPONDER request or a limit exceeded. ``fast_scope`` must give
exactly ``build_scope``'s scope (same items, same order; a percent-encoded path unquoted as
``decode_path`` does), and None only for the cases its contract lists (no REQUEST_URI, a
port that is not plain digits).
``fast_header_block`` must give ``response.header_block``'s block, and None wherever that
raises. A real AsyncWorker on a unix socket answers byte for byte the same with and without it.
The module must be built where the tests run (setup-env installs the project).
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.asgi import fastpath
from gateway.asgi.scope import ASGI_VERSION, build_scope, decode_path
from gateway.config import Config
from gateway.protocol import FastCGIConnection
from gateway.response import STATUS_LINES, InvalidResponse, header_block
from gateway.workers import async_worker
from tests.capture import captured_requests
from tests.fastpath_frames import NOT_ONE_WHOLE_REQUEST, codec_whole, request_bytes

C_SOURCE = Path(fastpath.__file__).with_name("_fastpath.c")
LIMITS = (256 * 1024, 1000)


def test_built():
    assert fastpath.whole_request is not None and fastpath.fast_scope is not None, (
        "gateway/asgi/_fastpath.c is not built: run `pip install -e .` (or "
        "`python setup.py build_ext --inplace`) with a C compiler"
    )


def test_the_c_source_does_no_io():
    includes = re.findall(r"#include\s*[<\"]([^>\"]+)", C_SOURCE.read_text())
    assert includes == [
        "../protocol/_pairs_items.h",
        "../protocol/_whole_request.h",
        "../protocol/_unquote.h",
    ]


def reference(data: bytes, limits: tuple[int, int] = LIMITS):
    """What the codec makes of ``data``: (rid, keep, params, body), or None."""
    codec = FastCGIConnection(multiplex=True, max_params_bytes=limits[0], max_params_count=limits[1])
    got = codec_whole(codec, data)
    if got is None:
        return None
    req, body = got
    return req.request_id, req.keep_conn, req.params, body


def fast(data: bytes, limits: tuple[int, int] = LIMITS):
    return fastpath.whole_request(data, *limits)


def scopes(params, root_path: str = "", state: dict[str, Any] | None = None, rid: int = 1):
    """(the C scope, build_scope's), for the same arguments."""
    got = fastpath.fast_scope(params, root_path, state, 1, rid, 9, ASGI_VERSION)
    want = build_scope(params, root_path=root_path, state=state, role=1, request_id=rid, connection=9)
    return got, want


def test_captured_nginx_requests():
    answered = 0
    for path, params in captured_requests().items():
        for keep in (False, True):
            data = request_bytes(params, b"a=1&b=2", rid=7, keep=keep, params_cuts=(40,))
            assert fast(data) == reference(data) == (7, keep, params, b"a=1&b=2"), path
        got, want = scopes(params, state={"db": "x"})
        assert (got is not None) == expect_answer(params), path
        answered += got is not None
        if got is not None:
            assert list(got.items()) == list(want.items()), path
            assert got["state"] == {"db": "x"} and got["state"] is not want["state"]
    assert answered >= 6


@pytest.mark.parametrize("mangle", NOT_ONE_WHOLE_REQUEST)
def test_not_one_whole_request(mangle):
    data = mangle(request_bytes(captured_requests()["/keep/1"]))
    assert fast(data) is None


def test_every_truncation_is_left_to_the_codec():
    data = request_bytes(captured_requests()["/form"], b"a=1&b=2", params_cuts=(50,), padding=2)
    assert fast(data) == reference(data) is not None
    for cut in range(len(data)):
        assert fast(data[:cut]) is None, cut


def test_limits_leave_it_to_the_codec():
    params = captured_requests()["/keep/1"]
    data = request_bytes(params)
    size = sum(len(n) + len(v) + 2 for n, v in params)
    assert fast(data, (size, len(params))) is not None
    assert fast(data, (size - 1, len(params))) is None
    assert fast(data, (size, len(params) - 1)) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data):
    got = fast(data)
    if got is not None:
        assert got == reference(data)


NAMES = [
    "REQUEST_METHOD",
    "REQUEST_URI",
    "QUERY_STRING",
    "SCRIPT_NAME",
    "PATH_INFO",
    "SERVER_PROTOCOL",
    "REQUEST_SCHEME",
    "HTTPS",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "SERVER_ADDR",
    "SERVER_NAME",
    "SERVER_PORT",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "HTTP_CONTENT_TYPE",
    "HTTP_CONTENT_LENGTH",
    "HTTP_COOKIE",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_",
    "HTTP_Host",
    "DOCUMENT_ROOT",
    "http_lower",
]
VALUES = st.sampled_from(
    ["", "/", "/app", "/app/x", "/a?b=1", "/a%20b?c", "?", "x?y?z", "off", "OFF", "On", "https",
     "http", "ftp", "GET", "POST", "get", "BREW", "HTTP/1.0", "HTTP/2", "HTTP/3", "HTTP/9",
     "12", "012", "1x", " 80", "+80", "1_000", "1234567890", "\u00b2", "127.0.0.1", "::1",
     "a=1", "caf\u00e9", "\u00ff%", "/caf%C3%a9?x=%41", "/%zz%4", "/%%41%", "/%ff%fe\u00e9%41",
     "/\u00e9%C3\u00a9%", "/a%2Fb"]
)  # fmt: skip
PARAMS = st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=14)


def expect_answer(params: list[tuple[bytes, bytes]]) -> bool:
    """Where the contract says the C scope must answer (not None)."""
    env = dict(params)
    if b"REQUEST_URI" not in env:
        return False

    def plain(port: bytes | None) -> bool:
        return not port or (port.isdigit() and len(port) <= 9)

    server = env.get(b"SERVER_ADDR") or env.get(b"SERVER_NAME")
    return (not env.get(b"REMOTE_ADDR") or plain(env.get(b"REMOTE_PORT"))) and (
        not server or plain(env.get(b"SERVER_PORT"))
    )


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    params=PARAMS,
    root=st.sampled_from(["", "/app", "/app/x"]),
    state=st.sampled_from([None, {}, {"k": 1}]),
    rid=st.integers(1, 65535),
)
def test_scope_same_as_build_scope(params, root, state, rid):
    raw = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in params]
    got, want = scopes(raw, root, state, rid)
    assert (got is not None) == expect_answer(raw)
    if got is not None:
        assert list(got.items()) == list(want.items())
        assert [type(v) for v in got.values()] == [type(v) for v in want.values()]


@pytest.mark.parametrize(
    "uri",
    [b"/caf%C3%A9/%2541?x=%20", b"/caf\xc3\xa9%20x", b"/%zz%4", b"/%%41%", b"/a%2Fb%2f", b"/%",
     b"/%ff%FE/x", b"/\xe9%C3\xa9%41\xff", b"/%e2%82%ac%e2%82"],
)  # fmt: skip
def test_percent_encoded_paths_are_unquoted_in_c(uri):
    got, want = scopes([(b"REQUEST_URI", uri), (b"REQUEST_METHOD", b"GET")], "", None, 1)
    assert got is not None and list(got.items()) == list(want.items())
    assert got["path"] == decode_path(uri.partition(b"?")[0])


def test_scope_leaves_odd_params_to_build_scope():
    assert fastpath.fast_scope([(b"REQUEST_URI", "/")], "", None, 1, 1, 1, ASGI_VERSION) is None
    assert fastpath.fast_scope([(b"REQUEST_URI", b"/", b"x")], "", None, 1, 1, 1, ASGI_VERSION) is None


# -- header_block -----------------------------------------------------------------------


def header_reference(status, headers):
    try:
        return header_block(status, headers)
    except InvalidResponse:
        return None


def fast_block(status, headers):
    return fastpath.fast_header_block(status, headers, STATUS_LINES)


def test_header_block_ordinary():
    headers = [(b"content-type", b"text/plain"), [b"set-cookie", b"a=1"], (b"set-cookie", b"b=2")]
    for status in (200, 204, 404, 500):
        assert fast_block(status, headers) == header_reference(status, headers) is not None
        assert fast_block(status, tuple(headers)) == header_reference(status, headers)
    assert fast_block(200, ()) == b"Status: 200 OK\r\n\r\n"


def test_header_block_leaves_the_unusual_to_the_reference():
    for status, headers in [
        (299, []),  # a code without a phrase: "Unknown"
        (HTTPStatus.OK, []),  # an IntEnum
        (True, []),
        ("200", []),
        (200, iter([])),
        (200, [(b"a", b"b", b"c")]),
        (200, [(b"a", "text")]),
        (200, [(bytearray(b"a"), b"b")]),
        (200, [(b"x-a", b"1\r\nx-b: 2")]),
        (200, [(b"x\0", b"1")]),
    ]:
        assert fast_block(status, headers) is None, (status, headers)


BYTES = st.sampled_from([b"", b"a", b"content-type", b"text/html", b"\r", b"\n", b"\0", b"caf\xe9"])


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from([200, 204, 302, 404, 500, 299, 99, 1000, -1]),
    st.lists(st.tuples(BYTES, BYTES) | st.lists(BYTES, min_size=1, max_size=3), max_size=4),
    st.booleans(),
)
def test_header_block_same_as_reference(status, headers, as_tuple):
    headers = tuple(headers) if as_tuple else headers
    got = fast_block(status, headers)
    if got is not None:
        assert got == header_reference(status, headers)
    elif status in STATUS_LINES and all(len(h) == 2 and b"\r" not in b"".join(h) for h in headers):
        assert any(b"\n" in b"".join(h) or b"\0" in b"".join(h) for h in headers)  # must refuse


# -- a real AsyncWorker on a unix socket: the same bytes out, fast path or not ----------


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    shown = {k: v for k, v in scope.items() if k != "extensions"}
    shown["fastcgi"] = {k: v for k, v in scope["extensions"]["fastcgi"].items() if k != "connection"}
    out = repr(shown).encode() + b"|" + body
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(out)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": out})


END_REQUEST_3 = b"\x01\x03\x00\x03\x00\x08\x00\x00"  # its header: any status


async def exchange(
    path: str, requests: list[bytes], use_fast: bool, config: Config | None = None
) -> tuple[bytes, list[bool]]:
    """Each of ``requests`` on one connection, the next once the previous one is answered:
    (the bytes back, whether the fast path took each)."""
    worker = async_worker.AsyncWorker(config or Config(app="x:y"), echo_app, [])
    worker.loop = asyncio.get_running_loop()
    worker._baseline = contextvars.copy_context()
    taken: list[bool] = []
    real = worker.whole
    assert real is fastpath.whole_request

    def counting(*args: Any) -> Any:
        got = real(*args)
        taken.append(got is not None)
        return got

    worker.whole = counting if use_fast else None
    server = await worker.loop.create_unix_server(worker._protocol_factory, path)
    reader, writer = await asyncio.open_unix_connection(path)
    out = b""
    try:
        for i, data in enumerate(requests, 1):
            writer.write(data)
            while out.count(END_REQUEST_3) < i:
                chunk = await asyncio.wait_for(reader.read(65536), 5)
                assert chunk, out
                out += chunk
    finally:
        writer.close()
        server.close()
    return out, taken


def serve_both(tmp_path: Path, requests: list[bytes], monkeypatch: pytest.MonkeyPatch) -> bytes:
    fast_out, taken = asyncio.run(exchange(str(tmp_path / "f.sock"), requests, True))
    with monkeypatch.context() as m:
        m.setattr(async_worker, "fast_scope", None)
        slow_out, _ = asyncio.run(exchange(str(tmp_path / "s.sock"), requests, False))
    assert taken == [True] * len(requests)
    assert fast_out == slow_out
    return fast_out


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("path", ["/keep/1", "/form"])
def test_worker_answers_the_same_with_the_fast_path(tmp_path, monkeypatch, path, keep):
    data = request_bytes(captured_requests()[path], b"a=1&b=2", rid=3, keep=keep)
    out = serve_both(tmp_path, [data], monkeypatch)
    assert b"Status: 200 OK" in out and b"|a=1&b=2" in out


def test_worker_fast_path_on_a_kept_connection(tmp_path, monkeypatch):
    first = request_bytes(captured_requests()["/keep/1"], rid=3, keep=True)
    cookies = [(b"HTTP_COOKIE", b"a=1"), (b"HTTP_COOKIE", b"b=2")]
    second = request_bytes(captured_requests()["/keep/2"] + cookies, b"2nd", rid=3, keep=True)
    out = serve_both(tmp_path, [first, second], monkeypatch)
    assert out.count(b"Status: 200 OK") == 2 and b"|2nd" in out and b"a=1; b=2'" in out


def test_worker_body_over_the_limit_is_413_on_the_fast_path(tmp_path):
    data = request_bytes(captured_requests()["/form"], b"x" * 100, rid=3)
    config = Config(app="x:y", max_body_bytes=10)
    out, taken = asyncio.run(exchange(str(tmp_path / "b.sock"), [data], True, config))
    assert taken == [True]
    assert b"Status: 413" in out and b"|x" not in out
