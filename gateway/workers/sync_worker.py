"""The sync worker: a blocking FastCGI loop that calls a WSGI app on its own thread.

Strategy
--------
One epoll set holds the listening sockets (EPOLLEXCLUSIVE, so prefork siblings do not
all wake for one connection), a wake-up pipe for signals, and idle keep-alive
connections. A request is served start to finish before the next is looked at (the
PHP-FPM/uWSGI model), but idle keep-alive connections never block the worker: whichever
connection or listener becomes readable first is served, so nginx's upstream keepalive
cache cannot starve new connections.

A new connection is read optimistically (MSG_DONTWAIT) right after accept: nginx sends
BEGIN_REQUEST, PARAMS and STDIN in its first write, so most requests are served without
another epoll round trip. The environ is built straight from the params; ``wsgi.input``
pulls further STDIN records from the same socket only when the app reads. Each request
runs in a fresh copy of the baseline contextvars Context.

Signals only record (and wake epoll through set_wakeup_fd); the loop stops accepting
after the current request, closes idle connections and returns.
"""

from __future__ import annotations

import _socket
import contextvars
import errno
import logging
import os
import select
import signal
import socket
import struct
import time
from functools import partial
from typing import Any, Final

from ..config import Config
from ..isolation.base import IsolationLayer, RequestInfo, describe_failure
from ..log import AccessLog, reopen_files
from ..protocol import (
    ConnectionClosed,
    RemoteProtocolError,
    RequestAborted,
    RequestReceived,
    StdinEnded,
    StdinReceived,
)
from ..queueing import Queueing, make_queueing
from ..response import error_response, failure_reply, protocol_error_reply
from ..scoreboard import WorkerSlot
from ..sockets import ClientFilter, describe
from ..status import StatusPages
from ..watchdog import Running, Watchdog
from ..wsgi.environ import build_environ
from ..wsgi.handler import WSGIResponder
from ..wsgi.streams import ErrorStream, FileWrapper, InputStream
from .base import CodecOptions, WorkerControl
from .sync_conn import Conn

logger = logging.getLogger("gateway.error")

#: Below glibc's mmap threshold: a larger recv buffer costs mmap+mremap+munmap per call.
RECV_SIZE: Final = 64 * 1024
ACCEPT_BURST: Final = 32
#: While stopping, a keep-alive connection is closed once it has been idle this long:
#: closing right after END_REQUEST races with nginx reusing it (docs/protocol-notes.md, nginx fact 10).
IDLE_CLOSE_S: Final = 0.02
#: Longest wait for the rest of a body we no longer need before closing anyway.
LINGER_S: Final = 2.0
EPOLLEXCLUSIVE: Final = getattr(select, "EPOLLEXCLUSIVE", 1 << 28)
_SOCK_STREAM: Final = int(socket.SOCK_STREAM)
# Module attributes read per request, looked up once (compiled, ``socket.X`` and
# ``time.monotonic`` are attribute lookups on a module at every use).
_DONTWAIT: Final = int(socket.MSG_DONTWAIT)
_monotonic: Final = time.monotonic


def _describe(environ: dict[str, Any], seq: int) -> RequestInfo:
    """The isolation layer's description of a request (its id formatted only when read)."""
    return RequestInfo(
        environ["REQUEST_METHOD"],
        environ.get("PATH_INFO", ""),
        environ.get("HTTP_X_REQUEST_ID"),
        "sync",
        "wsgi",
        seq,
    )


class SyncWorker:
    """Serves a WSGI application, one request at a time, on bound listening sockets."""

    multithread = False

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
        self.isolation: IsolationLayer | None = None
        self.access: AccessLog | None = None
        self.queueing: Queueing | None = None  # made in run(): once the access log is known
        self._reopen = False
        self.config = config
        self.app = app
        self.sockets = sockets
        self.control = control or WorkerControl()
        self.stopping = False
        self.draining = False
        self.signal_received: int | None = None
        self.requests_served = 0
        #: "wsgi" (set by server.child_main; declared here: a compiled class has no __dict__)
        self.interface = "wsgi"
        self._conns: dict[int, Conn] = {}
        #: The listeners alone, polled with no timeout: whether another connection waits.
        self._waiting: Any = None
        self._listeners: dict[int, socket.socket] = {}
        self._families: dict[int, int] = {}
        # Per-connection and per-request constants, looked up once (hot path).
        self._codec_options = CodecOptions(config, multiplex=False, text_params=True)
        self._max_connections = config.max_connections
        self._veto = self._keepalive_veto
        self._base = {
            "wsgi.version": (1, 0),
            "wsgi.multithread": self.multithread,
            "wsgi.multiprocess": config.workers > 1,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
        }
        self._errors = ErrorStream()
        self._base["wsgi.errors"] = self._errors  # replaced per request with --forward-stderr
        self._root_path = config.root_path
        # Read per request: kept here, typed (a Config field is a generic attribute lookup).
        self._max_body: int | None = config.max_body_bytes
        self._debug: bool = config.debug
        self._forward_stderr: bool = config.forward_stderr
        self._filter = ClientFilter(config.allowed_clients) if config.allowed_clients else None
        secs = max(1.0, config.read_timeout_s)
        self._io_timeout = struct.pack("ll", int(secs), int((secs % 1) * 1_000_000))
        self.watchdog = Watchdog(config.request_timeout_s, config.slow_request_timeout_s, self._on_timeout)
        self._watched = self.watchdog.enabled  # a property: read once, not per request
        self._guarded = self._watched or self._forward_stderr
        self._timed_out = False

    def _on_timeout(self) -> None:
        # Watchdog thread: only flags; the main loop stops accepting after the request.
        self._timed_out = True
        self.control.request_recycle("timeout")

    # -- signals -----------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGUSR1:
            self._reopen = True  # recorded only; the loop reopens the log files
        else:
            self.signal_received = signum  # recorded only; the loop acts

    def _install_signals(self) -> tuple[int, int]:
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)
        return rfd, wfd

    # -- main loop ---------------------------------------------------------------------

    def run(self) -> None:
        rfd, wfd = self._install_signals()
        self.queueing = make_queueing(self.config, self.slot, self.access)
        self._baseline = contextvars.copy_context()
        ep = select.epoll()
        self._ep = ep
        self._waiting = select.epoll()
        for sock in self.sockets:
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self._io_timeout)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self._io_timeout)
            self._listen_on(sock)
            logger.info("serving WSGI on %s (sync worker)", describe(sock))
        ep.register(rfd, select.EPOLLIN)
        control = self.control
        self.watchdog.start()
        control.ready()
        deadline = 0.0
        last_sweep = time.monotonic()
        try:
            while True:
                if self.signal_received is not None and not self.stopping:
                    self.stopping = True
                    logger.info("stopping: %s", signal.Signals(self.signal_received).name)
                    self._drain_backlog()
                    self._stop_accepting()
                if self.stopping or self.draining:
                    if not deadline:
                        deadline = time.monotonic() + self.config.graceful_timeout_s
                    if not self._close_idle() or time.monotonic() > deadline:
                        break
                try:
                    ready = ep.poll(0.005 if deadline else 1.0)
                except InterruptedError:
                    continue
                for fd, _mask in ready:
                    if fd in self._listeners:
                        self._accept(self._listeners[fd])
                    elif fd == rfd:
                        try:
                            os.read(rfd, 512)
                        except BlockingIOError:
                            pass
                    else:
                        conn = self._conns.get(fd)
                        if conn is not None:
                            self._readable(conn)
                control.beat()
                if self._reopen:
                    self._reopen = False
                    reopen_files()
                now = time.monotonic()
                if now - last_sweep >= 1.0:
                    last_sweep = now
                    self._sweep(now)
        finally:
            self.watchdog.stop()
            for conn in list(self._conns.values()):
                self._close(conn)
            ep.close()
            self._waiting.close()
            signal.set_wakeup_fd(-1)
            os.close(rfd)
            os.close(wfd)

    def _listen_on(self, sock: socket.socket) -> None:
        """Watch a listening socket: in the loop's epoll (EPOLLEXCLUSIVE: one sibling wakes
        for a connection), and in ``_waiting``, polled without waiting by ``_accept``."""
        fd = sock.fileno()
        self._listeners[fd] = sock
        self._families[fd] = int(sock.family)
        self._ep.register(fd, select.EPOLLIN | EPOLLEXCLUSIVE)
        self._waiting.register(fd, select.EPOLLIN)

    def _keepalive_veto(self) -> bool:
        return (
            self.stopping
            or self.draining
            or self.signal_received is not None
            or self.control.last_on_connection()
        )

    def _stop_accepting(self) -> None:
        for fd, sock in list(self._listeners.items()):
            for ep in (self._ep, self._waiting):
                try:
                    ep.unregister(fd)
                except (OSError, ValueError):
                    pass
            # Close this process's copy: once the master and every worker have closed it, the
            # kernel refuses new connections (nginx retries those, POSTs included) instead of
            # queueing them in a backlog nobody accepts from (reset at exit: a lost POST).
            sock.close()
        self._listeners.clear()

    def _drain_backlog(self) -> None:
        """Serve connections already queued in the listen backlog before stopping."""
        for sock in list(self._listeners.values()):
            self._accept(sock)  # one bounded burst: siblings may still be serving

    def _sweep(self, now: float) -> None:
        """Close connections that never sent a request (read timeout) or idle kept ones."""
        cfg = self.config
        for conn in list(self._conns.values()):
            if conn.busy or conn.input is not None:
                continue
            limit = cfg.keepalive_timeout_s if conn.served else cfg.read_timeout_s
            if conn.codec.should_close:
                limit = LINGER_S  # only waiting for the rest of a body we answered early
            if now - conn.idle_since > limit:
                logger.info(
                    "closing connection %s after %.0fs",
                    "idle between requests" if conn.served else "that sent no complete request",
                    now - conn.idle_since,
                )
                self._close(conn)

    def _close_idle(self) -> bool:
        """Close connections idle for IDLE_CLOSE_S; False once none is left."""
        now = time.monotonic()
        for conn in list(self._conns.values()):
            if not conn.busy and conn.input is None and now - conn.idle_since >= IDLE_CLOSE_S:
                if not conn.poisoned:
                    # An empty STDERR record: nginx closes a cached connection that turns
                    # readable, and ignores it when it has just sent a request on it.
                    try:
                        conn.sock.send(b"\x01\x07\x00\x01\x00\x00\x00\x00", socket.MSG_DONTWAIT)
                        conn.poisoned = now
                    except OSError:
                        self._close(conn)
                elif now - conn.poisoned > 1.0:
                    self._close(conn)
        return bool(self._conns)

    def _accept(self, listener: socket.socket) -> None:
        """Accept and serve connections while the backlog has some (bounded, so that idle
        keep-alive connections with a new request are not starved)."""
        family = self._families[listener.fileno()]  # socket.family is a slow property
        waiting = self._waiting
        for i in range(ACCEPT_BURST):
            if (self.signal_received is not None and not self.stopping) or self.draining:
                return
            # After the first: accept again only when a connection waits. An accept on an
            # empty backlog raises BlockingIOError, which costs far more than this poll.
            if i and not waiting.poll(0):
                return
            try:
                fd, _addr = listener._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return  # backlog empty, or a sibling worker took it
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    logger.error("accept failed: %s", exc)
                    return
                raise
            # accept4 gives a blocking fd (CPython still validates it with one getsockname
            # when wrapping it). TCP connections inherit the kernel I/O timeouts set on the
            # listener (see run()); unix ones rely on nginx's own timeouts and on the
            # read/keep-alive sweeps. The C socket type: socket.socket's Python-level
            # __init__/close add Python-level work per connection, and nothing here needs its extras.
            sock = _socket.socket(family, _SOCK_STREAM, 0, fd)
            if self._filter is not None and not self._filter.allowed(_addr):
                logger.warning("connection from %s refused: not in --allowed-clients", _addr[0])
                sock.close()
                continue
            if len(self._conns) >= self._max_connections:
                logger.warning(
                    "connection refused: %d connections open (--max-connections)", len(self._conns)
                )
                sock.close()
                continue
            try:
                data = sock.recv(RECV_SIZE, _DONTWAIT)
            except BlockingIOError:
                data = None
            except OSError:
                sock.close()
                continue
            codec = self._codec_options.new()
            codec.keepalive_veto = self._veto
            conn = Conn(sock, codec)
            conn.idle_since = _monotonic()
            if self.slot is not None:
                self.slot.accepted()
            self._conns[conn.fd] = conn
            if data is None:
                self._wait_for(conn)
            else:
                self._process(conn, data)

    def _wait_for(self, conn: Conn) -> None:
        """Watch ``conn`` in epoll until its next bytes arrive."""
        if not conn.registered:
            conn.registered = True
            self._ep.register(conn.fd, select.EPOLLIN)

    def _readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        self._process(conn, data)  # the next request, kept alive

    def _close(self, conn: Conn) -> None:
        if self._conns.pop(conn.fd, None) is not None:
            if conn.registered:
                try:
                    self._ep.unregister(conn.fd)
                except (OSError, ValueError):
                    pass
            conn.sock.close()

    # -- protocol ----------------------------------------------------------------------

    def _feed(self, conn: Conn, data: bytes) -> bool:
        """Feed bytes and dispatch events; False when the connection must be dropped."""
        try:
            events = conn.codec.feed(data)
        except RemoteProtocolError as exc:
            logger.warning("FastCGI protocol error: %s; closing the connection", exc)
            reply = protocol_error_reply(exc)
            if reply:
                try:
                    conn.sock.sendall(reply)
                except OSError:
                    pass
            if conn.input is not None:
                conn.input.disconnect()
            conn.dead = True
            return False
        out = conn.codec.data_to_send()
        if out:
            try:
                conn.sock.sendall(out)
            except OSError:
                conn.dead = True
                return False
        ev: Any  # dispatched on its type below
        for ev in events:
            kind = type(ev)
            if kind is StdinReceived:
                if conn.input is not None:
                    conn.input.feed(ev.data)
            elif kind is RequestReceived:
                conn.request = ev
                conn.input = InputStream(partial(self._pull, conn), self._max_body)
            elif kind is StdinEnded:
                if conn.input is not None:
                    conn.input.end()
            elif kind is RequestAborted or kind is ConnectionClosed:
                if conn.input is not None:
                    conn.input.disconnect()
                if kind is ConnectionClosed:
                    conn.dead = True
                    if ev.incomplete:
                        logger.warning(
                            "FastCGI protocol error: connection closed in the middle of a record; "
                            "closing the connection"
                        )
        return True

    def _pull(self, conn: Conn) -> None:
        """Blocking read of more request body for ``wsgi.input``."""
        try:
            data = conn.sock.recv(RECV_SIZE)
        except OSError:
            data = b""
        if not self._feed(conn, data) and conn.input is not None:
            conn.input.disconnect()

    def _process(self, conn: Conn, data: bytes) -> None:
        if not self._feed(conn, data):
            self._close(conn)
            return
        while conn.request is not None and not conn.dead:
            req = conn.request
            conn.request = None
            environ = build_environ(req.params, self._base, root_path=self._root_path)  # type: ignore[arg-type]
            self._serve(conn, req.request_id, environ)
        self._settle(conn)

    def _settle(self, conn: Conn) -> None:
        """After serving: close the connection, or watch it for the next request."""
        codec = conn.codec
        if conn.dead or (codec.should_close and not codec.active_requests and not codec.awaiting_input):
            self._close(conn)
        else:
            self._wait_for(conn)

    def _serve(self, conn: Conn, rid: int, environ: dict[str, Any]) -> None:
        stream = conn.input
        if self.pages is not None:
            reply = self.pages.answer_environ(environ)
            if reply is not None:
                conn.input = None
                self._send_or_drop(conn, conn.codec.send_response(rid, reply))
                return
        queued = None
        queueing = self.queueing
        if queueing is not None:
            queued = queueing.environ(environ)
            if queued is not None and queued > queueing.limit_s:  # before the app runs
                conn.input = None
                reply = queueing.shed(queued, self.access, environ, environ.get("HTTP_X_REQUEST_ID", "-"))
                self._send_or_drop(conn, conn.codec.send_response(rid, reply))
                return
        environ["wsgi.input"] = stream
        limit = self._max_body
        if limit is not None and int(environ.get("CONTENT_LENGTH") or 0) > limit:
            logger.warning("request body over --max-body-size (%d bytes): 413", limit)
            self._send_or_drop(conn, conn.codec.send_response(rid, error_response(413), 1))
            conn.input = None
            return
        # The responder's lock is needed only when another thread may send on this request:
        # the watchdog (its 504), or app threads writing wsgi.errors with --forward-stderr.
        responder = WSGIResponder(conn.codec, rid, conn.sock, environ, self._debug, self._guarded)
        if self._forward_stderr:
            environ["wsgi.errors"] = ErrorStream(responder.forward_stderr)
        access = self.access
        if access is not None:
            t0 = _monotonic()
        slot = self.slot
        if slot is not None:
            slot.start(
                environ["REQUEST_METHOD"],
                environ.get("REQUEST_URI", ""),
                int(environ.get("CONTENT_LENGTH") or 0),
                queued,
            )
        layer = self.isolation
        probe = None
        if layer is not None:
            # With a probe, the layer needs nothing before the request (the common case:
            # one attribute read); see IsolationLayer._index.
            probe = layer.probe
            if probe is None:
                light = layer.light
                if not light:  # a light layer's checks need no RequestInfo (after_sync)
                    info = _describe(environ, self.requests_served + 1)
                    if layer.needs_before:
                        layer.before_request(info)
                if layer.buffering:
                    responder.buffer = []
        if self._watched:
            watchdog = self.watchdog
            running = Running(responder, responder.describe())
            watchdog.running[running.thread_id] = running
            ok = self._baseline.copy().run(responder.run, self.app)
            del watchdog.running[running.thread_id]
        else:
            ok = self._baseline.copy().run(responder.run, self.app)
        self.requests_served += 1
        if layer is not None:
            if probe is not None:
                if not probe.unchanged():  # else nothing it watches changed: the layer is not called
                    layer.after_sync(_describe, environ, self.requests_served)  # no fail policy
            else:
                if light:
                    failing = layer.after_sync(_describe, environ, self.requests_served)
                else:
                    failing = layer.after_request(info)
                if responder.buffer is not None:
                    held, responder.buffer = responder.buffer, None
                    if failing:
                        body = error_response(500, describe_failure(failing))
                        held = [failure_reply(rid, body)]
                    self._send_or_drop(conn, b"".join(held))
        if slot is not None:
            slot.finish(responder.code)
        if access is not None:
            access.log(
                environ.get("REMOTE_ADDR", ""),
                environ["REQUEST_METHOD"],
                environ.get("REQUEST_URI") or environ.get("PATH_INFO", ""),
                environ.get("SERVER_PROTOCOL", ""),
                responder.code,
                responder.body_bytes,
                _monotonic() - t0,
                environ.get("HTTP_X_REQUEST_ID", "-"),
                queued,
            )
        self._finished(conn, ok)

    def _finished(self, conn: Conn, ok: bool) -> None:
        """A request on ``conn`` is over (``ok`` False: the connection is no longer usable);
        stop accepting when a limit says so (recycling)."""
        stream = conn.input
        if stream is not None:
            stream.release()  # the app may keep its environ (and this stream) in a cycle
            conn.input = None
        conn.served += 1
        conn.idle_since = _monotonic()
        if not ok:
            conn.dead = True
        if (self.control.request_done() or self._timed_out) and not self.draining:
            self.draining = True
            self._stop_accepting()
        if self.draining or self.control.last_on_connection():
            self._poison_idle(conn)

    def _poison_idle(self, current: Conn | None) -> None:
        """Make nginx drop the idle connections it caches to this worker (see _close_idle)."""
        now = time.monotonic()
        for other in list(self._conns.values()):
            if other is not current and not other.poisoned and not other.busy and other.input is None:
                try:
                    other.sock.send(b"\x01\x07\x00\x01\x00\x00\x00\x00", socket.MSG_DONTWAIT)
                    other.poisoned = now
                except OSError:
                    self._close(other)

    def _send_or_drop(self, conn: Conn, data: bytes) -> None:
        try:
            conn.sock.sendall(data)
        except OSError:
            conn.dead = True
