"""A WSGI test application; ``validated`` wraps it in wsgiref.validate (PEP 3333 checks)."""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import sys
import tempfile
from urllib.parse import parse_qs
from wsgiref.validate import validator

request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")
CLOSED: list[str] = []


class ClosingBody:
    """An iterable whose close() records that it was called (PEP 3333 requires it)."""

    def __init__(self, chunks, marker):
        self.chunks = chunks
        self.marker = marker

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        if self.marker:
            with open(self.marker, "w") as f:
                f.write("closed")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    text = [("Content-Type", "text/plain")]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(len(body))),
                ("X-Sha256", hashlib.sha256(body).hexdigest()),
            ],
        )
        return [body]
    if path == "/echo-lines":
        stream, size = environ["wsgi.input"], int(query.get("size", "-1"))
        if "readlines" in query:
            lines = stream.readlines()
        elif size > 0:
            lines = list(iter(lambda: stream.readline(size), b""))
        else:
            lines = list(stream)
        start_response("200 OK", text)
        return [json.dumps([len(x) for x in lines]).encode()]
    if path == "/echo-chunks":
        stream = environ["wsgi.input"]
        h = hashlib.sha256()
        total = 0
        while True:
            data = stream.read(int(query.get("n", "7919")))
            if not data:
                break
            h.update(data)
            total += len(data)
        start_response("200 OK", text)
        return [f"{total} {h.hexdigest()}".encode()]
    if path == "/environ" or path.startswith("/environ/") or "dump-environ" in query:
        keys = {k: v for k, v in environ.items() if isinstance(v, str)}
        keys["wsgi.multithread"] = environ["wsgi.multithread"]
        keys["wsgi.multiprocess"] = environ["wsgi.multiprocess"]
        keys["wsgi.run_once"] = environ["wsgi.run_once"]
        keys["wsgi.input_terminated"] = environ.get("wsgi.input_terminated", False)
        keys["wsgi.version"] = list(environ["wsgi.version"])
        keys["pid"] = os.getpid()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(keys).encode()]
    if path == "/stream":
        size = int(query.get("size", "1048576"))
        chunk = int(query.get("chunk", "65536"))
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
        )

        def gen():
            sent = 0
            block = b"x" * chunk
            while sent < size:
                n = min(chunk, size - sent)
                yield block[:n]
                sent += n

        return gen()
    if path == "/write":
        write = start_response("200 OK", text)
        write(b"written-")
        return [b"returned"]
    if path == "/exc-info":
        start_response("200 OK", text)
        try:
            raise ValueError("handled")
        except ValueError:
            start_response("500 Internal Server Error", text, sys.exc_info())
        return [b"replaced by the error response"]
    if path == "/close":
        start_response("200 OK", text)
        return ClosingBody([b"a", b"b"], query.get("marker"))
    if path == "/file":
        f = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the server via file_wrapper
        f.write(b"0123456789" * int(query.get("n", "10000")))
        f.seek(0)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 8192)
    if path == "/errors":
        environ["wsgi.errors"].write("app wrote to wsgi.errors\n")
        environ["wsgi.errors"].flush()
        start_response("200 OK", text)
        return [b"ok"]
    if path == "/raise-before":
        raise RuntimeError("boom before start")
    if path == "/raise-after":
        start_response("200 OK", text)

        def gen():
            yield b"partial"
            raise RuntimeError("boom after start")

        return gen()
    if path == "/bad-header":
        start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: pwned=1")])
        return [b"never"]
    if path == "/cookies":
        start_response("200 OK", [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/"), *text])
        return [b"ok"]
    if path == "/contextvar":
        previous = request_var.get()
        request_var.set(query.get("v", "set"))
        start_response("200 OK", text)
        return [previous.encode()]
    if path == "/sleep":
        import time

        if query.get("marker"):  # tells a test that the request is in flight
            with open(query["marker"], "w") as f:
                f.write("started")
        time.sleep(float(query.get("s", "1")))
        start_response("200 OK", text)
        return [b"slept"]
    if path == "/slow-stream":
        # n chunks, s seconds apart; close() writes how many chunks were produced.
        import time

        produced = []
        n, pause, marker = int(query.get("n", "40")), float(query.get("s", "0.05")), query.get("marker")

        def slow():
            for i in range(n):
                produced.append(i)
                yield b"%06d\n" % i
                time.sleep(pause)

        class Counted(ClosingBody):
            def close(self):
                self.chunks.close()
                if self.marker:
                    with open(self.marker + ".tmp", "w") as f:
                        f.write(f"closed after {len(produced)} of {n}")
                    os.replace(self.marker + ".tmp", self.marker)

        start_response("200 OK", text)
        return Counted(slow(), marker)
    if path == "/bad-header-stream":
        start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: pwned=1")])
        return (b"x" * 1024 for _ in range(int(query.get("n", "50"))))
    if path == "/pid":
        start_response("200 OK", text)
        return [str(os.getpid()).encode()]
    start_response("404 Not Found", text)
    return [b"not found"]


validated = validator(app)
