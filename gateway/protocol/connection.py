"""FastCGIConnection: the sans-IO protocol engine for one transport connection.

Feed received bytes with ``receive_data`` (``b""`` means EOF) and take events with
``next_event`` (h11 style) or all at once with ``feed``. Produce output with
``send_stdout``/``send_stderr``/``end_request``/``send_response``, which return bytes to
write. Management records (GET_VALUES, unknown record types) and requests that cannot be
served (unknown role, a second request on a non-multiplexed connection, over the
per-connection request limit) are answered inside the codec: their replies accumulate in
``data_to_send()``.

Limits are constructor arguments; a violation raises RemoteProtocolError with a message
and an HTTP status hint, after which the connection is unusable (every later call to
``receive_data`` raises the same error).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

from .constants import (
    FCGI_KEEP_CONN,
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    FCGI_VERSION_1,
    HEADER_LENGTH,
    MAX_CONTENT_LENGTH,
    ProtocolStatus,
    RecordType,
    Role,
)
from .errors import LocalProtocolError, RemoteProtocolError
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
from .records import (
    decode_pairs,
    encode_end_request,
    encode_pairs,
    encode_record,
    encode_stream,
    pack_header,
    split_records,
    stream_parts,
)
from .state import AFTER_END, APPLICATION_ONLY_TYPES, CAN_SEND, RECEIVE_FLAT, Action, RequestState


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by ``next_event`` when more bytes are needed.
NEED_DATA = _NeedData()

_KNOWN_TYPES: Final = frozenset(int(t) for t in RecordType)
_STDOUT: Final = int(RecordType.STDOUT)
_GET_VALUES_T: Final = int(RecordType.GET_VALUES)
#: Events are NamedTuples: built with tuple.__new__ directly on the hot path (their
#: generated __new__ is a Python function wrapping the same call).
_new: Final = tuple.__new__
_RECEIVE: Final = RECEIVE_FLAT
_split = split_records  # not Final: tests/protocol/test_split_fuzz.py patches it
_A_BEGIN: Final = Action.BEGIN
_A_PARAMS: Final = Action.PARAMS
_A_STDIN: Final = Action.STDIN
_ST_STDIN: Final = RequestState.STDIN
_ST_PARAMS: Final = RequestState.PARAMS
_ST_DONE: Final = RequestState.DONE
_ST_DATA: Final = RequestState.DATA
_ST_ENDED: Final = RequestState.ENDED
_FILTER: Final = int(Role.FILTER)
# (Enum attribute access is slow on the hot path: the per-request paths use these.)
_STDERR: Final = int(RecordType.STDERR)
_OK_ENDINGS: Final[dict[int, bytes]] = {}


class _Request:
    __slots__ = ("awaiting_input", "keep_conn", "params", "params_size", "role", "state", "stderr_used")

    def __init__(self, role: int, keep_conn: bool) -> None:
        self.role = role
        self.keep_conn = keep_conn
        self.state = _ST_PARAMS
        self.params: list[bytes] = []
        self.params_size = 0
        self.stderr_used = False
        #: ended by us while the web server was still sending its body
        self.awaiting_input = False


class FastCGIConnection:
    """Protocol state of one connection, application side.

    Args:
        multiplex: accept several concurrent requests on this connection
            (answered truthfully as FCGI_MPXS_CONNS).
        max_conns / max_reqs: the values reported for FCGI_MAX_CONNS / FCGI_MAX_REQS.
        roles: roles served; other roles get END_REQUEST(UNKNOWN_ROLE).
        max_params_bytes: largest PARAMS stream of one request (status hint 431).
        max_params_count: most name-value pairs in one request (status hint 431).
        max_stdin_buffer: most body bytes held in queued, untaken events; a worker with
            working flow control never reaches it (status hint 413).
        max_requests: requests accepted on this connection; the connection closes after
            the last one, later BEGIN_REQUESTs get END_REQUEST(OVERLOADED). None = no limit.
        text_params: deliver params as latin-1 ``str`` pairs (the WSGI environ's native
            strings, decoded in one pass) instead of ``bytes`` pairs.
    """

    __slots__ = (
        "_active",
        "_awaiting",
        "_begun",
        "_buf",
        "_error",
        "_events",
        "_out",
        "_queued_stdin",
        "_requests",
        "keepalive_veto",
        "max_conns",
        "max_params_bytes",
        "max_params_count",
        "max_reqs",
        "max_requests",
        "max_stdin_buffer",
        "multiplex",
        "peer_closed",
        "roles",
        "should_close",
        "text_params",
    )

    def __init__(
        self,
        *,
        multiplex: bool = False,
        max_conns: int = 1,
        max_reqs: int = 1,
        roles: frozenset[int] = frozenset({Role.RESPONDER}),
        max_params_bytes: int = 256 * 1024,
        max_params_count: int = 1000,
        max_stdin_buffer: int = 4 * 1024 * 1024,
        max_requests: int | None = None,
        text_params: bool = False,
    ) -> None:
        self.text_params = text_params
        self.multiplex = multiplex
        self.max_conns = max_conns
        self.max_reqs = max_reqs
        self.roles = roles
        self.max_params_bytes = max_params_bytes
        self.max_params_count = max_params_count
        self.max_stdin_buffer = max_stdin_buffer
        self.max_requests = max_requests
        self._buf = b""
        self._events: deque[Event] = deque()
        self._queued_stdin = 0
        self._out = bytearray()
        self._requests: dict[int, _Request] = {}
        self._active = 0
        self._awaiting = 0
        self._begun = 0
        self._error: RemoteProtocolError | None = None
        self.peer_closed = False
        #: True once the connection should be closed after flushing pending output.
        self.should_close = False
        #: Asked at every END_REQUEST of a kept-alive request: True -> this connection ends
        #: here. Bytes after END_REQUEST in the same read make nginx drop the connection
        #: instead of caching it, so it is never reused while we close it (no lost POST).
        #: A veto that raises counts as True: the request's ending must still be sent.
        self.keepalive_veto: Callable[[], object] | None = None

    # -- receiving -------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the transport; ``b""`` signals EOF."""
        if self._error is not None:
            raise self._error
        if not data:
            if not self.peer_closed:
                self.peer_closed = True
                self._events.append(ConnectionClosed(bool(self._buf)))
            return
        if self.peer_closed:
            raise RemoteProtocolError("data received after EOF")
        if type(data) is not bytes:
            data = bytes(data)
        # The scanner only cuts the whole version-1 records out of the bytes (natively
        # when built); every record then goes through the state table here, in order.
        # (Indexed, not unpacked: compiled, unpacking a tuple typed only at run time
        # iterates it; an indexed record of a typed list is read field by field.)
        split: tuple[list[tuple[int, int, bytes]], bytes] = _split(self._buf, data)
        records = split[0]
        rest = split[1]
        requests = self._requests
        append = self._events.append
        try:
            for record in records:
                rtype = record[0]
                rid = record[1]
                content = record[2]
                if not rid:
                    self._management(rtype, content)
                    continue
                # The state table decides every transition (RECEIVE, keyed by type and
                # state); the actions every request is made of are handled here, inline.
                req = requests.get(rid)
                action = _RECEIVE.get(rtype << 3 | req.state if req is not None else rtype << 3)
                if action is _A_STDIN or action is _A_PARAMS:
                    # The table has these two actions only for a request it knows. Typed
                    # so (not ``_Request | None``), compiled code reads its fields directly.
                    known: _Request = req  # type: ignore[assignment]
                if action is _A_STDIN:
                    if content:
                        self._queued_stdin += len(content)
                        if self._queued_stdin > self.max_stdin_buffer:
                            raise RemoteProtocolError(
                                f"more than {self.max_stdin_buffer} bytes of request body buffered",
                                413,
                            )
                        append(_new(StdinReceived, (rid, content)))
                    else:
                        known.state = _ST_DATA if known.role == _FILTER else _ST_DONE
                        append(_new(StdinEnded, (rid,)))
                elif action is _A_PARAMS:
                    if content:
                        known.params_size += len(content)
                        if known.params_size > self.max_params_bytes:
                            raise RemoteProtocolError(
                                f"request {rid}: params exceed {self.max_params_bytes} bytes",
                                431,
                                request_id=rid,
                            )
                        known.params.append(content)
                    else:
                        self._params_end(rid, known)
                elif action is _A_BEGIN:
                    if len(content) != 8:
                        raise RemoteProtocolError(
                            f"FCGI_BEGIN_REQUEST body must be 8 bytes, got {len(content)}"
                        )
                    # (the body is "!HB5x": read by index, a direct read when compiled)
                    self._begin(rid, content[0] << 8 | content[1], content[2])
                else:
                    self._record(rtype, rid, content, req, action)
            # The scanner stops before a header it cannot read whole, a record not yet
            # whole, or a version it does not know: only the last is an error.
            if len(rest) >= HEADER_LENGTH and rest[0] != FCGI_VERSION_1:
                raise RemoteProtocolError(f"unsupported FastCGI version {rest[0]}")
        except RemoteProtocolError as exc:
            # Keep a copy without the traceback: the raised error's frames hold this codec
            # and the request's buffers, a cycle only the cyclic GC would free (megabytes
            # per hostile connection until a full collection).
            self._error = RemoteProtocolError(str(exc), exc.status_hint, exc.request_id)
            self._buf = b""
            raise
        self._buf = rest

    def next_event(self) -> Event | _NeedData:
        if self._events:
            ev = self._events.popleft()
            if type(ev) is StdinReceived:
                self._queued_stdin -= len(ev.data)
            return ev
        return NEED_DATA

    def feed(self, data: bytes) -> list[Event]:
        """``receive_data(data)`` and take every event it produced."""
        self.receive_data(data)
        events = list(self._events)
        self._events.clear()
        self._queued_stdin = 0
        return events

    def data_to_send(self) -> bytes:
        """Replies the codec produced on its own (management records, refusals)."""
        if not self._out:
            return b""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _record(
        self, rtype: int, rid: int, content: bytes, req: _Request | None, action: Action | None
    ) -> None:
        """The table's other actions (DATA, ABORT, IGNORE), and the records it has no entry
        for: unknown types (answered), application-only types and the rest (errors)."""
        if action is None:
            if rtype not in _KNOWN_TYPES:
                self._out += encode_record(RecordType.UNKNOWN_TYPE, 0, bytes((rtype,)) + b"\0" * 7)
                return
            if rtype in APPLICATION_ONLY_TYPES or rtype == _GET_VALUES_T:
                raise RemoteProtocolError(
                    f"{RecordType(rtype).name} record sent to the application (request {rid})"
                )
            state = req.state.name if req is not None else "no active request"
            raise RemoteProtocolError(
                f"unexpected {RecordType(rtype).name} for request {rid} in state {state}"
            )
        if action is Action.DATA:
            if content:
                self._events.append(DataReceived(rid, content))
            else:
                req.state = RequestState.DONE  # type: ignore[union-attr]
                self._events.append(DataEnded(rid))
        elif action is Action.ABORT:
            if req.state is RequestState.PARAMS:  # type: ignore[union-attr]
                # The worker never heard of this request: answer it here.
                req.state = RequestState.ABORTED  # type: ignore[union-attr]
                self._out += self.end_request(rid, 0, ProtocolStatus.REQUEST_COMPLETE)
            else:
                req.state = RequestState.ABORTED  # type: ignore[union-attr]
                self._events.append(RequestAborted(rid))
        elif req is not None and req.awaiting_input and rtype == RecordType.STDIN and not content:
            # The body of a request we ended early is complete: the id is free again.
            req.awaiting_input = False
            self._awaiting -= 1
        # otherwise Action.IGNORE: nothing to do

    def _begin(self, rid: int, role: int, flags: int) -> None:
        keep_conn = bool(flags & FCGI_KEEP_CONN)
        refusal = None
        if role not in self.roles:
            refusal = ProtocolStatus.UNKNOWN_ROLE
        elif self._active and not self.multiplex:
            refusal = ProtocolStatus.CANT_MPX_CONN
        elif self.max_requests is not None and self._begun >= self.max_requests:
            refusal = ProtocolStatus.OVERLOADED
        old = self._requests.get(rid)
        if old is not None and old.awaiting_input:
            self._awaiting -= 1
        req = _Request(role, keep_conn)
        self._requests[rid] = req
        if refusal is not None:
            req.state = _ST_ENDED
            self._out += encode_end_request(rid, 0, refusal)
            if not keep_conn:
                self.should_close = True
            return
        self._active += 1
        self._begun += 1

    def _params_end(self, rid: int, req: _Request) -> None:
        """The empty PARAMS record: decode the stream, the request is received."""
        chunks = req.params
        try:
            params = decode_pairs(
                chunks[0] if len(chunks) == 1 else b"".join(chunks), self.max_params_count, self.text_params
            )
        except RemoteProtocolError as exc:
            exc.request_id = rid
            raise
        req.params = []
        req.state = _ST_STDIN
        self._events.append(_new(RequestReceived, (rid, req.role, req.keep_conn, params)))

    def _management(self, rtype: int, content: bytes) -> None:
        if rtype == RecordType.GET_VALUES:
            values = {
                FCGI_MAX_CONNS: str(self.max_conns).encode(),
                FCGI_MAX_REQS: str(self.max_reqs).encode(),
                FCGI_MPXS_CONNS: b"1" if self.multiplex else b"0",
            }
            asked = decode_pairs(content, self.max_params_count)
            # Each known name is answered once, in the order first asked: a query repeating a
            # name must not grow the reply past one record (ValueError in encode_record).
            reply = [(name, values.pop(name)) for name, _ in asked if name in values]
            self._out += encode_record(RecordType.GET_VALUES_RESULT, 0, encode_pairs(reply))
        elif rtype in _KNOWN_TYPES:
            raise RemoteProtocolError(f"{RecordType(rtype).name} record with request id 0")
        else:
            self._out += encode_record(RecordType.UNKNOWN_TYPE, 0, bytes((rtype,)) + b"\0" * 7)

    # -- sending ---------------------------------------------------------------------

    def _sendable(self, rid: int) -> _Request:
        req = self._requests.get(rid)
        if req is None or req.state not in CAN_SEND:
            state = req.state.name if req is not None else "no active request"
            raise LocalProtocolError(f"cannot send for request {rid} in state {state}")
        return req

    def send_stdout(self, rid: int, data: bytes | bytearray | memoryview) -> bytes:
        self._sendable(rid)
        return encode_stream(_STDOUT, rid, data)

    def send_stderr(self, rid: int, data: bytes | bytearray | memoryview) -> bytes:
        self._sendable(rid).stderr_used = True
        return encode_stream(_STDERR, rid, data)

    def end_request(
        self, rid: int, app_status: int = 0, protocol_status: int = ProtocolStatus.REQUEST_COMPLETE
    ) -> bytes:
        """Close the STDOUT (and STDERR, if used) streams and send END_REQUEST."""
        return self._end(self._sendable(rid), rid, app_status, protocol_status)

    def _end(self, req: _Request, rid: int, app_status: int, protocol_status: int) -> bytes:
        if app_status or protocol_status or req.stderr_used:
            tail = pack_header(FCGI_VERSION_1, _STDOUT, rid, 0, 0)
            if req.stderr_used:
                tail += pack_header(FCGI_VERSION_1, _STDERR, rid, 0, 0)
            tail += encode_end_request(rid, app_status, protocol_status)
        else:
            # The usual ending (empty STDOUT + END_REQUEST(0, REQUEST_COMPLETE)), encoded
            # once per request id.
            cached = _OK_ENDINGS.get(rid)
            if cached is None:
                cached = pack_header(FCGI_VERSION_1, _STDOUT, rid, 0, 0) + encode_end_request(rid, 0, 0)
                if len(_OK_ENDINGS) < 1024:
                    _OK_ENDINGS[rid] = cached
            tail = cached
        if self._events:
            self._drop_queued(rid)
        state = req.state
        if state is _ST_STDIN and req.role != _FILTER:
            req.awaiting_input = True
            self._awaiting += 1
        nxt = AFTER_END[state]
        if nxt is None:
            del self._requests[rid]
        else:
            req.state = nxt
        self._active -= 1
        if not req.keep_conn:
            self.should_close = True
            return tail
        close = self.max_requests is not None and self._begun >= self.max_requests
        veto = self.keepalive_veto
        if veto is not None and not close:
            try:
                close = bool(veto())
            except Exception:
                close = True  # the request is already ended here: its ending goes out, then close
        if close:
            self.should_close = True
            if not self._active:
                # Closing right after: bytes after END_REQUEST in the same read make nginx
                # drop the connection instead of caching it and maybe reusing it as it closes.
                return tail + pack_header(FCGI_VERSION_1, _STDERR, rid, 0, 0)
        return tail

    def _drop_queued(self, rid: int) -> None:
        """Drop untaken events of a request being ended: a worker using ``next_event`` gets
        none after ``end_request``, however the input was chunked (as for records that
        arrive later). They all belong to this request: its id cannot begin again before
        it ends."""
        kept: deque[Event] = deque()
        for ev in self._events:
            if type(ev) is not ConnectionClosed and ev.request_id == rid:  # type: ignore[union-attr]
                if type(ev) is StdinReceived:
                    self._queued_stdin -= len(ev.data)
                continue
            kept.append(ev)
        self._events = kept

    def send_response(self, rid: int, data: bytes | bytearray | memoryview, app_status: int = 0) -> bytes:
        """STDOUT ``data`` and end the request, as one buffer (one write)."""
        req = self._sendable(rid)
        n = len(data)
        if not n:
            return self._end(req, rid, app_status, 0)
        if n > MAX_CONTENT_LENGTH:
            return encode_stream(_STDOUT, rid, data) + self._end(req, rid, app_status, 0)
        return pack_header(FCGI_VERSION_1, _STDOUT, rid, n, 0) + data + self._end(req, rid, app_status, 0)

    def send_response_parts(
        self, rid: int, buffers: list[bytes | bytearray | memoryview], app_status: int = 0
    ) -> list[bytes | memoryview]:
        """Like ``send_response`` for the concatenation of ``buffers``, as a list of buffers
        for a vectored write: nothing is copied (large responses)."""
        req = self._sendable(rid)
        parts = stream_parts(_STDOUT, rid, buffers)
        parts.append(self._end(req, rid, app_status, 0))
        return parts

    # -- introspection ---------------------------------------------------------------

    @property
    def active_requests(self) -> int:
        """Requests begun and not yet ended by END_REQUEST."""
        return self._active

    @property
    def awaiting_input(self) -> bool:
        """A request was answered before its body was complete and the rest of the body is
        still on its way: closing now would reset the connection under the web server
        (nginx then logs a reset and may answer 502). Close once this is False."""
        return self._awaiting > 0

    @property
    def broken(self) -> bool:
        return self._error is not None
