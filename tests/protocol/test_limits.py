"""Configured limits (params size and count, buffered body) and local misuse.

A limit violation is a RemoteProtocolError with a clear message and an HTTP status hint,
after which the connection is unusable; sending for a request the worker does not own is
a LocalProtocolError.
"""

from __future__ import annotations

import pytest

from gateway.protocol import (
    NEED_DATA,
    FastCGIConnection,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    RequestReceived,
    StdinEnded,
    StdinReceived,
)

from ._wire import (
    PARAMS,
    RESPONDER,
    STDIN,
    begin,
    canon,
    check_output,
    pairs,
    record,
    request,
    tr,
    tr_error,
)


def _assert_stays_broken(conn: FastCGIConnection, match: str) -> None:
    assert conn.broken
    for data in (request(9, []), b"", b"\x01"):
        with pytest.raises(RemoteProtocolError, match=match):
            conn.receive_data(data)


# -- params bytes ---------------------------------------------------------------------------


def test_params_exactly_at_the_byte_limit_are_accepted():
    params = [(b"K", b"v" * 97)]  # 1 + 1 + 1 + 97 = 100 bytes
    assert len(pairs(params)) == 100
    tr(
        request(1, params),
        [RequestReceived(1, RESPONDER, False, params), StdinEnded(1)],
        max_params_bytes=100,
    )


def test_params_over_the_byte_limit():
    params = [(b"K", b"v" * 98)]
    tr_error(request(1, params), r"request 1: params exceed 100 bytes", 431, max_params_bytes=100)


def test_params_byte_limit_counts_across_records():
    vector = begin(1) + b"".join(record(PARAMS, 1, b"\x01\x01ab") for _ in range(30))
    conn = FastCGIConnection(max_params_bytes=100)
    with pytest.raises(RemoteProtocolError, match="params exceed 100 bytes") as info:
        conn.receive_data(vector)
    assert info.value.status_hint == 431
    assert "params exceed" in str(info.value)
    _assert_stays_broken(conn, "params exceed")


def test_params_byte_limit_is_per_request():
    params = [(b"K", b"v" * 90)]
    conn = FastCGIConnection(max_params_bytes=100, multiplex=True)
    events = conn.feed(request(1, params, keep_conn=True) + request(2, params, keep_conn=True))
    assert len(events) == 4
    check_output(conn.end_request(1))
    assert len(conn.feed(request(1, params, keep_conn=True))) == 2


# -- params count ---------------------------------------------------------------------------


def test_params_count_at_the_limit_is_accepted():
    params = [(b"K%d" % i, b"") for i in range(3)]
    tr(request(1, params), [RequestReceived(1, RESPONDER, False, params), StdinEnded(1)], max_params_count=3)


def test_params_count_over_the_limit():
    params = [(b"K%d" % i, b"") for i in range(4)]
    tr_error(request(1, params), "more than 3 name-value pairs", 431, max_params_count=3)
    conn = FastCGIConnection(max_params_count=3)
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(request(1, params))
    _assert_stays_broken(conn, "more than 3")


# -- buffered body --------------------------------------------------------------------------


def test_stdin_buffer_limit_on_untaken_events():
    conn = FastCGIConnection(max_stdin_buffer=10)
    conn.receive_data(begin(1) + record(PARAMS, 1) + record(STDIN, 1, b"123456"))
    with pytest.raises(RemoteProtocolError, match="more than 10 bytes of request body buffered") as info:
        conn.receive_data(record(STDIN, 1, b"78901"))
    assert info.value.status_hint == 413
    _assert_stays_broken(conn, "more than 10 bytes")


def test_stdin_buffer_exactly_full_is_fine():
    tr(
        begin(1)
        + record(PARAMS, 1)
        + record(STDIN, 1, b"12345")
        + record(STDIN, 1, b"67890")
        + record(STDIN, 1),
        [
            RequestReceived(1, RESPONDER, False, []),
            StdinReceived(1, b"12345"),
            StdinReceived(1, b"67890"),
            StdinEnded(1),
        ],
        max_stdin_buffer=10,
    )


def test_stdin_buffer_limit_never_reached_by_a_worker_that_takes_events():
    """Flow control: a body far over the limit passes when events are taken as they come."""
    conn = FastCGIConnection(max_stdin_buffer=1000)
    conn.receive_data(begin(1) + record(PARAMS, 1))
    assert type(conn.next_event()) is RequestReceived
    body = b""
    for i in range(100):
        conn.receive_data(record(STDIN, 1, bytes([i]) * 900))
        ev = conn.next_event()
        assert type(ev) is StdinReceived
        body += ev.data
        assert conn.next_event() is NEED_DATA
    assert body == b"".join(bytes([i]) * 900 for i in range(100))
    # feed() takes everything too.
    for _ in range(10):
        assert len(conn.feed(record(STDIN, 1, b"z" * 999))) == 1


# -- local misuse ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["send_stdout", "send_stderr", "send_response"])
def test_sending_for_an_unknown_request_is_a_local_error(method):
    conn = FastCGIConnection()
    conn.feed(request(1, []))
    with pytest.raises(LocalProtocolError, match="cannot send for request 2") as info:
        getattr(conn, method)(2, b"x")
    assert info.value.status_hint == 500
    assert isinstance(info.value, ProtocolError)
    assert not isinstance(info.value, RemoteProtocolError)


@pytest.mark.parametrize("method", ["send_stdout", "send_stderr", "send_response", "end_request"])
def test_sending_for_an_ended_request_is_a_local_error(method):
    conn = FastCGIConnection()
    conn.feed(request(1, [], keep_conn=True))
    check_output(conn.end_request(1))
    args = (1,) if method == "end_request" else (1, b"x")
    with pytest.raises(LocalProtocolError):
        getattr(conn, method)(*args)
    # The connection itself is fine: the next request works.
    assert canon(conn.feed(request(1, [], keep_conn=True))) == canon(
        [RequestReceived(1, RESPONDER, True, []), StdinEnded(1)]
    )


def test_sending_before_params_are_complete_is_a_local_error():
    conn = FastCGIConnection()
    conn.feed(begin(1) + record(PARAMS, 1, pairs([(b"A", b"b")])))
    with pytest.raises(LocalProtocolError, match="state PARAMS"):
        conn.send_stdout(1, b"too early")


def test_remote_errors_carry_a_400_hint_by_default():
    conn = FastCGIConnection()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(record(STDIN, 1, b"no such request"))
    assert info.value.status_hint == 400
    assert "unexpected STDIN for request 1" in str(info.value)
