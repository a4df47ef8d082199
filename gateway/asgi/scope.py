"""The pure function that turns FastCGI params into an ASGI 3 HTTP scope.

Strategy
--------
- path/root_path follow the routing rule of ``gateway.wsgi.environ`` (one rule for both
  interfaces): the path is REQUEST_URI's (before ``?``, absolute form reduced to its path),
  percent-decoded once as UTF-8, or SCRIPT_NAME + PATH_INFO when REQUEST_URI is absent;
  the server's SCRIPT_NAME/PATH_INFO split is never kept (nginx, Apache and Caddy's
  ``split`` put the whole path in SCRIPT_NAME, lighttpd cuts off the first segment).
  root_path is ``--root-path`` and nothing else. ASGI's ``path`` includes ``root_path``:
  when the path does not start with the root path at a segment boundary (a prefix stripped
  before the gateway), ``path`` is root_path + path, as WSGI's SCRIPT_NAME + PATH_INFO.
  raw_path is REQUEST_URI's path as sent.
- headers come from HTTP_* plus non-empty CONTENT_TYPE/CONTENT_LENGTH, which win over the
  duplicate HTTP_CONTENT_* that nginx also sends; several HTTP_COOKIE params are joined with
  ``; ``; a bare ``HTTP_`` (an empty header name) is dropped.
- a CGI variable sent twice counts with its last value.
- the raw params stay available under ``scope["extensions"]["fastcgi"]``, with the role,
  the request id and a serial number of the FastCGI connection (to see keep-alive reuse).

Values are decoded as latin-1 (bytes preserved one-to-one), the path as UTF-8 with
replacement characters; nothing here raises on non-UTF-8 input.

Hot path (every request): one pass over the params with one dict lookup per name
(``_NAMES`` says what the name is: a CGI variable's slot, a header name, the cookie, or
nothing), no intermediate environ dict, no per-header string work for names seen before.
Only names up to ``_NAME_CACHE_LEN`` bytes are cached: a client chooses header names, and
one may be as long as ``--max-params-size``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes

from ..routing import cgi_path, origin_path, under_root

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
    """A raw URI path, percent-decoded, as UTF-8 (invalid sequences replaced)."""
    if raw.isascii():
        path = raw.decode("ascii")
        return unquote(path) if "%" in path else path
    # Raw non-ASCII bytes (nginx passes them through): the same bytes WSGI's latin-1 form has.
    return unquote_to_bytes(raw).decode("utf-8", "replace")


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

    # Routing: the rule of gateway.wsgi.environ (gateway.routing).
    if request_uri is not None:
        raw_path, _, uri_query = request_uri.partition(b"?")
        if raw_path[:1] != b"/":
            raw_path = origin_path(raw_path.decode("latin-1")).encode("latin-1")
        path = decode_path(raw_path)
    else:
        uri_query = b""
        full = cgi_path(script_name or b"", path_info or b"")
        path = full.decode("utf-8", "replace")
        raw_path = quote(full, safe="/:@!$&'()*+,;=~").encode("ascii")
    if query_string is None:
        query_string = uri_query
    if root_path and not under_root(path, root_path):
        path = root_path + path

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
