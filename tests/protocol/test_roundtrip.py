"""Hypothesis round trips: name-value pairs, whole requests split at random points, and
output of random sizes, each compared with the independent encoder/decoder in _wire.py.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.protocol import (
    ConnectionClosed,
    DataEnded,
    DataReceived,
    FastCGIConnection,
    RemoteProtocolError,
    RequestReceived,
    StdinEnded,
    StdinReceived,
)
from gateway.protocol.records import decode_pairs, encode_pairs

from ._wire import (
    DATA,
    FILTER,
    PARAMS,
    RESPONDER,
    STDERR,
    STDIN,
    STDOUT,
    begin,
    check_output,
    decode_nv,
    end_request,
    pairs,
    record,
    stream_content,
)

# Short strings, plus some over 127 bytes to exercise 4-byte lengths.
blob = st.one_of(st.binary(max_size=20), st.binary(min_size=120, max_size=300))
pair_lists = st.lists(st.tuples(blob, blob), max_size=12)


@settings(deadline=None)
@given(pair_lists)
def test_pairs_round_trip(items):
    encoded = encode_pairs(items)
    assert encoded == pairs(items)
    assert decode_pairs(encoded) == items
    assert decode_nv(encoded) == items


@settings(deadline=None)
@given(pair_lists)
def test_pairs_decode_non_canonical_long_lengths(items):
    assert decode_pairs(pairs(items, long=True)) == items


@settings(deadline=None)
@given(pair_lists, st.data())
def test_pairs_truncated_anywhere_is_an_error_or_a_prefix(items, data):
    """A cut inside a pair raises; a cut between pairs decodes to a prefix. Never anything
    else (IndexError, struct.error, a wrong pair)."""
    encoded = encode_pairs(items)
    cut = data.draw(st.integers(0, len(encoded)))
    try:
        decoded = decode_pairs(encoded[:cut])
    except RemoteProtocolError:
        return
    assert decoded == items[: len(decoded)]
    assert encode_pairs(decoded) == encoded[:cut]


def _split_points(draw, length: int) -> list[int]:
    cuts = draw(st.lists(st.integers(0, length), max_size=12))
    return sorted(set(cuts))


@st.composite
def requests(draw):
    """(wire bytes, expected params, expected body, keep_conn, role, filter data)."""
    rid = draw(st.integers(1, 65535))
    role = draw(st.sampled_from([RESPONDER, FILTER]))
    keep_conn = draw(st.booleans())
    params = draw(pair_lists)
    body_chunks = draw(st.lists(st.binary(min_size=1, max_size=200), max_size=6))
    data_chunks = draw(st.lists(st.binary(min_size=1, max_size=50), max_size=3)) if role == FILTER else []
    pad = st.integers(0, 255)

    block = pairs(params)
    cuts = _split_points(draw, len(block))
    pieces = [block[a:b] for a, b in zip([0, *cuts], [*cuts, len(block)], strict=True)]
    wire = begin(rid, role, keep_conn, draw(pad))
    wire += b"".join(record(PARAMS, rid, p, draw(pad)) for p in pieces if p)
    wire += record(PARAMS, rid, b"", draw(pad))
    wire += b"".join(record(STDIN, rid, c, draw(pad)) for c in body_chunks)
    wire += record(STDIN, rid, b"", draw(pad))
    if role == FILTER:
        wire += b"".join(record(DATA, rid, c, draw(pad)) for c in data_chunks)
        wire += record(DATA, rid, b"", draw(pad))
    return rid, wire, params, body_chunks, keep_conn, role, data_chunks


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.data())
def test_request_split_at_random_points_decodes_identically(req, data):
    rid, wire, params, body_chunks, keep_conn, role, data_chunks = req
    cuts = _split_points(data.draw, len(wire))
    conn = FastCGIConnection(roles=frozenset({RESPONDER, FILTER}))
    events = []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        if b > a:  # an empty chunk would mean EOF
            events += conn.feed(wire[a:b])
    events += conn.feed(b"")

    assert type(events[0]) is RequestReceived
    assert events[0] == (rid, role, keep_conn, params)
    kinds = [type(e) for e in events]
    expected = [RequestReceived] + [StdinReceived] * len(body_chunks) + [StdinEnded]
    if role == FILTER:
        expected += [DataReceived] * len(data_chunks) + [DataEnded]
    assert kinds == [*expected, ConnectionClosed]
    assert events[-1] == ConnectionClosed(False)
    assert [e.data for e in events if type(e) is StdinReceived] == body_chunks
    assert [e.data for e in events if type(e) is DataReceived] == data_chunks
    assert all(e.request_id == rid for e in events[:-1])
    assert conn.data_to_send() == b""
    out = check_output(conn.send_response(rid, b"r"))
    assert out[-1].content == end_request(rid)[8:]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 250_000), st.sampled_from(["send_stdout", "send_stderr", "send_response"]), st.randoms()
)
def test_output_of_any_size_decodes_back(size, method, rnd: random.Random):
    data = rnd.randbytes(size)
    conn = FastCGIConnection()
    conn.feed(begin(3) + record(PARAMS, 3) + record(STDIN, 3))
    recs = check_output(getattr(conn, method)(3, data))
    rtype = STDERR if method == "send_stderr" else STDOUT
    assert stream_content(recs, rtype, 3) == data
    chunks = [r for r in recs if r.type == rtype]
    if method == "send_response":
        assert chunks[-1].content == b""  # the stream is closed, then END_REQUEST
        chunks = chunks[:-1]
    assert all(0 < len(r.content) <= 65535 for r in chunks)
    assert len(chunks) == -(-size // 65535)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=8))
def test_many_writes_then_end_form_one_valid_stream(writes):
    conn = FastCGIConnection()
    conn.feed(begin(1) + record(PARAMS, 1) + record(STDIN, 1))
    out = b"".join(conn.send_stdout(1, w) for w in writes) + conn.end_request(1)
    recs = check_output(out)
    assert stream_content(recs, STDOUT, 1) == b"".join(writes)
    # Exactly one empty STDOUT record, right before END_REQUEST.
    assert [i for i, r in enumerate(recs) if r.type == STDOUT and not r.content] == [len(recs) - 2]
