"""FastCGI request bytes for the C fast-path tests (tests/wsgi/test_fastpath.py,
tests/wsgi/test_serve.py and tests/asgi/test_asgi_fastpath.py): one whole request, its
streams cut in records at chosen points, the ways to make bytes that are not one whole
simple request, and what the codec (the reference) makes of bytes; and a sync worker
listening on a unix socket, for tests that drive its accept path (``worker_rig``: with a
client socket, the C serve path when asked, and the log lines)."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import os
import select
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Config
from gateway.protocol import (
    FastCGIConnection,
    RemoteProtocolError,
    RequestReceived,
    StdinEnded,
    StdinReceived,
)
from gateway.protocol.records import encode_begin_request, encode_pairs, pack_header
from gateway.workers.fastserve import make_server
from gateway.workers.sync_worker import SyncWorker


def record(rtype: int, rid: int, content: bytes = b"", padding: int = 0) -> bytes:
    return pack_header(1, rtype, rid, len(content), padding) + content + b"\0" * padding


def request_bytes(
    params: list[tuple[bytes, bytes]],
    body: bytes = b"",
    rid: int = 1,
    keep: bool = False,
    params_cuts: tuple[int, ...] = (),
    body_cuts: tuple[int, ...] = (),
    padding: int = 0,
) -> bytes:
    def stream(rtype: int, data: bytes, cuts: tuple[int, ...]) -> bytes:
        points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
        out = b"".join(record(rtype, rid, data[a:b], padding) for a, b in itertools.pairwise(points) if b > a)
        return out + record(rtype, rid, b"", padding)

    return (
        encode_begin_request(rid, keep_conn=keep)
        + stream(4, encode_pairs(params), params_cuts)
        + stream(5, body, body_cuts)
    )


#: Changes that make a whole request something the fast paths must leave to the codec.
NOT_ONE_WHOLE_REQUEST = [
    lambda d: d[:-8],  # no empty STDIN
    lambda d: d + record(5, 1),  # more after the request
    lambda d: d + encode_begin_request(2),  # a second request
    lambda d: d[:1] + b"\x02" + d[2:],  # not BEGIN_REQUEST first
    lambda d: b"\x02" + d[1:],  # another version
    lambda d: d[:9] + b"\x02" + d[10:],  # role AUTHORIZER
    lambda d: d[:2] + b"\x00\x00" + d[4:],  # request id 0
    lambda d: record(9, 0, encode_pairs([(b"FCGI_MAX_CONNS", b"")])) + d,  # management first
]


def codec_whole(codec: FastCGIConnection, data: bytes) -> tuple[RequestReceived, bytes] | None:
    """What the codec (the reference) makes of ``data``: the request and its body when it is
    exactly one whole request, else None (a protocol error included)."""
    try:
        events = codec.feed(data)
    except RemoteProtocolError:
        return None
    if codec.data_to_send() or not events or type(events[0]) is not RequestReceived:
        return None
    if type(events[-1]) is not StdinEnded or any(type(e) is not StdinReceived for e in events[1:-1]):
        return None
    return events[0], b"".join(e.data for e in events[1:-1])


def listening_sync_worker(path: str, app: Any, config: Config) -> tuple[SyncWorker, socket.socket]:
    """A SyncWorker on a new unix listener at ``path``, set up as ``SyncWorker.run`` sets it
    up before its loop (baseline context, epoll), for tests that drive ``_accept`` and
    ``_readable`` themselves. The caller closes the worker's epoll and the listener."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    listener.setblocking(False)
    worker = SyncWorker(config, app, [listener])
    worker._baseline = contextvars.copy_context()
    worker._families[listener.fileno()] = int(listener.family)
    worker._ep = select.epoll()
    return worker, listener


def capture_gateway_log(records: list[tuple[int, str]]) -> Callable[[], None]:
    """Append (level, message) of each record of the gateway's loggers, INFO and up, to
    ``records`` from now on; the function returned stops it."""
    handler = logging.Handler()
    handler.emit = lambda r: records.append((r.levelno, r.getMessage()))  # type: ignore[method-assign]
    gateway_logger = logging.getLogger("gateway")
    level = gateway_logger.level
    gateway_logger.addHandler(handler)
    gateway_logger.setLevel(logging.INFO)

    def stop() -> None:
        gateway_logger.removeHandler(handler)
        gateway_logger.setLevel(level)

    return stop


def use_c_serve_path(worker: SyncWorker, returned: list[Any]) -> None:
    """Give ``worker`` the C serve path (its configuration must allow it), appending to
    ``returned`` what each call gives: ``serve``'s None, True or "tuple", and
    ``serve_request``'s None or ok."""
    server = make_server(worker)
    assert server is not None

    def serve(sock: Any, data: bytes) -> Any:
        out = server.serve(sock, data)
        returned.append(out if out is None or out is True else "tuple")
        return out

    def serve_request(*args: Any) -> Any:
        out = server.serve_request(*args)
        returned.append(out)
        return out

    worker._fast_serve, worker._fast_kept = serve, serve_request


@dataclass
class Rig:
    """A listening sync worker, a client socket for it (not yet connected), what its C
    serve path returned and the gateway's log lines."""

    worker: SyncWorker
    listener: socket.socket
    client: socket.socket
    returned: list[Any] = field(default_factory=list)
    log: list[tuple[int, str]] = field(default_factory=list)


@contextlib.contextmanager
def worker_rig(path: str, app: Any, use_c: bool, **config: Any) -> Iterator[Rig]:
    """``listening_sync_worker`` at ``path`` (with the C serve path when ``use_c``), its log
    captured; everything closed and the socket file removed afterwards."""
    worker, listener = listening_sync_worker(path, app, Config(app="x:y", **config))
    rig = Rig(worker, listener, socket.socket(socket.AF_UNIX))
    if use_c:
        use_c_serve_path(worker, rig.returned)
    stop_capture = capture_gateway_log(rig.log)
    try:
        yield rig
    finally:
        stop_capture()
        rig.client.close()
        os.unlink(path)
        for conn in list(worker._conns.values()):
            worker._close(conn)
        worker._ep.close()
        listener.close()
