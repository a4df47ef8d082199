"""The pure function that turns FastCGI params into an ASGI 3 HTTP scope.

Strategy
--------
nginx's stock fastcgi_params send no PATH_INFO; SCRIPT_NAME is then the *decoded* full
path and REQUEST_URI the raw one (PITFALLS.md). So:

- path/raw_path come from REQUEST_URI (raw, before ``?``), decoded once; when REQUEST_URI is
  absent they come from SCRIPT_NAME + PATH_INFO.
- root_path is ``--root-path`` when given, else SCRIPT_NAME only when PATH_INFO is present
  (then the server split the path itself, e.g. ``fastcgi_split_path_info``). ASGI's
  ``path`` includes ``root_path``; root_path never equals the whole path by accident.
- headers come from HTTP_* plus non-empty CONTENT_TYPE/CONTENT_LENGTH, which win over the
  duplicate HTTP_CONTENT_* that nginx also sends; several HTTP_COOKIE params are joined with
  ``; ``.
- the raw params stay available under ``scope["extensions"]["fastcgi"]``, with the role,
  the request id and a serial number of the FastCGI connection (to see keep-alive reuse).

Values are decoded as latin-1 (bytes preserved one-to-one); nothing here raises on
non-UTF-8 input.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}

_HEADER_CACHE: dict[bytes, bytes] = {}
_HTTP_VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0", b"HTTP/2.0": "2", b"HTTP/2": "2", b"HTTP/3": "3"}
_SKIP_HTTP = frozenset({b"HTTP_CONTENT_TYPE", b"HTTP_CONTENT_LENGTH"})


def header_name(param: bytes) -> bytes:
    """``b"HTTP_X_FOO_BAR"`` -> ``b"x-foo-bar"`` (cached: the set of names is small)."""
    name = _HEADER_CACHE.get(param)
    if name is None:
        name = param[5:].lower().replace(b"_", b"-")
        if len(_HEADER_CACHE) < 512:
            _HEADER_CACHE[param] = name
    return name


def _split_uri(uri: bytes) -> tuple[bytes, bytes]:
    path, _, query = uri.partition(b"?")
    return path, query


def decode_path(raw: bytes) -> str:
    return unquote(raw.decode("latin-1"))


def build_scope(
    params: list[tuple[bytes, bytes]],
    *,
    root_path: str = "",
    state: dict[str, Any] | None = None,
    role: int = 1,
    request_id: int = 1,
    connection: int | None = None,
) -> dict[str, Any]:
    """The ASGI HTTP scope for one request's params (see the module docstring)."""
    env: dict[bytes, bytes] = {}
    headers: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    for name, value in params:
        if name[:5] == b"HTTP_":
            if name == b"HTTP_COOKIE":
                cookies.append(value)
            elif name not in _SKIP_HTTP:
                headers.append((header_name(name), value))
        env[name] = value
    content_type = env.get(b"CONTENT_TYPE") or env.get(b"HTTP_CONTENT_TYPE")
    if content_type:
        headers.append((b"content-type", content_type))
    content_length = env.get(b"CONTENT_LENGTH") or env.get(b"HTTP_CONTENT_LENGTH")
    if content_length:
        headers.append((b"content-length", content_length))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))

    script_name = env.get(b"SCRIPT_NAME", b"")
    path_info = env.get(b"PATH_INFO")
    request_uri = env.get(b"REQUEST_URI")
    if request_uri is not None:
        raw_path, uri_query = _split_uri(request_uri)
        path = decode_path(raw_path)
    else:
        uri_query = b""
        path = (script_name + (path_info or b"")).decode("latin-1")
        raw_path = quote(path, safe="/:@!$&'()*+,;=~").encode("latin-1")
    query_string = env.get(b"QUERY_STRING", uri_query)
    if not root_path and path_info:
        root_path = script_name.decode("latin-1")

    https = env.get(b"HTTPS", b"").lower()
    if https and https != b"off":
        scheme = "https"
    else:
        scheme = env.get(b"REQUEST_SCHEME", b"http").decode("latin-1") or "http"

    client = None
    remote_addr = env.get(b"REMOTE_ADDR")
    if remote_addr:
        try:
            client = (remote_addr.decode("latin-1"), int(env.get(b"REMOTE_PORT") or 0))
        except ValueError:
            client = (remote_addr.decode("latin-1"), 0)
    server = None
    server_addr = env.get(b"SERVER_ADDR") or env.get(b"SERVER_NAME")
    if server_addr:
        try:
            server = (server_addr.decode("latin-1"), int(env.get(b"SERVER_PORT") or 0))
        except ValueError:
            server = (server_addr.decode("latin-1"), None)

    scope: dict[str, Any] = {
        "type": "http",
        "asgi": ASGI_VERSION,
        "http_version": _HTTP_VERSIONS.get(env.get(b"SERVER_PROTOCOL", b"HTTP/1.1"), "1.1"),
        "method": env.get(b"REQUEST_METHOD", b"GET").decode("latin-1"),
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": query_string,
        "root_path": root_path,
        "headers": headers,
        "client": client,
        "server": server,
        "extensions": {
            "fastcgi": {"params": params, "role": role, "request_id": request_id, "connection": connection}
        },
    }
    if state is not None:
        scope["state"] = state.copy()
    return scope
