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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, TypeAlias
from urllib.parse import unquote_to_bytes

from .protocol.constants import HEADER_LENGTH, MAX_CONTENT_LENGTH, ProtocolStatus, RecordType, Role
from .protocol.errors import RemoteProtocolError
from .protocol.records import (
    decode_end_request,
    decode_pairs,
    encode_begin_request,
    encode_pairs,
    encode_record,
    encode_stream,
    unpack_header,
)

Address: TypeAlias = str | tuple[str, int]
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

    def header(self, name: str, default: str | None = None) -> str | None:
        """First value of header ``name`` (case-insensitive)."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), default)

    def header_list(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @classmethod
    def from_records(cls, records: Iterable[Record], request_id: int = 1) -> Response:
        """Assemble the response of ``request_id`` from (possibly interleaved) records."""
        out, err = bytearray(), bytearray()
        app_status, proto = 0, ProtocolStatus.REQUEST_COMPLETE
        for rec in records:
            if rec.request_id != request_id:
                continue
            if rec.type == RecordType.STDOUT:
                out += rec.content
            elif rec.type == RecordType.STDERR:
                err += rec.content
            elif rec.type == RecordType.END_REQUEST:
                app_status, proto = decode_end_request(rec.content)
        resp = parse_cgi_response(bytes(out))
        resp.stderr, resp.app_status, resp.protocol_status = bytes(err), app_status, proto
        resp.request_id = request_id
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


def parse_address(address: str) -> tuple[socket.AddressFamily, Address]:
    """``unix:/path``, ``/path``, ``./path``, ``host:port``, ``[::1]:port``, ``:port``, ``port``.

    ``unix:@name`` is a Linux abstract socket. Raises ValueError for anything else.
    """
    s = address.strip()
    if s.startswith("unix:"):
        path = s[5:]
        if not path:
            raise ValueError(f"empty unix socket path in {address!r}")
        return socket.AF_UNIX, "\0" + path[1:] if path.startswith("@") else path
    if "/" in s:
        return socket.AF_UNIX, s
    if s.startswith("["):
        host, sep, port = s[1:].partition("]:")
        family = socket.AF_INET6
    else:
        host, sep, port = s.rpartition(":")
        family = socket.AF_INET
        if not sep:
            host, port = "", s
    if not port.isdigit() or not 0 < int(port) < 65536 or (family == socket.AF_INET and ":" in host):
        raise ValueError(f"invalid FastCGI address {address!r}: use unix:/path, host:port or [ipv6]:port")
    return family, (host or "127.0.0.1", int(port))


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def _pairs(items: Pairs | None) -> list[tuple[bytes, bytes | None]]:
    if items is None:
        return []
    seq = items.items() if isinstance(items, Mapping) else items
    return [(_b(k), None if v is None else _b(v)) for k, v in seq]


#: Param order of Debian's fastcgi_params; fixed values as nginx sends them for a local client.
_PARAM_ORDER = (
    b"QUERY_STRING REQUEST_METHOD CONTENT_TYPE CONTENT_LENGTH SCRIPT_NAME REQUEST_URI DOCUMENT_URI "
    b"DOCUMENT_ROOT SERVER_PROTOCOL REQUEST_SCHEME GATEWAY_INTERFACE SERVER_SOFTWARE REMOTE_ADDR "
    b"REMOTE_PORT REMOTE_USER SERVER_ADDR SERVER_PORT SERVER_NAME REDIRECT_STATUS HTTP_HOST"
).split()
_FIXED_PARAMS = dict(
    pair.split(b"=", 1)
    for pair in (
        b"DOCUMENT_ROOT=/usr/share/nginx/html SERVER_PROTOCOL=HTTP/1.1 REQUEST_SCHEME=http "
        b"GATEWAY_INTERFACE=CGI/1.1 SERVER_SOFTWARE=fcgi-gateway-client REMOTE_ADDR=127.0.0.1 "
        b"REMOTE_PORT=0 REMOTE_USER= SERVER_ADDR=127.0.0.1 SERVER_PORT=80 SERVER_NAME=localhost "
        b"REDIRECT_STATUS=200"
    ).split()
)


def build_params(
    method: str = "GET",
    path: str | bytes = "/",
    *,
    headers: Pairs | None = None,
    content_length: int | None = None,
    params: Pairs | None = None,
) -> list[tuple[bytes, bytes]]:
    """CGI params as nginx 1.22 sends them with Debian's stock ``fastcgi_params``.

    ``headers`` become HTTP_* params (Host becomes HTTP_HOST, default ``localhost``);
    ``content_length`` None means "no Content-Length" (CONTENT_LENGTH is then empty).
    ``params`` override by name (all occurrences; a None value removes it) or append.
    """
    raw = _b(path)
    uri_path, _, query = raw.partition(b"?")
    decoded = unquote_to_bytes(uri_path)
    hdrs = [(k, v or b"") for k, v in _pairs(headers)]
    lower = {k.lower(): v for k, v in hdrs}
    ctype = lower.get(b"content-type", b"")
    clen = str(content_length).encode() if content_length is not None else lower.get(b"content-length", b"")
    if content_length is not None and b"content-length" not in lower:
        hdrs.append((b"Content-Length", clen))
    values = {
        **_FIXED_PARAMS,
        b"QUERY_STRING": query,
        b"REQUEST_METHOD": _b(method.upper()),
        b"CONTENT_TYPE": ctype,
        b"CONTENT_LENGTH": clen,
        b"SCRIPT_NAME": decoded,
        b"REQUEST_URI": raw,
        b"DOCUMENT_URI": decoded,
        b"HTTP_HOST": lower.get(b"host", b"localhost"),
    }
    out = [(name, values[name]) for name in _PARAM_ORDER]
    for name, value in hdrs:
        key = b"HTTP_" + name.upper().replace(b"-", b"_")
        if key != b"HTTP_HOST":
            out.append((key, value))
    for name, value in _pairs(params):
        kept = [(k, v) for k, v in out if k != name]
        if value is None:
            out = kept
        elif len(kept) == len(out):
            out.append((name, value))
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
    parts = [encode_begin_request(request_id, role, keep_conn)]
    streams = [(RecordType.PARAMS, encode_pairs(params)), (RecordType.STDIN, body)]
    for rtype, content in [*streams, *([(RecordType.DATA, data)] if data is not None else [])]:
        parts += [encode_stream(rtype, request_id, content), encode_record(rtype, request_id)]
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
        self._eof = False

    # -- connection ------------------------------------------------------------------

    def connect(self) -> socket.socket:
        """The open socket, connecting first if needed."""
        if self.sock is not None:
            return self.sock
        try:
            if self.family == socket.AF_UNIX:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(self.sockaddr)
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection(self.sockaddr, timeout=self.timeout)  # type: ignore[arg-type]
        except TimeoutError:
            raise ClientError(f"timed out connecting to {self.address} after {self.timeout:g}s") from None
        except OSError as exc:
            raise ClientError(f"cannot connect to {self.address}: {exc.strerror or exc}") from None
        self.sock, self._buf, self._eof = sock, bytearray(), False
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

    @property
    def peer_closed(self) -> bool:
        """True once the server closed the connection (seen by a read)."""
        return self._eof

    # -- low level -------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        try:
            self.connect().sendall(data)
        except TimeoutError:
            raise ClientError(f"timed out sending to {self.address}") from None
        except OSError as exc:
            raise ClientError(f"send to {self.address} failed: {exc.strerror or exc}") from None

    def _fill(self) -> bool:
        """Read once into the buffer; False at EOF."""
        if self._eof:
            return False
        try:
            chunk = self.connect().recv(262144)
        except TimeoutError:
            raise ClientError(f"timed out after {self.timeout:g}s waiting for {self.address}") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self._eof = True
        self._buf += chunk
        return bool(chunk)

    def _take_record(self) -> Record | None:
        if len(self._buf) < HEADER_LENGTH:
            return None
        version, rtype, rid, clen, plen = unpack_header(self._buf)
        if version != 1:
            raise ClientError(f"protocol error: FastCGI version {version} from {self.address}")
        end = HEADER_LENGTH + clen + plen
        if len(self._buf) < end:
            return None
        rec = Record(rtype, rid, bytes(self._buf[HEADER_LENGTH : HEADER_LENGTH + clen]))
        del self._buf[:end]
        return rec

    def recv_record(self) -> Record | None:
        """The next record, or None if the server closed the connection first."""
        while (rec := self._take_record()) is None:
            if not self._fill():
                return None
        return rec

    def recv_records(self, until: Callable[[Record], bool] | None = None) -> list[Record]:
        """Records until ``until(record)`` is true (that record included) or, when
        ``until`` is None, until the server closes the connection."""
        records = []
        while (rec := self.recv_record()) is not None:
            records.append(rec)
            if until is not None and until(rec):
                return records
        if until is not None:
            raise ClientError(f"connection closed by {self.address} before the expected record")
        return records

    def recv_until_ended(self, *request_ids: int) -> list[Record]:
        """Records until END_REQUEST arrived for every id in ``request_ids`` (default 1)."""
        pending = set(request_ids or (1,))

        def done(rec: Record) -> bool:
            if rec.type == RecordType.END_REQUEST:
                pending.discard(rec.request_id)
            return not pending

        return self.recv_records(done)

    # -- requests --------------------------------------------------------------------

    def get_values(self, names: Iterable[str | bytes]) -> dict[bytes, bytes]:
        """Ask FCGI_GET_VALUES (e.g. FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS)."""
        body = encode_pairs((_b(n), b"") for n in names)
        try:
            self.send_raw(encode_record(RecordType.GET_VALUES, 0, body))
            rec = self.recv_record()
            if rec is None:
                raise ClientError(f"connection closed by {self.address} before GET_VALUES_RESULT")
            if rec.type != RecordType.GET_VALUES_RESULT or rec.request_id != 0:
                raise ClientError(f"protocol error: expected GET_VALUES_RESULT, got {_describe(rec)}")
            try:
                return dict(decode_pairs(rec.content))
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
        """Send one request and wait for its END_REQUEST.

        ``body`` may be an iterable of chunks; without a Content-Length header it is then
        announced like nginx forwards a chunked upload (HTTP_TRANSFER_ENCODING: chunked).
        """
        if isinstance(body, bytes | bytearray | memoryview):
            length: int | None = len(body) if body or method.upper() in {"POST", "PUT", "PATCH"} else None
            chunks: Iterable[bytes] = [bytes(body)]
        else:
            length, chunks = None, body
            has_length = any(k.lower() == b"content-length" for k, _ in _pairs(headers))
            if not has_length:
                headers = [*_pairs(headers), (b"Transfer-Encoding", b"chunked")]
        plist = build_params(method, path, headers=headers, content_length=length, params=params)
        head = encode_begin_request(request_id, role, self.keep_conn)
        head += encode_stream(RecordType.PARAMS, request_id, encode_pairs(plist))
        head += encode_record(RecordType.PARAMS, request_id)
        try:
            records = self._exchange(_stdin_records(head, request_id, chunks), request_id)
        except BaseException:
            self.close()
            raise
        if not self.keep_conn:
            self.close()
        return Response.from_records(records, request_id)

    def _exchange(self, out: Iterator[bytes], request_id: int) -> list[Record]:
        """Send ``out`` while reading records, until END_REQUEST of ``request_id``.

        Reading while sending avoids a deadlock with an application that answers (or
        streams) before it has read the whole body; a server that stops reading and
        closes leaves its response readable, so send errors end sending, not the request.
        """
        sock = self.connect()
        records: list[Record] = []
        pending = b"".join(_take(out, 4))
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0))
        try:
            while True:
                while (rec := self._take_record()) is not None:
                    if rec.request_id != request_id:
                        raise ClientError(f"protocol error: unexpected {_describe(rec)} from {self.address}")
                    records.append(rec)
                    if rec.type == RecordType.END_REQUEST:
                        return records
                if self._eof:
                    got = sum(len(r.content) for r in records if r.type == RecordType.STDOUT)
                    raise ClientError(
                        f"connection closed by {self.address} before END_REQUEST "
                        f"(request {request_id}, {got} bytes of STDOUT received)"
                    )
                ready = sel.select(self.timeout)
                if not ready:
                    doing = "sending the request" if pending else "waiting for the response"
                    raise ClientError(f"timed out after {self.timeout:g}s {doing} ({self.address})")
                events = ready[0][1]
                if events & selectors.EVENT_READ:
                    self._fill()
                if pending and events & selectors.EVENT_WRITE:
                    try:
                        sent = sock.send(pending)
                    except (BrokenPipeError, ConnectionResetError):
                        sent, pending, out = len(pending), b"", iter(())
                    pending = pending[sent:] or b"".join(_take(out, 4))
                    if not pending:
                        sel.modify(sock, selectors.EVENT_READ)
        finally:
            sel.close()


def _take(it: Iterator[bytes], n: int) -> list[bytes]:
    return [chunk for _, chunk in zip(range(n), it, strict=False)]


def _stdin_records(head: bytes, request_id: int, chunks: Iterable[bytes]) -> Iterator[bytes]:
    yield head
    for chunk in chunks:
        for start in range(0, len(chunk), MAX_CONTENT_LENGTH):
            yield encode_record(RecordType.STDIN, request_id, chunk[start : start + MAX_CONTENT_LENGTH])
    yield encode_record(RecordType.STDIN, request_id)


def _describe(rec: Record) -> str:
    try:
        name = RecordType(rec.type).name
    except ValueError:
        name = f"record type {rec.type}"
    return f"{name} (request {rec.request_id}, {len(rec.content)} bytes)"


def ping(address: str, path: str = "/ping", timeout: float = 5.0) -> tuple[bool, str]:
    """Health check: ``(True, "200 OK")`` when the application answers ``path`` with a
    status below 500; otherwise ``(False, reason)``. Never raises ClientError."""
    try:
        with FastCGIClient(address, timeout=timeout) as client:
            resp = client.request("GET", path)
    except (ClientError, ValueError) as exc:
        return False, str(exc)
    if resp.protocol_status != ProtocolStatus.REQUEST_COMPLETE:
        return False, f"request refused with protocol status {resp.protocol_status}"
    if resp.status == 0:
        return False, "response without a valid CGI header block"
    return resp.status < 500, f"{resp.status} {resp.reason}".strip()
