"""Running one WSGI request to completion on the calling thread (the sync worker's path).

``WSGIResponder`` implements ``start_response`` (with ``exc_info``), the ``write()``
callable, iteration with ``close()`` always called, ``wsgi.file_wrapper`` via
os.sendfile, and the guarantee that the request ends with END_REQUEST whatever the app
does: an exception before any output becomes a 500 (traceback logged, shown to the client
only with ``--debug``); after output the response is ended and the error logged. A
response made of a list of byte strings leaves in a single write.
"""

from __future__ import annotations

import _socket
import logging
import os
import socket
import threading
import traceback
from typing import Any, Final

from ..protocol import FastCGIConnection
from ..protocol.constants import FCGI_VERSION_1, MAX_CONTENT_LENGTH, RecordType
from ..protocol.records import pack_header
from ..response import InvalidResponse, error_response, wsgi_header_block
from .streams import ClientDisconnected, FileWrapper, RequestTooLarge

logger = logging.getLogger("gateway.error")

_STDOUT: Final = int(RecordType.STDOUT)


#: Responses larger than this leave through one vectored write without copies.
LARGE_BODY: Final = 64 * 1024


def sendmsg_all(sock: _socket.socket, parts: list[Any]) -> None:
    """``sendall`` for a list of buffers (``socket.sendmsg``, resumed after short writes)."""
    i = 0
    try:
        while i < len(parts):
            sent = sock.sendmsg(parts[i : i + 1024])  # at most IOV_MAX buffers a call
            while sent:
                n = len(parts[i])
                if sent >= n:
                    sent -= n
                    i += 1
                else:
                    parts[i] = memoryview(parts[i])[sent:]
                    sent = 0
    except OSError as exc:
        raise ClientGone(str(exc)) from None


class ClientGone(Exception):
    """Writing to the web server failed: the connection is gone."""


def declared_length(headers: tuple[tuple[str, str], ...]) -> int | None:
    """The Content-Length a response head declares (None without a valid one)."""
    for name, value in headers:
        if len(name) == 14 and name.lower() == "content-length" and value.isascii() and value.isdigit():
            return int(value)
    return None


def describe(environ: dict[str, Any]) -> str:
    """``METHOD /path?query`` of a request, for log lines."""
    qs = environ.get("QUERY_STRING")
    return f"{environ.get('REQUEST_METHOD', '?')} {environ.get('PATH_INFO', '')}{'?' + qs if qs else ''}"


def note(what: str, environ: dict[str, Any], exc: BaseException | None) -> None:
    """Log what ends nothing: a result's close() that raised (``"close"``, with ``exc``), a
    body beyond its Content-Length (``"beyond"``)."""
    if what == "close":
        logger.error("exception in the close() of the WSGI response for %s", describe(environ), exc_info=exc)
    else:
        logger.warning("%s: body beyond its Content-Length dropped", describe(environ))


class WSGIResponder:
    __slots__ = (
        "body_bytes",
        "buffer",
        "codec",
        "debug",
        "ended",
        "environ",
        "error_code",
        "head",
        "headers",
        "headers_sent",
        "lock",
        "rid",
        "sock",
        "status",
        "timed_out",
    )

    def __init__(
        self,
        codec: FastCGIConnection,
        rid: int,
        sock: _socket.socket,
        environ: dict[str, Any],
        debug: bool,
        watched: bool = False,
    ) -> None:
        self.codec = codec
        self.rid = rid
        self.sock = sock
        self.environ = environ
        self.debug = debug
        self.status: str | None = None
        self.head: bytes | None = None
        self.headers_sent = False
        #: END_REQUEST was encoded for this request: nothing more may be sent
        self.ended = False
        self.timed_out = False
        #: the response head the app gave start_response (its Content-Length, read only for
        #: an iterable body, tells which chunk is the last)
        self.headers: tuple[tuple[str, str], ...] = ()
        #: the status of the error response sent instead of the app's, if any
        self.error_code = 0
        self.body_bytes = 0
        #: when a list, output is held here instead of sent (isolation "fail" policy)
        self.buffer: list[bytes] | None = None
        # Held while encoding + sending, so the watchdog's 504 never interleaves with output;
        # None when no other thread can send on this request (``watched`` False).
        self.lock: threading.Lock | None = threading.Lock() if watched else None

    def _send(self, data: bytes) -> None:
        if self.buffer is not None:
            self.buffer.append(data)
            return
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ClientGone(str(exc)) from None

    def _hold(self) -> None:
        """Before encoding and sending: take the lock, when there is one; ClientGone when
        the watchdog already ended the request. ``_release`` after."""
        lock = self.lock
        if lock is not None:
            lock.acquire()
        if self.timed_out:
            self._release()
            raise ClientGone("request timed out; the gateway already answered 504")

    def _release(self) -> None:
        lock = self.lock
        if lock is not None:
            lock.release()

    def _emit(self, encode: Any, *args: Any) -> None:
        """Encode with the codec and send, unless the watchdog already ended the request."""
        self._hold()
        try:
            self._send(encode(self.rid, *args))
        finally:
            self._release()

    def forward_stderr(self, data: bytes) -> None:
        """``--forward-stderr``: ``wsgi.errors`` text as FCGI_STDERR of this request (nginx
        logs it in its error log). Dropped once the request has ended."""
        if data:
            try:
                self._emit(self.codec.send_stderr, data)
            except Exception:
                pass

    def timeout(self) -> None:
        """Called from the watchdog thread: end the request now (504 if nothing was sent)."""
        lock = self.lock
        if lock is None:
            raise RuntimeError("timeout() on a responder built without watched=True")
        if not lock.acquire(timeout=5):
            return  # stuck in a send: the master's kill will end the connection
        try:
            if self.timed_out:
                return
            self.timed_out = True
            if self.headers_sent:
                data = self.codec.end_request(self.rid, 1)
            else:
                self.headers_sent = True
                data = self.codec.send_response(self.rid, error_response(504), 1)
            self._send(data)
            # The serving thread is stuck in the app and cannot go on with this connection:
            # close it so nginx finishes now (without keep-conn it waits for the close).
            self.sock.shutdown(socket.SHUT_RDWR)
        except (ClientGone, OSError):
            logger.info("could not deliver the 504 for %s", self.describe())
        finally:
            lock.release()

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        self.head = wsgi_header_block(status, headers)  # raises InvalidResponse
        self.headers = tuple(headers)  # as sent, whatever the app does with its list
        self.status = status
        return self.write

    @property
    def code(self) -> int:
        """The status code sent (for the access log): an error's, else the app's."""
        if self.error_code:
            return self.error_code
        return int(self.status[:3]) if self.status is not None else 0

    def write(self, data: Any) -> None:  # Any: what the app passes (mypyc checks annotations)
        if self.head is None:
            raise AssertionError("write() called before start_response()")
        if self.ended:
            raise AssertionError("write() called after the response ended")
        self.body_bytes += len(data)
        if not self.headers_sent:
            data = self.head + data
            self.headers_sent = True
        if data:
            self._emit(self.codec.send_stdout, data)

    def _finish(self, body: bytes = b"") -> None:
        if self.head is None:
            raise AssertionError("the application returned without calling start_response()")
        self.body_bytes += len(body)
        if len(body) > LARGE_BODY and self.buffer is None:
            # A vectored write of record headers and slices: the body is never copied.
            buffers: list[bytes | bytearray | memoryview] = [body] if self.headers_sent else [self.head, body]
            self.headers_sent = self.ended = True
            self._hold()
            try:
                sendmsg_all(self.sock, self.codec.send_response_parts(self.rid, buffers))
            finally:
                self._release()
            return
        if not self.headers_sent:
            body = self.head + body
            self.headers_sent = True
        self.ended = True
        self._hold()  # _emit(send_response, body) without its generic call: every request comes here
        try:
            self._send(self.codec.send_response(self.rid, body))
        finally:
            self._release()

    def _sendfile(self, wrapper: FileWrapper) -> bool:
        """Send a real file with os.sendfile between FastCGI record headers."""
        try:
            fd = wrapper.filelike.fileno()
            offset = wrapper.filelike.tell()
            size = os.fstat(fd).st_size - offset
        except (AttributeError, OSError, ValueError):
            return False
        self.write(b"")  # the header block goes first
        sock_fd = self.sock.fileno()
        while size > 0:
            n = min(size, MAX_CONTENT_LENGTH)
            self._send(pack_header(FCGI_VERSION_1, _STDOUT, self.rid, n, 0))
            sent_total = 0
            while sent_total < n:
                try:
                    sent = os.sendfile(sock_fd, fd, offset, n - sent_total)
                except OSError as exc:
                    raise ClientGone(str(exc)) from None
                if sent == 0:
                    raise ClientGone("file shrank while being sent")
                offset += sent
                sent_total += sent
            size -= n
        self._finish()
        return True

    def describe(self) -> str:
        return describe(self.environ)

    def run(self, app: Any) -> bool:
        """Run the app and answer. False when the connection is no longer usable."""
        result = None
        try:
            result = app(self.environ, self.start_response)
            if type(result) is list or type(result) is tuple:
                self._finish(b"".join(result) if len(result) != 1 else result[0])
            elif isinstance(result, FileWrapper) and self.buffer is None and self._sendfile(result):
                pass
            else:
                done = False
                length: int | None = -1  # the declared Content-Length, read at the first chunk
                for chunk in result:
                    if not chunk:
                        continue
                    if done:
                        note("beyond", self.environ, None)
                        break
                    if length == -1:
                        length = declared_length(self.headers)
                    if length is not None and self.body_bytes + len(chunk) >= length:
                        # The declared length is reached: the last bytes, the empty STDOUT and
                        # END_REQUEST leave in one write. Two writes let nginx finish the HTTP
                        # response (it has Content-Length bytes) before END_REQUEST arrives, so
                        # it drops the kept-alive connection; and a worker killed between them
                        # leaves nginx with a started response it cannot retry.
                        self._finish(chunk)
                        done = True
                    else:
                        self.write(chunk)
                if not done:
                    self._finish()
            return True
        except ClientGone as gone:  # (one name per clause: mypyc gives a name one type)
            if not self.timed_out:
                logger.info("web server closed the connection during %s: %s", self.describe(), gone)
            return self.timed_out
        except ClientDisconnected as disconnected:
            logger.info("%s: %s", self.describe(), disconnected)
            return False
        except RequestTooLarge as too_large:
            logger.warning("%s: %s: 413", self.describe(), too_large)
            return self._fail(None, 413)
        except Exception as exc:
            if isinstance(exc, InvalidResponse):
                logger.error("invalid response from application for %s: %s", self.describe(), exc)
            else:
                logger.exception("exception in WSGI application for %s", self.describe())
            return self._fail(traceback.format_exc() if self.debug else None)
        finally:
            # (a list or tuple has no close(): no getattr, whose AttributeError compiled code
            # builds and formats before dropping it)
            close = None if type(result) is list or type(result) is tuple else getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as close_error:
                    note("close", self.environ, close_error)

    def _fail(self, detail: str | None, status: int = 500) -> bool:
        if self.ended:
            # The error came after the response's end (a generator raising after its last
            # chunk): the caller logged it, and nothing more may be sent.
            return True
        if not self.headers_sent:
            self.error_code = status
        try:
            if self.headers_sent:
                self._emit(self.codec.end_request, 1)
            else:
                self.headers_sent = True
                self._emit(self.codec.send_response, error_response(status, detail), 1)
        except ClientGone:
            return False
        finally:
            self.ended = True  # a write() from close() after this is refused, never sent
        return True
