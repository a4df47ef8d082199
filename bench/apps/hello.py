"""The hello-world apps of the benchmark, one WSGI and one ASGI, with the same four routes.

``GET /``        13 bytes of text ("Hello, world!"): the cost of the server itself.
``GET /big``     a 1 MiB body, as one bytes object: the cost of moving a large response.
``POST /upload`` reads the whole request body in 64 KiB chunks and answers its length in
                 bytes: the cost of moving a large request body.
``GET /stream?bytes=N``  N bytes (default 100 MiB) yielded in 64 KiB chunks (WSGI: an
                 iterable; ASGI: ``more_body`` messages), with a Content-Length: a streamed
                 download, whose worker memory should not grow with N.

Anything else is a 404. No framework and no middleware, so the server is all that is measured.
"""

from __future__ import annotations

from collections.abc import Iterator

HELLO = b"Hello, world!"
_BIG: list[bytes] = []
CHUNK = 64 * 1024
TEXT = [("Content-Type", "text/plain")]
STREAM_BYTES = 100 * 1024 * 1024


def _big() -> bytes:
    """The 1 MiB body, made on first use: an idle worker holds none of the app's data (it
    would add 1 MiB to every server's idle RSS)."""
    if not _BIG:
        _BIG.append(b"x" * (1024 * 1024))
    return _BIG[0]


def _stream_size(query: str) -> int:
    """``bytes=N`` of the query string, else STREAM_BYTES (no urllib: the hello app imports
    nothing, so that its idle memory is the server's)."""
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "bytes" and value.isdigit():
            return int(value)
    return STREAM_BYTES


def _chunks(total: int) -> Iterator[bytes]:
    piece = _big()[:CHUNK]
    while total > 0:
        yield piece if total >= CHUNK else piece[:total]
        total -= CHUNK


def _route(method: str, path: str) -> str:
    if path in ("", "/") and method in ("GET", "HEAD"):
        return "hello"
    if path == "/big" and method in ("GET", "HEAD"):
        return "big"
    if path == "/upload" and method == "POST":
        return "upload"
    if path == "/stream" and method == "GET":
        return "stream"
    return "notfound"


def wsgi_app(environ, start_response):
    route = _route(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))
    if route == "upload":
        stream = environ["wsgi.input"]
        remaining = int(environ.get("CONTENT_LENGTH") or 0)
        total = 0
        while remaining > 0:
            chunk = stream.read(min(CHUNK, remaining))
            if not chunk:
                break
            total += len(chunk)
            remaining -= len(chunk)
        body, status = str(total).encode(), "200 OK"
    elif route == "stream":
        size = _stream_size(environ.get("QUERY_STRING", ""))
        start_response("200 OK", [*TEXT, ("Content-Length", str(size))])
        return _chunks(size)
    elif route == "notfound":
        body, status = b"not found", "404 Not Found"
    else:
        body, status = (HELLO if route == "hello" else _big()), "200 OK"
    start_response(status, [*TEXT, ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    route = _route(scope["method"], scope["path"])
    status = 200
    if route == "upload":
        total, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            total += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = str(total).encode()
    elif route == "stream":
        size = _stream_size(scope.get("query_string", b"").decode("latin-1"))
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for piece in _chunks(size):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    elif route == "notfound":
        body, status = b"not found", 404
    else:
        body = HELLO if route == "hello" else _big()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
