"""Every FastCGI 1.0 record type, bad versions, and the management records the codec
answers by itself: GET_VALUES (docs/protocol-notes.md, peer bug 10) and unknown record types.
"""

from __future__ import annotations

import pytest

from gateway.protocol import (
    FCGI_KEEP_CONN,
    MAX_CONTENT_LENGTH,
    DataEnded,
    DataReceived,
    FastCGIConnection,
    ProtocolStatus,
    RecordType,
    RemoteProtocolError,
    RequestAborted,
    RequestReceived,
    Role,
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
    decode_nv,
    end_request,
    pairs,
    record,
    request,
    tr,
    tr_error,
)

#: Types only an application sends: a web server sending one breaks the protocol.
NEVER_RECEIVED = [END_REQUEST, STDOUT, STDERR, GET_VALUES_RESULT, UNKNOWN_TYPE]
NAMES = {
    END_REQUEST: "END_REQUEST",
    STDOUT: "STDOUT",
    STDERR: "STDERR",
    GET_VALUES_RESULT: "GET_VALUES_RESULT",
    UNKNOWN_TYPE: "UNKNOWN_TYPE",
}


def _get_values(*names: bytes, values: bytes = b"") -> bytes:
    return record(GET_VALUES, 0, pairs([(n, values) for n in names]))


def _result(*answers: tuple[bytes, bytes]) -> bytes:
    return record(GET_VALUES_RESULT, 0, pairs(answers))


def _unknown_type_reply(rtype: int) -> bytes:
    return record(UNKNOWN_TYPE, 0, bytes([rtype]) + bytes(7))


# -- the request-carrying types -------------------------------------------------------


def test_begin_params_stdin_types_make_a_request():
    tr(
        request(3, [(b"A", b"b")], b"in"),
        [RequestReceived(3, RESPONDER, False, [(b"A", b"b")]), StdinReceived(3, b"in"), StdinEnded(3)],
    )


def test_data_type_carries_the_filter_file():
    tr(
        request(3, [], b"in", role=FILTER, data=b"file data"),
        [
            RequestReceived(3, FILTER, False, []),
            StdinReceived(3, b"in"),
            StdinEnded(3),
            DataReceived(3, b"file data"),
            DataEnded(3),
        ],
        roles=frozenset({RESPONDER, FILTER}),
    )


def test_abort_request_type_aborts_an_active_request():
    tr(
        begin(3) + record(PARAMS, 3) + abort(3),
        [RequestReceived(3, RESPONDER, False, []), RequestAborted(3)],
    )


@pytest.mark.parametrize("length", [0, 7, 9, 16])
def test_begin_request_body_must_be_8_bytes(length):
    body = (bytes([0, RESPONDER]) + bytes(14))[:length]
    tr_error(record(BEGIN_REQUEST, 1, body), "BEGIN_REQUEST body must be 8 bytes")


@pytest.mark.parametrize("rtype", NEVER_RECEIVED)
@pytest.mark.parametrize("rid", [0, 1])
def test_records_an_application_never_receives_are_errors(rtype, rid):
    content = bytes(8)
    tr_error(record(rtype, rid, content), NAMES[rtype])


@pytest.mark.parametrize("rtype", NEVER_RECEIVED)
def test_never_received_types_are_errors_mid_request(rtype):
    """Even with a request in progress, e.g. a STDOUT echoed back for it."""
    vector = begin(1) + record(PARAMS, 1) + record(rtype, 1, bytes(8))
    conn = FastCGIConnection()
    with pytest.raises(RemoteProtocolError, match=NAMES[rtype]):
        conn.receive_data(vector)
    assert canon([conn.next_event()]) == canon([RequestReceived(1, RESPONDER, False, [])])
    assert conn.broken


def test_get_values_with_a_request_id_is_an_error():
    tr_error(record(GET_VALUES, 1, pairs([(b"FCGI_MAX_CONNS", b"")])), "GET_VALUES")


@pytest.mark.parametrize("rtype", [BEGIN_REQUEST, ABORT_REQUEST, PARAMS, STDIN, DATA])
def test_request_records_with_request_id_0_are_errors(rtype):
    content = bytes([0, 1, 0, 0, 0, 0, 0, 0]) if rtype == BEGIN_REQUEST else b""
    tr_error(record(rtype, 0, content), "request id 0")


# -- versions -------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 2, 3, 0x80, 255])
def test_bad_version_is_a_remote_protocol_error(version):
    tr_error(record(BEGIN_REQUEST, 1, bytes([0, 1]) + bytes(6), version=version), f"version {version}")


@pytest.mark.parametrize("version", [0, 2])
def test_bad_version_after_good_records_still_delivers_the_good_ones(version):
    conn = FastCGIConnection()
    with pytest.raises(RemoteProtocolError, match="version"):
        conn.receive_data(begin(1) + record(PARAMS, 1) + record(STDIN, 1, b"x", version=version))
    assert conn.next_event() == RequestReceived(1, RESPONDER, False, [])
    assert conn.broken


def test_bad_version_is_detected_from_the_header_alone():
    """No need to wait for a (possibly huge) body of a record that is already invalid."""
    conn = FastCGIConnection()
    with pytest.raises(RemoteProtocolError, match="version 9"):
        conn.receive_data(bytes([9, 1, 0, 1, 0xFF, 0xFF, 0xFF, 0]))


# -- GET_VALUES -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "asked", "answers"),
    [
        ({}, [b"FCGI_MAX_CONNS"], [(b"FCGI_MAX_CONNS", b"1")]),
        ({}, [b"FCGI_MAX_REQS"], [(b"FCGI_MAX_REQS", b"1")]),
        ({}, [b"FCGI_MPXS_CONNS"], [(b"FCGI_MPXS_CONNS", b"0")]),
        ({"multiplex": True}, [b"FCGI_MPXS_CONNS"], [(b"FCGI_MPXS_CONNS", b"1")]),
        (
            {"max_conns": 64, "max_reqs": 128, "multiplex": True},
            [b"FCGI_MPXS_CONNS", b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS"],
            [(b"FCGI_MPXS_CONNS", b"1"), (b"FCGI_MAX_CONNS", b"64"), (b"FCGI_MAX_REQS", b"128")],
        ),
        (
            {"max_conns": 10},
            [b"FCGI_NOT_A_VAR", b"FCGI_MAX_CONNS", b"fcgi_max_reqs"],
            [(b"FCGI_MAX_CONNS", b"10")],
        ),
        ({}, [b"UNKNOWN"], []),
        ({}, [], []),
    ],
)
def test_get_values_answers_only_the_keys_asked_truthfully(kwargs, asked, answers):
    tr(_get_values(*asked), [], _result(*answers), **kwargs)


def test_get_values_ignores_values_sent_with_the_names():
    tr(_get_values(b"FCGI_MAX_REQS", values=b"999"), [], _result((b"FCGI_MAX_REQS", b"7")), max_reqs=7)


def test_get_values_repeated_name_answered_once():
    """A query repeating a name must not grow the reply (it once overflowed one record)."""
    conn = FastCGIConnection(max_params_count=100_000, max_conns=10**9)
    conn.receive_data(_get_values(*[b"FCGI_MAX_CONNS"] * 4000))
    recs = check_output(conn.data_to_send())
    assert len(recs) == 1
    assert decode_nv(recs[0].content) == [(b"FCGI_MAX_CONNS", b"1000000000")]


def test_get_values_with_a_truncated_body_is_an_error():
    tr_error(record(GET_VALUES, 0, b"\x0e\x00FCGI_MAX"), "name-value pair")


def test_get_values_between_records_of_a_request():
    vector = begin(1) + _get_values(b"FCGI_MPXS_CONNS") + record(PARAMS, 1) + record(STDIN, 1)
    tr(
        vector,
        [RequestReceived(1, RESPONDER, False, []), StdinEnded(1)],
        _result((b"FCGI_MPXS_CONNS", b"0")),
    )


# -- unknown types ------------------------------------------------------------------------


@pytest.mark.parametrize("rtype", [0, 12, 13, 42, 127, 128, 255])
def test_unknown_management_type_is_answered_with_unknown_type(rtype):
    tr(record(rtype, 0, b"whatever"), [], _unknown_type_reply(rtype))


@pytest.mark.parametrize("rtype", [0, 12, 255])
def test_unknown_type_then_a_request_on_the_same_connection_works(rtype):
    vector = record(rtype, 0) + request(1, [(b"A", b"b")], b"x")
    tr(
        vector,
        [RequestReceived(1, RESPONDER, False, [(b"A", b"b")]), StdinReceived(1, b"x"), StdinEnded(1)],
        _unknown_type_reply(rtype),
    )
    conn = FastCGIConnection()
    conn.feed(vector)
    assert conn.data_to_send() == _unknown_type_reply(rtype)
    assert conn.send_response(1, b"ok") == record(STDOUT, 1, b"ok") + record(STDOUT, 1) + end_request(1)


def test_unknown_type_with_a_request_id_is_answered_too():
    vector = begin(1) + record(PARAMS, 1) + record(77, 1, b"??") + record(STDIN, 1)
    tr(vector, [RequestReceived(1, RESPONDER, False, []), StdinEnded(1)], _unknown_type_reply(77))


def test_several_management_records_answered_in_order():
    vector = record(20, 0) + _get_values(b"FCGI_MAX_CONNS") + record(21, 0)
    tr(
        vector,
        [],
        _unknown_type_reply(20) + _result((b"FCGI_MAX_CONNS", b"1")) + _unknown_type_reply(21),
    )


def test_wire_constants_match_the_specification():
    assert {t.name: int(t) for t in RecordType} == dict(
        zip(
            [
                "BEGIN_REQUEST",
                "ABORT_REQUEST",
                "END_REQUEST",
                "PARAMS",
                "STDIN",
                "STDOUT",
                "STDERR",
                "DATA",
                "GET_VALUES",
                "GET_VALUES_RESULT",
                "UNKNOWN_TYPE",
            ],
            ALL_TYPES,
            strict=True,
        )
    )
    assert {r.name: int(r) for r in Role} == {"RESPONDER": 1, "AUTHORIZER": 2, "FILTER": 3}
    assert {s.name: int(s) for s in ProtocolStatus} == {
        "REQUEST_COMPLETE": 0,
        "CANT_MPX_CONN": 1,
        "OVERLOADED": 2,
        "UNKNOWN_ROLE": 3,
    }
    assert (FCGI_KEEP_CONN, MAX_CONTENT_LENGTH) == (1, 65535)
