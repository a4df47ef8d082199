"""Request and connection lifecycle: ABORT_REQUEST, should_close (keep-conn and the
per-connection request limit, docs/protocol-notes.md, peer bug 15) and EOF (peer bug 3).
"""

from __future__ import annotations

import pytest

from gateway.protocol import (
    ConnectionClosed,
    FastCGIConnection,
    LocalProtocolError,
    RemoteProtocolError,
    RequestAborted,
    RequestReceived,
    StdinEnded,
    StdinReceived,
)

from ._wire import (
    DATA,
    FILTER,
    OVERLOADED,
    PARAMS,
    RESPONDER,
    STDERR,
    STDIN,
    STDOUT,
    abort,
    begin,
    canon,
    check_output,
    drain,
    end_request,
    pairs,
    record,
    request,
    tr,
)

P = [(b"REQUEST_METHOD", b"POST")]


# -- ABORT_REQUEST ----------------------------------------------------------------------


def test_abort_of_an_active_request_is_an_event_and_the_worker_still_ends_it():
    vector = begin(1) + record(PARAMS, 1, pairs(P)) + record(PARAMS, 1) + record(STDIN, 1, b"a") + abort(1)
    tr(vector, [RequestReceived(1, RESPONDER, False, P), StdinReceived(1, b"a"), RequestAborted(1)])
    conn = FastCGIConnection()
    conn.feed(vector)
    # Records still in flight after the abort are dropped.
    assert conn.feed(record(STDIN, 1, b"b") + record(STDIN, 1) + abort(1)) == []
    assert conn.active_requests == 1
    assert not conn.should_close
    out = conn.send_stderr(1, b"aborted") + conn.end_request(1, 1)
    assert out == record(STDERR, 1, b"aborted") + record(STDOUT, 1) + record(STDERR, 1) + end_request(1, 1)
    assert conn.active_requests == 0
    assert conn.should_close


def test_abort_after_the_whole_body_arrived():
    conn = FastCGIConnection()
    conn.feed(request(1, P, b"body", keep_conn=True))
    assert canon(conn.feed(abort(1))) == canon([RequestAborted(1)])
    assert conn.end_request(1) == record(STDOUT, 1) + end_request(1)
    assert canon(conn.feed(request(1, P, keep_conn=True))) == canon(
        [RequestReceived(1, RESPONDER, True, P), StdinEnded(1)]
    )


def test_abort_of_a_filter_request_during_its_data():
    conn = FastCGIConnection(roles=frozenset({FILTER}))
    conn.feed(begin(1, FILTER) + record(PARAMS, 1) + record(STDIN, 1) + record(DATA, 1, b"d"))
    assert canon(conn.feed(abort(1) + record(DATA, 1, b"more") + record(DATA, 1))) == canon(
        [RequestAborted(1)]
    )
    check_output(conn.end_request(1))


@pytest.mark.parametrize("keep_conn", [False, True])
def test_abort_during_params_is_answered_by_the_codec(keep_conn):
    vector = begin(1, keep_conn=keep_conn) + record(PARAMS, 1, pairs(P)) + abort(1)
    tr(vector, [], record(STDOUT, 1) + end_request(1))
    conn = FastCGIConnection()
    conn.feed(vector)
    assert conn.data_to_send() == record(STDOUT, 1) + end_request(1)
    assert conn.active_requests == 0
    assert conn.should_close is not keep_conn
    # The worker never saw this request and cannot answer it.
    with pytest.raises(LocalProtocolError):
        conn.end_request(1)
    # The rest of its records are ignored.
    assert conn.feed(record(PARAMS, 1) + record(STDIN, 1, b"x") + record(STDIN, 1) + abort(1)) == []
    assert conn.data_to_send() == b""


def test_abort_right_after_begin():
    tr(begin(4) + abort(4), [], record(STDOUT, 4) + end_request(4))


@pytest.mark.parametrize("rid", [1, 2, 65535])
def test_abort_for_an_unknown_request_is_ignored(rid):
    tr(abort(rid), [])
    tr(abort(rid) + request(3, P), [RequestReceived(3, RESPONDER, False, P), StdinEnded(3)])


def test_abort_after_the_response_was_sent_is_ignored():
    """nginx's abort may cross our END_REQUEST on the wire."""
    conn = FastCGIConnection()
    conn.feed(request(1, P, keep_conn=True))
    check_output(conn.send_response(1, b"done"))
    assert conn.feed(abort(1)) == []
    assert conn.data_to_send() == b""
    assert not conn.broken


# -- should_close -----------------------------------------------------------------------


def test_should_close_after_end_request_without_keep_conn():
    conn = FastCGIConnection()
    assert not conn.should_close
    conn.feed(request(1, P, b"x"))
    assert not conn.should_close
    conn.send_stdout(1, b"partial")
    assert not conn.should_close
    conn.end_request(1)
    assert conn.should_close


def test_should_close_stays_false_with_keep_conn():
    conn = FastCGIConnection()
    for _ in range(20):
        conn.feed(request(1, P, b"x", keep_conn=True))
        check_output(conn.send_response(1, b"y"))
        assert not conn.should_close


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_max_requests_closes_after_the_nth_request_and_overloads_later_ones(limit):
    conn = FastCGIConnection(max_requests=limit)
    for n in range(limit):
        events = conn.feed(request(1, P, keep_conn=True))
        assert canon(events) == canon([RequestReceived(1, RESPONDER, True, P), StdinEnded(1)])
        assert not conn.should_close
        check_output(conn.send_response(1, b"ok %d" % n))
    assert conn.should_close
    # A web server racing the close still gets a clean answer, and its records are ignored.
    assert conn.feed(request(1, P, b"late body", keep_conn=True)) == []
    assert conn.data_to_send() == end_request(1, 0, OVERLOADED)
    assert conn.active_requests == 0


def test_max_requests_with_multiplexed_requests():
    conn = FastCGIConnection(max_requests=2, multiplex=True)
    conn.feed(request(1, P, keep_conn=True) + request(2, P, keep_conn=True))
    assert conn.feed(begin(3, keep_conn=True) + record(PARAMS, 3) + record(STDIN, 3)) == []
    assert conn.data_to_send() == end_request(3, 0, OVERLOADED)
    check_output(conn.end_request(1))
    assert conn.should_close  # the limit is reached: close once the connection drains
    check_output(conn.end_request(2))
    assert conn.active_requests == 0


# -- EOF ----------------------------------------------------------------------------------


def test_eof_on_an_idle_connection():
    conn = FastCGIConnection()
    assert canon(conn.feed(b"")) == canon([ConnectionClosed(False)])
    assert conn.peer_closed
    assert conn.feed(b"") == []  # reported once


def test_eof_between_requests_is_complete():
    conn = FastCGIConnection()
    conn.feed(request(1, P, keep_conn=True))
    conn.send_response(1, b"x")
    conn.receive_data(b"")
    assert canon([conn.next_event()]) == canon([ConnectionClosed(False)])


@pytest.mark.parametrize("cut", [1, 7, 8, 9, 8 + 16 - 1])
def test_eof_with_a_partial_record_is_incomplete(cut):
    partial = record(STDIN, 1, b"0123456789abcdef")[:cut]
    conn = FastCGIConnection()
    conn.feed(begin(1) + record(PARAMS, 1))
    assert canon(conn.feed(partial + b"")) == []
    assert canon(conn.feed(b"")) == canon([ConnectionClosed(True)])


def test_eof_with_partial_padding_is_incomplete():
    conn = FastCGIConnection()
    conn.feed(begin(1) + record(PARAMS, 1))
    assert conn.feed(record(STDIN, 1, b"abc", padding=5)[:-1]) == []
    assert canon(conn.feed(b"")) == canon([ConnectionClosed(True)])


def test_eof_mid_request_is_the_client_abort_nginx_sends():
    """nginx never sends ABORT_REQUEST: it closes the connection; the worker must still be
    told, and may still produce its (unsendable) response without the codec crashing."""
    conn = FastCGIConnection()
    events = conn.feed(begin(1) + record(PARAMS, 1) + record(STDIN, 1, b"half") + b"")
    events += conn.feed(b"")
    assert canon(events) == canon(
        [RequestReceived(1, RESPONDER, False, []), StdinReceived(1, b"half"), ConnectionClosed(False)]
    )
    check_output(conn.end_request(1))


@pytest.mark.parametrize("after", [b"x", begin(1)])
def test_data_after_eof_is_an_error(after):
    conn = FastCGIConnection()
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="after EOF"):
        conn.receive_data(after)
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(after)


def test_no_events_before_a_record_is_complete():
    conn = FastCGIConnection()
    vector = request(1, P, b"body")
    for i in range(len(vector) - 1):
        conn.receive_data(vector[i : i + 1])
    # Everything but the final empty STDIN record has been delivered.
    assert canon([conn.next_event(), conn.next_event()]) == canon(
        [RequestReceived(1, RESPONDER, False, P), StdinReceived(1, b"body")]
    )
    assert repr(conn.next_event()) == "NEED_DATA"
    conn.receive_data(vector[-1:])
    assert canon([conn.next_event()]) == canon([StdinEnded(1)])


# -- events queued when a request ends ---------------------------------------------------


def test_end_request_drops_that_requests_untaken_events():
    """A next_event() user gets no event of a request after ending it, whether its later
    records arrived before end_request (queued) or after (ignored): chunking must not
    matter. Events of other requests stay, in order."""
    conn = FastCGIConnection(multiplex=True)
    conn.receive_data(
        begin(1, keep_conn=True)
        + record(PARAMS, 1)
        + record(STDIN, 1, b"a")
        + begin(2, keep_conn=True)
        + record(PARAMS, 2)
        + record(STDIN, 1, b"b")
        + abort(1)
        + record(STDIN, 2, b"c")
        + record(STDIN, 1)
    )
    assert canon([conn.next_event(), conn.next_event()]) == canon(
        [RequestReceived(1, RESPONDER, True, []), StdinReceived(1, b"a")]
    )
    check_output(conn.send_response(1, b"Status: 413\r\n\r\n"))  # answered without the body
    assert canon(drain(conn)) == canon([RequestReceived(2, RESPONDER, True, []), StdinReceived(2, b"c")])
    assert conn.feed(record(STDIN, 1, b"late")) == []


def test_dropped_events_no_longer_count_against_the_stdin_buffer():
    conn = FastCGIConnection(max_stdin_buffer=10, multiplex=True)
    conn.receive_data(
        begin(1) + record(PARAMS, 1) + begin(2) + record(PARAMS, 2) + record(STDIN, 1, b"12345678")
    )
    assert type(conn.next_event()) is RequestReceived
    check_output(conn.end_request(1))
    conn.receive_data(record(STDIN, 2, b"abcdefgh"))  # 8 + 8 > 10 had request 1's chunk stayed counted
    assert canon(drain(conn)) == canon(
        [RequestReceived(2, RESPONDER, False, []), StdinReceived(2, b"abcdefgh")]
    )


def test_end_request_keeps_a_queued_connection_closed():
    conn = FastCGIConnection()
    conn.receive_data(request(1, [], b"body"))
    conn.receive_data(b"")
    assert type(conn.next_event()) is RequestReceived
    check_output(conn.end_request(1))
    assert canon(drain(conn)) == canon([ConnectionClosed(False)])
