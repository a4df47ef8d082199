"""The master's own tiny FastCGI responder for ``--status-bind``: the status and ping
pages stay available when every worker is busy (a sync pool stuck in slow requests).

It lives in the master's select loop: non-blocking sockets, one sans-IO codec per
connection, a response as soon as the request's params and (empty) body have arrived,
then close. Anything that is not the status or ping path gets 404. Connections that do
not complete a request within a second are dropped, so a silent client cannot pile up
in the master.
"""

from __future__ import annotations

import logging
import socket
import time

from .protocol import FastCGIConnection, RemoteProtocolError, RequestReceived, StdinEnded
from .status import StatusPages, cgi_response

logger = logging.getLogger("gateway.error")

_DEADLINE_S = 1.0


class StatusServer:
    def __init__(self, sockets: list[socket.socket], pages: StatusPages) -> None:
        self.listeners = {s.fileno(): s for s in sockets}
        for s in sockets:
            s.setblocking(False)
        self.pages = pages
        self.conns: dict[int, tuple[socket.socket, FastCGIConnection, float, list[RequestReceived]]] = {}

    def fds(self) -> list[int]:
        return [*self.listeners, *self.conns]

    def handle(self, fd: int) -> None:
        if fd in self.listeners:
            try:
                sock, _ = self.listeners[fd].accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            self.conns[sock.fileno()] = (sock, FastCGIConnection(), time.monotonic(), [])
            return
        entry = self.conns.get(fd)
        if entry is None:
            return
        sock, codec, _, pending = entry
        try:
            data = sock.recv(65536)
            events = codec.feed(data)
        except (OSError, RemoteProtocolError):
            self._close(fd)
            return
        out = codec.data_to_send()
        for ev in events:
            if type(ev) is RequestReceived:
                pending.append(ev)
            elif type(ev) is StdinEnded:
                for req in pending:
                    if req.request_id == ev.request_id:
                        body = self.pages.answer(req.params, master=True) or cgi_response(
                            "404 Not Found", "text/plain", b"only the status and ping pages are served here\n"
                        )
                        out += codec.send_response(req.request_id, body)
                        pending.remove(req)
                        break
        if out:
            try:
                sock.send(out)
            except OSError:
                self._close(fd)
                return
        if not data or codec.should_close:
            self._close(fd)

    def sweep(self) -> None:
        now = time.monotonic()
        for fd, (_, _, started, _) in list(self.conns.items()):
            if now - started > _DEADLINE_S:
                self._close(fd)

    def _close(self, fd: int) -> None:
        entry = self.conns.pop(fd, None)
        if entry is not None:
            entry[0].close()

    def close(self) -> None:
        for fd in list(self.conns):
            self._close(fd)
        for s in self.listeners.values():
            s.close()
