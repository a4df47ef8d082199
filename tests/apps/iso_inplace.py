"""An app (WSGI ``app`` and ASGI ``asgi_app``, one set of state) that writes request data
in place into state that outlives the request: an entry of a module-level dict
(``/dict``), an attribute of an app class (``/class``), an attribute of a module-level
instance (``/instance``) and an entry of a 100,000-entry dict (``/big``); ``/read`` shows
all four, ``/nothing`` reads them and changes nothing."""

from __future__ import annotations

from urllib.parse import parse_qs

STATE: dict[str, str | None] = {"user": None}
BIG: dict[int, str] = {i: "free" for i in range(100_000)}


class Registry:
    current: str | None = None


class Tenant:
    def __init__(self) -> None:
        self.name = "default"


TENANT = Tenant()


def handle(path: str, query: str) -> str:
    user = parse_qs(query).get("user", ["?"])[0]
    if path == "/dict":
        STATE["user"] = user
    elif path == "/class":
        Registry.current = user
    elif path == "/instance":
        TENANT.name = user
    elif path == "/big":
        BIG[99_999] = user
    elif path == "/nothing":
        _ = STATE["user"], Registry.current, TENANT.name, len(BIG)
    return f"dict={STATE['user']} class={Registry.current} instance={TENANT.name} big={BIG[99_999]}"


def app(environ, start_response):
    body = handle(environ["PATH_INFO"], environ["QUERY_STRING"]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope, receive, send):
    assert scope["type"] == "http"
    body = handle(scope["path"], scope["query_string"].decode()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
