"""The sync worker's one serve path, through its accept loop.

A real SyncWorker takes one connection from a unix socket, for apps that exercise every
branch of ``WSGIResponder``: list, tuple and iterator results, a declared Content-Length
reached early or never, ``write()``, lazy and repeated ``start_response``, exceptions
before and after output, a result's ``close()``, ``wsgi.file_wrapper``, large bodies
spanning records, a client that went away. Every answer must be a well-formed FastCGI
answer (``tests.worker_rig.parse_answer``): one END_REQUEST ending its streams, and nothing
after it; and the worker must keep serving.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import logging
import socket
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from gateway.protocol.connection import FastCGIConnection
from gateway.workers.sync_conn import Conn
from tests.capture import captured_requests
from tests.worker_rig import parse_answer, request_bytes, worker_rig

END = b"\x01\x03"  # an END_REQUEST record's first bytes (request id 1 follows)


def serve(
    tmp_path: Path, app: Any, data: bytes, close_client: bool = False, **config: Any
) -> tuple[bytes, list[tuple[int, str]]]:
    """``data`` sent on one connection to a real SyncWorker: (the bytes it answered until it
    closed the connection or ended the request, the log)."""
    path = str(tmp_path / "w.sock")
    with worker_rig(path, app, **config) as rig:
        worker, listener, client = rig.worker, rig.listener, rig.client
        received: list[bytes] = []

        def read() -> None:  # concurrently: a large answer does not fit in the socket's buffer
            client.settimeout(10)
            out = b""
            while True:  # until the worker closes the connection (no keep-conn)
                chunk = client.recv(1 << 20)
                if not chunk:
                    break
                out += chunk
            received.append(out)

        reader = threading.Thread(target=read)
        try:
            client.connect(path)
            client.sendall(data)
            if close_client:
                client.close()
                worker._accept(listener)
                return b"", rig.log
            reader.start()
            worker._accept(listener)
            assert not worker._conns, "the connection (without keep-conn) is closed after its request"
            reader.join(10)
            return received[0], rig.log
        finally:
            if reader.is_alive():  # the worker raised (test_base_exceptions_propagate): wake it
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
                reader.join(10)


GET = request_bytes(captured_requests()["/keep/1"])


def answer(tmp_path: Path, app: Any, data: bytes = GET, **config: Any) -> bytes:
    """The STDOUT of the one answer to ``data``, checked to be a well-formed FastCGI answer
    with nothing after its END_REQUEST."""
    out, _ = serve(tmp_path, app, data, **config)
    answers, tail = parse_answer(out)
    assert len(answers) == 1 and answers[0].rid == 1
    assert tail == b"", f"bytes after END_REQUEST: {tail!r}"
    return answers[0].stdout


def app_of(result: Any, status: str = "200 OK", headers: list[tuple[str, str]] | None = None) -> Any:
    def app(environ, start_response):
        start_response(status, headers if headers is not None else [("Content-Type", "text/plain")])
        return result() if callable(result) else result

    return app


BIG = bytes(range(256)) * 1024  # 256 KiB: four records and a bit, past LARGE_BODY


@pytest.mark.parametrize(
    "result",
    [
        [b"Hello, world!"],
        [b"one ", b"two ", b"three"],
        (b"a tuple",),
        [],
        [b""],
        [BIG],
        [BIG[:70000], BIG[:1], BIG[:65534]],  # records spanning parts
        [b"x"] * 20,  # more parts than the stack arrays hold
        [b"y" * 100] * 1500,  # more records than one writev takes
        lambda: iter([b"streamed ", b"", b"chunks"]),
        lambda: (chunk for chunk in [BIG, b"tail"]),
    ],
    ids=lambda r: "callable" if callable(r) else f"{type(r).__name__}{len(r)}",
)
def test_results(tmp_path, result):
    out = answer(tmp_path, app_of(result))
    assert b"Status: 200 OK" in out


@pytest.mark.parametrize("length", [0, 5, 11, 12, 100])
def test_declared_length_ends_the_request_at_its_chunk(tmp_path, length):
    """The chunk that completes Content-Length leaves with END_REQUEST; a later one is
    dropped with a warning."""

    def body():
        yield b"hello "
        yield b"world"
        yield b""
        yield b"!"

    out = answer(tmp_path, app_of(body, headers=[("Content-Length", str(length))]))
    body_sent = out.partition(b"\r\n\r\n")[2]
    assert body_sent == b"hello world!"[: max(length, 6)] if length < 12 else body_sent == b"hello world!"


def test_write_callable(tmp_path):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(bytearray(b"bytearray "))
        write(b"")
        return [b"returned"]

    out = answer(tmp_path, app)
    assert b"written " in out and b"bytearray " in out and b"returned" in out


def test_lazy_start_response_in_a_generator(tmp_path):
    def app(environ, start_response):
        start_response("201 Created", [("X-A", "1")])
        yield b"made"

    assert b"Status: 201 Created" in answer(tmp_path, app)


def test_unusual_headers_go_to_the_reference(tmp_path):
    """A status without a phrase, header values that are not plain str: the reference
    block; a CR in a value: InvalidResponse, a 500."""
    assert b"Status: 204\r\n" in answer(tmp_path, app_of([b""], "204", [("X-B", "b")]))
    assert b"Status: 500" in answer(tmp_path, app_of([b"no"], "200 OK", [("X-C", "a\r\nb")]))


@pytest.mark.parametrize(
    "case",
    [
        "raise-first",
        "raise-after-start",
        "raise-mid-body",
        "no-start",
        "no-start-list",
        "twice",
        "str-chunk",
        "str-item",
        "none",
    ],
)
def test_errors(tmp_path, case):
    def app(environ, start_response):
        if case == "raise-first":
            raise RuntimeError("boom")
        if case == "no-start":
            return iter([b"x"])
        if case == "no-start-list":
            return [b"x"]
        if case == "none":
            start_response("200 OK", [])
            return None
        start_response("200 OK", [("Content-Type", "text/plain")])
        if case == "twice":
            start_response("200 OK", [])
        if case == "raise-after-start":
            raise ValueError("after start")
        if case == "str-item":
            return ["text"]
        if case == "str-chunk":
            return iter([b"bytes first", "then text"])

        def body():
            yield b"sent"
            raise KeyError("mid-body")

        return body()

    out = answer(tmp_path, app)
    if case in ("raise-mid-body", "str-chunk"):  # after output: the response ends where it was
        assert out.startswith(b"Status: 200 OK") and not out.endswith(b"Internal Server Error\n")
    else:
        assert out.startswith(b"Status: 500 Internal Server Error")


def test_exc_info_replaces_the_status_until_output(tmp_path):
    def app(environ, start_response):
        start_response("200 OK", [])
        try:
            raise RuntimeError("late")
        except RuntimeError:
            import sys

            start_response("503 Service Unavailable", [("Retry-After", "1")], sys.exc_info())
        return [b"sorry"]

    assert b"Status: 503 Service Unavailable" in answer(tmp_path, app)


def test_close_is_called_once_and_its_error_logged(tmp_path):
    closed: list[int] = []

    class Body:
        def __init__(self, fail: bool) -> None:
            self.fail = fail

        def __iter__(self):
            return iter([b"body"])

        def close(self) -> None:
            closed.append(1)
            if self.fail:
                raise OSError("close failed")

    for fail in (False, True):
        closed.clear()
        answer(tmp_path, app_of(lambda f=fail: Body(f)))
        assert closed == [1]


def test_file_wrapper_result(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(BIG)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(len(BIG)))])
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    assert BIG[:1000] in answer(tmp_path, app)


def test_post_body_and_limits(tmp_path):
    def echo(environ, start_response):
        start_response("200 OK", [])
        return [environ["wsgi.input"].read()]

    post = captured_requests()["/form"]
    assert b"a=1&b=2" in answer(tmp_path, echo, request_bytes(post, b"a=1&b=2"))
    # A body in several records, cut anywhere.
    cut = request_bytes(post, b"a=1&b=2" * 5000, body_cuts=(1, 7, 70000))
    assert answer(tmp_path, echo, cut).endswith(b"a=1&b=2" * 5000)
    # Over --max-body-size, declared or not.
    big = [(k, b"2000" if k == b"CONTENT_LENGTH" else v) for k, v in post]
    out = answer(tmp_path, echo, request_bytes(big, b"x" * 2000), max_body_bytes=1000)
    assert b"Status: 413" in out
    unsaid = [(k, b"" if k == b"CONTENT_LENGTH" else v) for k, v in post]  # no length to check
    out = answer(tmp_path, echo, request_bytes(unsaid, b"x" * 2000), max_body_bytes=1000)
    assert b"Status: 413" in out


def test_an_environ_kept_after_the_request_holds_nothing_of_the_connection(tmp_path):
    """Django's request objects form reference cycles that only the garbage collector
    frees, and they hold the environ: its ``wsgi.input`` must then not keep the connection,
    its codec, its socket or the unread body alive until a collection. Read afterwards, the
    kept stream gives nothing (the connection may serve another request by then)."""
    kept: list[dict[str, Any]] = []

    def app(environ, start_response):
        kept.append(environ)
        environ["wsgi.input"].read(10)  # most of the body left unread
        start_response("200 OK", [])
        return [b"ok"]

    post = captured_requests()["/form"]
    body = b"a=1&b=2" * 5000
    post = [(k, str(len(body)).encode() if k == b"CONTENT_LENGTH" else v) for k, v in post]
    assert answer(tmp_path, app, request_bytes(post, body)).endswith(b"ok")
    stream = kept[0]["wsgi.input"]
    seen, todo, found = {id(kept[0])}, [kept[0]], []
    while todo:  # everything the kept environ keeps alive (not through classes, plain
        # functions and modules: their globals reach the whole program; a bound method's
        # instance is followed)
        for ref in gc.get_referents(todo.pop()):
            if id(ref) not in seen and not isinstance(ref, (type, types.FunctionType, types.ModuleType)):
                seen.add(id(ref))
                todo.append(ref)
                if isinstance(ref, (Conn, FastCGIConnection, socket.socket)) or (
                    isinstance(ref, (bytes, bytearray)) and len(ref) > 1000
                ):
                    found.append(type(ref).__name__)
    assert found == []
    assert stream.read() == b"" and stream.readline() == b""


def test_a_fresh_context_per_request(tmp_path):
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)

    def app(environ, start_response):
        start_response("200 OK", [])
        var.set(var.get() + 1)
        return [str(var.get()).encode()]

    assert answer(tmp_path, app).count(b"\r\n\r\n1") == 1


def test_client_gone(tmp_path):
    """The web server closed the connection before the answer: logged, nothing raised."""
    _, log = serve(tmp_path, app_of([b"late"]), GET, close_client=True)
    assert [level for level, _ in log] == [logging.INFO]
    assert "web server closed the connection during GET /keep/1: [Errno 32]" in log[0][1]


def test_base_exceptions_propagate(tmp_path):
    def app(environ, start_response):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        serve(tmp_path, app, GET)


def test_a_kept_write_cannot_reach_a_later_connection(tmp_path):
    """An app that keeps ``write`` and calls it after its request: the connection is closed,
    and its fd number may be another connection's by then; the write must fail."""
    kept: list[Any] = []

    def app(environ, start_response):
        kept.append(start_response("200 OK", []))
        return [b"first"]

    serve(tmp_path, app, GET)
    other = socket.socket(socket.AF_UNIX)  # likely given the fd number just closed
    try:
        with pytest.raises(AssertionError, match="after the response ended"):
            kept[0](b"late")
    finally:
        other.close()


@pytest.mark.parametrize("after", ["raise", "text", "bytes"])
def test_after_the_declared_length(tmp_path, after):
    """What an iterator does after the chunk that completed its Content-Length (and ended
    the request): an exception is logged, anything else dropped with a warning; never a
    second END_REQUEST (the Python path used to try one, and its codec raised)."""

    def body():
        yield b"12345"
        if after == "raise":
            raise RuntimeError("after the end")
        yield "text" if after == "text" else b"more"

    out = answer(tmp_path, app_of(body, headers=[("Content-Length", "5")]))
    assert out.endswith(b"\r\n\r\n12345")


def test_a_socket_with_a_timeout(tmp_path):
    """``socket.setdefaulttimeout()`` (which apps call for their own connections) makes the
    worker's accepted sockets non-blocking with a timeout: a response larger than the socket
    buffer must still go out whole, waiting for the reader as ``sendall`` does."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5)
    try:
        out = answer(tmp_path, app_of([BIG] * 8))  # 2 MiB
    finally:
        socket.setdefaulttimeout(before)
    assert len(out) > 8 * len(BIG)


def test_an_escaping_exception_closes_the_connection(tmp_path):
    """A BaseException out of the app ends the worker (it propagates); the connection is
    closed on the way out, so the client sees the end, not a hang."""

    def app(environ, start_response):
        raise SystemExit(3)

    path = str(tmp_path / "exit.sock")
    with worker_rig(path, app) as rig:
        rig.client.connect(path)
        rig.client.sendall(GET)
        with pytest.raises(SystemExit):
            rig.worker._accept(rig.listener)
        for conn in list(rig.worker._conns.values()):  # as SyncWorker.run's finally does
            rig.worker._close(conn)
        rig.client.settimeout(5)
        assert rig.client.recv(100) == b""
