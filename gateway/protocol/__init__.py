"""Sans-IO FastCGI 1.0 codec: bytes in, events out; calls in, bytes out.

This package owns the wire format and the per-connection protocol state. It performs
no I/O (no socket, asyncio, os, selectors or threading imports: a test enforces it), so
the async and sync workers, the FastCGI client and the tests all drive the same code.
"""

from .connection import NEED_DATA, FastCGIConnection
from .constants import (
    FCGI_KEEP_CONN,
    MAX_CONTENT_LENGTH,
    ProtocolStatus,
    RecordType,
    Role,
)
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .events import (
    ConnectionClosed,
    DataEnded,
    DataReceived,
    Event,
    RequestAborted,
    RequestReceived,
    StdinEnded,
    StdinReceived,
)

__all__ = [
    "FCGI_KEEP_CONN",
    "MAX_CONTENT_LENGTH",
    "NEED_DATA",
    "ConnectionClosed",
    "DataEnded",
    "DataReceived",
    "Event",
    "FastCGIConnection",
    "LocalProtocolError",
    "ProtocolError",
    "ProtocolStatus",
    "RecordType",
    "RemoteProtocolError",
    "RequestAborted",
    "RequestReceived",
    "Role",
    "StdinEnded",
    "StdinReceived",
]
