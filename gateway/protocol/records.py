"""Record framing: headers, padding, name-value pairs, and stream splitting at 65,535 bytes.

Pure functions over bytes. Encoding never pads (padding is optional in FastCGI 1.0 and
costs bytes); decoding accepts any padding length.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from ..speedups import load_native
from .constants import (
    FCGI_KEEP_CONN,
    FCGI_VERSION_1,
    HEADER_LENGTH,
    MAX_CONTENT_LENGTH,
    ProtocolStatus,
    RecordType,
    Role,
)
from .errors import RemoteProtocolError

_HEADER = struct.Struct("!BBHHBx")
BEGIN_BODY = struct.Struct("!HB5x")
_END_BODY = struct.Struct("!LB3x")
_LEN4 = struct.Struct("!L")

# The optional C scanners (see _pairs.c for why they exist): None when not built or
# FCGI_GATEWAY_NO_SPEEDUPS switched speedups off; py_split_records and py_decode_pairs
# below are then used.
_native = load_native("gateway.protocol._pairs")
_c_decode = _native.decode if _native is not None else None

unpack_header = _HEADER.unpack_from
pack_header = _HEADER.pack


def encode_record(rtype: int, request_id: int, content: bytes = b"", padding: int = 0) -> bytes:
    """One record. ``content`` must fit one record (<= 65,535 bytes)."""
    n = len(content)
    if n > MAX_CONTENT_LENGTH:
        raise ValueError(f"record content of {n} bytes exceeds {MAX_CONTENT_LENGTH}")
    return _HEADER.pack(FCGI_VERSION_1, rtype, request_id, n, padding) + bytes(content) + b"\0" * padding


def encode_stream(rtype: int, request_id: int, data: bytes | bytearray | memoryview) -> bytes:
    """``data`` as as many records of ``rtype`` as needed (never the empty end record)."""
    n = len(data)
    if n <= MAX_CONTENT_LENGTH:
        if not n:
            return b""
        return _HEADER.pack(FCGI_VERSION_1, rtype, request_id, n, 0) + data
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    for start in range(0, n, MAX_CONTENT_LENGTH):
        chunk = view[start : start + MAX_CONTENT_LENGTH]
        parts.append(_HEADER.pack(FCGI_VERSION_1, rtype, request_id, len(chunk), 0))
        parts.append(chunk)
    return b"".join(parts)


def stream_parts(
    rtype: int, request_id: int, buffers: list[bytes | bytearray | memoryview]
) -> list[bytes | memoryview]:
    """The records carrying ``buffers`` (concatenated) as a list of buffers for a vectored
    write (``socket.sendmsg``): record headers plus memoryview slices, so a large body is
    never copied. Never the empty end record."""
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    total = sum(len(v) for v in views)
    out: list[bytes | memoryview] = []
    bi = 0
    off = 0
    while total > 0:
        n = min(total, MAX_CONTENT_LENGTH)
        out.append(_HEADER.pack(FCGI_VERSION_1, rtype, request_id, n, 0))
        need = n
        while need:
            view = views[bi]
            take = min(need, len(view) - off)
            out.append(view[off : off + take])
            off += take
            need -= take
            if off == len(view):
                bi += 1
                off = 0
        total -= n
    return out


def py_split_records(prev: bytes, data: bytes) -> tuple[list[tuple[int, int, bytes]], bytes]:
    """The whole records of ``prev + data``, as ``(type, request id, content)`` tuples
    (padding skipped), and the bytes after the last of them.

    It stops at the first header that is cut short, whose record is cut short, or whose
    version is not FCGI_VERSION_1, and never raises for what it reads: the codec looks at
    what is left, so protocol errors are raised in one place. The reference for the native
    ``split`` (_pairs.c), which ``split_records`` is when it is built.
    """
    buf = prev + data if prev else data
    records = []
    pos = 0
    end = len(buf)
    while end - pos >= HEADER_LENGTH:
        version, rtype, rid, clen, plen = unpack_header(buf, pos)
        start = pos + HEADER_LENGTH
        if version != FCGI_VERSION_1 or start + clen + plen > end:
            break
        records.append((rtype, rid, buf[start : start + clen]))
        pos = start + clen + plen
    return records, buf[pos:] if pos else buf


#: ``py_split_records``, or the native scanner standing in for it.
split_records = _native.split if _native is not None else py_split_records


def encode_begin_request(request_id: int, role: int = Role.RESPONDER, keep_conn: bool = False) -> bytes:
    flags = FCGI_KEEP_CONN if keep_conn else 0
    return encode_record(RecordType.BEGIN_REQUEST, request_id, BEGIN_BODY.pack(role, flags))


def decode_begin_request(content: bytes | memoryview) -> tuple[int, int]:
    """(role, flags) from a BEGIN_REQUEST body."""
    if len(content) != 8:
        raise RemoteProtocolError(f"FCGI_BEGIN_REQUEST body must be 8 bytes, got {len(content)}")
    role, flags = BEGIN_BODY.unpack_from(content)
    return role, flags


def encode_end_request(
    request_id: int, app_status: int = 0, protocol_status: int = ProtocolStatus.REQUEST_COMPLETE
) -> bytes:
    return _HEADER.pack(FCGI_VERSION_1, RecordType.END_REQUEST, request_id, 8, 0) + _END_BODY.pack(
        app_status & 0xFFFFFFFF, protocol_status
    )


def decode_end_request(content: bytes | memoryview) -> tuple[int, int]:
    """(app_status, protocol_status) from an END_REQUEST body."""
    if len(content) != 8:
        raise RemoteProtocolError(f"FCGI_END_REQUEST body must be 8 bytes, got {len(content)}")
    return _END_BODY.unpack_from(content)


def _encode_length(n: int) -> bytes:
    if n < 128:
        return bytes((n,))
    if n > 0x7FFFFFFF:
        raise ValueError(f"name or value of {n} bytes is too long for FastCGI")
    return _LEN4.pack(n | 0x80000000)


def encode_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Name-value pairs body (1-byte lengths below 128, else 4-byte)."""
    out = bytearray()
    for name, value in pairs:
        out += _encode_length(len(name))
        out += _encode_length(len(value))
        out += name
        out += value
    return bytes(out)


def decode_pairs(
    data: bytes | bytearray, max_count: int | None = None, text: bool = False
) -> list[tuple[bytes, bytes]] | list[tuple[str, str]]:
    """Parse a complete name-value pairs body into an ordered multi-list.

    Pairs are ``bytes`` or, with ``text``, latin-1 ``str`` (the CGI/WSGI "native string"
    form). Raises RemoteProtocolError for a truncated body or more than ``max_count``
    pairs. Uses the C decoder when built; any body it rejects goes through the Python
    one, which raises the precise error.
    """
    if _c_decode is not None:
        if type(data) is not bytes:
            data = bytes(data)
        try:
            pairs = _c_decode(data, text)
        except ValueError:
            return py_decode_pairs(data, max_count, text)
        if max_count is not None and len(pairs) > max_count:
            raise RemoteProtocolError(f"more than {max_count} name-value pairs", 431)
        return pairs
    return py_decode_pairs(data, max_count, text)


def py_decode_pairs(
    data: bytes | bytearray, max_count: int | None = None, text: bool = False
) -> list[tuple[bytes, bytes]] | list[tuple[str, str]]:
    """The pure-Python ``decode_pairs`` (the reference; used when _pairs is not built).

    With ``text`` the whole body is decoded once and sliced, since latin-1 maps byte
    offsets to the same character offsets (cheaper than a decode per name and value).
    One bounds check at the end instead of one per pair; slicing already copies.
    """
    if type(data) is not bytes:
        data = bytes(data)
    src: bytes | str = data.decode("latin-1") if text else data
    pairs: list = []
    append = pairs.append
    unpack = _LEN4.unpack_from
    pos = 0
    end = len(data)
    try:
        while pos < end:
            n = data[pos]
            if n > 127:
                n = unpack(data, pos)[0] & 0x7FFFFFFF
                pos += 4
            else:
                pos += 1
            v = data[pos]
            if v > 127:
                v = unpack(data, pos)[0] & 0x7FFFFFFF
                pos += 4
            else:
                pos += 1
            mid = pos + n
            pos = mid + v
            append((src[mid - n : mid], src[mid:pos]))
    except (IndexError, struct.error):
        raise RemoteProtocolError("truncated name-value pair length") from None
    if pos > end:
        raise RemoteProtocolError("name-value pair runs past the end of its stream")
    if max_count is not None and len(pairs) > max_count:
        raise RemoteProtocolError(f"more than {max_count} name-value pairs", 431)
    return pairs


__all__ = [
    "HEADER_LENGTH",
    "decode_begin_request",
    "decode_end_request",
    "decode_pairs",
    "encode_begin_request",
    "encode_end_request",
    "encode_pairs",
    "encode_record",
    "encode_stream",
    "pack_header",
    "py_decode_pairs",
    "py_split_records",
    "split_records",
    "unpack_header",
]
