"""Roles and multiplexing: refusals the codec answers itself (UNKNOWN_ROLE, CANT_MPX_CONN)
and ignoring the rest of a refused request (docs/protocol-notes.md, peer bug 9); the FILTER role; two
interleaved requests; request id reuse on a keep-conn connection (docs/protocol-notes.md, peer bug 2).
"""

from __future__ import annotations

import pytest

from gateway.protocol import (
    DataEnded,
    DataReceived,
    FastCGIConnection,
    LocalProtocolError,
    RequestAborted,
    RequestReceived,
    StdinEnded,
    StdinReceived,
)

from ._wire import (
    AUTHORIZER,
    CANT_MPX_CONN,
    DATA,
    FILTER,
    PARAMS,
    RESPONDER,
    STDERR,
    STDIN,
    STDOUT,
    UNKNOWN_ROLE,
    abort,
    begin,
    canon,
    check_output,
    end_request,
    pairs,
    record,
    request,
    stream_content,
    tr,
)

P = [(b"REQUEST_METHOD", b"GET")]


def _rest_of_request(rid: int) -> bytes:
    """Everything a web server may still send for a request after BEGIN_REQUEST."""
    return (
        record(PARAMS, rid, pairs(P))
        + record(PARAMS, rid)
        + record(STDIN, rid, b"body")
        + record(STDIN, rid)
        + record(DATA, rid, b"file")
        + record(DATA, rid)
        + abort(rid)
    )


# -- roles ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [AUTHORIZER, FILTER, 0, 4, 0x0101, 0xFFFF])
@pytest.mark.parametrize("keep_conn", [False, True])
def test_unknown_role_gets_unknown_role_and_the_rest_is_ignored(role, keep_conn):
    vector = begin(1, role, keep_conn) + _rest_of_request(1)
    tr(vector, [], end_request(1, 0, UNKNOWN_ROLE), roles=frozenset({RESPONDER}))
    conn = FastCGIConnection(roles=frozenset({RESPONDER}))
    conn.feed(vector)
    assert conn.active_requests == 0
    assert conn.should_close is not keep_conn
    with pytest.raises(LocalProtocolError):
        conn.send_stdout(1, b"x")


def test_unknown_role_then_same_id_with_a_served_role_works():
    conn = FastCGIConnection(roles=frozenset({RESPONDER}))
    assert conn.feed(begin(1, AUTHORIZER, keep_conn=True) + _rest_of_request(1)) == []
    assert conn.data_to_send() == end_request(1, 0, UNKNOWN_ROLE)
    events = conn.feed(request(1, P, b"abc", keep_conn=True))
    assert canon(events) == canon(
        [RequestReceived(1, RESPONDER, True, P), StdinReceived(1, b"abc"), StdinEnded(1)]
    )
    assert conn.send_response(1, b"ok") == record(STDOUT, 1, b"ok") + record(STDOUT, 1) + end_request(1)
    assert not conn.should_close


def test_filter_role_when_enabled_streams_stdin_then_data():
    roles = frozenset({RESPONDER, FILTER})
    vector = (
        begin(2, FILTER)
        + record(PARAMS, 2, pairs(P))
        + record(PARAMS, 2)
        + record(STDIN, 2, b"in1")
        + record(STDIN, 2, b"in2")
        + record(STDIN, 2)
        + record(DATA, 2, b"file1", padding=3)
        + record(DATA, 2, b"file2")
        + record(DATA, 2)
    )
    tr(
        vector,
        [
            RequestReceived(2, FILTER, False, P),
            StdinReceived(2, b"in1"),
            StdinReceived(2, b"in2"),
            StdinEnded(2),
            DataReceived(2, b"file1"),
            DataReceived(2, b"file2"),
            DataEnded(2),
        ],
        roles=roles,
    )
    conn = FastCGIConnection(roles=roles)
    conn.feed(vector)
    assert conn.send_response(2, b"filtered") == record(STDOUT, 2, b"filtered") + record(
        STDOUT, 2
    ) + end_request(2)


def test_filter_can_answer_before_its_data_and_the_rest_is_ignored():
    conn = FastCGIConnection(roles=frozenset({FILTER}))
    conn.feed(request(2, P, role=FILTER, keep_conn=True))
    check_output(conn.end_request(2))
    assert conn.feed(record(DATA, 2, b"late") + record(DATA, 2)) == []
    assert conn.data_to_send() == b""


def test_authorizer_when_enabled():
    tr(
        request(1, P, role=AUTHORIZER),
        [RequestReceived(1, AUTHORIZER, False, P), StdinEnded(1)],
        roles=frozenset({AUTHORIZER}),
    )


def test_responder_refused_when_not_served():
    tr(begin(1) + _rest_of_request(1), [], end_request(1, 0, UNKNOWN_ROLE), roles=frozenset({FILTER}))


# -- multiplexing -----------------------------------------------------------------------


def test_second_concurrent_request_without_multiplex_gets_cant_mpx_conn():
    vector = (
        begin(1, keep_conn=True)
        + record(PARAMS, 1)
        + begin(2, keep_conn=True)
        + _rest_of_request(2)
        + record(STDIN, 1, b"one")
        + record(STDIN, 1)
    )
    tr(
        vector,
        [RequestReceived(1, RESPONDER, True, []), StdinReceived(1, b"one"), StdinEnded(1)],
        end_request(2, 0, CANT_MPX_CONN),
    )
    conn = FastCGIConnection()
    conn.feed(vector)
    assert conn.active_requests == 1
    with pytest.raises(LocalProtocolError):
        conn.end_request(2)
    check_output(conn.end_request(1))
    assert conn.active_requests == 0
    # Request 2 may be retried now that the connection is free.
    events = conn.feed(request(2, P, keep_conn=True))
    assert canon(events) == canon([RequestReceived(2, RESPONDER, True, P), StdinEnded(2)])


def test_cant_mpx_conn_even_while_the_first_request_waits_for_its_response():
    conn = FastCGIConnection()
    conn.feed(request(1, P, keep_conn=True))  # DONE, not yet answered
    assert conn.feed(begin(2, keep_conn=True)) == []
    assert conn.data_to_send() == end_request(2, 0, CANT_MPX_CONN)


def test_multiplexed_interleaved_requests_get_events_per_id():
    vector = (
        begin(1, keep_conn=True)
        + begin(2, keep_conn=True)
        + record(PARAMS, 2, pairs([(b"ID", b"two")]))
        + record(PARAMS, 1, pairs([(b"ID", b"one")]))
        + record(PARAMS, 1)
        + record(STDIN, 1, b"1a")
        + record(PARAMS, 2)
        + record(STDIN, 2, b"2a")
        + record(STDIN, 1, b"1b")
        + record(STDIN, 2)
        + record(STDIN, 1)
    )
    tr(
        vector,
        [
            RequestReceived(1, RESPONDER, True, [(b"ID", b"one")]),
            StdinReceived(1, b"1a"),
            RequestReceived(2, RESPONDER, True, [(b"ID", b"two")]),
            StdinReceived(2, b"2a"),
            StdinReceived(1, b"1b"),
            StdinEnded(2),
            StdinEnded(1),
        ],
        multiplex=True,
    )
    conn = FastCGIConnection(multiplex=True)
    conn.feed(vector)
    assert conn.active_requests == 2
    out = conn.send_stdout(2, b"two") + conn.send_stdout(1, b"one") + conn.send_stderr(1, b"!")
    out += conn.end_request(2) + conn.end_request(1)
    recs = check_output(out)
    assert stream_content(recs, STDOUT, 1) == b"one"
    assert stream_content(recs, STDOUT, 2) == b"two"
    assert stream_content(recs, STDERR, 1) == b"!"
    assert stream_content(recs, STDERR, 2) == b""
    assert conn.active_requests == 0
    assert not conn.should_close


def test_multiplexed_abort_of_one_request_leaves_the_other_alone():
    conn = FastCGIConnection(multiplex=True)
    conn.feed(begin(1, keep_conn=True) + record(PARAMS, 1) + begin(2, keep_conn=True) + record(PARAMS, 2))
    events = conn.feed(abort(1) + record(STDIN, 1, b"dropped") + record(STDIN, 2, b"kept") + record(STDIN, 2))
    assert canon(events) == canon([RequestAborted(1), StdinReceived(2, b"kept"), StdinEnded(2)])


# -- request id reuse -------------------------------------------------------------------


def test_request_id_reuse_after_end_request_on_keep_conn():
    """docs/protocol-notes.md, peer bug 2: ending request 1 must not touch the next request 1."""
    conn = FastCGIConnection()
    for n in range(5):
        body = b"body %d" % n
        events = conn.feed(request(1, [(b"N", b"%d" % n)], body, keep_conn=True))
        assert canon(events) == canon(
            [RequestReceived(1, RESPONDER, True, [(b"N", b"%d" % n)]), StdinReceived(1, body), StdinEnded(1)]
        )
        assert conn.send_response(1, body) == record(STDOUT, 1, body) + record(STDOUT, 1) + end_request(1)
        assert conn.active_requests == 0
        assert not conn.should_close
        with pytest.raises(LocalProtocolError):
            conn.end_request(1)


def test_reused_id_has_its_own_keep_conn_and_role():
    conn = FastCGIConnection(roles=frozenset({RESPONDER, FILTER}))
    conn.feed(request(1, P, keep_conn=True))
    check_output(conn.end_request(1))
    assert not conn.should_close
    events = conn.feed(request(1, P, role=FILTER, keep_conn=False, data=b"d"))
    assert canon(events) == canon(
        [RequestReceived(1, FILTER, False, P), StdinEnded(1), DataReceived(1, b"d"), DataEnded(1)]
    )
    check_output(conn.end_request(1))
    assert conn.should_close


def test_request_ended_before_its_stdin_finished_ignores_the_rest_then_id_reuse_works():
    conn = FastCGIConnection()
    events = conn.feed(begin(1, keep_conn=True) + record(PARAMS, 1) + record(STDIN, 1, b"part 1"))
    assert canon(events) == canon([RequestReceived(1, RESPONDER, True, []), StdinReceived(1, b"part 1")])
    # The app answers (e.g. 413) without reading the whole body.
    assert conn.send_response(1, b"Status: 413\r\n\r\n") == (
        record(STDOUT, 1, b"Status: 413\r\n\r\n") + record(STDOUT, 1) + end_request(1)
    )
    assert conn.active_requests == 0
    # nginx keeps sending the body it already had, then the end of STDIN.
    assert (
        conn.feed(record(STDIN, 1, b"part 2") + record(STDIN, 1, b"part 3") + abort(1) + record(STDIN, 1))
        == []
    )
    assert conn.data_to_send() == b""
    # The next request with the same id is a new request, body and all.
    events = conn.feed(request(1, P, b"next body", keep_conn=True))
    assert canon(events) == canon(
        [RequestReceived(1, RESPONDER, True, P), StdinReceived(1, b"next body"), StdinEnded(1)]
    )
    assert conn.send_response(1, b"ok") == record(STDOUT, 1, b"ok") + record(STDOUT, 1) + end_request(1)


def test_early_end_then_reuse_fed_one_byte_at_a_time():
    conn = FastCGIConnection()
    conn.feed(begin(1, keep_conn=True) + record(PARAMS, 1) + record(STDIN, 1, b"x"))
    check_output(conn.end_request(1))
    rest = record(STDIN, 1, b"y" * 300) + record(STDIN, 1) + request(1, P, b"z", keep_conn=True)
    events = []
    for i in range(len(rest)):
        events += conn.feed(rest[i : i + 1])
    assert canon(events) == canon(
        [RequestReceived(1, RESPONDER, True, P), StdinReceived(1, b"z"), StdinEnded(1)]
    )
