"""The C name-value pairs decoder (gateway/protocol/_pairs.c) agrees with the pure-Python
reference on every input: the same pairs (bytes and latin-1 str), or the same
RemoteProtocolError. It must be built where the tests run (setup-env installs the
project, which compiles it): a missing build would silently cost ~5 us a request."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocol import RemoteProtocolError, records
from gateway.protocol.records import decode_pairs, encode_pairs, py_decode_pairs
from tests.capture import captured_requests

C_SOURCE = Path(records.__file__).with_name("_pairs.c")


def outcome(fn, data: bytes, max_count: int | None, text: bool) -> tuple[str, object]:
    try:
        return "ok", fn(data, max_count, text)
    except RemoteProtocolError as exc:
        return "error", (str(exc), exc.status_hint)


def test_the_c_decoder_is_built():
    assert records._c_decode is not None, (
        "gateway/protocol/_pairs.c is not built: run `pip install -e .` (or "
        "`python setup.py build_ext --inplace`) with a C compiler"
    )


def test_the_c_source_does_no_io():
    includes = re.findall(r"#include\s*[<\"]([^>\"]+)", C_SOURCE.read_text())
    assert includes == ["_pairs_items.h"]
    shared = C_SOURCE.with_name("_pairs_items.h").read_text()
    assert re.findall(r"#include\s*[<\"]([^>\"]+)", shared) == ["Python.h"]


@pytest.mark.parametrize("text", [False, True])
def test_captured_nginx_params(text):
    for params in captured_requests().values():
        body = encode_pairs(params)
        expected = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in params] if text else params
        assert decode_pairs(body, None, text) == expected
        assert py_decode_pairs(body, None, text) == expected


@pytest.mark.parametrize("text", [False, True])
def test_long_lengths_and_non_ascii(text):
    params = [(b"N" * 200, b"\xff\x00\xe9" * 70_000), (b"", b""), (b"X", b"")]
    body = encode_pairs(params)
    assert outcome(decode_pairs, body, None, text) == outcome(py_decode_pairs, body, None, text)
    assert len(decode_pairs(body, None, text)) == 3


@pytest.mark.parametrize(
    "body",
    [
        b"\x05",  # value length missing
        b"\x80\x00",  # 4-byte name length cut short
        b"\x01\x80\x00\x00",  # 4-byte value length cut short
        b"\x03\x01ab",  # runs past the end
        b"\x01\x01ab\x05",  # second pair truncated
        b"\xff\xff\xff\xff\x00",  # a 2 GiB name in a 5-byte body
        b"\x01\xff\xff\xff\xffa",  # a 2 GiB value
    ],
)
def test_malformed_bodies_give_the_same_error(body):
    for text in (False, True):
        got = outcome(decode_pairs, body, None, text)
        assert got[0] == "error"
        assert got == outcome(py_decode_pairs, body, None, text)


def test_pair_count_limit():
    body = encode_pairs([(b"a", b"1")] * 11)
    assert outcome(decode_pairs, body, 10, False) == ("error", ("more than 10 name-value pairs", 431))
    assert len(decode_pairs(body, 11, False)) == 11


def test_bytearray_input():
    body = encode_pairs([(b"A", b"b")])
    assert decode_pairs(bytearray(body)) == [(b"A", b"b")]


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=64), st.booleans(), st.one_of(st.none(), st.integers(0, 8)))
def test_random_bytes_agree(data, text, max_count):
    assert outcome(decode_pairs, data, max_count, text) == outcome(py_decode_pairs, data, max_count, text)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=300)), max_size=12),
    st.booleans(),
    st.data(),
)
def test_encoded_pairs_and_their_truncations_agree(pairs, text, data):
    body = encode_pairs(pairs)
    cut = data.draw(st.integers(0, len(body)))
    for sample in (body, body[:cut]):
        assert outcome(decode_pairs, sample, None, text) == outcome(py_decode_pairs, sample, None, text)


@pytest.mark.parametrize("text", [False, True])
def test_items_reused_by_position_are_still_the_right_ones(text):
    """The C decoder hands back last time's object for an equal item at the same position
    (nginx repeats names and most values): a changed item must never come back stale."""
    first = [(b"REMOTE_PORT", b"50001"), (b"HTTP_HOST", b"a.example"), (b"X", b"\xe9" * 300)]
    second = [(b"REMOTE_PORT", b"50002"), (b"HTTP_HOST", b"a.example"), (b"X", b"\xe8" * 300)]
    third = [(b"HTTP_HOST", b"a.example"), (b"REMOTE_PORT", b"50002")]
    for params in (first, second, third, first):
        expected = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in params] if text else params
        assert decode_pairs(encode_pairs(params), None, text) == expected
    a = decode_pairs(encode_pairs(first), None, text)
    b = decode_pairs(encode_pairs(first), None, text)
    assert a[1][0] is b[1][0]  # the same name object: its hash is computed once


@pytest.mark.parametrize("text", [False, True])
def test_the_codec_works_without_the_c_decoder(monkeypatch, text):
    """Where the C module could not be built, decode_pairs falls back to Python."""
    from gateway.protocol import FastCGIConnection, RequestReceived
    from gateway.protocol.records import encode_begin_request, encode_record

    monkeypatch.setattr(records, "_c_decode", None)
    params = [(b"REQUEST_METHOD", b"GET"), (b"HTTP_HOST", b"\xe9.example")]
    codec = FastCGIConnection(text_params=text)
    events = codec.feed(
        encode_begin_request(1) + encode_record(4, 1, encode_pairs(params)) + encode_record(4, 1)
    )
    (event,) = [ev for ev in events if type(ev) is RequestReceived]
    expected = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in params] if text else params
    assert event.params == expected
    with pytest.raises(RemoteProtocolError):
        FastCGIConnection().feed(encode_begin_request(1) + encode_record(4, 1, b"\x05") + encode_record(4, 1))
