"""The pure record helpers in gateway.protocol.records, checked against the test-side
encoder in _wire.py (byte-exact) and for their error cases.
"""

from __future__ import annotations

import pytest

from gateway.protocol import RemoteProtocolError
from gateway.protocol import records as records_module
from gateway.protocol.records import (
    HEADER_LENGTH,
    decode_begin_request,
    decode_end_request,
    decode_pairs,
    encode_begin_request,
    encode_end_request,
    encode_pairs,
    encode_record,
    encode_stream,
    pack_header,
    unpack_header,
)

from ._wire import (
    AUTHORIZER,
    BEGIN_REQUEST,
    FILTER,
    OVERLOADED,
    RESPONDER,
    STDOUT,
    UNKNOWN_ROLE,
    begin,
    end_request,
    end_request_body,
    nv_length,
    pairs,
    parse,
    record,
)


def test_header_pack_and_unpack():
    assert HEADER_LENGTH == 8
    header = pack_header(1, STDOUT, 0x1234, 0xABCD, 7)
    assert header == bytes([1, 6, 0x12, 0x34, 0xAB, 0xCD, 7, 0])
    assert unpack_header(b"junk" + header, 4) == (1, STDOUT, 0x1234, 0xABCD, 7)


@pytest.mark.parametrize("size", [0, 1, 65535])
def test_encode_record(size):
    content = b"c" * size
    assert encode_record(STDOUT, 3, content) == record(STDOUT, 3, content)
    assert encode_record(STDOUT, 3, content, padding=5) == record(STDOUT, 3, content, padding=5)


def test_encode_record_refuses_oversized_content():
    with pytest.raises(ValueError, match="65536 bytes exceeds 65535"):
        encode_record(STDOUT, 1, b"x" * 65536)


def test_encode_stream():
    assert encode_stream(STDOUT, 1, b"") == b""
    assert encode_stream(STDOUT, 1, b"abc") == record(STDOUT, 1, b"abc")
    data = b"q" * 65536
    assert encode_stream(STDOUT, 1, data) == record(STDOUT, 1, data[:65535]) + record(STDOUT, 1, b"q")


@pytest.mark.parametrize(("role", "keep_conn"), [(RESPONDER, False), (AUTHORIZER, True), (FILTER, False)])
def test_begin_request_round_trip(role, keep_conn):
    encoded = encode_begin_request(9, role, keep_conn)
    assert encoded == begin(9, role, keep_conn)
    assert decode_begin_request(parse(encoded)[0].content) == (role, int(keep_conn))


@pytest.mark.parametrize("length", [0, 7, 9])
def test_decode_begin_request_wrong_length(length):
    with pytest.raises(RemoteProtocolError, match="8 bytes"):
        decode_begin_request(bytes(length))


@pytest.mark.parametrize(
    ("app_status", "protocol_status"), [(0, 0), (1, OVERLOADED), (0xFFFFFFFF, UNKNOWN_ROLE), (-2, 0)]
)
def test_end_request_round_trip(app_status, protocol_status):
    encoded = encode_end_request(4, app_status, protocol_status)
    assert encoded == end_request(4, app_status, protocol_status)
    assert decode_end_request(end_request_body(app_status, protocol_status)) == (
        app_status & 0xFFFFFFFF,
        protocol_status,
    )
    with pytest.raises(RemoteProtocolError):
        decode_end_request(bytes(7))


@pytest.mark.parametrize("n", [0, 1, 127, 128, 255, 65535, 65536])
def test_name_value_length_boundaries(n):
    value = b"v" * n
    encoded = encode_pairs([(b"", value)])
    assert encoded == b"\x00" + nv_length(n) + value
    assert len(nv_length(n)) == (1 if n < 128 else 4)
    assert decode_pairs(encoded) == [(b"", value)]
    assert decode_pairs(encoded + b"\x00\x00") == [(b"", value), (b"", b"")]
    if n:
        with pytest.raises(RemoteProtocolError):
            decode_pairs(encoded[:-1])


def test_encode_pairs_matches_the_reference_encoder():
    items = [(b"A", b""), (b"N" * 127, b"V" * 128), (b"N" * 128, b"V" * 127), (b"", b"x" * 70000)]
    assert encode_pairs(items) == pairs(items)
    assert decode_pairs(pairs(items)) == items
    assert decode_pairs(pairs(items, long=True)) == items


@pytest.mark.skipif(
    not records_module.__file__.endswith(".py"),
    reason="compiled with mypyc: len() of a bytes argument is its size, an overriding __len__ is not called",
)
def test_encode_pairs_refuses_lengths_over_31_bits():
    class Huge(bytes):
        def __len__(self):
            return 2**31

    with pytest.raises(ValueError, match="too long"):
        encode_pairs([(Huge(), b"")])


@pytest.mark.parametrize(
    "body",
    [
        b"\x01",  # value length missing
        b"\x80\x00\x00",  # 4-byte name length cut short
        b"\x01\x80\x00",  # 4-byte value length cut short
        b"\x02\x02ab",  # value missing
        b"\x01\x01ab\x05",  # second pair truncated
        b"\x80\x00\x01\x00\x00",  # name of 256 bytes missing
        b"\xff\xff\xff\xff\x00",  # 2 GiB name: must fail fast, not allocate
    ],
)
def test_decode_pairs_truncated(body):
    with pytest.raises(RemoteProtocolError, match="name-value pair"):
        decode_pairs(body)


def test_decode_pairs_count_limit():
    body = pairs([(b"k", b"v")] * 5)
    assert len(decode_pairs(body, max_count=5)) == 5
    with pytest.raises(RemoteProtocolError, match="more than 4 name-value pairs") as info:
        decode_pairs(body, max_count=4)
    assert info.value.status_hint == 431


def test_decode_pairs_keeps_duplicates_in_order():
    items = [(b"HTTP_COOKIE", b"a=1"), (b"X", b"y"), (b"HTTP_COOKIE", b"b=2")]
    assert decode_pairs(pairs(items)) == items


def test_decode_pairs_accepts_bytearray_and_returns_bytes():
    result = decode_pairs(bytearray(pairs([(b"\xff", b"\xfe")])))
    assert result == [(b"\xff", b"\xfe")]
    assert all(type(x) is bytes for pair in result for x in pair)


def test_begin_record_type_constant():
    assert parse(encode_begin_request(1))[0].type == BEGIN_REQUEST
