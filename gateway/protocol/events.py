"""Events the codec emits for the worker.

Events are immutable NamedTuples rather than frozen dataclasses: construction is a plain
tuple.__new__ (cheaper than a frozen dataclass's __init__, which sets each field through
object.__setattr__), and several are built per request on the hot path. Workers dispatch
with ``type(event) is X``.
"""

from __future__ import annotations

from typing import NamedTuple


class RequestReceived(NamedTuple):
    """BEGIN_REQUEST and the complete PARAMS stream of a request have arrived. ``params``
    is the ordered multi-list of name-value pairs: ``bytes``, or latin-1 ``str`` from a
    codec built with ``text_params``."""

    request_id: int
    role: int
    keep_conn: bool
    params: list[tuple[bytes, bytes]] | list[tuple[str, str]]


class StdinReceived(NamedTuple):
    """A non-empty chunk of the request body (FCGI_STDIN)."""

    request_id: int
    data: bytes


class StdinEnded(NamedTuple):
    """The empty FCGI_STDIN record: the request body is complete."""

    request_id: int


class DataReceived(NamedTuple):
    """A non-empty chunk of the FILTER role's file data (FCGI_DATA)."""

    request_id: int
    data: bytes


class DataEnded(NamedTuple):
    """The empty FCGI_DATA record (FILTER role)."""

    request_id: int


class RequestAborted(NamedTuple):
    """FCGI_ABORT_REQUEST for an active request. It must still be ended with END_REQUEST."""

    request_id: int


class ConnectionClosed(NamedTuple):
    """The peer closed its side (``receive_data(b"")``). ``incomplete`` is True when a
    partial record was left in the buffer."""

    incomplete: bool = False


Event = (
    RequestReceived
    | StdinReceived
    | StdinEnded
    | DataReceived
    | DataEnded
    | RequestAborted
    | ConnectionClosed
)
