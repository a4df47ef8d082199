"""The full request-state x record-type matrix, with expectations written out by hand.

For each state a request id can be in (no request; freed, after a complete request was
answered; PARAMS, STDIN, DATA, DONE, ABORTED, ENDED) the test drives a fresh connection
into that state through the public API only, then sends one record of each of the eleven
FastCGI 1.0 types for the same request id and checks the documented outcome. ``EXPECTED``
is written from the protocol (and the state diagram in gateway/protocol/state.py's
docstring), not read from ``state.RECEIVE``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.protocol import (
    DataEnded,
    DataReceived,
    FastCGIConnection,
    LocalProtocolError,
    RemoteProtocolError,
    RequestAborted,
    RequestReceived,
    StdinEnded,
    StdinReceived,
)

from ._wire import (
    ABORT_REQUEST,
    ALL_TYPES,
    BEGIN_REQUEST,
    DATA,
    END_REQUEST,
    FILTER,
    GET_VALUES,
    GET_VALUES_RESULT,
    PARAMS,
    RESPONDER,
    STDERR,
    STDIN,
    STDOUT,
    UNKNOWN_TYPE,
    abort,
    begin,
    canon,
    check_output,
    end_request,
    pairs,
    record,
)

RID = 5
ROLES = frozenset({RESPONDER, FILTER})

# Outcomes.
ERROR = "error"  # RemoteProtocolError, connection broken
IGNORE = "ignore"  # no event, no reply, connection fine
ACCEPT = "accept"  # a BEGIN_REQUEST taken: no event yet, the id now collects PARAMS
EVENT = "event"  # the event in EVENTS for that record type
CODEC_ENDS = "codec ends"  # the codec answers END_REQUEST itself, no event


def _to_none(conn: FastCGIConnection) -> None:
    pass


def _to_params(conn: FastCGIConnection) -> None:
    conn.feed(begin(RID, FILTER) + record(PARAMS, RID, pairs([(b"A", b"b")])))


def _to_stdin(conn: FastCGIConnection) -> None:
    _to_params(conn)
    conn.feed(record(PARAMS, RID))


def _to_data(conn: FastCGIConnection) -> None:
    _to_stdin(conn)
    conn.feed(record(STDIN, RID, b"body") + record(STDIN, RID))


def _to_done(conn: FastCGIConnection) -> None:
    _to_data(conn)
    conn.feed(record(DATA, RID, b"file") + record(DATA, RID))


def _to_aborted(conn: FastCGIConnection) -> None:
    _to_stdin(conn)
    assert canon(conn.feed(abort(RID))) == canon([RequestAborted(RID)])


def _to_ended(conn: FastCGIConnection) -> None:
    _to_stdin(conn)
    conn.feed(record(STDIN, RID, b"partial body"))
    check_output(conn.end_request(RID))  # the app answered before reading the whole body


def _to_freed(conn: FastCGIConnection) -> None:
    _to_done(conn)
    check_output(conn.end_request(RID))  # a complete request answered: the id is free again


SETUP: dict[str, Callable[[FastCGIConnection], None]] = {
    "none": _to_none,
    "freed": _to_freed,
    "PARAMS": _to_params,
    "STDIN": _to_stdin,
    "DATA": _to_data,
    "DONE": _to_done,
    "ABORTED": _to_aborted,
    "ENDED": _to_ended,
}

#: A free id: never used, or its complete request was answered.
_FREE_ID = {
    BEGIN_REQUEST: ACCEPT,
    ABORT_REQUEST: IGNORE,  # an abort racing with our END_REQUEST
    END_REQUEST: ERROR,
    PARAMS: ERROR,
    STDIN: ERROR,
    STDOUT: ERROR,
    STDERR: ERROR,
    DATA: ERROR,
    GET_VALUES: ERROR,  # management records use id 0
    GET_VALUES_RESULT: ERROR,
    UNKNOWN_TYPE: ERROR,
}

#: What each record type does for a request in each state (hand-written).
EXPECTED: dict[str, dict[int, str]] = {
    "none": _FREE_ID,
    "freed": _FREE_ID,
    "PARAMS": {
        BEGIN_REQUEST: ERROR,
        ABORT_REQUEST: CODEC_ENDS,  # the worker never heard of it
        END_REQUEST: ERROR,
        PARAMS: EVENT,
        STDIN: ERROR,
        STDOUT: ERROR,
        STDERR: ERROR,
        DATA: ERROR,
        GET_VALUES: ERROR,
        GET_VALUES_RESULT: ERROR,
        UNKNOWN_TYPE: ERROR,
    },
    "STDIN": {
        BEGIN_REQUEST: ERROR,
        ABORT_REQUEST: EVENT,
        END_REQUEST: ERROR,
        PARAMS: ERROR,
        STDIN: EVENT,
        STDOUT: ERROR,
        STDERR: ERROR,
        DATA: ERROR,  # FILTER data comes after the whole STDIN stream
        GET_VALUES: ERROR,
        GET_VALUES_RESULT: ERROR,
        UNKNOWN_TYPE: ERROR,
    },
    "DATA": {
        BEGIN_REQUEST: ERROR,
        ABORT_REQUEST: EVENT,
        END_REQUEST: ERROR,
        PARAMS: ERROR,
        STDIN: ERROR,
        STDOUT: ERROR,
        STDERR: ERROR,
        DATA: EVENT,
        GET_VALUES: ERROR,
        GET_VALUES_RESULT: ERROR,
        UNKNOWN_TYPE: ERROR,
    },
    "DONE": {
        BEGIN_REQUEST: ERROR,  # the id is busy until our END_REQUEST
        ABORT_REQUEST: EVENT,
        END_REQUEST: ERROR,
        PARAMS: ERROR,
        STDIN: ERROR,
        STDOUT: ERROR,
        STDERR: ERROR,
        DATA: ERROR,
        GET_VALUES: ERROR,
        GET_VALUES_RESULT: ERROR,
        UNKNOWN_TYPE: ERROR,
    },
    "ABORTED": {
        BEGIN_REQUEST: ERROR,  # not ended yet: the id is still busy
        ABORT_REQUEST: IGNORE,
        END_REQUEST: ERROR,
        PARAMS: IGNORE,
        STDIN: IGNORE,
        STDOUT: ERROR,
        STDERR: ERROR,
        DATA: IGNORE,
        GET_VALUES: ERROR,
        GET_VALUES_RESULT: ERROR,
        UNKNOWN_TYPE: ERROR,
    },
    "ENDED": {
        BEGIN_REQUEST: ACCEPT,  # id reuse after an early END_REQUEST
        ABORT_REQUEST: IGNORE,
        END_REQUEST: ERROR,
        PARAMS: IGNORE,
        STDIN: IGNORE,
        STDOUT: ERROR,
        STDERR: ERROR,
        DATA: IGNORE,
        GET_VALUES: ERROR,
        GET_VALUES_RESULT: ERROR,
        UNKNOWN_TYPE: ERROR,
    },
}

#: The record sent for each type (non-empty stream chunks, except PARAMS: its end).
CONTENT = {
    BEGIN_REQUEST: bytes([0, RESPONDER, 1, 0, 0, 0, 0, 0]),
    ABORT_REQUEST: b"",
    END_REQUEST: bytes(8),
    PARAMS: b"",
    STDIN: b"chunk",
    STDOUT: b"out",
    STDERR: b"err",
    DATA: b"filedata",
    GET_VALUES: pairs([(b"FCGI_MAX_CONNS", b"")]),
    GET_VALUES_RESULT: pairs([(b"FCGI_MAX_CONNS", b"1")]),
    UNKNOWN_TYPE: bytes([99]) + bytes(7),
}

EVENTS = {
    PARAMS: RequestReceived(RID, FILTER, False, [(b"A", b"b")]),
    STDIN: StdinReceived(RID, b"chunk"),
    DATA: DataReceived(RID, b"filedata"),
    ABORT_REQUEST: RequestAborted(RID),
}

CASES = [(state, rtype) for state in EXPECTED for rtype in ALL_TYPES]


def test_matrix_is_complete():
    assert set(EXPECTED) == set(SETUP)
    for state, row in EXPECTED.items():
        assert sorted(row) == list(ALL_TYPES), state


@pytest.mark.parametrize(("state", "rtype"), CASES, ids=[f"{s}-{t}" for s, t in CASES])
def test_state_x_record_type(state, rtype):
    conn = FastCGIConnection(roles=ROLES, multiplex=False)
    SETUP[state](conn)
    conn.data_to_send()
    active_before = conn.active_requests
    expected = EXPECTED[state][rtype]
    rec = record(rtype, RID, CONTENT[rtype])

    if expected == ERROR:
        with pytest.raises(RemoteProtocolError):
            conn.receive_data(rec)
        assert conn.broken
        with pytest.raises(RemoteProtocolError):  # and stays broken
            conn.receive_data(record(PARAMS, RID))
        return

    events = conn.feed(rec)
    replies = conn.data_to_send()
    assert not conn.broken
    if expected == IGNORE:
        assert events == []
        assert replies == b""
        assert conn.active_requests == active_before
    elif expected == EVENT:
        assert canon(events) == canon([EVENTS[rtype]])
        assert replies == b""
    elif expected == CODEC_ENDS:
        assert events == []
        assert replies == record(STDOUT, RID) + end_request(RID)
        assert conn.active_requests == active_before - 1
        with pytest.raises(LocalProtocolError):
            conn.end_request(RID)
    elif expected == ACCEPT:
        assert events == []
        assert replies == b""
        assert conn.active_requests == active_before + 1
        # The id is a fresh request now: its own PARAMS and STDIN streams follow.
        more = conn.feed(record(PARAMS, RID) + record(STDIN, RID, b"new") + record(STDIN, RID))
        assert canon(more) == canon(
            [RequestReceived(RID, RESPONDER, True, []), StdinReceived(RID, b"new"), StdinEnded(RID)]
        )
    else:  # pragma: no cover
        raise AssertionError(expected)


@pytest.mark.parametrize("state", ["ABORTED", "ENDED"])
def test_ignored_stream_ends_do_not_revive_a_request(state):
    """Empty PARAMS/STDIN/DATA records of an aborted or ended request are ignored too."""
    conn = FastCGIConnection(roles=ROLES)
    SETUP[state](conn)
    conn.data_to_send()
    assert conn.feed(record(PARAMS, RID) + record(STDIN, RID) + record(DATA, RID)) == []
    assert conn.data_to_send() == b""


@pytest.mark.parametrize(
    ("state", "can_send"),
    [
        ("none", False),
        ("freed", False),
        ("PARAMS", False),
        ("STDIN", True),
        ("DATA", True),
        ("DONE", True),
        ("ABORTED", True),
        ("ENDED", False),
    ],
)
def test_sending_allowed_only_for_requests_the_worker_knows(state, can_send):
    conn = FastCGIConnection(roles=ROLES)
    SETUP[state](conn)
    if can_send:
        out = conn.send_stdout(RID, b"x") + conn.send_stderr(RID, b"e") + conn.end_request(RID)
        assert out == (
            record(STDOUT, RID, b"x")
            + record(STDERR, RID, b"e")
            + record(STDOUT, RID)
            + record(STDERR, RID)
            + end_request(RID)
        )
        with pytest.raises(LocalProtocolError):
            conn.end_request(RID)
    else:
        for send in (conn.send_stdout, conn.send_stderr, conn.send_response):
            with pytest.raises(LocalProtocolError):
                send(RID, b"x")
        with pytest.raises(LocalProtocolError):
            conn.end_request(RID)


def test_data_end_in_filter_request_then_done():
    conn = FastCGIConnection(roles=ROLES)
    _to_data(conn)
    assert canon(conn.feed(record(DATA, RID))) == canon([DataEnded(RID)])
