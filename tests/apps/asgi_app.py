"""An ASGI test application exercising every path of the async worker's request cycle."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import os
from urllib.parse import parse_qs

request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")
STARTED: dict[str, bool] = {}


async def _body(receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks)


async def _respond(send, status: int, body: bytes, headers=None, ctype=b"text/plain") -> None:
    hdrs = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": hdrs + (headers or [])})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive, send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            STARTED["startup"] = True
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            marker = os.environ.get("TEST_SHUTDOWN_MARKER")
            if marker:
                with open(marker, "w") as f:
                    f.write("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        scope["state"]["greeting"] = "hello from lifespan"
        await lifespan(receive, send)
        return
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if path == "/echo":
        body = await _body(receive)
        await _respond(
            send,
            200,
            body,
            [(b"x-sha256", hashlib.sha256(body).hexdigest().encode())],
            ctype=b"application/octet-stream",
        )
    elif path == "/info" or path.startswith("/app/"):
        info = {
            "method": scope["method"],
            "path": path,
            "raw_path": scope["raw_path"].decode("latin-1"),
            "root_path": scope["root_path"],
            "query_string": scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "scheme": scope["scheme"],
            "http_version": scope["http_version"],
            "state": scope.get("state", {}).get("greeting"),
            "pid": os.getpid(),
            "connection": scope["extensions"]["fastcgi"]["connection"],
        }
        await _respond(send, 200, json.dumps(info).encode(), ctype=b"application/json")
    elif path == "/stream":
        size = int(query.get("size", "1048576"))
        chunk = int(query.get("chunk", "65536"))
        block = b"x" * chunk
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/octet-stream"),
                    (b"content-length", str(size).encode()),
                ],
            }
        )
        sent = 0
        while sent < size:
            n = min(chunk, size - sent)
            await send({"type": "http.response.body", "body": block[:n], "more_body": True})
            sent += n
        await send({"type": "http.response.body", "body": b""})
    elif path == "/raise-before":
        raise RuntimeError("boom before start")
    elif path == "/raise-after":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom after start")
    elif path == "/no-response":
        return
    elif path == "/partial":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        return
    elif path == "/bad-header":
        await _respond(send, 200, b"never", [(b"x-evil", b"a\r\nSet-Cookie: pwned=1")])
    elif path == "/cookies":
        await _respond(send, 200, b"ok", [(b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=2; Path=/")])
    elif path == "/disconnect":
        # No response yet: nginx is waiting for the header and watches the client, so a
        # client that gives up makes nginx close the FastCGI connection at once.
        marker = query["marker"]
        with open(marker + ".started", "w") as f:
            f.write("started")
        msg = await asyncio.wait_for(receive(), 30)
        while msg["type"] == "http.request":  # the (empty) body comes first
            msg = await asyncio.wait_for(receive(), 30)
        with open(marker, "w") as f:
            f.write(msg["type"])
    elif path == "/background":
        # Respond, then keep working: the next request on the same keep-alive connection
        # (same request id) must not be disturbed (docs/protocol-notes.md, peer bug 2).
        body = await _body(receive)
        await _respond(send, 200, body)
        await asyncio.sleep(0.05)
        await receive()
    elif path == "/sleep":
        await asyncio.sleep(float(query.get("s", "1")))
        await _respond(send, 200, b"slept")
    elif path == "/contextvar":
        previous = request_var.get()
        request_var.set(query.get("v", "set"))
        await _respond(send, 200, previous.encode())
    elif path == "/fire-and-forget":
        asyncio.get_running_loop().create_task(asyncio.sleep(30), name="forgotten")
        await _respond(send, 200, b"fired")
    elif path == "/pid":
        await _respond(send, 200, str(os.getpid()).encode())
    else:
        await _respond(send, 404, b"not found")
