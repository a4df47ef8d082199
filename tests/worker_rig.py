"""A sync worker listening on a unix socket, driven through its accept path by tests
(``worker_rig``, with a client socket and the log lines); FastCGI request bytes with their
streams cut in records at chosen points (``request_bytes``); and ``parse_answer``, which
checks that what the worker wrote is a well-formed FastCGI answer: records of request ids
it was asked, one END_REQUEST per request ending its streams, nothing of a request after
its END_REQUEST."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import os
import select
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Config
from gateway.protocol.records import encode_begin_request, encode_pairs, pack_header
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


def listening_sync_worker(path: str, app: Any, config: Config) -> tuple[SyncWorker, socket.socket]:
    """A SyncWorker on a new unix listener at ``path``, set up as ``SyncWorker.run`` sets it
    up before its loop (baseline context, its epoll sets), for tests that drive ``_accept`` and
    ``_readable`` themselves. The caller closes the worker's epoll sets and the listener."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    listener.setblocking(False)
    worker = SyncWorker(config, app, [listener])
    worker._baseline = contextvars.copy_context()
    worker._ep = select.epoll()
    worker._waiting = select.epoll()
    worker._listen_on(listener)
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


@dataclass
class Rig:
    """A listening sync worker, a client socket for it (not yet connected) and the
    gateway's log lines."""

    worker: SyncWorker
    listener: socket.socket
    client: socket.socket
    log: list[tuple[int, str]] = field(default_factory=list)


@contextlib.contextmanager
def worker_rig(path: str, app: Any, **config: Any) -> Iterator[Rig]:
    """``listening_sync_worker`` at ``path``, its log captured; everything closed and the
    socket file removed afterwards."""
    worker, listener = listening_sync_worker(path, app, Config(app="x:y", **config))
    rig = Rig(worker, listener, socket.socket(socket.AF_UNIX))
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
        worker._waiting.close()
        listener.close()


STDOUT, STDERR, END_REQUEST = 6, 7, 3


@dataclass
class Answer:
    """One request's answer, as the worker wrote it."""

    rid: int
    stdout: bytes
    stderr: bytes
    app_status: int
    protocol_status: int


def parse_answer(data: bytes) -> tuple[list[Answer], bytes]:
    """The answers in ``data``, in the order their END_REQUESTs came, and what followed the
    last END_REQUEST (only an empty STDERR record may: the close signal nginx understands).
    Fails the test on anything malformed: a record cut short, a record type a worker never
    sends, output of a request after its END_REQUEST, a stream not ended before
    END_REQUEST, a second END_REQUEST."""
    answers: list[Answer] = []
    open_: dict[int, dict[str, Any]] = {}
    ended: set[int] = set()
    pos = 0
    tail_start = 0
    while pos < len(data):
        assert len(data) - pos >= 8, f"a record header cut short at byte {pos}"
        version, rtype, rid, clen, plen = struct.unpack_from("!BBHHBx", data, pos)
        assert version == 1
        content = data[pos + 8 : pos + 8 + clen]
        assert len(content) == clen, f"record content cut short at byte {pos}"
        pos += 8 + clen + plen
        assert rtype in (STDOUT, STDERR, END_REQUEST), f"record type {rtype} from the worker"
        if rtype == STDERR and not clen and rid in ended:
            continue  # the empty STDERR after an ending: "this connection closes"
        assert rid not in ended, f"a record of type {rtype} for request {rid} after its END_REQUEST"
        state = open_.setdefault(rid, {"out": b"", "err": b"", "out_end": False, "err_used": False})
        if rtype == STDOUT:
            assert not state["out_end"], "STDOUT after the empty STDOUT"
            if clen:
                state["out"] += content
            else:
                state["out_end"] = True
        elif rtype == STDERR:
            state["err_used"] = True
            state["err"] += content
        else:
            assert clen == 8, "END_REQUEST body of 8 bytes"
            assert state["out_end"], f"END_REQUEST of request {rid} before its empty STDOUT"
            app_status, protocol_status = struct.unpack("!LB3x", content)
            answers.append(Answer(rid, state["out"], state["err"], app_status, protocol_status))
            ended.add(rid)
            del open_[rid]
            tail_start = pos
    assert not open_, f"requests {sorted(open_)} without END_REQUEST"
    return answers, data[tail_start:]
