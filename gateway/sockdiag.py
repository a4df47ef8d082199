"""How many connections wait in the listening sockets' accept queues (the status page's
``listen queue`` and ``listen queue len``).

TCP listeners are read with ``TCP_INFO`` as PHP-FPM does: for a listening socket Linux
reports the accept queue in ``tcpi_unacked`` and the backlog in ``tcpi_sacked``. Unix
listeners have no such option; they are read with the sock_diag netlink interface
(``NETLINK_SOCK_DIAG``): one ``SOCK_DIAG_BY_FAMILY`` request for ``AF_UNIX`` asking for
``UDIAG_SHOW_RQLEN`` for the listener's inode, whose ``UNIX_DIAG_RQLEN`` attribute holds the
queue (``udiag_rqueue``) and the backlog (``udiag_wqueue``). Standard library only
(``socket.AF_NETLINK`` and ``struct``). Where either is unavailable (not Linux, a sandbox
without netlink, a closed socket) the socket counts as 0, which is what PHP-FPM reports
for unix sockets.
"""

from __future__ import annotations

import os
import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 2
NLMSG_DONE = 3
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_RQLEN = 4
_NO_COOKIE = 0xFFFFFFFF

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")  # family, protocol, pad, states, ino, show, cookie[2]
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")  # family, type, state, pad, ino, cookie[2]
_RTATTR = struct.Struct("=HH")  # len, type
_RQLEN = struct.Struct("=II")  # udiag_rqueue, udiag_wqueue


def listen_queue(sockets: list[socket.socket]) -> tuple[int, int]:
    """(connections waiting to be accepted now, backlog size), summed over ``sockets``."""
    queued = 0
    size = 0
    for sock in sockets:
        got = tcp_queue(sock) if sock.family in (socket.AF_INET, socket.AF_INET6) else None
        if sock.family == socket.AF_UNIX:
            got = unix_queue(sock)
        if got is not None:
            queued += got[0]
            size += got[1]
    return queued, size


def tcp_queue(sock: socket.socket) -> tuple[int, int] | None:
    """(accept queue, backlog) of a listening TCP socket, or None where TCP_INFO is missing."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return None
    # struct tcp_info: tcpi_unacked and tcpi_sacked at offsets 24 and 28
    unacked, sacked = struct.unpack_from("=II", info, 24)
    return unacked, sacked


def unix_queue(sock: socket.socket) -> tuple[int, int] | None:
    """(accept queue, backlog) of a listening unix socket, or None when sock_diag cannot
    tell (no netlink, no such inode, a closed socket)."""
    try:
        inode = os.fstat(sock.fileno()).st_ino
    except (OSError, ValueError):
        return None
    return unix_queue_by_inode(inode)


def unix_queue_by_inode(inode: int) -> tuple[int, int] | None:
    """``unix_queue`` for the socket with sockfs inode ``inode`` (``os.fstat().st_ino``)."""
    af_netlink = getattr(socket, "AF_NETLINK", None)
    if af_netlink is None:
        return None
    req = _UNIX_DIAG_REQ.pack(
        socket.AF_UNIX, 0, 0, 0xFFFFFFFF, inode, UDIAG_SHOW_RQLEN, _NO_COOKIE, _NO_COOKIE
    )
    msg = _NLMSGHDR.pack(_NLMSGHDR.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0) + req
    try:
        with socket.socket(af_netlink, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            nl.sendto(msg, (0, 0))
            data = nl.recv(65536)
    except OSError:
        return None
    return parse_reply(data, inode)


def parse_reply(data: bytes, inode: int) -> tuple[int, int] | None:
    """The (rqueue, wqueue) of ``inode`` in a sock_diag reply, or None (an error reply, or
    no UNIX_DIAG_RQLEN attribute)."""
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size:
            return None
        body, end = off + _NLMSGHDR.size, min(off + length, len(data))
        off += (length + 3) & ~3
        if kind in (NLMSG_ERROR, NLMSG_DONE):
            return None
        if kind != SOCK_DIAG_BY_FAMILY or end - body < _UNIX_DIAG_MSG.size:
            continue
        if _UNIX_DIAG_MSG.unpack_from(data, body)[4] != inode:
            continue
        attr = body + _UNIX_DIAG_MSG.size
        while attr + _RTATTR.size <= end:
            alen, atype = _RTATTR.unpack_from(data, attr)
            if alen < _RTATTR.size or attr + alen > end:
                break
            if atype == UNIX_DIAG_RQLEN and alen >= _RTATTR.size + _RQLEN.size:
                rqueue, wqueue = _RQLEN.unpack_from(data, attr + _RTATTR.size)
                return rqueue, wqueue
            attr += (alen + 3) & ~3
    return None


__all__ = ["listen_queue", "parse_reply", "tcp_queue", "unix_queue", "unix_queue_by_inode"]
