"""Apps for tests/integration/test_queueing.py: each call is recorded before anything else.

``app`` (WSGI) and ``asgi_app`` (ASGI) append ``PATH?QUERY`` to the file named by
``QUEUE_APP_CALLS`` (a shed request must never reach the app), then answer ``/sleep?s=N``
after N seconds, ``/ok`` with 200 and anything else with 404.
"""

from __future__ import annotations

import asyncio
import os
import time
from urllib.parse import parse_qs


def _record(path: str, query: str) -> dict[str, str]:
    with open(os.environ["QUEUE_APP_CALLS"], "a") as f:
        f.write(f"{path}?{query}\n")
    return {k: v[0] for k, v in parse_qs(query).items()}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = _record(path, environ["QUERY_STRING"])
    if path == "/sleep":
        time.sleep(float(query.get("s", "1")))
    status = "200 OK" if path in ("/ok", "/sleep") else "404 Not Found"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    query = _record(path, scope["query_string"].decode())
    if path == "/sleep":
        await asyncio.sleep(float(query.get("s", "1")))
    status = 200 if path in ("/ok", "/sleep") else 404
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})
