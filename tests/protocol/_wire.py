"""Test-side FastCGI 1.0 wire helpers, written from the specification.

They are deliberately independent of ``gateway.protocol.records`` (no shared code, no
``struct`` formats copied from it) so that round trips compare the codec with a second
implementation instead of with itself. Also here: ``tr()`` (h11's pattern: run a byte
vector whole, one byte at a time and followed by trailing data) and ``check_output()``,
the validator every byte the codec produces goes through.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import pytest

from gateway.protocol import NEED_DATA, ConnectionClosed, FastCGIConnection, RemoteProtocolError

# Record types, roles and protocol statuses, as numbered in the FastCGI 1.0 specification.
BEGIN_REQUEST = 1
ABORT_REQUEST = 2
END_REQUEST = 3
PARAMS = 4
STDIN = 5
STDOUT = 6
STDERR = 7
DATA = 8
GET_VALUES = 9
GET_VALUES_RESULT = 10
UNKNOWN_TYPE = 11
ALL_TYPES = tuple(range(1, 12))

RESPONDER = 1
AUTHORIZER = 2
FILTER = 3

REQUEST_COMPLETE = 0
CANT_MPX_CONN = 1
OVERLOADED = 2
UNKNOWN_ROLE = 3

MAX_CONTENT = 65535
#: The only record types an application may ever write.
OUTPUT_TYPES = frozenset({END_REQUEST, STDOUT, STDERR, GET_VALUES_RESULT, UNKNOWN_TYPE})
GET_VALUES_NAMES = (b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS")


# -- encoding ------------------------------------------------------------------------


def record(rtype: int, rid: int, content: bytes = b"", padding: int = 0, version: int = 1) -> bytes:
    """One record, header built byte by byte (version, type, id, length, padding, reserved)."""
    n = len(content)
    assert n <= MAX_CONTENT and 0 <= padding <= 255
    header = bytes([version, rtype, rid >> 8, rid & 0xFF, n >> 8, n & 0xFF, padding, 0])
    return header + content + b"\x00" * padding


def begin(
    rid: int, role: int = RESPONDER, keep_conn: bool = False, padding: int = 0, flags: int | None = None
) -> bytes:
    if flags is None:
        flags = 1 if keep_conn else 0
    return record(BEGIN_REQUEST, rid, bytes([role >> 8, role & 0xFF, flags, 0, 0, 0, 0, 0]), padding)


def abort(rid: int) -> bytes:
    return record(ABORT_REQUEST, rid)


def end_request_body(app_status: int = 0, protocol_status: int = REQUEST_COMPLETE) -> bytes:
    return (app_status & 0xFFFFFFFF).to_bytes(4, "big") + bytes([protocol_status, 0, 0, 0])


def end_request(rid: int, app_status: int = 0, protocol_status: int = REQUEST_COMPLETE) -> bytes:
    return record(END_REQUEST, rid, end_request_body(app_status, protocol_status))


def nv_length(n: int, long: bool = False) -> bytes:
    """1-byte length below 128, else (or when ``long``) 4 bytes with the high bit set."""
    if n < 128 and not long:
        return bytes([n])
    return (n | 0x80000000).to_bytes(4, "big")


def pairs(items: Iterable[tuple[bytes, bytes]], long: bool = False) -> bytes:
    return b"".join(nv_length(len(k), long) + nv_length(len(v), long) + k + v for k, v in items)


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def stream(rtype: int, rid: int, data: bytes, chunk: int = MAX_CONTENT, padding: int = 0) -> bytes:
    """``data`` as records of at most ``chunk`` bytes, then the empty end-of-stream record."""
    parts = [record(rtype, rid, piece, padding) for piece in split_every(data, chunk)]
    parts.append(record(rtype, rid, b"", padding))
    return b"".join(parts)


def request(
    rid: int,
    params: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    *,
    role: int = RESPONDER,
    keep_conn: bool = False,
    params_chunk: int = MAX_CONTENT,
    body_chunk: int = MAX_CONTENT,
    padding: int = 0,
    data: bytes | None = None,
) -> bytes:
    """A whole request: BEGIN, PARAMS stream, STDIN stream (and DATA stream if given)."""
    out = begin(rid, role, keep_conn, padding)
    out += stream(PARAMS, rid, pairs(params), params_chunk, padding)
    out += stream(STDIN, rid, body, body_chunk, padding)
    if data is not None:
        out += stream(DATA, rid, data, body_chunk, padding)
    return out


# -- decoding ------------------------------------------------------------------------


class Rec(NamedTuple):
    version: int
    type: int
    request_id: int
    content: bytes
    padding: int


def parse(data: bytes) -> list[Rec]:
    """Split a byte stream into records; a partial record at the end fails the test."""
    recs = []
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= 8, f"truncated record header at offset {pos}"
        h = data[pos : pos + 8]
        clen = h[4] << 8 | h[5]
        plen = h[6]
        assert h[7] == 0, "reserved header byte must be zero"
        stop = pos + 8 + clen + plen
        assert stop <= len(data), f"truncated record at offset {pos}"
        recs.append(Rec(h[0], h[1], h[2] << 8 | h[3], bytes(data[pos + 8 : pos + 8 + clen]), plen))
        pos = stop
    return recs


def decode_nv(content: bytes) -> list[tuple[bytes, bytes]]:
    """Reference name-value pair decoder."""
    out = []
    pos = 0
    lengths = []
    while pos < len(content):
        lengths.clear()
        for _ in range(2):
            if content[pos] & 0x80:
                lengths.append(int.from_bytes(content[pos : pos + 4], "big") & 0x7FFFFFFF)
                pos += 4
            else:
                lengths.append(content[pos])
                pos += 1
        n, v = lengths
        assert pos + n + v <= len(content), "name-value pair runs past its record"
        out.append((content[pos : pos + n], content[pos + n : pos + n + v]))
        pos += n + v
    return out


def stream_content(recs: Iterable[Rec], rtype: int, rid: int) -> bytes:
    return b"".join(r.content for r in recs if r.type == rtype and r.request_id == rid)


def check_output(data: bytes) -> list[Rec]:
    """Assert that ``data`` is a well-formed sequence of records an application may send."""
    recs = parse(data)
    for r in recs:
        assert r.version == 1, r
        assert r.type in OUTPUT_TYPES, r
        assert len(r.content) <= MAX_CONTENT
        if r.type in (GET_VALUES_RESULT, UNKNOWN_TYPE):
            assert r.request_id == 0, r
        else:
            assert r.request_id != 0, r
        if r.type == END_REQUEST:
            assert len(r.content) == 8, r
            assert r.content[4] in (REQUEST_COMPLETE, CANT_MPX_CONN, OVERLOADED, UNKNOWN_ROLE), r
            assert r.content[5:] == b"\x00\x00\x00", r
        elif r.type == UNKNOWN_TYPE:
            assert len(r.content) == 8, r
            assert r.content[0] not in ALL_TYPES, r
            assert r.content[1:] == b"\x00" * 7, r
        elif r.type == GET_VALUES_RESULT:
            answered = decode_nv(r.content)
            names = [name for name, _ in answered]
            assert set(names) <= set(GET_VALUES_NAMES), r
            assert len(names) == len(set(names)), r
            assert all(value.isdigit() for _, value in answered), r
    return recs


# -- events --------------------------------------------------------------------------


def canon(events: Iterable[Any]) -> list[tuple[str, tuple[Any, ...]]]:
    """Events with their type: NamedTuples compare equal to any tuple with the same fields
    (``StdinEnded(1) == DataEnded(1)``), so comparisons must include the class."""
    return [(type(e).__name__, tuple(e)) for e in events]


def drain(conn: FastCGIConnection) -> list[Any]:
    events = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA:
            return events
        events.append(ev)


#: The start of a management record of an unknown type (42): a trailing partial record.
TRAILER = record(42, 0, b"abc")


def tr(vector: bytes, expected_events: Sequence[Any], expected_replies: bytes = b"", **kwargs: Any) -> None:
    """Run ``vector`` three ways on fresh connections built with ``kwargs``; each must give
    the same events (in order, with their types) and the same codec replies.

    1. fed whole, events taken with ``feed()``;
    2. fed one byte at a time, events taken with ``next_event()`` after every byte;
    3. fed whole followed by the first bytes of another record: the partial record must be
       kept, not consumed (EOF then reports ``incomplete``), and completing it later works.
    """
    want = canon(expected_events)

    conn = FastCGIConnection(**kwargs)
    assert canon(conn.feed(vector)) == want, "fed whole"
    assert conn.data_to_send() == expected_replies, "fed whole"
    assert not conn.broken

    conn = FastCGIConnection(**kwargs)
    events = []
    replies = b""
    for i in range(len(vector)):
        conn.receive_data(vector[i : i + 1])
        events += drain(conn)
        replies += conn.data_to_send()
    assert canon(events) == want, "fed one byte at a time"
    assert replies == expected_replies, "fed one byte at a time"

    for cut in (1, 7, 8, len(TRAILER) - 1):
        conn = FastCGIConnection(**kwargs)
        assert canon(conn.feed(vector + TRAILER[:cut])) == want, f"with {cut} trailing bytes"
        assert conn.data_to_send() == expected_replies, f"with {cut} trailing bytes"
        assert conn.feed(TRAILER[cut:]) == []
        assert conn.data_to_send() == record(UNKNOWN_TYPE, 0, bytes([42]) + bytes(7))
        assert canon(conn.feed(b"")) == canon([ConnectionClosed(False)])

    conn = FastCGIConnection(**kwargs)
    conn.feed(vector + TRAILER[:5])
    assert canon(conn.feed(b"")) == canon([ConnectionClosed(True)])


def tr_error(vector: bytes, match: str, status_hint: int | None = None, **kwargs: Any) -> None:
    """``vector`` must raise RemoteProtocolError fed whole, byte by byte and with trailing
    data; the connection is broken afterwards and keeps raising."""
    conn = FastCGIConnection(**kwargs)
    with pytest.raises(RemoteProtocolError, match=match) as info:
        conn.receive_data(vector)
    if status_hint is not None:
        assert info.value.status_hint == status_hint
    assert conn.broken
    with pytest.raises(RemoteProtocolError, match=match):
        conn.receive_data(TRAILER)
    with pytest.raises(RemoteProtocolError, match=match):
        conn.receive_data(b"")

    conn = FastCGIConnection(**kwargs)
    with pytest.raises(RemoteProtocolError, match=match):
        for i in range(len(vector)):
            conn.receive_data(vector[i : i + 1])
    assert conn.broken

    conn = FastCGIConnection(**kwargs)
    with pytest.raises(RemoteProtocolError, match=match):
        conn.receive_data(vector + TRAILER)
