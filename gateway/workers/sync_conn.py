"""The sync worker's per-connection state (``Conn``): the socket and its codec, the request
being read and its ``wsgi.input``, and what the loop needs to decide when to watch it in
epoll, make nginx drop it (``poisoned``) or close it."""

from __future__ import annotations

import _socket

from ..protocol import FastCGIConnection, RequestReceived
from ..wsgi.streams import InputStream


class Conn:
    """One connection of the sync worker."""

    __slots__ = (
        "busy",
        "codec",
        "dead",
        "fd",
        "idle_since",
        "input",
        "poisoned",
        "registered",
        "request",
        "served",
        "sock",
    )

    def __init__(self, sock: _socket.socket, codec: FastCGIConnection) -> None:
        self.poisoned = 0.0
        self.sock = sock
        self.fd = sock.fileno()
        self.codec = codec
        self.request: RequestReceived | None = None
        self.input: InputStream | None = None
        self.dead = False
        self.registered = False
        self.idle_since = 0.0
        self.busy = False
        self.served = 0
