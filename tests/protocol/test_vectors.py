"""Byte vectors for the codec, each run whole, one byte at a time and with trailing data.

Receiving: a full RESPONDER request, name-value pairs with 1- and 4-byte lengths, every
padding length, the keep-conn flag, non-UTF-8 params. Sending: output split at 65,535
bytes (docs/protocol-notes.md, peer bug 4), the exact bytes of end_request and send_response.
"""

from __future__ import annotations

import pytest

from gateway.protocol import (
    FastCGIConnection,
    RequestReceived,
    StdinEnded,
    StdinReceived,
)

from ._wire import (
    END_REQUEST,
    PARAMS,
    RESPONDER,
    STDERR,
    STDIN,
    STDOUT,
    begin,
    canon,
    check_output,
    end_request,
    pairs,
    parse,
    record,
    request,
    stream_content,
    tr,
)

NGINX_PARAMS = [
    (b"QUERY_STRING", b"q=1"),
    (b"REQUEST_METHOD", b"POST"),
    (b"CONTENT_TYPE", b"application/x-www-form-urlencoded"),
    (b"CONTENT_LENGTH", b"11"),
    (b"SCRIPT_NAME", b"/app/x y"),
    (b"REQUEST_URI", b"/app/x%20y?q=1"),
    (b"SERVER_PROTOCOL", b"HTTP/1.1"),
    (b"HTTP_COOKIE", b"a=1"),
    (b"HTTP_COOKIE", b"b=2"),
]


def _ready(rid: int = 1, keep_conn: bool = False, **kwargs) -> FastCGIConnection:
    """A connection whose request ``rid`` has been fully received (state DONE)."""
    conn = FastCGIConnection(**kwargs)
    conn.feed(request(rid, [(b"A", b"b")], keep_conn=keep_conn))
    return conn


# -- receiving ------------------------------------------------------------------------


def test_full_responder_request_with_multi_record_params_and_padded_stdin_chunks():
    body_chunks = [b"name=value&", b"x" * 300, b"\x00\xff tail"]
    block = pairs(NGINX_PARAMS)
    vector = (
        begin(1, RESPONDER, keep_conn=False, padding=3)
        + record(PARAMS, 1, block[:10], padding=6)
        + record(PARAMS, 1, block[10:50])
        + record(PARAMS, 1, block[50:], padding=255)
        + record(PARAMS, 1, b"", padding=1)
        + b"".join(record(STDIN, 1, c, padding=(8 - len(c) % 8) % 8) for c in body_chunks)
        + record(STDIN, 1, b"", padding=7)
    )
    tr(
        vector,
        [RequestReceived(1, RESPONDER, False, NGINX_PARAMS)]
        + [StdinReceived(1, c) for c in body_chunks]
        + [StdinEnded(1)],
    )


def test_get_request_with_empty_stdin():
    tr(
        request(1, NGINX_PARAMS[:3]),
        [RequestReceived(1, RESPONDER, False, NGINX_PARAMS[:3]), StdinEnded(1)],
    )


def test_request_with_no_params_at_all():
    tr(begin(1) + record(PARAMS, 1) + record(STDIN, 1), [RequestReceived(1, 1, False, []), StdinEnded(1)])


def test_params_and_stdin_record_boundaries_do_not_matter():
    """A pair split across PARAMS records (even inside its length bytes) still decodes."""
    params = [(b"N" * 130, b"V" * 200), (b"short", b"")]
    for chunk in (1, 2, 3, 5, 129, 400):
        tr(
            request(1, params, b"0123456789", params_chunk=chunk, body_chunk=4),
            [
                RequestReceived(1, RESPONDER, False, params),
                StdinReceived(1, b"0123"),
                StdinReceived(1, b"4567"),
                StdinReceived(1, b"89"),
                StdinEnded(1),
            ],
        )


@pytest.mark.parametrize(
    ("name_len", "value_len"),
    [(0, 0), (1, 0), (0, 1), (127, 127), (127, 128), (128, 127), (128, 128), (200, 1000), (1, 5000)],
)
def test_name_value_pairs_with_one_and_four_byte_lengths(name_len, value_len):
    pair = (bytes(i % 251 for i in range(name_len)), b"v" * value_len)
    block = pairs([pair, (b"AFTER", b"x")])
    # The encoder picked the 4-byte form exactly for lengths >= 128.
    assert (
        len(block)
        == (4 if name_len >= 128 else 1) + (4 if value_len >= 128 else 1) + name_len + value_len + 8
    )
    tr(
        request(1, [pair, (b"AFTER", b"x")]),
        [RequestReceived(1, RESPONDER, False, [pair, (b"AFTER", b"x")]), StdinEnded(1)],
    )


def test_four_byte_lengths_for_short_names_are_accepted():
    """The 4-byte form is legal for any length; only the high bit tells them apart."""
    params = [(b"A", b"b"), (b"", b"long form")]
    vector = begin(1) + record(PARAMS, 1, pairs(params, long=True)) + record(PARAMS, 1) + record(STDIN, 1)
    tr(vector, [RequestReceived(1, RESPONDER, False, params), StdinEnded(1)])


def test_value_longer_than_one_record_spans_several_params_records():
    big = bytes(range(256)) * 300  # 76,800 bytes: one pair over two PARAMS records
    conn = FastCGIConnection()
    events = conn.feed(request(1, [(b"HTTP_X_BIG", big), (b"B", b"c")]))
    assert canon(events) == canon(
        [RequestReceived(1, RESPONDER, False, [(b"HTTP_X_BIG", big), (b"B", b"c")]), StdinEnded(1)]
    )


@pytest.mark.parametrize("padding", range(256))
def test_every_padding_length_is_skipped(padding):
    vector = request(7, [(b"K", b"v" * 130)], b"body", padding=padding)
    tr(
        vector,
        [
            RequestReceived(7, RESPONDER, False, [(b"K", b"v" * 130)]),
            StdinReceived(7, b"body"),
            StdinEnded(7),
        ],
    )


@pytest.mark.parametrize(
    ("flags", "keep_conn"), [(0, False), (1, True), (0xFE, False), (0xFF, True), (0x81, True)]
)
def test_keep_conn_flag_reserved_bits_ignored(flags, keep_conn):
    vector = begin(1, flags=flags) + record(PARAMS, 1) + record(STDIN, 1)
    tr(vector, [RequestReceived(1, RESPONDER, keep_conn, []), StdinEnded(1)])


@pytest.mark.parametrize("keep_conn", [False, True])
def test_keep_conn_reported_and_highest_request_id(keep_conn):
    tr(
        request(65535, [(b"A", b"1")], b"x", keep_conn=keep_conn),
        [
            RequestReceived(65535, RESPONDER, keep_conn, [(b"A", b"1")]),
            StdinReceived(65535, b"x"),
            StdinEnded(65535),
        ],
    )


def test_non_utf8_param_names_and_values_are_kept_as_bytes():
    """docs/protocol-notes.md, peer bug 6: a non-UTF-8 value must not crash the codec or be decoded."""
    params = [
        (b"HTTP_X_LATIN1", b"caf\xe9"),
        (b"\xff\xfe", b"\xc3\x28"),
        (b"PATH_INFO", b"/\xed\xa0\x80/"),  # an encoded surrogate: invalid UTF-8
        (b"EMPTY", b""),
    ]
    tr(request(1, params), [RequestReceived(1, RESPONDER, False, params), StdinEnded(1)])
    event = FastCGIConnection().feed(request(1, params))[0]
    assert all(type(name) is bytes and type(value) is bytes for name, value in event.params)


def test_two_requests_back_to_back_in_one_buffer_with_keep_conn():
    conn = FastCGIConnection()
    events = conn.feed(request(1, [(b"A", b"1")], b"first", keep_conn=True))
    assert canon(events) == canon(
        [RequestReceived(1, RESPONDER, True, [(b"A", b"1")]), StdinReceived(1, b"first"), StdinEnded(1)]
    )
    assert conn.send_response(1, b"one") == record(STDOUT, 1, b"one") + record(STDOUT, 1) + end_request(1)
    events = conn.feed(request(1, [(b"A", b"2")], b"second", keep_conn=True))
    assert canon(events) == canon(
        [RequestReceived(1, RESPONDER, True, [(b"A", b"2")]), StdinReceived(1, b"second"), StdinEnded(1)]
    )


# -- sending --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 65534, 65535, 65536, 70_000, 131_070, 131_071, 200_000])
@pytest.mark.parametrize("method", ["send_stdout", "send_stderr"])
def test_output_is_split_at_65535_bytes(size, method):
    """docs/protocol-notes.md, peer bug 4: a 70 kB body must not overflow the 16-bit length field."""
    rtype = STDOUT if method == "send_stdout" else STDERR
    data = bytes(i * 7 % 256 for i in range(size))
    conn = _ready()
    out = getattr(conn, method)(1, data)
    recs = check_output(out)
    assert all(r.type == rtype and r.request_id == 1 for r in recs)
    assert all(0 < len(r.content) <= 65535 for r in recs), "no empty (stream-closing) record mid-stream"
    assert len(recs) == -(-size // 65535)
    assert stream_content(recs, rtype, 1) == data


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_send_stdout_accepts_bytes_like(kind):
    conn = _ready()
    data = b"y" * 70_000
    recs = check_output(conn.send_stdout(1, kind(data)))
    assert stream_content(recs, STDOUT, 1) == data
    assert check_output(conn.send_response(1, kind(b"small"))) == parse(
        record(STDOUT, 1, b"small") + record(STDOUT, 1) + end_request(1)
    )


def test_send_stdout_of_nothing_writes_nothing():
    """An empty STDOUT record would close the stream: sending b"" must not produce one."""
    conn = _ready()
    assert conn.send_stdout(1, b"") == b""
    assert conn.send_stderr(1, b"") == b""


def test_end_request_bytes():
    conn = _ready()
    assert conn.end_request(1) == record(STDOUT, 1) + end_request(1, 0, 0)


def test_end_request_bytes_close_stderr_when_it_was_used():
    conn = _ready()
    assert conn.send_stderr(1, b"warning\n") == record(STDERR, 1, b"warning\n")
    assert conn.send_stdout(1, b"Status: 200\r\n\r\nok") == record(STDOUT, 1, b"Status: 200\r\n\r\nok")
    assert conn.end_request(1, 3) == record(STDOUT, 1) + record(STDERR, 1) + end_request(1, 3, 0)


@pytest.mark.parametrize(
    ("app_status", "wire"), [(0, 0), (1, 1), (255, 255), (2**31, 2**31), (-1, 0xFFFFFFFF)]
)
def test_end_request_app_status_is_32_bit(app_status, wire):
    conn = _ready(rid=300)
    out = conn.end_request(300, app_status)
    assert out == record(STDOUT, 300) + record(END_REQUEST, 300, wire.to_bytes(4, "big") + bytes(4))


def test_send_response_bytes():
    conn = _ready(rid=2)
    body = b"Content-Type: text/plain\r\n\r\nhello"
    assert conn.send_response(2, body) == record(STDOUT, 2, body) + record(STDOUT, 2) + end_request(2)


def test_send_response_with_empty_body_and_app_status():
    conn = _ready()
    assert conn.send_response(1, b"", app_status=5) == record(STDOUT, 1) + end_request(1, 5)


def test_send_response_of_200000_bytes_is_split_and_ended():
    data = bytes(i % 253 for i in range(200_000))
    conn = _ready()
    recs = check_output(conn.send_response(1, data))
    assert [r.type for r in recs] == [STDOUT] * 4 + [STDOUT, END_REQUEST]
    assert [len(r.content) for r in recs] == [65535, 65535, 65535, 3395, 0, 8]
    assert stream_content(recs, STDOUT, 1) == data
    assert recs[-1].content == bytes(8)
