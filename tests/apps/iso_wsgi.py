"""A plain WSGI app that leaks state between requests in every way the isolation layer
knows: a module global (``/login`` .. ``/whoami``), a growing module-level list
(``/append``), a thread-local (``/tl-set`` .. ``/tl-get``), a contextvar (``/ctx-set`` ..
``/ctx-get``) and a cache growing 8 MiB per request (``/grow``)."""

from __future__ import annotations

import contextvars
import os
import threading
from urllib.parse import parse_qs

CURRENT_USER = None
SEEN: list[str] = []
CACHE: list[bytes] = []
LOCAL = threading.local()
REQUEST_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")


def app(environ, start_response):
    global CURRENT_USER
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    if path == "/login":
        CURRENT_USER = query["user"]  # the leak: request state in a module global
        body = f"hello {CURRENT_USER}"
    elif path == "/whoami":
        body = CURRENT_USER or "anonymous"
    elif path == "/append":
        SEEN.append(path)
        body = str(len(SEEN))
    elif path == "/tl-set":
        LOCAL.value = query["v"]
        body = "set"
    elif path == "/tl-get":
        body = f"{getattr(LOCAL, 'value', 'unset')} {threading.current_thread().name}"
    elif path == "/ctx-set":
        previous = REQUEST_VAR.get()
        REQUEST_VAR.set(query["v"])
        body = previous
    elif path == "/ctx-get":
        body = REQUEST_VAR.get()
    elif path == "/grow":
        CACHE.append(b"x" * (8 * 1024 * 1024))
        body = str(len(CACHE))
    elif path == "/pid":
        body = str(os.getpid())
    else:
        body = "ok"
    data = body.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
