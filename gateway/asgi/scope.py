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
  ``; ``; a bare ``HTTP_`` (an empty header name) is dropped.
- a CGI variable sent twice counts with its last value.
- the raw params stay available under ``scope["extensions"]["fastcgi"]``, with the role,
  the request id and a serial number of the FastCGI connection (to see keep-alive reuse).

Values are decoded as latin-1 (bytes preserved one-to-one); nothing here raises on
non-UTF-8 input.

Hot path (every request): one pass over the params with one dict lookup per name
(``_NAMES`` says what the name is: a CGI variable's slot, a header name, the cookie, or
nothing), no intermediate environ dict, no per-header string work for names seen before.
Only names up to ``_NAME_CACHE_LEN`` bytes are cached: a client chooses header names, and
one may be as long as ``--max-params-size``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}

#: The CGI variables the scope is made of, by their index in the list ``build_scope`` fills.
_CGI = (
    b"REQUEST_METHOD",
    b"REQUEST_URI",
    b"QUERY_STRING",
    b"SCRIPT_NAME",
    b"PATH_INFO",
    b"SERVER_PROTOCOL",
    b"REQUEST_SCHEME",
    b"HTTPS",
    b"REMOTE_ADDR",
    b"REMOTE_PORT",
    b"SERVER_ADDR",
    b"SERVER_NAME",
    b"SERVER_PORT",
    b"CONTENT_TYPE",
    b"CONTENT_LENGTH",
    b"HTTP_CONTENT_TYPE",
    b"HTTP_CONTENT_LENGTH",
)
_UNSET: list[bytes | None] = [None] * len(_CGI)
#: Marks HTTP_COOKIE in ``_NAMES``: its values are collected and joined, not listed.
_COOKIE: Any = object()
#: param name -> what to do with it, found with one dict lookup per param: an ``int`` is
#: the index of a CGI variable in ``_CGI``, ``bytes`` a header name (``b""``: ignored),
#: ``_COOKIE`` a cookie. Grows as names are seen, within a bound (clients choose header
#: names).
_NAMES: dict[bytes, Any] = {name: i for i, name in enumerate(_CGI)}
_NAMES[b"HTTP_COOKIE"] = _COOKIE
_NAMES_MAX = 1024
#: Longest param name cached in ``_NAMES`` (longer ones are classified on every request).
_NAME_CACHE_LEN = 64
_HTTP_VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0", b"HTTP/2.0": "2", b"HTTP/2": "2", b"HTTP/3": "3"}
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
_SCHEMES = {b"http": "http", b"https": "https", b"": "http"}


def header_name(param: bytes) -> bytes:
    """``b"HTTP_X_FOO_BAR"`` -> ``b"x-foo-bar"``."""
    return param[5:].lower().replace(b"_", b"-")


def _classify(param: bytes) -> Any:
    """The ``_NAMES`` entry for a param name not seen yet (cached while there is room)."""
    name = header_name(param) if param[:5] == b"HTTP_" else b""
    if len(param) <= _NAME_CACHE_LEN and len(_NAMES) < _NAMES_MAX:
        _NAMES[param] = name
    return name


def decode_path(raw: bytes) -> str:
    path = raw.decode("latin-1")
    return unquote(path) if "%" in path else path


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
    cgi = _UNSET.copy()  # a repeated variable: the last value wins
    headers: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] | None = None
    names = _NAMES
    for name, value in params:
        what = names.get(name)
        if what is None:
            what = _classify(name)
        if what.__class__ is int:
            cgi[what] = value
        elif what:
            if what is _COOKIE:
                if cookies is None:
                    cookies = [value]
                else:
                    cookies.append(value)
            else:
                headers.append((what, value))
    (
        method,
        request_uri,
        query_string,
        script_name,
        path_info,
        protocol,
        raw_scheme,
        https,
        remote_addr,
        remote_port,
        server_addr,
        server_name,
        server_port,
        content_type,
        content_length,
        http_content_type,
        http_content_length,
    ) = cgi
    content_type = content_type or http_content_type
    if content_type:
        headers.append((b"content-type", content_type))
    content_length = content_length or http_content_length
    if content_length:
        headers.append((b"content-length", content_length))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))

    if request_uri is not None:
        raw_path, _, uri_query = request_uri.partition(b"?")
        path = decode_path(raw_path)
    else:
        uri_query = b""
        path = ((script_name or b"") + (path_info or b"")).decode("latin-1")
        raw_path = quote(path, safe="/:@!$&'()*+,;=~").encode("latin-1")
    if query_string is None:
        query_string = uri_query
    if not root_path and path_info:
        root_path = (script_name or b"").decode("latin-1")

    if https and https.lower() != b"off":
        scheme = "https"
    elif raw_scheme is None:
        scheme = "http"
    else:
        scheme = _SCHEMES.get(raw_scheme) or raw_scheme.decode("latin-1")

    client = None
    if remote_addr:
        try:
            client = (remote_addr.decode("latin-1"), int(remote_port or 0))
        except ValueError:
            client = (remote_addr.decode("latin-1"), 0)
    server = None
    server_addr = server_addr or server_name
    if server_addr:
        try:
            server = (server_addr.decode("latin-1"), int(server_port or 0))
        except ValueError:
            server = (server_addr.decode("latin-1"), None)

    if method is None:
        method = b"GET"
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": ASGI_VERSION,
        "http_version": _HTTP_VERSIONS.get(protocol, "1.1"),  # type: ignore[arg-type]
        "method": _METHODS.get(method) or method.decode("latin-1"),
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
