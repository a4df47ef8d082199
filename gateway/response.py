"""Turning an ASGI/WSGI response head into the CGI header block sent on FCGI_STDOUT.

Shared by the ASGI cycle and the WSGI workers. Validates what it emits: a header name or
value containing CR, LF or NUL is rejected (header injection), and Set-Cookie headers stay
separate lines (docs/protocol-notes.md, peer bug 11).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from .protocol import RemoteProtocolError
from .protocol.constants import RecordType
from .protocol.records import encode_end_request, encode_stream


class InvalidResponse(ValueError):
    """The application produced a response head that cannot be sent safely."""


def _status_lines() -> dict[int, bytes]:
    lines = {}
    for status in HTTPStatus:
        lines[status.value] = f"Status: {status.value} {status.phrase}\r\n".encode("latin-1")
    return lines


STATUS_LINES = _status_lines()


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 999:
            raise InvalidResponse(f"invalid HTTP status {status!r}")
        line = b"Status: %d Unknown\r\n" % status
    return line


def header_block(status: int, headers: list[tuple[bytes, bytes]] | tuple) -> bytes:
    """``Status: ...`` plus each header line plus the blank line, validated."""
    parts = [status_line(status)]
    append = parts.append
    try:
        for name, value in headers:
            append(name)
            append(b": ")
            append(value)
            append(b"\r\n")
    except (TypeError, ValueError) as exc:
        raise InvalidResponse(f"response headers must be pairs of bytes: {exc}") from None
    append(b"\r\n")
    try:
        block = b"".join(parts)
    except TypeError:
        raise InvalidResponse("response header names and values must be bytes") from None
    lines = len(headers) + 2
    # Every CR and LF must be one of the separators we put there: one call each, in C.
    # (``0 in block`` looks for a NUL byte; ``b"\0" in block`` first tries the argument as
    # an integer and formats a TypeError for it, on every call.)
    if block.count(b"\n") != lines or block.count(b"\r") != lines or 0 in block:
        raise InvalidResponse("response header contains CR, LF or NUL (header injection refused)")
    return block


ERROR_BODIES = {
    status: (
        b"Status: %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s"
        % (
            status,
            HTTPStatus(status).phrase.encode(),
            len(HTTPStatus(status).phrase) + 1,
            HTTPStatus(status).phrase.encode() + b"\n",
        )
    )
    for status in (400, 408, 413, 431, 500, 502, 503, 504)
}


def error_response(status: int, detail: str | None = None) -> bytes:
    """A complete small plain-text error response (headers and body) for STDOUT."""
    if detail is None:
        return ERROR_BODIES[status]
    phrase = HTTPStatus(status).phrase
    body = f"{phrase}\n\n{detail}\n".encode()
    return b"Status: %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        phrase.encode(),
        len(body),
        body,
    )


def wsgi_header_block(status: Any, headers: list[tuple[str, str]]) -> bytes:
    """The CGI header block for a WSGI ``start_response(status, headers)``, validated.
    (``status: Any``: whatever the app passed gets InvalidResponse, compiled or not.)"""
    if not isinstance(status, str):
        raise InvalidResponse(f"invalid WSGI status {status!r} (expected e.g. '200 OK')")
    line: str = status
    if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " "):
        raise InvalidResponse(f"invalid WSGI status {line!r} (expected e.g. '200 OK')")
    try:
        lines = ["Status: ", line, "\r\n"]
        for name, value in headers:
            lines.append(name)
            lines.append(": ")
            lines.append(value)
            lines.append("\r\n")
        lines.append("\r\n")
        text = "".join(lines)
        block = text.encode("latin-1")
    except (TypeError, ValueError) as exc:
        raise InvalidResponse(
            f"WSGI response headers must be a list of (str, str) latin-1 pairs: {exc}"
        ) from None
    # Checked on the text (compiled, str.count is a direct call where bytes.count is a
    # method lookup): every CR and LF is one we put there.
    n = len(headers) + 2
    if text.count("\n") != n or text.count("\r") != n or "\0" in text:
        raise InvalidResponse("response header contains CR, LF or NUL (header injection refused)")
    return block


def failure_reply(rid: int, response: bytes) -> bytes:
    """``response`` (a whole CGI response) as STDOUT + empty STDOUT + END_REQUEST, encoded
    directly: used when the codec already ended the request (its output was held back)."""
    stdout = RecordType.STDOUT
    return encode_stream(stdout, rid, response) + encode_stream(stdout, rid, b"") + encode_end_request(rid, 1)


def protocol_error_reply(exc: RemoteProtocolError) -> bytes:
    """For a request refused by a codec limit (431 params, 413 body) before it reached the
    app: its answer (STDOUT, empty STDOUT, END_REQUEST) built without the broken codec.
    Empty when the error concerns no particular request."""
    rid = exc.request_id
    if not rid or exc.status_hint not in (413, 431):
        return b""
    return failure_reply(rid, error_response(exc.status_hint))
