"""FastCGI spoken directly to a running gateway (no nginx), with ``gateway.client``.

nginx never multiplexes, never aborts with FCGI_ABORT_REQUEST and never asks
FCGI_GET_VALUES, so these protocol paths are only reachable from a client that drives the
records itself: management records, multiplexing (async worker) and its refusal (sync
worker), aborts, unknown roles, KEEP_CONN, malformed records and limits, and the splitting
of large output into records of at most 65,535 bytes (docs/protocol-notes.md, peer bugs 3,
4, 9, 10).
"""

from __future__ import annotations

import itertools
import socket
import time

import pytest

from gateway.client import FastCGIClient, Record, Response, build_params, encode_request
from gateway.protocol import records as wire
from gateway.protocol.constants import MAX_CONTENT_LENGTH, ProtocolStatus, RecordType, Role

ASGI = "asgi_app:app"
WSGI = "wsgi_app:app"
WORKERS = {"async": ASGI, "sync": WSGI}
TIMEOUT = 5.0


def request_records(
    rid: int,
    path: str,
    body: bytes = b"",
    *,
    method: str = "GET",
    keep_conn: bool = True,
    role: int = Role.RESPONDER,
) -> list[bytes]:
    """One request as a list of separately encoded records (for interleaving)."""
    plist = build_params(method, path, content_length=len(body) if body else None)
    recs = [
        wire.encode_begin_request(rid, role, keep_conn),
        wire.encode_stream(RecordType.PARAMS, rid, wire.encode_pairs(plist)),
        wire.encode_record(RecordType.PARAMS, rid),
    ]
    if body:
        half = len(body) // 2
        recs += [wire.encode_record(RecordType.STDIN, rid, part) for part in (body[:half], body[half:])]
    recs.append(wire.encode_record(RecordType.STDIN, rid))
    return recs


def get(rid: int, path: str, keep_conn: bool = True, role: int = Role.RESPONDER) -> bytes:
    return encode_request(rid, build_params("GET", path), keep_conn=keep_conn, role=role)


def end_of(records: list[Record], rid: int) -> tuple[int, int]:
    ends = [r for r in records if r.type == RecordType.END_REQUEST and r.request_id == rid]
    assert len(ends) == 1, f"expected one END_REQUEST for request {rid}, got {ends}"
    return wire.decode_end_request(ends[0].content)


def assert_closed_promptly(client: FastCGIClient, within: float = 2.0) -> None:
    """The server closes the connection: the next read sees EOF well before the timeout."""
    start = time.monotonic()
    assert client.recv_record() is None
    assert client.peer_closed
    assert time.monotonic() - start < within


def serves_a_request(gw) -> None:
    with gw.client(timeout=TIMEOUT) as c:
        r = c.request("GET", "/pid")
    assert r.status == 200 and r.body.isdigit()


# -- management records ------------------------------------------------------------------


@pytest.mark.parametrize(("worker", "mpxs", "max_reqs"), [("async", b"1", b"7"), ("sync", b"0", b"1")])
def test_get_values_answers_only_the_asked_keys_truthfully(gateway_factory, worker, mpxs, max_reqs):
    gw = gateway_factory(WORKERS[worker], "--max-connections", "7")
    with gw.client(timeout=TIMEOUT) as c:
        everything = c.get_values([b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"])
    assert everything == {b"FCGI_MAX_CONNS": b"7", b"FCGI_MAX_REQS": max_reqs, b"FCGI_MPXS_CONNS": mpxs}
    with gw.client(timeout=TIMEOUT) as c:
        assert c.get_values([b"FCGI_MPXS_CONNS", b"NOT_A_FASTCGI_VARIABLE"]) == {b"FCGI_MPXS_CONNS": mpxs}
    with gw.client(timeout=TIMEOUT) as c:
        assert c.get_values([b"NOT_A_FASTCGI_VARIABLE"]) == {}


@pytest.mark.parametrize("worker", ["async", "sync"])
def test_unknown_management_type_answered_and_connection_still_serves(gateway_factory, worker):
    gw = gateway_factory(WORKERS[worker])
    with gw.client(timeout=TIMEOUT, keep_conn=True) as c:
        c.send_raw(wire.encode_record(42, 0, b"whatever"))
        rec = c.recv_record()
        assert rec == Record(RecordType.UNKNOWN_TYPE, 0, bytes([42]) + b"\0" * 7)
        r = c.request("GET", "/pid")
        assert r.status == 200
        assert c.connects == 1


# -- multiplexing --------------------------------------------------------------------------


def test_async_worker_serves_interleaved_requests_on_one_connection(gateway_factory):
    gw = gateway_factory(ASGI)
    body = b"multiplexed body " * 1000
    slow = request_records(1, "/sleep?s=0.6")
    echo = request_records(2, "/echo", body, method="POST")
    info = request_records(3, "/info?third=1")
    with gw.client(timeout=TIMEOUT, keep_conn=True) as c:
        start = time.monotonic()
        for group in itertools.zip_longest(slow, echo, info):
            for rec in group:
                if rec:
                    c.send_raw(rec)
        records = c.recv_records(1, 2, 3)
        elapsed = time.monotonic() - start
    order = [r.request_id for r in records if r.type == RecordType.END_REQUEST]
    assert order[-1] == 1, f"the sleeping request must finish last, got END_REQUEST order {order}"
    assert elapsed < 3, "requests on one connection ran one after another"
    r1, r2, r3 = (Response.from_records(records, rid) for rid in (1, 2, 3))
    assert (r1.status, r1.body) == (200, b"slept")
    assert (r2.status, r2.body) == (200, body)
    assert r3.status == 200 and r3.header("Content-Type") == "application/json"
    assert b'"query_string": "third=1"' in r3.body
    for r in (r1, r2, r3):
        assert (r.app_status, r.protocol_status) == (0, ProtocolStatus.REQUEST_COMPLETE)


def test_sync_worker_refuses_a_second_concurrent_request_with_cant_mpx_conn(gateway_factory):
    gw = gateway_factory(WSGI)
    with gw.client(timeout=TIMEOUT, keep_conn=True) as c:
        c.send_raw(get(1, "/sleep?s=0.2") + get(2, "/pid"))
        records = c.recv_records(1, 2)
        assert end_of(records, 2) == (0, ProtocolStatus.CANT_MPX_CONN)
        assert not [r for r in records if r.request_id == 2 and r.type == RecordType.STDOUT]
        first = Response.from_records(records, 1)
        assert (first.status, first.body, first.protocol_status) == (200, b"slept", 0)
        # the rest of the refused request's records were ignored: the connection still serves
        assert c.request("GET", "/pid", request_id=2).status == 200
        assert c.connects == 1


# -- abort ---------------------------------------------------------------------------------


def test_abort_request_ends_an_in_flight_request_promptly(gateway_factory):
    gw = gateway_factory(ASGI, "--graceful-timeout", "0.5s")  # the app still sleeps at teardown
    with gw.client(timeout=TIMEOUT, keep_conn=True) as c:
        c.send_raw(get(1, "/sleep?s=5"))
        time.sleep(0.2)  # the app is now sleeping
        start = time.monotonic()
        c.send_raw(wire.encode_record(RecordType.ABORT_REQUEST, 1))
        records = c.recv_records(1)
        assert time.monotonic() - start < 2
        assert end_of(records, 1)[1] == ProtocolStatus.REQUEST_COMPLETE
        gw.wait_for_log(r"request 1 aborted by the web server")
        # the id is free again and the connection keeps working
        assert c.request("GET", "/pid").status == 200


def test_abort_reaches_the_app_as_http_disconnect(gateway_factory, tmp_path):
    gw = gateway_factory(ASGI)
    marker = tmp_path / "disconnect"
    with gw.client(timeout=TIMEOUT, keep_conn=True) as c:
        c.send_raw(get(5, f"/disconnect?marker={marker}"))
        started = tmp_path / "disconnect.started"  # the app is running and waits in receive()
        deadline = time.monotonic() + 5
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists()
        c.send_raw(wire.encode_record(RecordType.ABORT_REQUEST, 5))
        records = c.recv_records(5)
        assert end_of(records, 5)[1] == ProtocolStatus.REQUEST_COMPLETE
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.read_text() == "http.disconnect"


# -- roles and KEEP_CONN -------------------------------------------------------------------


@pytest.mark.parametrize("worker", ["async", "sync"])
@pytest.mark.parametrize("role", [Role.AUTHORIZER, Role.FILTER])
def test_unknown_role_refused_and_connection_keeps_working(gateway_factory, worker, role):
    gw = gateway_factory(WORKERS[worker])
    with gw.client(timeout=TIMEOUT, keep_conn=True) as c:
        refused = c.request("GET", "/pid", role=role)
        assert refused.protocol_status == ProtocolStatus.UNKNOWN_ROLE
        assert (refused.status, refused.body) == (0, b"")
        ok = c.request("GET", "/pid")
        assert ok.status == 200 and ok.body.isdigit()
        assert c.connects == 1


@pytest.mark.parametrize("worker", ["async", "sync"])
def test_without_keep_conn_the_gateway_closes_after_end_request(gateway_factory, worker):
    gw = gateway_factory(WORKERS[worker])
    with gw.client(timeout=TIMEOUT) as c:
        c.send_raw(get(1, "/pid", keep_conn=False))
        records = c.recv_records(1)
        assert Response.from_records(records).status == 200
        assert_closed_promptly(c)


@pytest.mark.parametrize("worker", ["async", "sync"])
def test_with_keep_conn_the_connection_stays_open(gateway_factory, worker):
    gw = gateway_factory(WORKERS[worker])
    with gw.client(timeout=TIMEOUT, keep_conn=True) as c:
        for _ in range(3):
            assert c.request("GET", "/pid").status == 200
        c.sock.settimeout(0.3)  # idle: nothing arrives and the server does not close
        with pytest.raises(TimeoutError):
            c.sock.recv(1)
        c.sock.settimeout(TIMEOUT)
        assert c.request("GET", "/pid").status == 200
        assert c.connects == 1


# -- malformed input and limits --------------------------------------------------------------


@pytest.mark.parametrize("worker", ["async", "sync"])
def test_bad_version_closes_the_connection_and_is_logged(gateway_factory, worker):
    gw = gateway_factory(WORKERS[worker])
    bad = bytearray(get(1, "/pid"))
    bad[0] = 2  # FastCGI version 2 does not exist
    with gw.client(timeout=TIMEOUT) as c:
        c.send_raw(bytes(bad))
        assert_closed_promptly(c)
    gw.wait_for_log(r"FastCGI protocol error.*unsupported FastCGI version 2")
    serves_a_request(gw)


@pytest.mark.parametrize("worker", ["async", "sync"])
def test_oversize_params_answered_431_and_worker_survives(gateway_factory, worker):
    gw = gateway_factory(WORKERS[worker], "--max-params-size", "1K")
    with gw.client(timeout=TIMEOUT) as c:
        params = [*build_params("GET", "/pid"), (b"HTTP_X_BIG", b"v" * 4096)]
        c.send_raw(encode_request(1, params))
        records = c.recv_records()  # until the gateway closes
        assert c.peer_closed
    # A 431 answer from the gateway itself (the request never reached the app), ended
    # properly, then the connection is closed; never a half-written record.
    resp = Response.from_records(records)
    assert resp.status == 431
    assert end_of(records, 1)[1] == ProtocolStatus.REQUEST_COMPLETE
    gw.wait_for_log(r"FastCGI protocol error.*params exceed 1024 bytes")
    serves_a_request(gw)
    assert gw.proc.poll() is None


@pytest.mark.parametrize("worker", ["async", "sync"])
def test_client_that_connects_and_closes_does_not_break_the_worker(gateway_factory, worker):
    gw = gateway_factory(WORKERS[worker])
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(gw.socket_path)
        s.close()
    with gw.client(timeout=TIMEOUT) as c:
        c.send_raw(get(1, "/pid", keep_conn=False)[:20])  # half a request, then EOF
    serves_a_request(gw)


# -- output framing ---------------------------------------------------------------------------


@pytest.mark.parametrize("worker", ["async", "sync"])
def test_large_response_is_split_into_records_of_at_most_65535_bytes(gateway_factory, worker):
    gw = gateway_factory(WORKERS[worker])
    size = 200 * 1024
    with gw.client(timeout=TIMEOUT) as c:
        c.send_raw(get(1, f"/stream?size={size}&chunk={size}", keep_conn=False))
        records = c.recv_records(1)
    stdout = [r for r in records if r.type == RecordType.STDOUT]
    assert max(len(r.content) for r in stdout) <= MAX_CONTENT_LENGTH
    assert len(stdout) >= 5  # 200 KB of body in one app write needs at least 4 full records
    assert stdout[-1].content == b""  # the stream ends with an empty STDOUT record
    resp = Response.from_records(records)
    assert resp.status == 200
    assert resp.body == b"x" * size
