"""One ASGI HTTP request/response cycle on a FastCGI connection: ``receive``, ``send`` and
the task wrapper that guarantees every request ends with an empty STDOUT + END_REQUEST.

Strategy
--------
The connection protocol (``gateway.workers.async_worker``) owns the transport and feeds the
cycle: ``feed_body``/``end_body`` as STDIN arrives, ``disconnect`` on EOF/abort. The cycle
talks back through a small set of protocol methods (``write``, ``drain``,
``pause_reading_for``/``resume_reading_for``, ``cycle_finished``).

Guarantees (docs/protocol-notes.md, peer bugs 1, 2, 13):
- ``run`` always ends the request: 500 when the app raised or returned before
  ``http.response.start``; the response is closed when it raised or returned after a partial
  body. Exceptions are logged with the request line; tracebacks reach the client only with
  ``--debug``.
- the cycle unregisters itself from the connection *when END_REQUEST is written*, not when
  the app task ends, so background work after the response never touches the next request
  that reuses the same request id.
- sends after a disconnect are dropped (like uvicorn); ``receive`` then returns
  ``http.disconnect``.

The response head is held back until the first body message so that a small response
leaves in one write (one FastCGI buffer: STDOUT + empty STDOUT + END_REQUEST).
"""

from __future__ import annotations

import asyncio
import logging
import os
import traceback
from typing import Any

from ..response import InvalidResponse, error_response, failure_reply, header_block

logger = logging.getLogger("gateway.error")

#: Stop reading the socket when this much request body waits for the app.
BODY_HIGH_WATER = 1024 * 1024

_pid = os.getpid()  # os.getpid() is a system call; request ids want it per request


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


class ASGICycle:
    __slots__ = (
        "body",
        "body_size",
        "buffer",
        "complete",
        "conn",
        "disconnected",
        "head",
        "more_body",
        "proto",
        "queued",
        "received",
        "request_sent",
        "rid",
        "scope",
        "sent",
        "started",
        "status",
        "t0",
        "task",
        "timers",
        "waiter",
    )

    def __init__(self, proto: Any, rid: int, scope: dict[str, Any]) -> None:
        self.proto = proto
        self.conn = proto.conn
        self.rid = rid
        self.scope = scope
        self.body: list[bytes] = []
        self.body_size = 0
        self.more_body = True
        self.request_sent = False
        self.waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        self.started = False
        self.complete = False
        self.head: bytes | None = None
        self.status = 0
        self.received = 0
        self.sent = 0
        self.t0 = 0.0
        #: seconds the request waited before the worker took it (X-Request-Start), or None
        self.queued: float | None = None
        #: the task running ``run`` (set by the worker when it creates it)
        self.task: asyncio.Task[None] | None = None
        self.timers: list[asyncio.TimerHandle] | None = None
        #: when a list, output is held here until the isolation checks ran ("fail" policy)
        self.buffer: list[bytes] | None = None

    # -- fed by the connection -----------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def feed_body(self, data: bytes) -> None:
        self.body.append(data)
        self.body_size += len(data)
        if self.body_size > BODY_HIGH_WATER:
            self.proto.pause_reading_for(self)
        self._wake()

    def end_body(self) -> None:
        self.more_body = False
        if self.waiter is not None:
            self._wake()

    def disconnect(self) -> None:
        self.disconnected = True
        self._wake()

    # -- the ASGI callables --------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        while True:
            if self.body:
                body = self.body
                data = body[0] if len(body) == 1 else b"".join(body)
                self.body = []
                if self.body_size > BODY_HIGH_WATER:
                    self.proto.resume_reading_for(self)
                self.body_size = 0
                if not self.more_body:
                    self.request_sent = True
                return {"type": "http.request", "body": data, "more_body": self.more_body}
            if not self.more_body and not self.request_sent:
                self.request_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self.disconnected or self.complete:
                return {"type": "http.disconnect"}
            self.waiter = self.proto.loop.create_future()
            await self.waiter

    async def send(self, message: dict[str, Any]) -> None:
        mtype = message["type"]
        if mtype == "http.response.body":
            if not self.started:
                raise RuntimeError("ASGI 'http.response.body' sent before 'http.response.start'")
            if self.complete:
                if self.disconnected:
                    return
                raise RuntimeError("ASGI 'http.response.body' sent after the response completed")
            if self.disconnected:
                return
            body = message.get("body", b"")
            if type(body) is not bytes and not isinstance(body, (bytes, bytearray, memoryview)):
                # Checked before the head is taken: the error can still be answered with a 500.
                raise InvalidResponse(f"ASGI response body must be bytes, not {type(body).__name__}")
            self.sent += len(body)
            head = self.head
            if head is not None:
                self.head = None
                body = head + body if body else head
            if message.get("more_body", False):
                if body:
                    self._out(self.conn.send_stdout(self.rid, body))
                    if self.proto.write_paused and self.buffer is None:
                        await self.proto.drain()
            else:
                self.finish(self.conn.send_response(self.rid, body))
            return
        if mtype == "http.response.start":
            if self.started:
                raise RuntimeError("ASGI 'http.response.start' sent twice")
            status, headers = message["status"], message.get("headers", ())
            self.head = header_block(status, headers)
            self.status = status
            self.started = True
            return
        if mtype == "http.response.trailers":
            return  # FastCGI cannot carry trailers; dropped (we never advertise them)
        raise RuntimeError(f"unexpected ASGI message type {mtype!r}")

    # -- ending ---------------------------------------------------------------------

    def finish(self, data: bytes) -> None:
        """Write the last bytes (ending with END_REQUEST) and detach from the connection."""
        self.complete = True
        if self.buffer is None:
            proto = self.proto
            proto.write(data)
            proto.cycle_finished(self)
        else:
            self.buffer.append(data)
        if self.waiter is not None:
            self._wake()

    def _out(self, data: bytes) -> None:
        if self.buffer is None:
            self.proto.write(data)
        else:
            self.buffer.append(data)

    def flush_buffer(self, replacement: bytes | None = None) -> None:
        """Send the held output (or ``replacement``, a whole encoded answer) and detach."""
        held, self.buffer = self.buffer, None
        if held is None:
            return
        if replacement is not None:
            held = [replacement]
        self.proto.write(b"".join(held))
        if self.complete:
            self.proto.cycle_finished(self)

    def fail(self, status: int, detail: str | None = None) -> None:
        """Answer ``status`` if nothing was sent yet, else just end the response."""
        if self.complete or self.disconnected:
            return
        if self.started and self.head is None:
            self.finish(self.conn.end_request(self.rid, 1))
        else:
            self.status = status
            self.finish(self.conn.send_response(self.rid, error_response(status, detail), 1))

    def abort(self) -> None:
        """FCGI_ABORT_REQUEST: end the request now; the app sees ``http.disconnect``."""
        self.disconnected = True
        if not self.complete:
            self.finish(self.conn.end_request(self.rid, 1))
        self._wake()

    @property
    def request_id(self) -> str:
        """Worker pid, connection serial and FastCGI id: unique within the pool's lifetime."""
        return f"{_pid}-{self.proto.serial}-{self.rid}"

    def _request_id(self) -> str:  # for the isolation layer: formatted only when logged
        return self.request_id

    def describe(self) -> str:
        scope = self.scope
        qs = scope["query_string"]
        return f"{scope['method']} {scope['path']}{'?' + qs.decode('latin-1') if qs else ''}"

    async def run(self, app: Any) -> None:
        layer = self.proto.server.isolation
        info = None
        if layer is not None:
            scope = self.scope
            info = layer.RequestInfo(
                scope["method"], scope["path"], self._request_id, "async", self.proto.server.interface
            )
            layer.before_request(info)
            if layer.buffering:
                self.buffer = []
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            logger.warning("request %s cancelled", self.describe())
            self.fail(503)
            raise
        except Exception as exc:
            if isinstance(exc, InvalidResponse):
                logger.error("invalid response from application for %s: %s", self.describe(), exc)
            else:
                logger.exception("exception in ASGI application for %s", self.describe())
            detail = traceback.format_exc() if self.proto.server.debug else None
            self.fail(500, detail)
        else:
            if not self.complete and not self.disconnected:
                if not self.started:
                    logger.error("ASGI application returned without a response for %s", self.describe())
                    self.fail(500)
                else:
                    logger.error(
                        "ASGI application returned before finishing the response body for %s",
                        self.describe(),
                    )
                    self.fail(500)
        finally:
            if info is not None:
                failing = layer.after_request(info)  # type: ignore[union-attr]
                if self.buffer is not None:
                    replacement = None
                    if failing:
                        from ..isolation.base import describe_failure

                        replacement = failure_reply(self.rid, error_response(500, describe_failure(failing)))
                    self.flush_buffer(replacement)
            self.proto.server.request_done(self)
