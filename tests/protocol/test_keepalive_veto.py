"""keepalive_veto: ending a kept-alive connection without racing nginx's reuse of it.

When the veto says yes, END_REQUEST is followed by an empty STDERR record: bytes after
END_REQUEST in the same read make nginx drop the connection instead of caching it (so a
recycling worker can close it without losing a POST), and should_close is set. The same
for the request that reaches the per-connection limit (``max_requests``); with requests
still active on the connection, only the last one's ending carries it."""

from __future__ import annotations

from gateway.protocol import FastCGIConnection
from gateway.protocol.records import encode_begin_request, encode_pairs, encode_record, unpack_header

EMPTY_STDERR = bytes([1, 7, 0, 1, 0, 0, 0, 0])


def _request(keep_conn: bool, rid: int = 1) -> bytes:
    params = encode_pairs([(b"REQUEST_METHOD", b"GET")])
    return (
        encode_begin_request(rid, keep_conn=keep_conn)
        + encode_record(4, rid, params)
        + encode_record(4, rid)
        + encode_record(5, rid)
    )


def _records(data: bytes) -> list[tuple[int, int, int]]:
    out, pos = [], 0
    while pos < len(data):
        _, rtype, rid, clen, plen = unpack_header(data, pos)
        out.append((rtype, rid, clen))
        pos += 8 + clen + plen
    return out


def test_veto_appends_empty_stderr_and_closes():
    conn = FastCGIConnection()
    conn.keepalive_veto = lambda: True
    conn.feed(_request(keep_conn=True))
    out = conn.send_response(1, b"Status: 200 OK\r\n\r\nok")
    assert out.endswith(EMPTY_STDERR)
    assert [r[0] for r in _records(out)] == [6, 6, 3, 7]  # STDOUT, empty STDOUT, END, STDERR
    assert conn.should_close


def test_no_veto_keeps_the_connection():
    conn = FastCGIConnection()
    conn.keepalive_veto = lambda: False
    conn.feed(_request(keep_conn=True))
    out = conn.send_response(1, b"Status: 200 OK\r\n\r\nok")
    assert not out.endswith(EMPTY_STDERR)
    assert not conn.should_close


def test_veto_is_not_asked_without_keep_conn():
    asked = []
    conn = FastCGIConnection()
    conn.keepalive_veto = lambda: asked.append(1) or True
    conn.feed(_request(keep_conn=False))
    out = conn.send_response(1, b"Status: 200 OK\r\n\r\nok")
    assert asked == []
    assert _records(out)[-1][0] == 3  # END_REQUEST last
    assert conn.should_close


def test_the_per_connection_request_limit_ends_the_same_way():
    conn = FastCGIConnection(max_requests=2)
    conn.feed(_request(keep_conn=True))
    assert not conn.send_response(1, b"Status: 200 OK\r\n\r\nok").endswith(EMPTY_STDERR)
    assert not conn.should_close
    conn.feed(_request(keep_conn=True))
    out = conn.send_response(1, b"Status: 200 OK\r\n\r\nok")
    assert [r[0] for r in _records(out)] == [6, 6, 3, 7]
    assert conn.should_close


def test_with_requests_still_active_only_the_last_ending_gets_the_stderr_record():
    conn = FastCGIConnection(multiplex=True)
    conn.keepalive_veto = lambda: True
    conn.feed(_request(keep_conn=True) + _request(keep_conn=True, rid=2))
    assert conn.active_requests == 2
    first = conn.send_response(1, b"Status: 200 OK\r\n\r\nok")
    assert _records(first)[-1][0] == 3 and conn.should_close  # request 2 still runs
    last = conn.send_response(2, b"Status: 200 OK\r\n\r\nok")
    assert [r[:2] for r in _records(last)][-2:] == [(3, 2), (7, 2)]


def test_a_veto_that_raises_closes_after_the_ending():
    conn = FastCGIConnection()
    conn.keepalive_veto = lambda: 1 / 0
    conn.feed(_request(keep_conn=True))
    out = conn.send_response(1, b"Status: 200 OK\r\n\r\nok")
    assert [r[0] for r in _records(out)] == [6, 6, 3, 7]
    assert conn.should_close and conn.active_requests == 0
