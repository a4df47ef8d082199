"""The sync worker on kept-alive connections (``fastcgi_keep_conn on``).

Every request arrives on a connection that outlives it; the worker's codec ends each one
and decides, with the keep-alive veto and the per-connection limit, whether the connection
stays open. A real SyncWorker on a unix socket gets a sequence of requests on one
connection: each answer must be a well-formed FastCGI answer with nothing after its
END_REQUEST but, when the connection closes, the empty STDERR record that tells nginx so.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.capture import captured_requests
from tests.worker_rig import parse_answer, request_bytes, worker_rig

EMPTY_STDERR = bytes([1, 7, 0, 1, 0, 0, 0, 0])
GET = request_bytes(captured_requests()["/keep/1"], keep=True)
POST = captured_requests()["/form"]


def drain(client: socket.socket) -> bytes:
    """What the worker wrote (it has returned: all of it is in the buffer)."""
    out = b""
    while client.fileno() != -1:  # (a test closed it)
        try:
            chunk = client.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        if not chunk:
            break
        out += chunk
    return out


def converse(
    tmp_path: Path, app: Any, requests: list[bytes], prepare: Any = None, **config: Any
) -> tuple[list[bytes], bool]:
    """Send ``requests`` one after the other on one connection, the worker serving each
    (``prepare(worker, i, client)`` between the sending and the serving): (the answers,
    whether the worker closed the connection). Each answer is checked to be one well-formed
    FastCGI answer of the request's id. Answers must fit in the socket's buffer: they are
    read after the worker returns."""
    path = str(tmp_path / "k.sock")
    with worker_rig(path, app, **config) as rig:
        worker, client = rig.worker, rig.client
        answers: list[bytes] = []
        closed = False
        client.connect(path)
        for i, data in enumerate(requests):
            client.sendall(data)
            if prepare is not None:
                prepare(worker, i, client)
            if i == 0:
                worker._accept(rig.listener)
            else:
                assert len(worker._conns) == 1, "the connection was closed before this request"
                worker._readable(next(iter(worker._conns.values())))
            out = drain(client)
            answers.append(out)
            closed = not worker._conns
            if out:
                parsed, tail = parse_answer(out)
                assert [a.rid for a in parsed] == [int.from_bytes(data[2:4], "big")]
                assert tail in (b"", EMPTY_STDERR), f"bytes after END_REQUEST: {tail!r}"
                assert (tail == EMPTY_STDERR) <= closed  # the close signal only when closing
        return answers, closed


def app_of(result: Any, headers: list[tuple[str, str]] | None = None) -> Any:
    def app(environ, start_response):
        start_response("200 OK", headers if headers is not None else [("Content-Type", "text/plain")])
        return result() if callable(result) else result

    return app


def raising(environ, start_response):
    if environ["PATH_INFO"].endswith("2"):
        raise ValueError("boom")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode()]


def late_error(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first "
    raise RuntimeError("after output")


def writing(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    write(b"abc")
    return iter([b"def", b"ghi", b"beyond the length"])


def path_request(path: bytes, rid: int = 1) -> bytes:
    params = [
        (k, path if k in (b"REQUEST_URI", b"DOCUMENT_URI") else v) for k, v in captured_requests()["/keep/1"]
    ]
    return request_bytes(params, rid=rid, keep=True)


@pytest.mark.parametrize(
    "app",
    [
        app_of([b"hello ", b"world"]),
        app_of((b"tuple",)),
        app_of(lambda: iter([b"a", b"", b"b" * 70_000])),
        app_of([b"x" * 10], [("Content-Length", "4")]),
        writing,
    ],
    ids=["list", "tuple", "iterator", "length-reached", "write"],
)
def test_a_kept_connection_answers_the_converse(tmp_path, app):
    answers, closed = converse(tmp_path, app, [GET, GET, path_request(b"/three", rid=7)])
    assert not closed
    for answer, rid in zip(answers, (1, 1, 7), strict=True):  # each ends with its END_REQUEST
        assert answer.endswith(bytes([1, 3, 0, rid, 0, 8, 0, 0]) + bytes(8))


def test_hand_offs_go_on_with_the_connections_codec(tmp_path):
    requests = [path_request(b"/1"), path_request(b"/2"), path_request(b"/3")]
    answers, closed = converse(tmp_path, raising, requests)
    assert b"Status: 500" in answers[1] and b"/3" in answers[2]  # the connection stays usable
    assert not closed
    answers, closed = converse(tmp_path, late_error, [GET, GET])
    assert all(b"first " in a for a in answers) and not closed


def test_the_veto_and_the_per_connection_limit_end_with_stderr_and_close(tmp_path):
    def drain_before_second(worker, i, client):
        worker.draining = i == 1  # as a recycling worker does

    answers, closed = converse(tmp_path, app_of([b"ok"]), [GET, GET], drain_before_second)
    assert not answers[0].endswith(EMPTY_STDERR) and answers[1].endswith(EMPTY_STDERR)
    assert closed
    answers, closed = converse(tmp_path, app_of([b"ok"]), [GET, GET], max_requests_per_connection=2)
    assert answers[1].endswith(EMPTY_STDERR) and closed


def test_bodies_and_the_limit(tmp_path):
    def echo(environ, start_response):
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"got " + body]

    form = request_bytes(POST, b"a=1&b=2", keep=True)
    answers, _ = converse(tmp_path, echo, [form, form])
    big = [(k, b"2000" if k == b"CONTENT_LENGTH" else v) for k, v in POST]
    answers, closed = converse(
        tmp_path, echo, [request_bytes(big, b"x" * 2000, keep=True), form], max_body_bytes=1000
    )
    assert b"Status: 413" in answers[0] and b"got a=1&b=2" in answers[1]
    assert not closed


def test_a_web_server_gone_drops_the_connection(tmp_path):
    def hang_up(worker, i, client):
        if i == 1:
            client.close()  # the worker's write fails (EPIPE)

    answers, closed = converse(tmp_path, app_of([b"x" * 100]), [GET, GET], hang_up)
    assert b"x" * 100 in answers[0] and answers[1] == b""
    assert closed


def test_the_worker_counts_kept_requests_toward_its_limits(tmp_path):
    def limit(worker, i, client):
        worker.control.request_limit = 4  # --max-requests: kept connections end in its last tenth

    answers, closed = converse(tmp_path, app_of([b"ok"]), [GET, GET, GET], limit)
    assert not answers[1].endswith(EMPTY_STDERR) and answers[2].endswith(EMPTY_STDERR)
    assert closed


def test_base_exceptions_propagate(tmp_path):
    def app(environ, start_response):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        converse(tmp_path, app, [GET])


def test_a_failing_keep_alive_check_closes_the_connection_after_the_ending(tmp_path):
    """The codec's end_request runs the worker's keep-alive veto (Python). One that raises
    must not cost the request its ending (nginx would wait for it): the codec takes it as
    "close", on both paths."""

    def failing_veto(worker, i, client):
        if i == 1:
            next(iter(worker._conns.values())).codec.keepalive_veto = lambda: 1 / 0

    for app in (app_of([b"ok"]), app_of(lambda: iter([b"o", b"k"]))):
        answers, closed = converse(tmp_path, app, [GET, GET], failing_veto)
        assert answers[1].endswith(bytes([1, 3, 0, 1, 0, 8, 0, 0]) + bytes(8) + EMPTY_STDERR)
        assert closed


def test_start_response_during_the_ending_cannot_change_the_head(tmp_path):
    """The codec's ending runs Python (the keep-alive veto), where another thread of the
    app could call start_response(..., exc_info): as in the reference, the headers count
    as sent by then, so that call raises and the head already taken goes out."""
    kept: dict[str, Any] = {}

    def app(environ, start_response):
        kept["start_response"] = start_response
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    def veto():
        try:
            raise ValueError("late")
        except ValueError:
            kept["start_response"]("500 Internal Server Error", [("X-Late", "1")], sys.exc_info())
        return False

    def prepare(worker, i, client):
        if i == 1:
            next(iter(worker._conns.values())).codec.keepalive_veto = veto

    answers, closed = converse(tmp_path, app, [GET, GET], prepare)
    assert b"Status: 200 OK" in answers[1] and b"X-Late" not in answers[1]
    assert closed  # the veto raised (the exc_info error): close after the ending
