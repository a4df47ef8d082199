"""The apps behind the front-end tests (tests/deploy/test_frontends.py): one Flask app (WSGI)
and one Starlette app (ASGI) with the same routes, each answering which view its router
picked and what it saw of the path, the mount point and the query; and ``dump``, an ASGI
app answering the raw FastCGI params (``python -m tests.deploy.capture_frontends`` saves
them as fixtures).

Routes: ``/`` (index), ``/hello/world`` (hello_world), ``/hello/<name>`` (hello). Every
answer is JSON: ``view``, ``args``, ``x`` (the query's ``x``), ``query`` (the raw query
string), ``script_name``/``path`` (WSGI: SCRIPT_NAME and PATH_INFO decoded from their
"bytes as str" form; ASGI: root_path and the path without it), ``url`` (the app's own URL
for the view, so the mount point shows) and ``interface``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, jsonify, request, url_for
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

# -- WSGI: Flask -----------------------------------------------------------------------

wsgi = Flask(__name__)


def _flask_report(view: str, **args: str) -> Any:
    env = request.environ
    return jsonify(
        interface="wsgi",
        view=view,
        args=args,
        x=request.args.get("x"),
        query=env["QUERY_STRING"].encode("latin-1").decode("utf-8", "replace"),
        script_name=env["SCRIPT_NAME"].encode("latin-1").decode("utf-8", "replace"),
        path=env["PATH_INFO"].encode("latin-1").decode("utf-8", "replace"),
        url=url_for(view, **args),
    )


@wsgi.get("/")
def index() -> Any:
    return _flask_report("index")


@wsgi.get("/hello/world")
def hello_world() -> Any:
    return _flask_report("hello_world")


@wsgi.get("/hello/<name>")
def hello(name: str) -> Any:
    return _flask_report("hello", name=name)


# -- ASGI: Starlette -------------------------------------------------------------------


async def _starlette_report(request: Request, view: str) -> JSONResponse:
    scope = request.scope
    args = dict(request.path_params)
    root_path: str = scope["root_path"]
    path: str = scope["path"]
    return JSONResponse(
        {
            "interface": "asgi",
            "view": view,
            "args": args,
            "x": request.query_params.get("x"),
            "query": scope["query_string"].decode("utf-8", "replace"),
            "script_name": root_path,
            "path": path[len(root_path) :] if path.startswith(root_path) else path,
            "url": request.url_for(view, **args).path,
        }
    )


async def asgi_index(request: Request) -> JSONResponse:
    return await _starlette_report(request, "index")


async def asgi_hello_world(request: Request) -> JSONResponse:
    return await _starlette_report(request, "hello_world")


async def asgi_hello(request: Request) -> JSONResponse:
    return await _starlette_report(request, "hello")


asgi = Starlette(
    routes=[
        Route("/", asgi_index, name="index"),
        Route("/hello/world", asgi_hello_world, name="hello_world"),
        Route("/hello/{name}", asgi_hello, name="hello"),
    ]
)


# -- the raw params ----------------------------------------------------------------------


async def dump(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers the request's FastCGI params, latin-1 decoded, as a JSON list of pairs."""
    if scope["type"] != "http":
        return
    params = scope["extensions"]["fastcgi"]["params"]
    body = json.dumps([[k.decode("latin-1"), v.decode("latin-1")] for k, v in params]).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
