"""Apps for tests/process: every response names the worker pid that served it.

``app`` (WSGI) and ``asgi_app`` (ASGI) answer ``/pid`` with the pid, ``/sleep?s=N`` with the
pid after sleeping N seconds, and ``/exit?code=N`` by ending the worker process at once
(``os._exit``: a crash the master must notice and repair).
"""

from __future__ import annotations

import asyncio
import os
import time
from urllib.parse import parse_qs


def _query(raw: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(raw).items()}


def app(environ, start_response):
    path, query = environ["PATH_INFO"], _query(environ["QUERY_STRING"])
    if path == "/exit":
        os._exit(int(query.get("code", "7")))
    if path == "/sleep":
        time.sleep(float(query.get("s", "1")))
    if path not in ("/pid", "/sleep"):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    path, query = scope["path"], _query(scope["query_string"].decode())
    if path == "/exit":
        os._exit(int(query.get("code", "7")))
    if path == "/sleep":
        await asyncio.sleep(float(query.get("s", "1")))
    status, body = (200, str(os.getpid()).encode()) if path in ("/pid", "/sleep") else (404, b"not found")
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
