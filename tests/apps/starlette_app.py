"""A real Starlette application for the framework tests (tests/integration/test_frameworks.py).

Lifespan is Starlette's ``lifespan=`` async context manager: startup sets ``app.state`` and
yields a state dict (ASGI lifespan ``state``, seen by requests as ``request.state``);
shutdown writes ``$STARLETTE_SHUTDOWN_MARKER`` if set. A BackgroundTask writes the file
named in the request after the response has been sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    app.state.started = "yes"
    yield {"greeting": "hello from the lifespan state"}
    marker = os.environ.get("STARLETTE_SHUTDOWN_MARKER")
    if marker:
        Path(marker).write_text("shutdown complete")


async def hello(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "hello": "world",
            "greeting": request.state.greeting,
            "started": request.app.state.started,
            "root_path": request.scope["root_path"],
        }
    )


async def item(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["item_id"], "name": request.path_params["name"]})


async def search(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "q": request.query_params.get("q"),
            "tags": request.query_params.getlist("tag"),
            "url": str(request.url.path),
        }
    )


async def create_note(request: Request) -> JSONResponse:
    data = await request.json()
    return JSONResponse({"created": data, "length": len(await request.body())}, status_code=201)


async def form(request: Request) -> JSONResponse:
    # URL-encoded form read through Starlette's body API (Starlette's own request.form()
    # needs the optional python-multipart package).
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    fields = parse_qs((await request.body()).decode())
    return JSONResponse({k: v if len(v) > 1 else v[0] for k, v in fields.items()})


async def stream(request: Request) -> StreamingResponse:
    count = int(request.query_params.get("n", "5"))

    async def lines():
        for i in range(count):
            yield f"line {i}\n".encode()
            await asyncio.sleep(0.01)

    return StreamingResponse(lines(), media_type="text/plain")


def write_marker(path: str, text: str) -> None:
    Path(path).write_text(text)


async def background(request: Request) -> PlainTextResponse:
    task = BackgroundTask(write_marker, request.query_params["marker"], "background ran")
    return PlainTextResponse("accepted", status_code=202, background=task)


async def headers(request: Request) -> JSONResponse:
    response = JSONResponse({"user_agent": request.headers.get("user-agent")})
    response.set_cookie("a", "1")
    response.set_cookie("b", "2")
    return response


async def boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("starlette boom")


app = Starlette(
    routes=[
        Route("/", hello),
        Route("/items/{item_id:int}/{name}", item),
        Route("/search", search),
        Route("/notes", create_note, methods=["POST"]),
        Route("/form", form, methods=["POST"]),
        Route("/stream", stream),
        Route("/background", background),
        Route("/headers", headers),
        Route("/boom", boom),
    ],
    lifespan=lifespan,
)
