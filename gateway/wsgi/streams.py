"""The file-like objects of a WSGI environ: ``wsgi.input`` (streaming from FCGI_STDIN),
``wsgi.errors`` (to the error log) and ``wsgi.file_wrapper``.

``InputStream`` reads until the empty STDIN record, never trusting CONTENT_LENGTH alone
(docs/protocol-notes.md, peer bug 14). It pulls more bytes on demand through a callback
supplied by the worker, so a large upload streams instead of being buffered whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

# In a module of their own, never compiled: mypyc cannot compile a subclass of OSError.
from .errors import ClientDisconnected, RequestTooLarge

app_logger = logging.getLogger("gateway.app")

__all__ = ["ClientDisconnected", "ErrorStream", "FileWrapper", "InputStream", "RequestTooLarge"]


class InputStream:
    """``wsgi.input``: the request body, fed by the worker, pulled by the app."""

    __slots__ = ("_buf", "_disconnected", "_eof", "_limit", "_pull", "_received")

    def __init__(self, pull: Callable[[], None] | None = None, limit: int | None = None) -> None:
        self._buf = bytearray()
        self._eof = False
        self._disconnected = False
        self._pull = pull
        self._limit = limit
        self._received = 0

    # -- fed by the worker -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._limit is not None:
            self._received += len(data)
            if self._received > self._limit:
                # Keep nothing more; the app's next read raises RequestTooLarge (-> 413).
                self._buf.clear()
                self._eof = True
                return
        self._buf += data

    def end(self) -> None:
        self._eof = True

    def disconnect(self) -> None:
        self._disconnected = True
        self._eof = True

    def release(self) -> None:
        """The request is over: let go of the source (the worker's connection, through
        ``pull``) and of any unread body; later reads return what an ended body returns.
        An app may keep its environ alive after the request: Django's request objects form
        reference cycles that only the garbage collector frees. Released, the stream no
        longer keeps the connection, its codec and their buffers alive with them."""
        self._pull = None
        if self._buf:
            self._buf = bytearray()
        self._eof = True

    @property
    def complete(self) -> bool:
        return self._eof

    def _fill(self) -> bool:
        """Pull more data; False at the end of the body."""
        self._check_size()
        if self._eof:
            if self._disconnected:
                raise ClientDisconnected("client disconnected while the request body was being read")
            return False
        if self._pull is None:
            raise RuntimeError("input stream has no source")
        self._pull()
        return True

    # -- the WSGI input API --------------------------------------------------------------

    def _check_size(self) -> None:
        if self._limit is not None and self._received > self._limit:
            raise RequestTooLarge(f"request body over --max-body-size ({self._limit} bytes)")

    def read(self, size: int | None = -1) -> bytes:
        self._check_size()
        buf = self._buf
        if size is None or size < 0:
            while not self._eof:
                self._fill()
            if self._disconnected:
                self._fill()
            self._check_size()
            data = bytes(buf)
            buf.clear()
            return data
        while len(buf) < size and self._fill():
            pass
        self._check_size()
        data = bytes(buf[:size])
        del buf[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        self._check_size()
        buf = self._buf
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl >= 0:
                end = nl + 1
                break
            if size is not None and 0 <= size <= len(buf):
                end = size
                break
            start = len(buf)
            if not self._fill():
                end = len(buf)
                break
        if size is not None and 0 <= size < end:
            end = size
        data = bytes(buf[:end])
        del buf[:end]
        return data

    def readlines(self, hint: int | None = None) -> list[bytes]:
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                break
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def drain(self) -> None:
        """Discard the rest of the body (without pulling from the socket)."""
        self._buf.clear()


class ErrorStream:
    """``wsgi.errors``: text written by the app goes to the ``gateway.app`` logger."""

    __slots__ = ("_forward", "_pending")

    def __init__(self, forward: Callable[[bytes], None] | None = None) -> None:
        self._pending = ""
        #: ``--forward-stderr``: also send the text to the web server as FCGI_STDERR
        self._forward = forward

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError("wsgi.errors.write() takes str")
        if self._forward is not None:
            self._forward(text.encode("utf-8", "replace"))
        data = self._pending + text
        *lines, self._pending = data.split("\n")
        for line in lines:
            app_logger.error("%s", line)
        return len(text)

    def writelines(self, seq: Any) -> None:
        for text in seq:
            self.write(text)

    def flush(self) -> None:
        if self._pending:
            app_logger.error("%s", self._pending)
            self._pending = ""


class FileWrapper:
    """``wsgi.file_wrapper``: the worker sends real files with os.sendfile when it can."""

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while True:
            data = read(self.blksize)
            if not data:
                return
            yield data
