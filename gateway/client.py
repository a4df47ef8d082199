"""A small blocking FastCGI client (the web server's side of the protocol).

This module owns talking to a FastCGI application the way nginx does: parsing addresses,
building nginx-like CGI params, sending BEGIN_REQUEST/PARAMS/STDIN records, collecting
STDOUT/STDERR/END_REQUEST into a ``Response`` and parsing its CGI header block. It backs
``fcgi-gateway ping``/``request`` (health checks without nginx, like PHP-FPM's cgi-fcgi)
and the test suite, which also uses the low-level ``send_raw``/``recv_records`` to drive
protocol corner cases (multiplexing, ABORT_REQUEST, unknown record types and roles).

Standard library only; the wire format comes from ``gateway.protocol.records``.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, TypeAlias
from urllib.parse import unquote_to_bytes

from .protocol import records as wire
from .protocol.constants import HEADER_LENGTH, MAX_CONTENT_LENGTH, ProtocolStatus, RecordType, Role
from .protocol.errors import RemoteProtocolError

Pairs: TypeAlias = Mapping[str | bytes, str | bytes | None] | Iterable[tuple[str | bytes, str | bytes | None]]


class ClientError(Exception):
    """Connection refused, timeout, protocol error, or connection closed before END_REQUEST."""


class Record(NamedTuple):
    type: int
    request_id: int
    content: bytes


@dataclass
class Response:
    """One request's outcome. ``status`` is 0 when STDOUT holds no complete CGI header
    block (then ``body`` is the raw STDOUT), e.g. a request refused with UNKNOWN_ROLE."""

    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stderr: bytes = b""
    app_status: int = 0
    protocol_status: int = ProtocolStatus.REQUEST_COMPLETE
    request_id: int = 1

    def header_list(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str, default: str | None = None) -> str | None:
        return next(iter(self.header_list(name)), default)

    @classmethod
    def from_records(cls, records: Iterable[Record], request_id: int = 1) -> Response:
        """Assemble the response of ``request_id`` from (possibly interleaved) records."""
        out, err, end = bytearray(), bytearray(), (0, ProtocolStatus.REQUEST_COMPLETE)
        for rec in records:
            if rec.request_id == request_id:
                if rec.type == RecordType.STDOUT:
                    out += rec.content
                elif rec.type == RecordType.STDERR:
                    err += rec.content
                elif rec.type == RecordType.END_REQUEST:
                    end = wire.decode_end_request(rec.content)
        resp = parse_cgi_response(bytes(out))
        resp.stderr, (resp.app_status, resp.protocol_status), resp.request_id = bytes(err), end, request_id
        return resp


def parse_cgi_response(stdout: bytes) -> Response:
    """Split a CGI response into status, headers and body (``Status:`` sets the status)."""
    cut = [(i, n) for i, n in ((stdout.find(b"\r\n\r\n"), 4), (stdout.find(b"\n\n"), 2)) if i >= 0]
    if not cut:
        return Response(body=stdout)
    end, skip = min(cut)
    status, reason, headers = 200, "OK", []
    for line in stdout[:end].decode("latin-1").splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            return Response(body=stdout)  # not a header block
        name, value = name.strip(), value.strip()
        if name.lower() == "status":
            code, _, reason = value.partition(" ")
            status = int(code) if code.isdigit() else 0
        else:
            headers.append((name, value))
    return Response(status=status, reason=reason, headers=headers, body=stdout[end + skip :])


def parse_address(address: str) -> tuple[socket.AddressFamily, str | tuple[str, int]]:
    """``unix:/path``, ``unix:@abstract``, ``/path``, ``host:port``, ``[::1]:port``, ``:port``
    or ``port`` -> (family, sockaddr). Raises ValueError for anything else."""
    s = address.strip()
    if s.startswith("unix:"):
        path = s[5:]
        if not path:
            raise ValueError(f"empty unix socket path in {address!r}")
        return socket.AF_UNIX, "\0" + path[1:] if path.startswith("@") else path
    if "/" in s:
        return socket.AF_UNIX, s
    family = socket.AF_INET6 if s.startswith("[") else socket.AF_INET
    host, sep, port = s[1:].partition("]:") if family == socket.AF_INET6 else s.rpartition(":")
    if not sep and family == socket.AF_INET:
        host, port = "", s
    if not port.isdigit() or not 0 < int(port) < 65536 or (family == socket.AF_INET and ":" in host):
        raise ValueError(f"invalid FastCGI address {address!r}: use unix:/path, host:port or [ipv6]:port")
    return family, (host or "127.0.0.1", int(port))


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def _pairs(items: Pairs | None) -> list[tuple[bytes, bytes | None]]:
    seq = items.items() if isinstance(items, Mapping) else items or ()
    return [(_b(k), None if v is None else _b(v)) for k, v in seq]


#: Debian's stock fastcgi_params in order: per-request ones, fixed ones (as nginx fills them
#: for a local client), then HTTP_HOST.
_LEADING_PARAMS = b"QUERY_STRING REQUEST_METHOD CONTENT_TYPE CONTENT_LENGTH SCRIPT_NAME REQUEST_URI".split()
_LEADING_PARAMS.append(b"DOCUMENT_URI")
_FIXED_PARAMS = [
    tuple(pair.split(b"=", 1))
    for pair in (
        b"DOCUMENT_ROOT=/usr/share/nginx/html SERVER_PROTOCOL=HTTP/1.1 REQUEST_SCHEME=http "
        b"GATEWAY_INTERFACE=CGI/1.1 SERVER_SOFTWARE=fcgi-gateway-client REMOTE_ADDR=127.0.0.1 "
        b"REMOTE_PORT=0 REMOTE_USER= SERVER_ADDR=127.0.0.1 SERVER_PORT=80 SERVER_NAME=localhost "
        b"REDIRECT_STATUS=200"
    ).split()
]


def build_params(
    method: str = "GET",
    path: str | bytes = "/",
    *,
    headers: Pairs | None = None,
    content_length: int | None = None,
    params: Pairs | None = None,
) -> list[tuple[bytes, bytes]]:
    """CGI params as nginx 1.22 sends them with Debian's stock ``fastcgi_params``. ``headers``
    become HTTP_* params (HTTP_HOST defaults to ``localhost``); ``content_length`` None: no
    Content-Length. ``params`` replace by name (None removes) or are appended."""
    raw = _b(path)
    uri_path, _, query = raw.partition(b"?")
    decoded = unquote_to_bytes(uri_path)
    hdrs = [(k, v or b"") for k, v in _pairs(headers)]
    lower = {k.lower(): v for k, v in hdrs}
    clen = lower.get(b"content-length", b"") if content_length is None else str(content_length).encode()
    if content_length is not None and b"content-length" not in lower:
        hdrs.append((b"Content-Length", clen))
    leading = (query, _b(method.upper()), lower.get(b"content-type", b""), clen, decoded, raw, decoded)
    out = [*zip(_LEADING_PARAMS, leading, strict=True), *_FIXED_PARAMS]
    out.append((b"HTTP_HOST", lower.get(b"host", b"localhost")))
    out += [(b"HTTP_" + k.upper().replace(b"-", b"_"), v) for k, v in hdrs if k.lower() != b"host"]
    for name, value in _pairs(params):
        kept = [(k, v) for k, v in out if k != name]
        if value is None or len(kept) == len(out):
            out = kept if value is None else [*out, (name, value)]
        else:
            i = next(i for i, (k, _) in enumerate(out) if k == name)
            out = [*kept[:i], (name, value), *kept[i:]]
    return out


def encode_request(
    request_id: int,
    params: Iterable[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    role: int = Role.RESPONDER,
    keep_conn: bool = False,
    data: bytes | None = None,
) -> bytes:
    """A whole request as bytes: BEGIN_REQUEST, PARAMS, STDIN (and DATA for FILTER)."""
    parts = [wire.encode_begin_request(request_id, role, keep_conn)]
    streams = [(RecordType.PARAMS, wire.encode_pairs(params)), (RecordType.STDIN, body)]
    for rtype, content in [*streams, *([(RecordType.DATA, data)] if data is not None else [])]:
        parts += [wire.encode_stream(rtype, request_id, content), wire.encode_record(rtype, request_id)]
    return b"".join(parts)


class FastCGIClient:
    """Blocking FastCGI client for one address. With ``keep_conn`` the socket is kept and
    reused across requests (``connects`` counts connections made); otherwise each
    request uses a new connection. ``timeout`` bounds connecting and every wait for I/O."""

    def __init__(self, address: str, timeout: float = 10.0, keep_conn: bool = False) -> None:
        self.address = address
        self.family, self.sockaddr = parse_address(address)
        self.timeout = timeout
        self.keep_conn = keep_conn
        self.sock: socket.socket | None = None
        self.connects = 0
        self._buf = bytearray()
        self.peer_closed = False  # a read saw the server close the connection

    def connect(self) -> socket.socket:
        """The open socket, connecting first if needed."""
        if self.sock is not None:
            return self.sock
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.sockaddr)
        except OSError as exc:  # refused, no such socket file, timed out, ...
            sock.close()
            raise ClientError(f"cannot connect to {self.address}: {exc.strerror or exc}") from None
        self.sock, self._buf, self.peer_closed = sock, bytearray(), False
        self.connects += 1
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> FastCGIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        """Low level, for protocol tests: send bytes as they are (see ``encode_request``)."""
        try:
            self.connect().sendall(data)
        except OSError as exc:
            raise ClientError(f"sending to {self.address} failed: {exc.strerror or exc}") from None

    def _fill(self) -> bool:
        """Read once into the buffer; False at EOF (a reset counts as EOF)."""
        if self.peer_closed:
            return False
        try:
            chunk = self.connect().recv(262144)
        except TimeoutError:
            raise ClientError(f"timed out after {self.timeout:g}s waiting for {self.address}") from None
        except ConnectionResetError:
            chunk = b""
        self.peer_closed = not chunk
        self._buf += chunk
        return bool(chunk)

    def _take_record(self) -> Record | None:
        if len(self._buf) < HEADER_LENGTH:
            return None
        version, rtype, rid, clen, plen = wire.unpack_header(self._buf)
        if version != 1:
            raise ClientError(f"protocol error: FastCGI version {version} from {self.address}")
        if len(self._buf) < HEADER_LENGTH + clen + plen:
            return None
        rec = Record(rtype, rid, bytes(self._buf[HEADER_LENGTH : HEADER_LENGTH + clen]))
        del self._buf[: HEADER_LENGTH + clen + plen]
        return rec

    def recv_record(self) -> Record | None:
        """The next record, or None if the server closed the connection first."""
        while (rec := self._take_record()) is None:
            if not self._fill():
                return None
        return rec

    def recv_records(self, *end_of: int) -> list[Record]:
        """Records until END_REQUEST arrived for every request id in ``end_of`` (ClientError
        if the connection closes first) or, without ids, until the server closes."""
        records, pending = [], set(end_of)
        while (rec := self.recv_record()) is not None:
            records.append(rec)
            if rec.type == RecordType.END_REQUEST and rec.request_id in pending:
                pending.discard(rec.request_id)
                if not pending:
                    return records
        if pending:
            raise ClientError(f"connection closed by {self.address} before END_REQUEST of {sorted(pending)}")
        return records

    def get_values(self, names: Iterable[str | bytes]) -> dict[bytes, bytes]:
        """Ask FCGI_GET_VALUES (e.g. FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS)."""
        body = wire.encode_pairs((_b(n), b"") for n in names)
        try:
            self.send_raw(wire.encode_record(RecordType.GET_VALUES, 0, body))
            rec = self.recv_record()
            if rec is None:
                raise ClientError(f"connection closed by {self.address} before GET_VALUES_RESULT")
            if rec.type != RecordType.GET_VALUES_RESULT or rec.request_id != 0:
                raise ClientError(f"protocol error: expected GET_VALUES_RESULT, got {_describe(rec)}")
            return dict(wire.decode_pairs(rec.content))
        except RemoteProtocolError as exc:
            raise ClientError(f"protocol error: bad GET_VALUES_RESULT: {exc}") from None
        finally:
            if not self.keep_conn:
                self.close()

    def request(
        self,
        method: str = "GET",
        path: str | bytes = "/",
        *,
        params: Pairs | None = None,
        headers: Pairs | None = None,
        body: bytes | Iterable[bytes] = b"",
        request_id: int = 1,
        role: int = Role.RESPONDER,
    ) -> Response:
        """Send one request and wait for its END_REQUEST. ``body`` may be an iterable of chunks;
        without a Content-Length header it then goes like a chunked upload through nginx."""
        if isinstance(body, bytes | bytearray | memoryview):
            length: int | None = len(body) if body or method.upper() in {"POST", "PUT", "PATCH"} else None
            chunks: Iterable[bytes] = [bytes(body)]
        else:
            length, chunks = None, body
            if not any(k.lower() == b"content-length" for k, _ in _pairs(headers)):
                headers = [*_pairs(headers), (b"Transfer-Encoding", b"chunked")]
        plist = build_params(method, path, headers=headers, content_length=length, params=params)
        head = wire.encode_begin_request(request_id, role, self.keep_conn)
        head += wire.encode_stream(RecordType.PARAMS, request_id, wire.encode_pairs(plist))
        head += wire.encode_record(RecordType.PARAMS, request_id)
        try:
            records = self._exchange(_request_bytes(head, request_id, chunks), request_id)
        except BaseException:
            self.close()
            raise
        if not self.keep_conn:
            self.close()
        return Response.from_records(records, request_id)

    def _exchange(self, out: Iterator[bytes], request_id: int) -> list[Record]:
        """Send ``out`` while reading records until END_REQUEST of ``request_id``: no deadlock
        with an app answering before it read the whole body, and a send error (the app
        closed without reading everything) still lets its response be read."""
        sock = self.connect()
        records: list[Record] = []
        pending = next(out, b"")
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while True:
                while (rec := self._take_record()) is not None:
                    if rec.request_id != request_id:
                        raise ClientError(f"protocol error: unexpected {_describe(rec)} from {self.address}")
                    records.append(rec)
                    if rec.type == RecordType.END_REQUEST:
                        return records
                if self.peer_closed:
                    got = sum(len(r.content) for r in records if r.type == RecordType.STDOUT)
                    msg = f"before END_REQUEST (request {request_id}, {got} bytes of STDOUT received)"
                    raise ClientError(f"connection closed by {self.address} {msg}")
                if not (ready := sel.select(self.timeout)):
                    doing = "sending the request" if pending else "waiting for the response"
                    raise ClientError(f"timed out after {self.timeout:g}s {doing} ({self.address})")
                if ready[0][1] & selectors.EVENT_READ:
                    self._fill()
                if pending and ready[0][1] & selectors.EVENT_WRITE:
                    try:
                        pending = pending[sock.send(pending) :] or next(out, b"")
                    except (BrokenPipeError, ConnectionResetError):
                        pending = b""
                    if not pending:
                        sel.modify(sock, selectors.EVENT_READ)


def _request_bytes(head: bytes, request_id: int, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``head``, then the body as STDIN records (<= 256 kB per item), then the empty STDIN."""
    buf = bytearray(head)
    for chunk in chunks:
        for start in range(0, len(chunk), MAX_CONTENT_LENGTH):
            buf += wire.encode_record(RecordType.STDIN, request_id, chunk[start : start + MAX_CONTENT_LENGTH])
            if len(buf) >= 262144:
                yield bytes(buf)
                buf.clear()
    yield bytes(buf + wire.encode_record(RecordType.STDIN, request_id))


def _describe(rec: Record) -> str:
    name = next((t.name for t in RecordType if t == rec.type), f"type {rec.type}")
    return f"{name} record (request {rec.request_id}, {len(rec.content)} bytes)"


def ping(address: str, path: str = "/ping", timeout: float = 5.0) -> tuple[bool, str]:
    """Health check: ``(True, "200 OK")`` when the application answers ``path`` with a
    status below 500; otherwise ``(False, reason)``, where a 5xx reason carries the first
    line of a short body (``503 Service Unavailable: draining``). Never raises ClientError."""
    try:
        with FastCGIClient(address, timeout=timeout) as client:
            resp = client.request("GET", path)
    except (ClientError, ValueError) as exc:
        return False, str(exc)
    if resp.protocol_status != ProtocolStatus.REQUEST_COMPLETE:
        return False, f"request refused with protocol status {resp.protocol_status}"
    if resp.status == 0:
        return False, "response without a valid CGI header block"
    reason = f"{resp.status} {resp.reason}".strip()
    if resp.status >= 500 and 0 < len(resp.body) <= 200:
        line = resp.body.decode("utf-8", "replace").strip().split("\n", 1)[0].strip()
        reason += f": {line}" if line.isprintable() and line else ""
    return resp.status < 500, reason
