"""The native name-value pairs scanner (gateway/protocol/_pairs.c) fuzzed against the
pure-Python reference, side by side: for every body both give the same pairs (same types,
same order) or both reject it (ValueError from the scanner, RemoteProtocolError from
Python); nothing else is ever raised, and nothing crashes.

Hypothesis drives random bytes, structured bodies (lengths around the 1-/4-byte boundary
and the item cache's limits, 4-byte forms of small lengths, then truncated, extended, or
given a huge declared length), and sequences of related bodies (the scanner hands back the
previous body's objects by position, so its state across calls is fuzzed too); targeted
cases follow. Which build is fuzzed, and for how long: tests/protocol/_native.py
(``FUZZ_PAIRS_NATIVE``, ``FUZZ_PAIRS_EXAMPLES``).
"""

from __future__ import annotations

import gc
import struct
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol import RemoteProtocolError, records
from gateway.protocol.records import py_decode_pairs

from ._native import NATIVE_PATH, fuzz, load_from, native, needs_native

pytestmark = needs_native
#: The scanner's item cache (_pairs_items.h): item positions kept, largest item kept.
CACHED_ITEMS, CACHED_SIZE = 128, 256


def native_outcome(body: bytes, text: bool) -> tuple[str, object]:
    try:
        pairs = native.decode(body, text)
    except ValueError as exc:
        assert str(exc) == "malformed name-value pairs body"
        return "rejected", None
    kind = str if text else bytes
    assert type(pairs) is list
    for pair in pairs:
        assert type(pair) is tuple and len(pair) == 2
        assert type(pair[0]) is kind and type(pair[1]) is kind
    return "ok", pairs


def python_outcome(body: bytes, text: bool) -> tuple[str, object]:
    try:
        return "ok", py_decode_pairs(body, None, text)
    except RemoteProtocolError:
        return "rejected", None


def agree(body: bytes, text: bool) -> None:
    assert native_outcome(body, text) == python_outcome(body, text), body[:200]


# -- building bodies ---------------------------------------------------------------------


def length_field(n: int, wide: bool) -> bytes:
    """A FastCGI length: 1 byte below 128 unless ``wide``; else 4 bytes, top bit set (the
    4-byte form of a small length is legal, and nobody's encoder emits it)."""
    return bytes((n,)) if n < 128 and not wide else struct.pack("!L", n | 0x80000000)


SIZES = st.one_of(
    st.sampled_from([0, 1, 126, 127, 128, 129, CACHED_SIZE - 1, CACHED_SIZE, CACHED_SIZE + 1, 1000]),
    st.integers(0, 300),
)


@st.composite
def items(draw: st.DrawFn) -> bytes:
    return draw(st.binary(min_size=(n := draw(SIZES)), max_size=n))


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A well-formed body, then (most of the time) broken one way or another."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 8))):
        name, value = draw(items()), draw(items())
        out += length_field(len(name), draw(st.booleans())) + length_field(len(value), draw(st.booleans()))
        out += name + value
    how = draw(st.sampled_from(["intact", "cut", "tail", "huge", "flip"]))
    if how == "cut" and out:
        del out[draw(st.integers(0, len(out) - 1)) :]
    elif how == "tail":
        out += draw(st.binary(min_size=1, max_size=12))
    elif how == "huge":
        declared = draw(st.sampled_from([0x7FFFFFFF, 0x7FFFFFFE, 0x40000000, len(out) + 1, 0xFFFF]))
        at = draw(st.integers(0, len(out)))
        out[at:at] = struct.pack("!L", declared | 0x80000000) + draw(st.binary(max_size=6))
    elif how == "flip" and out:
        at = draw(st.integers(0, len(out) - 1))
        out[at] ^= draw(st.integers(1, 255))
    return bytes(out)


@st.composite
def related_bodies(draw: st.DrawFn) -> list[tuple[bytes, bool]]:
    """Bodies that share most items position by position (as nginx's do), some with more
    pairs than the item cache keeps: each variant changes a few values, to another value of
    the same length or not; decoded in turn in either mode."""
    count = draw(st.sampled_from([1, 5, 20, CACHED_ITEMS // 2 - 1, CACHED_ITEMS // 2, CACHED_ITEMS // 2 + 3]))
    small = st.binary(max_size=20)
    base = [(draw(small), draw(small)) for _ in range(count)]
    out = []
    for _ in range(draw(st.integers(2, 6))):
        variant = list(base)
        for i in draw(st.lists(st.integers(0, count - 1), max_size=4)):
            name, value = variant[i]
            if draw(st.booleans()) and value:
                value = bytes([value[0] ^ 1]) + value[1:]  # same length, other bytes
            else:
                value = draw(st.binary(max_size=CACHED_SIZE + 2))
            variant[i] = (name, value)
        out.append((records.encode_pairs(variant), draw(st.booleans())))
    return out


# -- properties --------------------------------------------------------------------------


@fuzz
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes(body, text):
    agree(body, text)


@fuzz
@given(bodies(), st.booleans())
def test_structured_and_broken_bodies(body, text):
    agree(body, text)


@fuzz
@given(related_bodies())
def test_sequences_of_related_bodies(sequence):
    for body, text in sequence:
        agree(body, text)


@fuzz
@given(bodies(), st.booleans(), st.one_of(st.none(), st.integers(0, 9)))
def test_decode_pairs_with_this_scanner_gives_the_references_outcome(body, text, max_count):
    """Through records.decode_pairs (the scanner, then Python for any body it rejects):
    the same pairs or the same RemoteProtocolError (message and status hint)."""

    def outcome(fn):
        try:
            return "ok", fn(body, max_count, text)
        except RemoteProtocolError as exc:
            return "error", (str(exc), exc.status_hint)

    with mock.patch.object(records, "_c_decode", native.decode):
        assert outcome(records.decode_pairs) == outcome(py_decode_pairs)


# -- targeted cases ----------------------------------------------------------------------


def wide(n: int) -> bytes:
    return length_field(n, True)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00\x00",
        b"\x00\x00" * 200,  # more empty pairs than the cache keeps
        wide(1) + wide(1) + b"ab",  # 4-byte forms of small lengths
        wide(0) + b"\x00",
        b"\x00" + wide(0),
        wide(128) + wide(70_000) + b"N" * 128 + b"\xe9" * 70_000,
        b"\x01" + wide(CACHED_SIZE + 1) + b"n" + b"v" * (CACHED_SIZE + 1),
        bytes(range(128)) + bytes(range(128)),  # lengths 0..127 then their bytes
        b"\x02\x03\xff\xfe\x80\x81\x00",  # not UTF-8
        b"\x7f\x7f" + bytes(range(256))[:254],
    ],
)
@pytest.mark.parametrize("text", [False, True])
def test_edge_bodies_and_each_of_their_truncations(body, text):
    agree(body, text)
    for cut in range(min(len(body), 300)):
        agree(body[:cut], text)


@pytest.mark.parametrize(
    "body",
    [
        b"\x80",  # 4-byte length cut after 1, 2, 3 bytes
        b"\x80\x00",
        b"\x80\x00\x00",
        b"\x01\x80\x00\x00",
        b"\xff\xff\xff\xff\x00",  # a 2 GiB name in a 5-byte body
        b"\x00\xff\xff\xff\xff",
        b"\xff\xff\xff\xff\xff\xff\xff\xff",  # name and value both 2 GiB: their sum overflows 31 bits
        wide(0x7FFFFFFF) + wide(0x7FFFFFFF) + b"x" * 64,
        wide(3) + wide(0x7FFFFFFE) + b"abc",
        b"\x01\x01ab" * 10 + b"\x05",
        b"\x00\x00" * 100 + b"\x80\x00\x00",
    ],
)
@pytest.mark.parametrize("text", [False, True])
def test_truncated_and_huge_lengths_are_rejected_by_both(body, text):
    assert native_outcome(body, text) == ("rejected", None)
    assert python_outcome(body, text) == ("rejected", None)


def test_every_byte_value_in_text_mode_is_its_latin1_code_point():
    every = bytes(range(256))
    body = wide(256) + wide(256) + every + every[::-1]
    ((name, value),) = native.decode(body, True)
    assert [ord(c) for c in name] == list(range(256))
    assert [ord(c) for c in value] == list(range(255, -1, -1))
    assert native.decode(body, False) == [(every, every[::-1])]


def test_the_same_positions_in_both_modes_never_mix():
    """bytes and str items are cached apart: switching modes on one body gives each its type."""
    body = records.encode_pairs([(b"HTTP_HOST", b"a.example"), (b"X", b"\xe9")])
    for _ in range(3):
        assert native.decode(body, True) == [("HTTP_HOST", "a.example"), ("X", "\xe9")]
        assert native.decode(body, False) == [(b"HTTP_HOST", b"a.example"), (b"X", b"\xe9")]


class Explodes:
    def __bool__(self) -> bool:
        raise ZeroDivisionError("text flag")


def test_bad_arguments_raise_and_never_crash():
    body = records.encode_pairs([(b"A", b"b")])
    for data in (bytearray(body), memoryview(body), body.decode(), type("B", (bytes,), {})(body), None):
        with pytest.raises(TypeError):
            native.decode(data, False)
    with pytest.raises(TypeError):
        native.decode(body)
    with pytest.raises(TypeError):
        native.decode(body, False, None)
    with pytest.raises(ZeroDivisionError):
        native.decode(body, Explodes())


@pytest.mark.skipif(not (NATIVE_PATH or getattr(native, "__file__", None)), reason="no shared object")
def test_module_objects_each_have_their_own_cache():
    """Multi-phase init with module state: a second module object from the same shared
    object works on its own, and freeing one leaves the other's cache intact."""
    first, second = load_from(native.__file__), load_from(native.__file__)
    assert first is not second
    body = records.encode_pairs([(b"HTTP_HOST", b"a.example"), (b"REMOTE_PORT", b"5000")])
    a = first.decode(body, False)
    b = second.decode(body, False)
    assert a == b
    assert a[0][0] is first.decode(body, False)[0][0]  # the same object, from first's cache
    assert a[0][0] is not b[0][0]  # each module object has its own cache
    del first
    gc.collect()
    assert second.decode(body, True) == [("HTTP_HOST", "a.example"), ("REMOTE_PORT", "5000")]
    assert second.decode(body, False)[0][0] is b[0][0]
