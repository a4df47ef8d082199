"""The native record splitter (``split`` in gateway/protocol/_pairs.c) fuzzed against the
pure-Python reference (``records.py_split_records``), side by side, and the codec run on
each of them.

- The splitters: for any two byte strings (what the codec kept, what it just received)
  both give the same records (same types: int, int, bytes) and the same bytes left over;
  neither ever raises for what it reads.
- The codec: the same byte stream, cut at the same points, fed to one connection using the
  native splitter and to one using the Python one, with the same simulated worker
  answering, gives the same events, the same replies, the same bytes kept between reads
  and the same RemoteProtocolError (message, status hint, request id).

Hypothesis drives random bytes, streams of records (any version, type, id, content and
padding, cut anywhere), and the codec fuzzer's request streams (test_fuzz.py: valid
requests, interleaved or not, then mutated); targeted cases follow. Which build is fuzzed,
and for how long: tests/protocol/_native.py (``FUZZ_PAIRS_NATIVE``, ``FUZZ_SPLIT_EXAMPLES``).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol import (
    DataEnded,
    FastCGIConnection,
    LocalProtocolError,
    RemoteProtocolError,
    RequestAborted,
    RequestReceived,
    StdinEnded,
    connection,
)
from gateway.protocol.records import py_split_records

from ._native import fuzz_split, native, needs_native
from ._wire import FILTER, begin, canon, pairs, record
from .test_fuzz import _chunks, _connection, _make_case

pytestmark = needs_native

Split = Callable[[bytes, bytes], tuple[list[tuple[int, int, bytes]], bytes]]


def agree(prev: bytes, data: bytes) -> None:
    got = native.split(prev, data)
    assert type(got) is tuple and len(got) == 2
    recs, rest = got
    assert type(recs) is list and type(rest) is bytes
    for rec in recs:
        assert type(rec) is tuple and len(rec) == 3
        assert type(rec[0]) is int and type(rec[1]) is int and type(rec[2]) is bytes
    assert got == py_split_records(prev, data), (prev[:100], data[:100])


# -- streams -----------------------------------------------------------------------------

CONTENT_SIZES = st.one_of(st.sampled_from([0, 0, 1, 7, 8, 9]), st.integers(0, 300))


@st.composite
def raw_records(draw: st.DrawFn) -> bytes:
    """One record, any header field, content and padding given their declared lengths."""
    version = draw(st.one_of(st.just(1), st.just(1), st.integers(0, 255)))
    rtype = draw(st.one_of(st.integers(1, 11), st.integers(0, 255)))
    rid = draw(st.one_of(st.sampled_from([0, 1, 2, 255, 256, 65535]), st.integers(0, 65535)))
    content = draw(st.binary(min_size=(n := draw(CONTENT_SIZES)), max_size=n))
    padding = draw(st.one_of(st.sampled_from([0, 0, 1, 7, 255]), st.integers(0, 255)))
    return record(rtype, rid, content, 0, version) + draw(st.binary(min_size=padding, max_size=padding))


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Records back to back, then (sometimes) cut, extended, given a huge declared content
    or padding length, or with a byte flipped."""
    out = bytearray(b"".join(draw(st.lists(raw_records(), max_size=8))))
    how = draw(st.sampled_from(["intact", "intact", "cut", "tail", "huge", "flip"]))
    if how == "cut" and out:
        del out[draw(st.integers(0, len(out) - 1)) :]
    elif how == "tail":
        out += draw(st.binary(min_size=1, max_size=12))
    elif how == "huge":
        out += bytes([1, draw(st.integers(0, 255)), 0, 1, 0xFF, 0xFF, draw(st.integers(0, 255)), 0])
        out += draw(st.binary(max_size=20))
    elif how == "flip" and out:
        out[draw(st.integers(0, len(out) - 1))] ^= draw(st.integers(1, 255))
    return bytes(out)


# -- properties: the splitters -----------------------------------------------------------


@fuzz_split
@given(st.binary(max_size=100), st.binary(max_size=300))
def test_random_bytes(prev, data):
    agree(prev, data)


@fuzz_split
@given(streams(), st.data())
def test_streams_cut_anywhere(stream, data):
    cut = data.draw(st.integers(0, len(stream)))
    agree(stream[:cut], stream[cut:])
    agree(b"", stream)


# -- properties: the codec on either splitter --------------------------------------------


def run_codec(split: Split, options: dict[str, Any], chunks: list[bytes]) -> list[Any]:
    """Feed ``chunks`` (then EOF) to a connection using ``split``, a worker ending each
    request once its input is complete; what happened after each chunk."""
    transcript: list[Any] = []
    with mock.patch.object(connection, "_split", split):
        conn = FastCGIConnection(**options)
        roles: dict[int, int] = {}

        def filters(ev: Any) -> bool:
            return roles.get(ev.request_id) == FILTER

        for chunk in [*chunks, b""]:
            try:
                events = conn.feed(chunk)
            except RemoteProtocolError as exc:
                transcript.append(("error", str(exc), exc.status_hint, exc.request_id, conn.data_to_send()))
                break
            out = bytearray(conn.data_to_send())
            for ev in events:
                t = type(ev)
                if t is RequestReceived:
                    roles[ev.request_id] = ev.role
                elif t is DataEnded or t is RequestAborted or (t is StdinEnded and not filters(ev)):
                    try:
                        out += conn.send_response(ev.request_id, b"Status: 200\r\n\r\nok")
                    except LocalProtocolError as exc:  # (an event of a request ended in this batch)
                        out += str(exc).encode()
            transcript.append(("ok", canon(events), bytes(out), conn._buf, conn.should_close))
    return transcript


def codec_agrees(options: dict[str, Any], chunks: list[bytes]) -> None:
    assert run_codec(native.split, options, chunks) == run_codec(py_split_records, options, chunks)


OPTIONS = st.fixed_dictionaries(
    {
        "multiplex": st.booleans(),
        "roles": st.sampled_from([frozenset({1}), frozenset({1, 2, 3})]),
        "max_params_bytes": st.sampled_from([64, 2048, 256 * 1024]),
        "max_params_count": st.sampled_from([3, 1000]),
        "max_stdin_buffer": st.sampled_from([100, 4096]),
        "max_requests": st.sampled_from([None, 1, 2]),
    }
)


@st.composite
def cut(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    points = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=6))) | {0, len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(points) if b > a]


@fuzz_split
@given(OPTIONS, streams(), st.data())
def test_the_codec_on_record_streams(options, stream, data):
    codec_agrees(options, data.draw(cut(stream)))


@fuzz_split
@given(st.randoms(use_true_random=False))
def test_the_codec_on_mutated_request_streams(rng):
    """The codec fuzzer's cases (valid requests, mutated or not), in its random chunks."""
    stream = _make_case(rng)
    options = {
        name: getattr(_connection(rng), name)
        for name in ("multiplex", "roles", "max_params_bytes", "max_params_count", "max_stdin_buffer")
    }
    codec_agrees(options, _chunks(rng, stream))


# -- targeted cases ----------------------------------------------------------------------

GET = begin(1, 1, True) + record(4, 1, pairs([(b"REQUEST_METHOD", b"GET")])) + record(4, 1) + record(5, 1)


@pytest.mark.parametrize(
    "stream",
    [
        b"",
        GET,
        GET + GET,
        record(5, 1, b"x" * 65535, 255),  # the longest record
        bytes([1, 5, 0, 1, 0xFF, 0xFF, 0xFF, 0]),  # its header alone
        bytes([2, 1, 0, 1, 0, 8, 0, 0]) + b"\0" * 8,  # a version 2 record
        GET + bytes([0, 1, 0, 1, 0xFF, 0xFF, 0, 0]),  # a bad version after whole records
        record(1, 0, b"", 200) + record(42, 0, b"abc"),
    ],
)
def test_edge_streams_at_cuts(stream):
    ats = range(len(stream) + 1)
    if len(stream) > 2000:  # the longest record: every cut near a boundary
        ats = [*range(20), *range(len(stream) - 270, len(stream) + 1)]
    for at in ats:
        agree(stream[:at], stream[at:])
    if len(stream) < 2000:
        codec_agrees({"multiplex": True}, [stream[i : i + 1] for i in range(len(stream))])
    codec_agrees({}, [stream])


def test_what_is_left_over_is_never_copied_needlessly():
    """Nothing consumed: the bytes given come back (no copy of a partial record per read)."""
    partial = bytes([1, 5, 0, 1, 0, 10, 0, 0]) + b"abc"
    recs, rest = native.split(b"", partial)
    assert recs == [] and rest is partial
    assert native.split(GET, b"") == ([(1, 1, GET[8:16]), (4, 1, GET[24:43]), (4, 1, b""), (5, 1, b"")], b"")


class BytesSub(bytes):
    pass


def test_bad_arguments_raise_and_never_crash():
    for prev, data in [(b"", bytearray(GET)), (bytearray(), GET), (b"", memoryview(GET)), (None, GET)]:
        with pytest.raises(TypeError):
            native.split(prev, data)
    with pytest.raises(TypeError):
        native.split(b"", BytesSub(GET))
    with pytest.raises(TypeError):
        native.split(GET)
    with pytest.raises(TypeError):
        native.split(b"", GET, b"")


def test_a_seeded_mutated_stream_in_one_byte_chunks():
    rng = random.Random(16)
    for _ in range(50):
        stream = _make_case(rng)
        codec_agrees({"multiplex": True}, [stream[i : i + 1] for i in range(len(stream))])
