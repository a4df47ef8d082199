"""Objects for the loading and CLI tests: factories, apps of every interface, decorated
apps, and callables whose signature tells nothing (detected as WSGI)."""

from __future__ import annotations

import functools


async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    body = f"asgi {scope['path']} root_path={scope['root_path']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def wsgi_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"wsgi {environ['PATH_INFO']} script_name={environ['SCRIPT_NAME']}".encode()]


def create_app():
    """An application factory (``--factory loading_apps:create_app``)."""
    return asgi_app


def create_app_failing():
    raise ValueError("factory could not read its configuration")


def generic(*args):
    """A signature that tells nothing (``*args``): a plain callable, so detected as WSGI."""
    environ, start_response = args
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"generic wsgi " + environ["PATH_INFO"].encode()]


def _wrapped(app):
    """A decorator as people write them: ``functools.wraps``, a generic wrapper."""

    @functools.wraps(app)
    def wrapper(*args, **kwargs):
        return app(*args, **kwargs)

    return wrapper


wrapped_wsgi = _wrapped(wsgi_app)
wrapped_asgi = _wrapped(asgi_app)  # not async itself: returns the app's coroutine


class ASGI2App:
    """ASGI 2: instantiated with the scope, then awaited with receive and send."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi2 " + self.scope["path"].encode()})


class ASGI3Class:
    async def __call__(self, scope, receive, send):
        await asgi_app(scope, receive, send)


asgi3_instance = ASGI3Class()


class WSGIClass:
    """PEP 3333 allows a class as the application: AppClass(environ, start_response)."""

    def __init__(self, environ, start_response):
        self.path = environ["PATH_INFO"]
        start_response("200 OK", [("Content-Type", "text/plain")])

    def __iter__(self):
        yield b"wsgi class " + self.path.encode()


not_callable = {"an": "app"}
