"""stream_parts / send_response_parts: the zero-copy form of the output records must be
byte for byte what encode_stream / send_response produce."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocol import FastCGIConnection
from gateway.protocol.records import (
    encode_begin_request,
    encode_pairs,
    encode_record,
    encode_stream,
    stream_parts,
    unpack_header,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=70_000), max_size=4), st.integers(1, 65535))
def test_parts_equal_encode_stream(buffers, rid):
    joined = b"".join(buffers)
    parts = stream_parts(6, rid, buffers)
    assert b"".join(bytes(p) for p in parts) == encode_stream(6, rid, joined)


def test_parts_never_copy_the_body():
    body = bytearray(b"x" * 200_000)
    parts = stream_parts(6, 1, [b"head", body])
    views = [p for p in parts if isinstance(p, memoryview)]
    assert sum(len(v) for v in views) == 200_004
    assert all(v.obj is body or bytes(v) == b"head" for v in views)
    for p in parts:
        if isinstance(p, bytes) and len(p) == 8:
            assert unpack_header(p, 0)[3] <= 65535


def test_send_response_parts_matches_send_response():
    def conn():
        c = FastCGIConnection()
        c.feed(
            encode_begin_request(1)
            + encode_record(4, 1, encode_pairs([(b"A", b"1")]))
            + encode_record(4, 1)
            + encode_record(5, 1)
        )
        return c

    body = bytes(range(256)) * 1000
    a = conn().send_response(1, b"Status: 200 OK\r\n\r\n" + body)
    b = b"".join(bytes(p) for p in conn().send_response_parts(1, [b"Status: 200 OK\r\n\r\n", body]))
    assert a == b
