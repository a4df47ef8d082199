"""The async worker: an ``asyncio.Protocol`` per FastCGI connection serving an ASGI app.

Strategy
--------
``AsyncWorker.serve`` runs lifespan startup, snapshots the baseline contextvars Context,
starts one asyncio server per listening socket and waits for a stop signal (recorded by a
loop signal handler; acted on here). Each connection gets a ``FastCGIProtocol`` owning one
sans-IO ``FastCGIConnection``; each request is an ``ASGICycle`` run as a task in a fresh
copy of the baseline Context.

Flow control both ways: request body beyond ``BODY_HIGH_WATER`` waiting for the app pauses
reading the socket; response writes await ``drain`` while the transport is over its high
water mark (docs/protocol-notes.md, peer bug 5).

Hot path (one FastCGI connection per request behind a stock nginx): what is the same for
every connection is prepared once on the worker (codec arguments, the keep-alive veto);
every request goes through the codec and ``build_scope`` (one path); flow-control
structures are made on first use; the cycle remembers its task (no ``current_task``
lookup at the end); timers are armed only when a timeout is configured.

Graceful stop: stop accepting, close idle keep-alive connections, let in-flight requests
finish (closing their connections as they end) for ``graceful_timeout_s``, cancel the rest,
run lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from ..asgi.cycle import ASGICycle
from ..asgi.lifespan import Lifespan
from ..asgi.scope import build_scope
from ..config import Config
from ..log import AccessLog, reopen_files
from ..protocol import (
    ConnectionClosed,
    RemoteProtocolError,
    RequestAborted,
    RequestReceived,
    StdinEnded,
    StdinReceived,
)
from ..response import protocol_error_reply
from ..sockets import ClientFilter, describe
from .base import CodecOptions, WorkerControl

if TYPE_CHECKING:  # imported only where used: status pages (json), the slow log, queue time
    from ..queueing import Queueing
    from ..scoreboard import WorkerSlot
    from ..status import StatusPages

logger = logging.getLogger("gateway.error")


_connection_serial = itertools.count(1)
#: While stopping, a keep-alive connection is closed once it has been idle this long:
#: closing right after END_REQUEST races with nginx reusing it (docs/protocol-notes.md, nginx fact 10).
IDLE_CLOSE_S = 0.02
#: Longest wait for the rest of a body we no longer need before closing anyway.
LINGER_S = 2.0


class FastCGIProtocol(asyncio.Protocol):
    __slots__ = (
        "_drain_waiters",
        "_linger",
        "_paused_by",
        "closed",
        "conn",
        "cycles",
        "first_seen",
        "idle_since",
        "loop",
        "serial",
        "served",
        "server",
        "transport",
        "write_paused",
    )

    def __init__(self, server: AsyncWorker) -> None:
        self.server = server
        self.serial = next(_connection_serial)
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        conn = self.conn = server.codec_options.new()
        conn.keepalive_veto = server.veto
        self.cycles: dict[int, ASGICycle] = {}
        self.write_paused = False
        # Both made on first use: most connections never pause either way.
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._paused_by: set[ASGICycle] | None = None
        self.closed = False
        self._linger: asyncio.TimerHandle | None = None
        self.idle_since = time.monotonic()
        self.served = 0
        self.first_seen = False

    # -- transport callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        if server.client_filter is not None:
            peer = transport.get_extra_info("peername")
            if not server.client_filter.allowed(peer):
                logger.warning("connection from %s refused: not in --allowed-clients", peer[0])
                self.first_seen = True
                self.closed = True
                transport.close()
                return
        if len(server.connections) >= server.config.max_connections:
            logger.warning(
                "connection refused: %d connections open (--max-connections)", len(server.connections)
            )
            self.first_seen = True
            self.closed = True
            transport.close()
            return
        server.connections.add(self)
        server.connection_opened()
        if server.slot is not None:
            server.slot.accepted()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        try:
            events = conn.feed(data)
        except RemoteProtocolError as exc:
            self._protocol_error(exc)
            return
        out = conn.data_to_send()
        if out:
            self.transport.write(out)  # type: ignore[union-attr]
        cycles = self.cycles
        for ev in events:
            kind = type(ev)
            if kind is StdinReceived:
                cycle = cycles.get(ev.request_id)
                if cycle is not None:
                    self._body(cycle, ev.data)
            elif kind is RequestReceived:
                self._start(ev.request_id, ev.role, ev.params)
            elif kind is StdinEnded:
                cycle = cycles.get(ev.request_id)
                if cycle is not None:
                    cycle.end_body()
            elif kind is RequestAborted:
                cycle = cycles.get(ev.request_id)
                if cycle is not None:
                    logger.info("request %d aborted by the web server", ev.request_id)
                    cycle.abort()
            elif kind is ConnectionClosed:
                pass  # connection_lost follows
        if conn.should_close and not conn.active_requests:
            self._close_when_drained()

    def eof_received(self) -> bool | None:
        try:
            events = self.conn.feed(b"")  # the codec tells whether a record was cut short
        except RemoteProtocolError:
            events = []
        if any(type(ev) is ConnectionClosed and ev.incomplete for ev in events):
            logger.warning(
                "FastCGI protocol error from %s: connection closed in the middle of a record; "
                "closing the connection",
                self._peer(),
            )
        self._disconnect_all()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.first_seen:
            self.first_seen = True
            self.server.unstarted -= 1
        self.closed = True
        if self.cycles or self._paused_by:
            self._disconnect_all()
        self.server.connections.discard(self)
        if self._drain_waiters:
            self._wake_drainers()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drainers()

    def _wake_drainers(self) -> None:
        waiters = self._drain_waiters
        if waiters:
            self._drain_waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # -- used by the cycles ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    async def drain(self) -> None:
        if self.write_paused and not self.closed:
            waiter = self.loop.create_future()
            if self._drain_waiters is None:
                self._drain_waiters = [waiter]
            else:
                self._drain_waiters.append(waiter)
            await waiter

    def pause_reading_for(self, cycle: ASGICycle) -> None:
        if not self._paused_by and not self.closed:
            self.transport.pause_reading()  # type: ignore[union-attr]
        if self._paused_by is None:
            self._paused_by = {cycle}
        else:
            self._paused_by.add(cycle)

    def resume_reading_for(self, cycle: ASGICycle) -> None:
        paused_by = self._paused_by
        if paused_by and cycle in paused_by:
            paused_by.discard(cycle)
            if not paused_by and not self.closed:
                self.transport.resume_reading()  # type: ignore[union-attr]

    def cycle_finished(self, cycle: ASGICycle) -> None:
        """END_REQUEST for ``cycle`` was written: detach it (race-free id reuse)."""
        cycles = self.cycles
        if cycles.get(cycle.rid) is cycle:
            del cycles[cycle.rid]
        if self._paused_by:
            self.resume_reading_for(cycle)
        self.served += 1
        if not cycles:
            self.idle_since = time.monotonic()
        conn = self.conn
        if conn.should_close and not conn.active_requests:
            self._close_when_drained()

    # -- internals -------------------------------------------------------------------

    def _start(self, rid: int, role: int, params: list[tuple[bytes, bytes]]) -> None:
        server = self.server
        if not self.served and not self.cycles and not self.first_seen:
            self.first_seen = True
            server.unstarted -= 1
        if server.pages is not None:
            reply = server.pages.answer(params)
            if reply is not None:
                self.write(self.conn.send_response(rid, reply))
                return
        queued = None
        queueing = server.queueing
        if queueing is not None:
            queued = queueing.params(params)
            if queued is not None and queued > queueing.limit_s:  # before the app runs
                env = {k.decode("latin-1"): v.decode("latin-1") for k, v in params}
                reply = queueing.shed(queued, server.access, env, f"{os.getpid()}-{self.serial}-{rid}")
                self.write(self.conn.send_response(rid, reply))
                return
        scope = build_scope(
            params,
            root_path=server.root_path,
            state=server.state,
            role=role,
            request_id=rid,
            connection=self.serial,
        )
        cycle = ASGICycle(self, rid, scope)
        cycle.queued = queued
        self.cycles[rid] = cycle
        if server.slot is not None:
            qs = scope["query_string"]
            uri = scope["path"] + ("?" + qs.decode("latin-1") if qs else "")
            clen = next((v for k, v in scope["headers"] if k == b"content-length"), b"0")
            server.slot.start(scope["method"], uri, int(clen) if clen.isdigit() else 0, queued)
        server.start_cycle(cycle)

    def _body(self, cycle: ASGICycle, data: bytes) -> None:
        limit = self.server.config.max_body_bytes
        if limit is not None:
            cycle.received += len(data)
            if cycle.received > limit and not cycle.started:
                logger.warning("request body over --max-body-size (%d bytes): 413", limit)
                cycle.fail(413)
                cycle.disconnect()
                return
        cycle.feed_body(data)

    def _disconnect_all(self) -> None:
        if self.cycles:
            for cycle in list(self.cycles.values()):
                cycle.disconnect()
            self.cycles.clear()
        self._paused_by = None

    def _protocol_error(self, exc: RemoteProtocolError) -> None:
        logger.warning("FastCGI protocol error from %s: %s; closing the connection", self._peer(), exc)
        reply = protocol_error_reply(exc)
        if reply and not self.closed:
            self.transport.write(reply)  # type: ignore[union-attr]
        self.close()

    def _peer(self) -> str:
        try:
            peer = self.transport.get_extra_info("peername")  # type: ignore[union-attr]
        except Exception:
            return "?"
        return str(peer) if peer else "unix socket peer"

    def close(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if not self.closed:
            self.closed = True
            if self.cycles or self._paused_by:
                self._disconnect_all()
            self.transport.close()  # type: ignore[union-attr]

    def _close_when_drained(self) -> None:
        """Close now, or once the body of a request answered early has arrived (closing
        under nginx while it still sends makes it log a reset and maybe answer 502)."""
        if not self.conn.awaiting_input:
            self.close()
        elif self._linger is None:
            self._linger = self.loop.call_later(LINGER_S, self.close)

    def close_if_idle(self, min_idle: float = 0.0) -> None:
        if not self.conn.active_requests and time.monotonic() - self.idle_since >= min_idle:
            self.close()


class AsyncWorker:
    """Serves an ASGI 3 application on already-bound listening sockets."""

    def __init__(
        self,
        config: Config,
        app: Any,
        sockets: list[socket.socket],
        control: WorkerControl | None = None,
        pages: StatusPages | None = None,
        slot: WorkerSlot | None = None,
    ) -> None:
        self.pages = pages
        self.slot = slot
        self.isolation: Any = None
        self.access: AccessLog | None = None
        self.queueing: Queueing | None = None  # made in serve(): once the access log is known
        self.client_filter = ClientFilter(config.allowed_clients) if config.allowed_clients else None
        self.interface = "asgi"
        self.control = control or WorkerControl()
        self.config = config
        self.app = app
        self.sockets = sockets
        self.root_path = config.root_path
        self.debug = config.debug
        self.state: dict[str, Any] | None = None
        self.connections: set[FastCGIProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.requests_served = 0
        self.started_requests = 0
        self.unstarted = 0
        self._accept_closed = False
        self._servers: list[asyncio.AbstractServer] = []
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._stop: asyncio.Event | None = None
        self._baseline: contextvars.Context | None = None
        self.signal_received: int | None = None
        #: FastCGIConnection arguments, the same for every connection
        self.codec_options = CodecOptions(config, multiplex=True)
        self.veto = self.keepalive_veto  # one bound method for every connection
        self._timed = bool(config.request_timeout_s or config.slow_request_timeout_s)

    # -- running ---------------------------------------------------------------------

    def run(self) -> None:
        """Blocking entry point: pick the event loop, serve until stopped."""
        use_uvloop = self.config.loop == "uvloop"
        if self.config.loop == "auto":
            try:
                import uvloop

                use_uvloop = True
            except ImportError:
                use_uvloop = False
        if use_uvloop:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        asyncio.run(self.serve())

    def _on_signal(self, signum: int) -> None:
        # Runs in the loop (add_signal_handler), but still only records: serve() acts.
        self.signal_received = signum
        if self._stop is not None:
            self._stop.set()

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.slot is not None or self.access is not None or self.config.max_queue_time_s:
            from ..queueing import make_queueing

            self.queueing = make_queueing(self.config, self.slot, self.access)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            self.loop.add_signal_handler(sig, self._on_signal, sig)
        self.loop.add_signal_handler(signal.SIGUSR1, reopen_files)
        lifespan = Lifespan(self.app, self.config.lifespan)
        await lifespan.startup()
        if lifespan.supported:
            self.state = lifespan.state
        self._baseline = contextvars.copy_context()
        servers = []
        for sock in self.sockets:
            factory = self._protocol_factory
            if sock.family == socket.AF_UNIX:
                srv = await self.loop.create_unix_server(factory, sock=sock, backlog=self.config.backlog)
            else:
                srv = await self.loop.create_server(factory, sock=sock, backlog=self.config.backlog)
            servers.append(srv)
            logger.info("serving ASGI on %s (async worker, %s)", describe(sock), type(self.loop).__module__)
        self._servers = servers
        self.control.ready()
        beat = self.loop.create_task(self._heartbeat())
        await self._stop.wait()
        beat.cancel()
        logger.info(
            "stopping: %s", signal.Signals(self.signal_received).name if self.signal_received else "requested"
        )
        await self._shutdown(servers)
        await lifespan.shutdown()

    async def _heartbeat(self) -> None:
        # Beats come from the loop itself: a loop blocked by the app stops beating and the
        # master notices.
        while True:
            await asyncio.sleep(self.control.heartbeat_s)
            self.control.beat()
            self._sweep(time.monotonic())

    def _sweep(self, now: float) -> None:
        """Close connections with no request in progress for too long: never a complete
        request (read timeout, also slow-trickled params) or idle kept-alive ones."""
        cfg = self.config
        for proto in list(self.connections):
            if proto.cycles:
                continue
            limit = cfg.keepalive_timeout_s if proto.served else cfg.read_timeout_s
            if now - proto.idle_since > limit:
                logger.info(
                    "closing connection %s after %.0fs",
                    "idle between requests" if proto.served else "that sent no complete request",
                    now - proto.idle_since,
                )
                proto.close()

    def keepalive_veto(self) -> bool:
        """End the kept-alive connection with this request (see FastCGIConnection)."""
        return self.stopping or self.signal_received is not None or self.control.last_on_connection()

    def _protocol_factory(self) -> FastCGIProtocol:
        return FastCGIProtocol(self)

    def connection_opened(self) -> None:
        self.unstarted += 1
        if self.control.request_limit:
            self._check_accept_limit()

    def _check_accept_limit(self) -> None:
        """Stop accepting once the requests begun plus the connections accepted but not yet
        started reach the request limit (each will bring at least one request)."""
        limit = self.control.request_limit
        if limit and not self._accept_closed and self.started_requests + self.unstarted >= limit:
            self._accept_closed = True
            for srv in self._servers:
                srv.close()

    def start_cycle(self, cycle: ASGICycle) -> None:
        self.started_requests += 1
        if self.control.request_limit:
            self._check_accept_limit()
        if self.access is not None:
            cycle.t0 = time.monotonic()
        task = cycle.task = self.loop.create_task(cycle.run(self.app), context=self._baseline.copy())  # type: ignore[union-attr]
        self.tasks.add(task)
        if self._timed:
            cfg = self.config
            timers = cycle.timers = []
            if cfg.slow_request_timeout_s:
                timers.append(self.loop.call_later(cfg.slow_request_timeout_s, self._slow, cycle, task))
            if cfg.request_timeout_s:
                timers.append(self.loop.call_later(cfg.request_timeout_s, self._timeout, cycle, task))

    def _slow(self, cycle: ASGICycle, task: asyncio.Task[None]) -> None:
        from ..watchdog import format_task_stack, log_slow

        log_slow(cycle.describe(), self.config.slow_request_timeout_s, format_task_stack(task))

    def _timeout(self, cycle: ASGICycle, task: asyncio.Task[None]) -> None:
        logger.error(
            "request timeout (%.1fs): %s; answering 504 and recycling the worker",
            self.config.request_timeout_s,
            cycle.describe(),
        )
        cycle.fail(504)
        task.cancel()
        # Keep serving: the master retires this worker once its replacement is ready.
        self.control.request_recycle("timeout")

    def request_done(self, cycle: ASGICycle) -> None:
        self.requests_served += 1
        if self.access is not None:
            scope = cycle.scope
            qs = scope["query_string"]
            self.access.log(
                scope["client"][0] if scope["client"] else "",
                scope["method"],
                scope["path"] + ("?" + qs.decode("latin-1") if qs else ""),
                "HTTP/" + scope["http_version"],
                cycle.status,
                cycle.sent,
                time.monotonic() - cycle.t0,
                cycle.request_id,
                cycle.queued,
            )
        if self.slot is not None:
            self.slot.finish(cycle.status)
        if cycle.timers:
            for timer in cycle.timers:
                timer.cancel()
        task = cycle.task  # this task: request_done runs at the end of cycle.run
        if task is not None:
            self.tasks.discard(task)
        if self.control.request_done() and not self.stopping:
            logger.info("worker %d recycling (%s)", os.getpid(), self.control.recycling)
            self.request_stop()

    def _drain_backlog(self) -> None:
        """Take the connections already queued in the listen backlog (one bounded burst)."""
        for sock in self.sockets:
            for _ in range(64):
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError, OSError):
                    break
                conn.setblocking(False)
                self.loop.create_task(self.loop.connect_accepted_socket(self._protocol_factory, conn))

    async def _shutdown(self, servers: list[asyncio.AbstractServer]) -> None:
        self.stopping = True
        if self.control.recycling is None:  # a recycle leaves the backlog to its siblings
            self._drain_backlog()
        for srv in servers:
            srv.close()
        await asyncio.sleep(0)
        deadline = time.monotonic() + self.config.graceful_timeout_s
        while (self.tasks or self.connections) and time.monotonic() < deadline:
            for proto in list(self.connections):
                proto.close_if_idle(IDLE_CLOSE_S)
            await asyncio.sleep(0.005)
        if self.tasks:
            logger.warning("graceful timeout: cancelling %d unfinished request(s)", len(self.tasks))
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        for proto in list(self.connections):
            proto.close()
