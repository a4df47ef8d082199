"""WSGI apps on the async worker, through a2wsgi's WSGIMiddleware (the bridge).

a2wsgi supplies the thread pool, ``wsgi.input`` and the response plumbing; this module
corrects what it gets wrong for us (each point has a test in
tests/integration/test_wsgi_nginx.py):

- **environ**: a2wsgi builds it from the ASGI scope, which loses the FastCGI-only params
  (SCRIPT_FILENAME, HTTPS, DOCUMENT_ROOT, custom ``fastcgi_param``s), strips a root path
  without checking the segment boundary (``/app`` + ``/application`` -> PATH_INFO
  ``lication``), re-encodes raw non-ASCII path bytes and fails (500) on a raw non-ASCII
  query string. The CGI variables are therefore
  rebuilt from ``scope["extensions"]["fastcgi"]["params"]`` by the sync worker's own
  ``build_environ``, so both workers give an app the same environ (bar ``wsgi.*``).
  ``wsgi.errors`` goes to the error log, not stdout.
- **start_response**: a2wsgi sends the head at once and ignores a later
  ``start_response(..., exc_info)``, so an app replacing its 200 by a 500 still answered
  200. PEP 3333 says the head waits for the first non-empty body bytes; ``_Response`` holds
  it back until then and validates it first (a header with CR/LF raised inside a2wsgi's
  sender task, after which a streaming app blocked forever on a2wsgi's full queue).
- **wsgi.input**: a2wsgi's ``readline(size)`` returned ``b""`` (EOF) before the first
  body bytes arrived, ``readlines()`` raised on an empty body, iteration ended with an
  extra empty line when the body's end came in its own STDIN record, and a disconnect
  looked like the end of the body. The bridge uses the sync worker's ``InputStream``
  (raises ClientDisconnected, logged at info level as on the sync worker), pulling
  a2wsgi's ``receive`` from the WSGI thread.
- **client gone**: the ASGI cycle drops sends after a disconnect, so a2wsgi iterated a
  streaming response to its end for nobody; ``_Response`` stops and the app's ``close()``
  runs at once.
- **isolation**: per-thread state (thread-locals, Django connections, SQLAlchemy's
  thread-scoped sessions) lives in the pool thread that ran the request, so the isolation
  layer's thread hooks run there: ``enter_app_thread`` before the app, ``exit_app_thread``
  once ``close()`` returned (a2wsgi calls it in that thread after queueing the last body
  bytes, so the client does not wait for the checks).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote_from_bytes

from a2wsgi import WSGIMiddleware

from ..isolation.base import enter_app_thread, exit_app_thread
from ..response import wsgi_header_block
from .environ import build_environ, text_params
from .streams import ClientDisconnected, ErrorStream, FileWrapper, InputStream

logger = logging.getLogger("gateway.error")

#: Scope key under which the bridge passes "has the web server gone?" to the WSGI thread.
_GONE = "fcgi_gateway.client_gone"


def _input(body: Any) -> Any:
    """``wsgi.input`` for the bridge: the sync worker's InputStream, pulling ASGI
    ``http.request`` messages through a2wsgi's ``receive`` from the WSGI thread."""
    receive, loop = getattr(body, "receive", None), getattr(body, "loop", None)
    if receive is None or loop is None:
        return body

    def pull() -> None:
        message = asyncio.run_coroutine_threadsafe(receive(), loop).result()
        if message["type"] != "http.request":
            stream.disconnect()
            return
        if message.get("body"):
            stream.feed(message["body"])
        if not message.get("more_body", False):
            stream.end()

    stream = InputStream(pull)
    return stream


class _Response:
    """start_response, write() and the body iterable between the app and a2wsgi."""

    __slots__ = ("_a2_start", "_a2_write", "_gone", "_head", "_isolation", "_result", "_sent", "environ")

    def __init__(self, a2_start: Callable[..., Any], gone: Callable[[], bool], environ: dict) -> None:
        self._a2_start = a2_start
        self._a2_write: Callable[[bytes], Any] | None = None
        self._gone = gone
        self._head: tuple[str, list[tuple[str, str]]] | None = None
        self._sent = False
        self._result: Any = None
        self._isolation: Any = None
        self.environ = environ

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None:
            try:
                if self._sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._head is not None:
            raise AssertionError("start_response() called twice without exc_info")
        wsgi_header_block(status, headers)  # raises InvalidResponse (CR/LF, bad status)
        self._head = (status, headers)
        return self.write

    def _send_head(self) -> None:
        if not self._sent:
            if self._head is None:
                raise AssertionError("response body before start_response()")
            self._sent = True
            self._a2_write = self._a2_start(*self._head)

    def write(self, data: bytes) -> None:
        self._send_head()
        if data:
            self._a2_write(data)  # type: ignore[misc]

    def describe(self) -> str:
        env = self.environ
        qs = env.get("QUERY_STRING")
        return f"{env.get('REQUEST_METHOD', '?')} {env.get('PATH_INFO', '')}{'?' + qs if qs else ''}"

    def disconnected(self, exc: ClientDisconnected) -> None:
        """The app stopped on a vanished client: nothing can reach it, end quietly (the
        cycle drops what is sent now, but a2wsgi still needs a head before its last body)."""
        logger.info("%s: %s", self.describe(), exc)
        if self._head is None:
            self._head = ("500 Internal Server Error", [("Content-Type", "text/plain")])
        self._send_head()

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._result:
                if chunk:
                    self._send_head()
                    if self._gone():
                        logger.info("web server closed the connection during %s", self.describe())
                        return
                    yield chunk
        except ClientDisconnected as exc:
            self.disconnected(exc)
            return
        self._send_head()

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            token, self._isolation = self._isolation, None
            exit_app_thread(token)


def _never() -> bool:
    return False


def _reinject(app: Any, multiprocess: bool = True) -> Any:
    def with_fastcgi_params(environ: dict[str, Any], start_response: Any) -> Any:
        scope = environ.get("asgi.scope")
        gone = _never
        if scope is not None:
            fcgi = scope.get("extensions", {}).get("fastcgi")
            if fcgi is not None:
                own = build_environ(text_params(fcgi["params"]), {}, root_path=scope.get("root_path", ""))
                for key in [k for k in environ if "." not in k and k not in own]:
                    del environ[key]
                environ.update(own)
            gone = scope.get(_GONE, _never)
        environ["wsgi.input"] = stream = _input(environ["wsgi.input"])
        if isinstance(stream, InputStream):
            environ["wsgi.input_terminated"] = True  # read() to EOF is safe, as on the sync worker
        environ["wsgi.errors"] = ErrorStream()
        environ["wsgi.multiprocess"] = multiprocess  # a2wsgi always says True
        environ.setdefault("wsgi.file_wrapper", FileWrapper)
        response = _Response(start_response, gone, environ)
        response._isolation = token = enter_app_thread()
        try:
            response._result = app(environ, response.start_response)
        except ClientDisconnected as exc:
            response.disconnected(exc)
            response._result = ()
        except BaseException:
            exit_app_thread(token)  # a2wsgi gets no iterable, so no close()
            raise
        return response

    return with_fastcgi_params


def bridge_wsgi(app: Any, *, threads: int = 10, multiprocess: bool = True) -> Any:
    """An ASGI app running the WSGI ``app`` in a pool of ``threads`` threads."""
    middleware = WSGIMiddleware(_reinject(app, multiprocess), workers=threads)

    async def bridged(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            # The worker's send is the request cycle's bound method; its ``disconnected``
            # flag is what the WSGI thread checks between body chunks.
            cycle = getattr(send, "__self__", None)
            if hasattr(cycle, "disconnected"):
                scope = {**scope, _GONE: lambda: cycle.disconnected}
            query = scope.get("query_string", b"")
            if not query.isascii():
                # a2wsgi decodes it as ASCII and would fail before the app runs; the
                # environ gets the raw bytes back from the params (``_reinject``).
                scope = {**scope, "query_string": quote_from_bytes(query, safe="/?:@&=+$,;%").encode()}
        await middleware(scope, receive, send)

    bridged.gateway_wsgi_app = app  # type: ignore[attr-defined]  # for checkers: "WSGI, bridged"
    return bridged
