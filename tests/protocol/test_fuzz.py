"""Fuzzing: the codec must never crash, whatever the web server sends.

A seeded random loop (deterministic, fast: no shrinking needed to read a failure, the case
number and seed are in the assertion message) builds streams of four kinds:

- random bytes;
- random records (random version, type, id, content and padding lengths);
- valid request streams (sequential or interleaved, with management records), mutated by
  flipping bytes, truncating, duplicating/dropping/swapping records and changing their
  type, length, padding, id or version bytes;
- valid streams left intact (so the happy path stays covered under random chunking).

Each is fed in random chunks to a connection with random options, driven by a simulated
worker that answers requests like a real one would. Asserted for every case: no exception
but RemoteProtocolError escapes (the worker's own calls never raise LocalProtocolError
when it only answers requests the codec told it about); after an error the connection
stays broken; events concern only requests the worker knows; and every byte the codec
produces parses as valid application output (_wire.check_output).
"""

from __future__ import annotations

import random

import pytest

from gateway.protocol import (
    NEED_DATA,
    ConnectionClosed,
    DataEnded,
    DataReceived,
    FastCGIConnection,
    RemoteProtocolError,
    RequestAborted,
    RequestReceived,
    StdinEnded,
    StdinReceived,
)

from ._wire import (
    ABORT_REQUEST,
    AUTHORIZER,
    DATA,
    END_REQUEST,
    FILTER,
    GET_VALUES,
    GET_VALUES_NAMES,
    PARAMS,
    RESPONDER,
    STDERR,
    STDIN,
    STDOUT,
    begin,
    check_output,
    pairs,
    parse,
    record,
)

SEEDS = range(8)
CASES_PER_SEED = 2000  # 16,000 cases in all


def _random_pairs(rng: random.Random) -> list[tuple[bytes, bytes]]:
    out = []
    for _ in range(rng.randint(0, 5)):
        n = rng.choice([0, 1, 5, 20, 127, 128, 200])
        v = rng.choice([0, 1, 5, 20, 127, 128, 300])
        out.append((rng.randbytes(n), rng.randbytes(v)))
    return out


def _stream(rng: random.Random, rtype: int, rid: int, data: bytes) -> list[bytes]:
    recs = []
    pos = 0
    while pos < len(data):
        n = rng.randint(1, 64)
        recs.append(record(rtype, rid, data[pos : pos + n], rng.choice([0, 0, 1, 7, 255])))
        pos += n
    recs.append(record(rtype, rid, b"", rng.choice([0, 0, 3])))
    return recs


def _valid_records(rng: random.Random) -> list[bytes]:
    """Records of 1-3 requests, interleaved or not, with some management records."""
    requests = []
    for rid in rng.sample([1, 2, 3, 256, 65535], rng.randint(1, 3)):
        role = rng.choice([RESPONDER, RESPONDER, FILTER, AUTHORIZER])
        recs = [begin(rid, role, rng.random() < 0.6, rng.choice([0, 5]))]
        recs += _stream(rng, PARAMS, rid, pairs(_random_pairs(rng)))
        recs += _stream(rng, STDIN, rid, rng.randbytes(rng.choice([0, 3, 100, 300])))
        if role == FILTER:
            recs += _stream(rng, DATA, rid, rng.randbytes(rng.choice([0, 10, 80])))
        if rng.random() < 0.15:
            recs.insert(rng.randint(1, len(recs)), record(ABORT_REQUEST, rid))
        requests.append(recs)
    if rng.random() < 0.5:  # interleave
        out: list[bytes] = []
        queues = [list(r) for r in requests]
        while any(queues):
            q = rng.choice([q for q in queues if q])
            out.append(q.pop(0))
    else:
        out = [rec for r in requests for rec in r]
    for _ in range(rng.choice([0, 0, 1, 2])):
        mgmt = rng.choice(
            [
                record(
                    GET_VALUES, 0, pairs([(rng.choice((*GET_VALUES_NAMES, b"X")), b"")] * rng.randint(0, 3))
                ),
                record(rng.choice([0, 12, 99, 255]), 0, rng.randbytes(rng.randint(0, 9))),
            ]
        )
        out.insert(rng.randint(0, len(out)), mgmt)
    return out


def _mutate(rng: random.Random, recs: list[bytes]) -> bytes:
    recs = [bytearray(r) for r in recs]
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(recs))
        r = recs[i]
        op = rng.randrange(9)
        if op == 0:  # version
            r[0] = rng.choice([0, 2, 255])
        elif op == 1:  # type
            r[1] = rng.randrange(16) if rng.random() < 0.8 else rng.randrange(256)
        elif op == 2:  # request id
            r[2:4] = rng.choice([0, 1, 2, 65535]).to_bytes(2, "big")
        elif op == 3:  # content length
            r[4:6] = rng.randrange(max(len(r), 16)).to_bytes(2, "big")
        elif op == 4:  # padding length
            r[6] = rng.randrange(256)
        elif op == 5:  # duplicate
            recs.insert(rng.randrange(len(recs) + 1), bytearray(r))
        elif op == 6:  # drop
            if len(recs) > 1:
                del recs[i]
        elif op == 7:  # swap
            j = rng.randrange(len(recs))
            recs[i], recs[j] = recs[j], recs[i]
        else:  # flip a byte
            if r:
                r[rng.randrange(len(r))] ^= 1 << rng.randrange(8)
    data = b"".join(recs)
    if rng.random() < 0.3:
        data = data[: rng.randrange(len(data) + 1)]
    return data


def _random_records(rng: random.Random) -> bytes:
    out = []
    for _ in range(rng.randint(1, 8)):
        version = 1 if rng.random() < 0.9 else rng.randrange(256)
        content = rng.randbytes(rng.choice([0, 0, 1, 8, 8, 30]))
        out.append(record(rng.randrange(14), rng.choice([0, 1, 1, 2]), content, rng.choice([0, 3]), version))
    return b"".join(out)


def _make_case(rng: random.Random) -> bytes:
    kind = rng.randrange(20)
    if kind == 0:
        return rng.randbytes(rng.randint(1, 64))
    if kind <= 3:
        return _random_records(rng)
    if kind <= 13:
        return _mutate(rng, _valid_records(rng))
    return b"".join(_valid_records(rng))


def _chunks(rng: random.Random, data: bytes) -> list[bytes]:
    mode = rng.randrange(4)
    if mode == 0:
        return [data] if data else []
    if mode == 1:
        return [data[i : i + 1] for i in range(len(data))]
    out = []
    pos = 0
    while pos < len(data):
        n = rng.randint(1, 9 if mode == 2 else 300)
        out.append(data[pos : pos + n])
        pos += n
    return out


def _connection(rng: random.Random) -> FastCGIConnection:
    return FastCGIConnection(
        multiplex=rng.random() < 0.5,
        max_conns=rng.choice([1, 10, 1000]),
        max_reqs=rng.choice([1, 50]),
        roles=rng.choice([frozenset({RESPONDER}), frozenset({RESPONDER, FILTER, AUTHORIZER})]),
        max_params_bytes=rng.choice([64, 2048, 256 * 1024, 256 * 1024]),
        max_params_count=rng.choice([3, 1000, 1000]),
        max_stdin_buffer=rng.choice([100, 4096, 4096]),
        max_requests=rng.choice([None, None, 1, 2]),
    )


class _Worker:
    """Answers requests the way a worker does, checking the events it gets make sense."""

    def __init__(self, rng: random.Random, conn: FastCGIConnection) -> None:
        self.rng = rng
        self.conn = conn
        self.live: dict[int, int] = {}  # request id -> role
        #: Requests ended while handling the current feed() batch: the rest of that batch
        #: may still hold their events (next_event() users never see any).
        self.ended_in_batch: set[int] = set()
        self.out = bytearray()
        self.closed = False
        self.batch = False
        self.answered = 0

    def handle(self, ev: object) -> None:
        conn, rng, live = self.conn, self.rng, self.live
        assert not self.closed, f"event after ConnectionClosed: {ev!r}"
        t = type(ev)
        if t is ConnectionClosed:
            self.closed = True
            return
        rid = ev.request_id  # type: ignore[attr-defined]
        if rid in self.ended_in_batch:
            assert t is not RequestReceived
            return
        if t is RequestReceived:
            assert rid not in live, f"second RequestReceived for live request {rid}"
            assert all(type(n) is bytes and type(v) is bytes for n, v in ev.params)  # type: ignore[attr-defined]
            live[rid] = ev.role  # type: ignore[attr-defined]
            if rng.random() < 0.3:
                self.out += conn.send_stdout(rid, b"Status: 200\r\n\r\n")
            return
        assert rid in live, f"{t.__name__} for request {rid} the worker does not know"
        if t is StdinReceived or t is DataReceived:
            assert ev.data  # type: ignore[attr-defined]
            if rng.random() < 0.05:  # answer before the body is read
                self._finish(rid)
        elif (
            (t is StdinEnded and live[rid] != FILTER)
            or t is DataEnded
            or t is RequestAborted
            or (t is StdinEnded and rng.random() < 0.2)
        ):
            self._finish(rid)

    def _finish(self, rid: int) -> None:
        conn, rng = self.conn, self.rng
        if rng.random() < 0.2:
            self.out += conn.send_stderr(rid, b"log line\n")
        choice = rng.randrange(3)
        if choice == 0:
            self.out += conn.send_response(rid, rng.randbytes(rng.choice([0, 10, 70_000])))
        elif choice == 1:
            self.out += conn.send_stdout(rid, b"body") + conn.end_request(rid, rng.randrange(3))
        else:
            self.out += conn.end_request(rid)
        del self.live[rid]
        self.answered += 1
        if self.batch:
            self.ended_in_batch.add(rid)


def _run_case(rng: random.Random, data: bytes) -> tuple[bool, int]:
    """Run one case; (ended without a protocol error, requests answered by the worker)."""
    conn = _connection(rng)
    worker = _Worker(rng, conn)
    use_feed = rng.random() < 0.5
    try:
        for chunk in [*_chunks(rng, data), b""]:
            if use_feed:
                worker.batch = True
                for ev in conn.feed(chunk):
                    worker.handle(ev)
                worker.batch = False
                worker.ended_in_batch.clear()
            else:
                conn.receive_data(chunk)
                while (ev := conn.next_event()) is not NEED_DATA:
                    worker.handle(ev)
            worker.out += conn.data_to_send()
            assert conn.active_requests >= len(worker.live)  # plus requests still in PARAMS
        assert worker.closed
        clean = True
    except RemoteProtocolError as exc:
        clean = False
        worker.batch = False  # the failed feed() delivered nothing: drain strictly below
        assert isinstance(exc.status_hint, int) and 400 <= exc.status_hint < 500
        assert str(exc)
        if not conn.peer_closed:
            assert conn.broken
        with pytest.raises(RemoteProtocolError):
            conn.receive_data(record(STDIN, 1))
        # Events queued before the error are still deliverable and consistent.
        while (ev := conn.next_event()) is not NEED_DATA:
            worker.handle(ev)
        worker.out += conn.data_to_send()
    # The worker may still answer what it knows about (e.g. log and end after an error).
    for rid in list(worker.live):
        worker._finish(rid)
    _check_stream(bytes(worker.out))
    return clean, worker.answered


def _check_stream(out: bytes) -> None:
    recs = check_output(out)
    # Per request: once STDOUT/STDERR were closed (empty record), only END_REQUEST follows.
    closed: dict[tuple[int, int], bool] = {}
    for r in recs:
        if r.type in (STDOUT, STDERR):
            assert not closed.get((r.type, r.request_id)), f"{r} after its stream was closed"
            if not r.content:
                closed[(r.type, r.request_id)] = True
        elif r.type == END_REQUEST:
            closed.pop((STDOUT, r.request_id), None)
            closed.pop((STDERR, r.request_id), None)
    assert parse(out) == recs


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzz_never_crashes_and_output_is_always_valid(seed):
    rng = random.Random(seed)
    clean_cases = answered = 0
    for case in range(CASES_PER_SEED):
        data = _make_case(rng)
        try:
            clean, n = _run_case(rng, data)
        except Exception as exc:
            raise AssertionError(
                f"seed {seed} case {case}: {type(exc).__name__}: {exc}\ninput={data!r}"
            ) from exc
        clean_cases += clean
        answered += n
    # Guard against a fuzzer that only produces garbage rejected at the first header.
    assert clean_cases > CASES_PER_SEED // 5
    assert answered > CASES_PER_SEED // 5


def test_fuzz_generator_valid_streams_are_accepted():
    """The unmutated streams really are valid: a multiplexing connection serving every role
    accepts them whole and reports every request."""
    rng = random.Random(1234)
    for _ in range(300):
        recs = _valid_records(rng)
        conn = FastCGIConnection(multiplex=True, roles=frozenset({RESPONDER, FILTER, AUTHORIZER}))
        events = conn.feed(b"".join(recs))
        begun = sum(1 for r in recs if r[1] == 1)
        received = sum(1 for e in events if type(e) is RequestReceived)
        aborted_in_params = conn.data_to_send().count(bytes([1, END_REQUEST]))
        assert received + aborted_in_params == begun
