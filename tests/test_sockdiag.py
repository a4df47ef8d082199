"""gateway.sockdiag on real sockets: the sock_diag netlink query of a listening unix
socket's accept queue with K pending connects, TCP_INFO for TCP, and the fallbacks (a
closed socket, an unknown inode, an error reply)."""

from __future__ import annotations

import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import sockdiag

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="sock_diag and TCP_INFO are Linux's")


@pytest.fixture
def conns() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def unix_listener(path: Path, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(backlog)
    return sock


@pytest.mark.parametrize("pending", [0, 1, 7])
def test_unix_accept_queue_counts_pending_connects(sock_dir, conns, pending):
    listener = unix_listener(sock_dir / "q.sock", 32)
    conns.append(listener)
    for _ in range(pending):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(sock_dir / "q.sock"))
        conns.append(client)
    assert sockdiag.unix_queue(listener) == (pending, 32)
    assert sockdiag.listen_queue([listener]) == (pending, 32)
    if pending:
        accepted, _ = listener.accept()
        conns.append(accepted)
        assert sockdiag.unix_queue(listener) == (pending - 1, 32)


def test_each_listener_is_read_by_its_own_inode(sock_dir, conns):
    a = unix_listener(sock_dir / "a.sock", 8)
    b = unix_listener(sock_dir / "b.sock", 16)
    conns += [a, b]
    for path, n in (("a.sock", 3), ("b.sock", 2)):
        for _ in range(n):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(str(sock_dir / path))
            conns.append(client)
    assert sockdiag.unix_queue(a) == (3, 8)
    assert sockdiag.unix_queue(b) == (2, 16)
    assert sockdiag.listen_queue([a, b]) == (5, 24)


def test_tcp_listener_and_mixed_sum(sock_dir, conns):
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(9)
    unix = unix_listener(sock_dir / "m.sock", 5)
    conns += [tcp, unix]
    for _ in range(4):
        conns.append(socket.create_connection(tcp.getsockname()))
    conns.append(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    conns[-1].connect(str(sock_dir / "m.sock"))
    deadline = time.monotonic() + 2
    while sockdiag.tcp_queue(tcp) != (4, 9) and time.monotonic() < deadline:
        time.sleep(0.01)  # the handshake completes in the kernel, asynchronously
    assert sockdiag.tcp_queue(tcp) == (4, 9)
    assert sockdiag.listen_queue([tcp, unix]) == (5, 14)


def test_fallbacks_count_zero(sock_dir, conns):
    listener = unix_listener(sock_dir / "c.sock", 4)
    listener.close()
    assert sockdiag.unix_queue(listener) is None
    assert sockdiag.listen_queue([listener]) == (0, 0)
    # an inode that is no unix socket: the kernel answers NLMSG_ERROR (ENOENT)
    assert sockdiag.unix_queue_by_inode(1) is None
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    conns.append(udp)
    assert sockdiag.listen_queue([udp]) == (0, 0)


def test_parse_reply_rejects_errors_other_inodes_and_truncation():
    error = struct.pack("=IHHII", 36, sockdiag.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -2) + bytes(16)
    assert sockdiag.parse_reply(error, 5) is None
    attr = struct.pack("=HH", 12, sockdiag.UNIX_DIAG_RQLEN) + struct.pack("=II", 3, 128)
    body = struct.pack("=BBBBIII", socket.AF_UNIX, socket.SOCK_STREAM, 10, 0, 42, 0, 0) + attr
    msg = struct.pack("=IHHII", 16 + len(body), sockdiag.SOCK_DIAG_BY_FAMILY, 0, 1, 0) + body
    assert sockdiag.parse_reply(msg, 42) == (3, 128)
    assert sockdiag.parse_reply(msg, 43) is None
    assert sockdiag.parse_reply(msg[:-4], 42) is None
    assert sockdiag.parse_reply(b"", 42) is None
