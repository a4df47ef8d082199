"""Hostile input against a running gateway, raw bytes on its unix socket, both workers.

One gateway per worker kind (``wsgi_app:app`` on the sync worker, ``asgi_app:app`` on the
async worker, ``--read-timeout 1s``) takes every case in turn: random bytes, truncated
records, huge declared lengths, a PARAMS stream growing past --max-params-size, 1 MB of
params, 10,000 params, bad versions, out-of-order records, a silent connection and 1,000
idle connections; the cases with large params run ten times, as an attacker would. After
each case: the worker is the same process (``/pid``), its RSS has not grown by more than
``RSS_SLACK`` since the suite began, a good request succeeds, and every hostile connection
left its own log line from that worker.
"""

from __future__ import annotations

import random
import re
import resource
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.client import FastCGIClient, build_params
from gateway.protocol import records as wire
from gateway.protocol.constants import RecordType
from tests.conftest import Gateway

APPS = {"sync": "wsgi_app:app", "async": "asgi_app:app"}
RSS_SLACK = 8 * 1024 * 1024
IDLE_CONNECTIONS = 1000
PROTOCOL_ERROR = "FastCGI protocol error"
NO_REQUEST = "closing connection that sent no complete request"

BEGIN, PARAMS, STDIN = RecordType.BEGIN_REQUEST, RecordType.PARAMS, RecordType.STDIN


def _params_stream(rid: int = 1, path: str = "/pid") -> bytes:
    return wire.encode_stream(PARAMS, rid, wire.encode_pairs(build_params("GET", path)))


def _request(rid: int = 1, path: str = "/pid") -> bytes:
    return wire.encode_begin_request(rid) + _params_stream(rid, path) + wire.encode_record(PARAMS, rid)


def _header(version: int, rtype: int, rid: int, clen: int, plen: int = 0) -> bytes:
    return wire.pack_header(version, rtype, rid, clen, plen)


def _drain(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until the gateway closes (EOF or reset); AssertionError if it never does."""
    sock.settimeout(timeout)
    got = bytearray()
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the gateway kept the connection open for {timeout}s") from None
    return bytes(got)


def send_and_close(address: str, data: bytes | list[bytes]) -> bytes:
    """Connect, send (tolerating the gateway closing early), half-close, read to EOF."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(address.removeprefix("unix:"))
        try:
            for part in [data] if isinstance(data, bytes) else data:
                sock.sendall(part)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _drain(sock)


# -- the cases: each takes the gateway's address and returns how many hostile connections
# -- it made (each must leave one log line matching the case's pattern)


def random_bytes(address: str) -> int:
    rng = random.Random(6)
    blobs = [rng.randbytes(rng.randint(8, 4096)) for _ in range(8)]
    blobs[0] = b"\x00" + blobs[0][1:]  # not version 1 even by chance
    blobs += [wire.encode_begin_request(1) + b"\x02" + rng.randbytes(rng.randint(7, 4096)) for _ in range(8)]
    for blob in blobs:
        send_and_close(address, blob)
    return len(blobs)


def truncated_records(address: str) -> int:
    whole = _request() + wire.encode_record(STDIN, 1, b"body") + wire.encode_record(STDIN, 1)
    cuts = [3, 8 + 4, len(wire.encode_begin_request(1)) + 8 + 40]  # header, BEGIN body, PARAMS
    cuts.append(len(whole) - 8 - 2)  # inside the STDIN record with the body
    for cut in cuts:
        send_and_close(address, whole[:cut])
    return len(cuts)


def huge_declared_lengths(address: str) -> int:
    sends = [
        wire.encode_begin_request(1) + _header(1, PARAMS, 1, 65535) + b"x" * 100,
        _request() + _header(1, STDIN, 1, 65535, 255) + b"y" * 10,
        _header(1, RecordType.GET_VALUES, 0, 65535) + b"FCGI",
    ]
    for data in sends:
        send_and_close(address, data)
    return len(sends)


def params_past_the_limit(address: str) -> int:
    """Keep sending 64 KiB PARAMS records (up to 4 MiB) until the gateway closes."""
    chunk = wire.encode_record(PARAMS, 1, wire.encode_pairs([(b"X", b"v" * 65000)]))
    send_and_close(address, [wire.encode_begin_request(1)] + [chunk] * 64)
    return 1


def one_megabyte_of_params(address: str) -> int:
    pairs = [(b"HTTP_X_FILLER_%04d" % i, b"z" * 1000) for i in range(1024)]
    data = wire.encode_pairs([*build_params("GET", "/pid"), *pairs])
    send_and_close(address, wire.encode_begin_request(1) + wire.encode_stream(PARAMS, 1, data))
    return 1


def ten_thousand_params(address: str) -> int:
    pairs = [(b"P%05d" % i, b"v") for i in range(10_000)]
    data = wire.encode_pairs([*build_params("GET", "/pid"), *pairs])
    assert len(data) < 256 * 1024  # under the size limit: the count limit must catch it
    stream = wire.encode_stream(PARAMS, 1, data) + wire.encode_record(PARAMS, 1)
    send_and_close(address, wire.encode_begin_request(1) + stream + wire.encode_record(STDIN, 1))
    return 1


def bad_versions(address: str) -> int:
    begin = wire.encode_begin_request(1)
    sends = [bytes([v]) + begin[1:] for v in (0, 2, 255)]
    sends.append(begin + bytes([9]) + _params_stream()[1:])  # a good record, then a bad one
    for data in sends:
        send_and_close(address, data)
    return len(sends)


def out_of_order_records(address: str) -> int:
    sends = [
        wire.encode_record(STDIN, 1, b"body") + _request(),  # STDIN before BEGIN
        _request() + wire.encode_record(STDIN, 1) + wire.encode_record(PARAMS, 1, b"\x01\x01ab"),
        _request() + wire.encode_end_request(1, 0, 0),  # END_REQUEST sent to the app
        wire.encode_record(RecordType.STDOUT, 1, b"Status: 200\r\n\r\n"),
        _params_stream(7),  # PARAMS of a request never begun
    ]
    for data in sends:
        send_and_close(address, data)
    return len(sends)


def silent_connection(address: str) -> int:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(address.removeprefix("unix:"))
        start = time.monotonic()
        assert _drain(sock, timeout=6) == b""
        assert time.monotonic() - start < 4  # --read-timeout 1s, swept every second
    return 1


def idle_connections(address: str) -> int:
    socks = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            sock = socket.socket(socket.AF_UNIX)
            socks.append(sock)
            sock.connect(address.removeprefix("unix:"))
        good_request(address)  # served while all of them are open
        for sock in socks:
            assert _drain(sock, timeout=8) == b""  # each closed by the read timeout
    finally:
        for sock in socks:
            sock.close()
    return IDLE_CONNECTIONS


@dataclass(frozen=True)
class Case:
    run: Callable[[str], int]
    log: str  # regex of the line each hostile connection must leave
    repeat: int = 1  # as an attacker would: memory kept per connection must show


CASES = {
    "random bytes": Case(random_bytes, PROTOCOL_ERROR),
    "truncated records then close": Case(truncated_records, PROTOCOL_ERROR),
    "huge declared lengths then close": Case(huge_declared_lengths, PROTOCOL_ERROR),
    "params growing past --max-params-size": Case(
        params_past_the_limit, PROTOCOL_ERROR + r".*params exceed", repeat=10
    ),
    "1 MB of params": Case(one_megabyte_of_params, PROTOCOL_ERROR + r".*params exceed", repeat=10),
    "10,000 params": Case(
        ten_thousand_params, PROTOCOL_ERROR + r".*more than 1000 name-value pairs", repeat=10
    ),
    "bad versions": Case(bad_versions, PROTOCOL_ERROR + r".*unsupported FastCGI version"),
    "out-of-order records": Case(out_of_order_records, PROTOCOL_ERROR),
    "a connection that sends nothing": Case(silent_connection, NO_REQUEST),
    "1,000 idle connections": Case(idle_connections, NO_REQUEST),
}


# -- the running gateway and the checks after each case ---------------------------------


def good_request(address: str) -> int:
    """A normal request succeeds; the pid of the worker that served it."""
    with FastCGIClient(address, timeout=5) as client:
        resp = client.request("GET", "/pid")
    assert resp.status == 200 and resp.body.isdigit(), resp
    return int(resp.body)


def rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


@dataclass
class Target:
    gateway: Gateway
    worker_pid: int
    baseline_rss: int


@pytest.fixture(scope="module", params=["sync", "async"])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < IDLE_CONNECTIONS * 2 + 256:  # the test's sockets and the worker's (inherited)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, IDLE_CONNECTIONS * 4), hard))
    sock_dir = Path(tempfile.mkdtemp(prefix="fcgw-", dir="/tmp"))
    gw = Gateway(tmp_path_factory.mktemp("hostile"), sock_dir, APPS[request.param], "--read-timeout", "1s")
    try:
        gw.start()
        pid = good_request(gw.address)
        for _ in range(20):  # warm up: lazily allocated state is part of the baseline
            good_request(gw.address)
        yield Target(gw, pid, rss(pid))
    finally:
        status = gw.stop()
        print(f"----- gateway {gw.address} (exit status {status}) -----\n{gw.log_text()[-6000:]}")
        shutil.rmtree(sock_dir, ignore_errors=True)


def _count(gw: Gateway, start: int, pattern: str) -> int:
    return len(re.findall(pattern, gw.log_text()[start:]))


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input(target: Target, name: str) -> None:
    gw, case = target.gateway, CASES[name]
    line = rf"\[{target.worker_pid}\] \[[A-Z]+\] [^\n]*(?:{case.log})"
    assert good_request(gw.address) == target.worker_pid
    start, before = len(gw.log_text()), rss(target.worker_pid)
    connections = sum(case.run(gw.address) for _ in range(case.repeat))

    assert good_request(gw.address) == target.worker_pid, "the worker was replaced"
    assert gw.proc is not None and gw.proc.poll() is None, "the master exited"
    deadline = time.monotonic() + 3
    while (logged := _count(gw, start, line)) < connections and time.monotonic() < deadline:
        time.sleep(0.05)
    now = rss(target.worker_pid)
    grown = now - target.baseline_rss
    assert grown < RSS_SLACK, (
        f"worker RSS grew by {grown / 2**20:.1f} MiB since the suite began "
        f"({(now - before) / 2**20:+.1f} MiB in this case)"
    )
    assert logged >= connections, (
        f"{connections} hostile connection(s) but {logged} log line(s) matching {case.log!r}; "
        f"new log:\n{gw.log_text()[start:][-3000:]}"
    )
