"""ASGI apps with unusual lifespan behaviour, for the CLI and start-up tests."""

from __future__ import annotations


async def _ok(send, text: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": text})


async def no_lifespan(scope, receive, send):
    """Raises on the lifespan scope, like Django's ASGI handler."""
    if scope["type"] != "http":
        raise ValueError(f"only HTTP is supported, not {scope['type']}")
    await _ok(send, b"no lifespan here")


async def startup_failed(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database at db.invalid unreachable"})
        return
    await _ok(send, b"never served")
