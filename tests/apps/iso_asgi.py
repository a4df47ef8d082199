"""A plain ASGI app with the leaks of ``iso_wsgi`` that make sense on the event loop: a
module global, a contextvar, a thread-local on the loop thread, and a fire-and-forget task
(``/fire``)."""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from urllib.parse import parse_qs

CURRENT_USER = None
LOCAL = threading.local()
REQUEST_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")
BACKGROUND: set[asyncio.Task] = set()


async def _forgotten() -> None:
    await asyncio.sleep(30)


async def app(scope, receive, send):
    global CURRENT_USER
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if path == "/login":
        CURRENT_USER = query["user"]
        body = f"hello {CURRENT_USER}"
    elif path == "/whoami":
        body = CURRENT_USER or "anonymous"
    elif path == "/ctx-set":
        body = REQUEST_VAR.get()
        REQUEST_VAR.set(query["v"])
    elif path == "/ctx-get":
        body = REQUEST_VAR.get()
    elif path == "/tl-set":
        LOCAL.value = query["v"]
        body = "set"
    elif path == "/tl-get":
        body = getattr(LOCAL, "value", "unset")
    elif path == "/fire":
        task = asyncio.get_running_loop().create_task(_forgotten())  # fire and forget
        BACKGROUND.add(task)
        body = "fired"
    elif path == "/pid":
        body = str(os.getpid())
    else:
        body = "ok"
    data = body.encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})
