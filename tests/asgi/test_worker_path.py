"""The async worker's per-request path without sockets: a FastCGIProtocol on a fake
transport, driven by FastCGI bytes (the hot path: one connection per request, the response
in one write, the task and the cycle released at the end; flow control both ways)."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from gateway.asgi import cycle as cycle_module
from gateway.config import Config
from gateway.protocol.records import encode_begin_request, encode_pairs, encode_record
from gateway.workers.async_worker import AsyncWorker, FastCGIProtocol
from tests.capture import captured_requests

PARAMS = captured_requests()["/keep/1"]
STDOUT, STDIN, PARAMS_T, END_REQUEST = 6, 5, 4, 3


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.paused = 0
        self.resumed = 0

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        self.paused += 1

    def resume_reading(self) -> None:
        self.resumed += 1


def head(params: list[tuple[bytes, bytes]] = PARAMS, rid: int = 1) -> bytes:
    return (
        encode_begin_request(rid)
        + encode_record(PARAMS_T, rid, encode_pairs(params))
        + encode_record(PARAMS_T, rid)
    )


def stdin(data: bytes, rid: int = 1) -> bytes:
    return encode_record(STDIN, rid, data)


def records(data: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    pos = 0
    while pos < len(data):
        rtype, rid = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        clen, plen = int.from_bytes(data[pos + 4 : pos + 6], "big"), data[pos + 6]
        out.append((rtype, rid, data[pos + 8 : pos + 8 + clen]))
        pos += 8 + clen + plen
    return out


async def serve(
    app: Any, chunks: list[bytes], between: Any = None
) -> tuple[AsyncWorker, FastCGIProtocol, FakeTransport]:
    worker = AsyncWorker(Config(app="x:y"), app, [])
    worker.loop = asyncio.get_running_loop()
    worker._baseline = contextvars.copy_context()
    proto = worker._protocol_factory()
    transport = FakeTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    for chunk in chunks:
        proto.data_received(chunk)
        for _ in range(3):
            await asyncio.sleep(0)
        if between is not None:
            await between(proto, transport)
    for _ in range(50):
        if not worker.tasks:
            break
        await asyncio.sleep(0)
    if transport.closed:
        proto.connection_lost(None)
    return worker, proto, transport


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Hello"})


def test_hello_answers_in_one_write_and_releases_everything() -> None:
    worker, proto, transport = asyncio.run(serve(hello, [head() + stdin(b"")]))
    assert len(transport.writes) == 1
    recs = records(transport.writes[0])
    assert [(t, rid) for t, rid, _ in recs] == [(STDOUT, 1), (STDOUT, 1), (END_REQUEST, 1)]
    assert recs[0][2] == b"Status: 200 OK\r\ncontent-type: text/plain\r\n\r\nHello"
    assert transport.closed
    assert worker.tasks == set() and worker.requests_served == 1
    assert proto.cycles == {} and proto not in worker.connections


def test_body_in_later_chunks_reaches_the_app() -> None:
    seen: list[dict[str, Any]] = []

    async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            seen.append(message)
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    chunks = [head(), stdin(b"ab"), stdin(b"cd") + stdin(b"")]
    worker, _, transport = asyncio.run(serve(echo, chunks))
    # the last chunk and the end of the body came together: one message
    assert [(m["body"], m["more_body"]) for m in seen] == [(b"ab", True), (b"cd", False)]
    assert records(b"".join(transport.writes))[0][2].endswith(b"\r\n\r\nabcd")
    assert worker.tasks == set() and transport.closed


def test_large_body_pauses_reading_until_the_app_reads() -> None:
    big = b"x" * 65535
    n = cycle_module.BODY_HIGH_WATER // len(big) + 2
    received = []

    async def reader(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asyncio.sleep(0.01)  # let the body pile up first
        total = 0
        while True:
            message = await receive()
            total += len(message["body"])
            if not message["more_body"]:
                break
        received.append(total)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    chunks = [head() + b"".join(stdin(big) for _ in range(n)) + stdin(b"")]

    async def main() -> FakeTransport:
        _, _, transport = await serve(reader, chunks)
        await asyncio.sleep(0.05)
        return transport

    transport = asyncio.run(main())
    assert received == [n * len(big)]
    assert transport.paused == 1 and transport.resumed == 1


def test_write_pause_waits_for_resume_or_connection_loss() -> None:
    async def streamer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def main(lose: bool) -> tuple[list[bytes], AsyncWorker]:
        worker = AsyncWorker(Config(app="x:y"), streamer, [])
        worker.loop = asyncio.get_running_loop()
        worker._baseline = contextvars.copy_context()
        proto = worker._protocol_factory()
        transport = FakeTransport()
        proto.connection_made(transport)  # type: ignore[arg-type]
        proto.pause_writing()
        proto.data_received(head() + stdin(b""))
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(transport.writes) == 1 and worker.tasks  # waiting in drain
        if lose:
            proto.connection_lost(None)
        else:
            proto.resume_writing()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not worker.tasks and proto.cycles == {}
        return transport.writes, worker

    writes, _ = asyncio.run(main(lose=False))
    assert [r[2] for r in records(b"".join(writes)) if r[0] == STDOUT] == [
        b"Status: 200 OK\r\n\r\na",
        b"b",
        b"",
    ]
    writes, worker = asyncio.run(main(lose=True))
    assert len(writes) == 1 and worker.requests_served == 1  # later sends dropped, request counted
