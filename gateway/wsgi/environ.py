"""The PEP 3333 environ, built directly from FastCGI params (they already are CGI
meta-variables), for the sync worker; and the routing rule both builders share.

Strategy
--------
Every param is passed through as a native (latin-1 decoded) string, custom
``fastcgi_param``s and SCRIPT_FILENAME/HTTPS/DOCUMENT_ROOT included. Then:

- empty CONTENT_TYPE/CONTENT_LENGTH are dropped, and so is a CONTENT_LENGTH that is not a
  number; HTTP_CONTENT_TYPE/HTTP_CONTENT_LENGTH are folded into them (PEP 3333 and
  wsgiref.validate forbid the HTTP_ forms);
- repeated HTTP_COOKIE params are joined with ``; ``, other repeated headers with ``, ``;
- SCRIPT_NAME/PATH_INFO follow the routing rule below (its pieces, shared with
  ``gateway.asgi.scope``, are in ``gateway.routing``);
- wsgi.url_scheme from HTTPS (on/1) or REQUEST_SCHEME; SERVER_NAME filled from HTTP_HOST or
  SERVER_ADDR when nginx sends it empty.

Routing (``gateway.asgi.scope`` applies the same rule to ``path``/``root_path``)
--------------------------------------------------------------------------------
The web servers disagree on SCRIPT_NAME and PATH_INFO, and none of their splits is the
app's mount point: nginx's stock ``fastcgi_params`` and Apache's ProxyPass send the decoded
full path as SCRIPT_NAME and no PATH_INFO; Caddy's ``split .php`` sends it as SCRIPT_NAME
with an empty PATH_INFO; lighttpd without ``fix-root-scriptname``, and Apache's SetHandler,
cut the first path segment off as SCRIPT_NAME. All of them send REQUEST_URI, the request
target as the client sent it (Apache even in absolute form, ``http://host/a``). So:

1. the request's path is REQUEST_URI's path (before ``?``, absolute form reduced to its
   path), percent-decoded; only without REQUEST_URI is it SCRIPT_NAME + PATH_INFO. The
   server's SCRIPT_NAME/PATH_INFO split is never kept;
2. the mount point is ``--root-path``, nothing else: SCRIPT_NAME is the root path and
   PATH_INFO the rest of the path when the path starts with the root path at a segment
   boundary, else the whole path (the prefix was stripped before the gateway, or the
   request is outside the mount point; never a slice like "lication" of "/application");
3. QUERY_STRING as sent, else REQUEST_URI's query.

In the WSGI "bytes as str" form the path is percent-decoded to bytes, then latin-1; ASGI
decodes the same bytes as UTF-8. Both give the app the same split: ``root_path`` is
SCRIPT_NAME and ``path`` is SCRIPT_NAME + PATH_INFO.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from ..routing import cgi_path, origin_path, split_path

_JOIN = {"HTTP_COOKIE": "; "}


def wsgi_path(raw: str) -> str:
    """Percent-decode a raw URI path into the WSGI latin-1 'bytes as str' form."""
    if "%" not in raw:
        return raw
    # ``raw`` holds the URI's bytes as latin-1; a str argument would be UTF-8 encoded first,
    # doubling any raw non-ASCII byte nginx passed through (``/caf\xc3\xa9%20x``).
    return unquote_to_bytes(raw.encode("latin-1")).decode("latin-1")


def native_root_path(root_path: str) -> str:
    """``--root-path`` in the WSGI 'bytes as str' form (its UTF-8 bytes as latin-1)."""
    return root_path if root_path.isascii() else root_path.encode("utf-8").decode("latin-1")


def text_params(params: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """``bytes`` params (the async codec's) as latin-1 native strings, for build_environ."""
    return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in params]


def _fold(environ: dict[str, Any], name: str, http_name: str) -> str | None:
    """``name`` (CONTENT_TYPE, CONTENT_LENGTH) with its ``HTTP_`` form folded in: the
    ``HTTP_`` form is dropped, and fills ``name`` when that is empty or missing; an empty
    ``name`` is dropped. Returns what ``name`` holds then. (``in`` and ``del`` rather than
    ``pop``: compiled, ``dict.pop`` is a method lookup.)"""
    value: str | None = environ.get(name)
    if http_name in environ:
        other: str = environ[http_name]
        del environ[http_name]
        if not value and other:
            environ[name] = value = other
    if value is not None and not value:
        del environ[name]
        return None
    return value


def build_environ(
    params: list[tuple[str, str]],
    base: dict[str, Any],
    *,
    root_path: str = "",
) -> dict[str, Any]:
    """A new environ: ``base`` (the wsgi.* constants, copied) plus the request's params,
    given as latin-1 ``str`` pairs (a codec built with ``text_params``, or text_params()).
    ``root_path`` is the mount point as configured (``--root-path``)."""
    environ = base.copy()
    # One pass for the common case (compiled, a plain loop costs less than ``update``, which
    # treats each pair as a generic sequence); repeated names (two Cookie lines) show up as
    # a size mismatch and take the slow path that joins them.
    for key, val in params:
        environ[key] = val
    if len(environ) != len(base) + len(params):
        environ = base.copy()
        for key, val in params:
            if key in environ and key[:5] == "HTTP_":
                environ[key] = environ[key] + _JOIN.get(key, ", ") + val
            else:
                environ[key] = val

    _fold(environ, "CONTENT_TYPE", "HTTP_CONTENT_TYPE")
    clen = _fold(environ, "CONTENT_LENGTH", "HTTP_CONTENT_LENGTH")
    if clen and not (clen.isascii() and clen.isdigit()):
        del environ["CONTENT_LENGTH"]  # not a length: the body is read to its end anyway

    # Routing: the module docstring's rule. (Values read back are typed ``str``: compiled,
    # their methods are then direct calls, not lookups on an ``Any``.)
    full: str
    uri: str | None = environ.get("REQUEST_URI")
    if uri is not None:
        mark = uri.find("?")
        if mark < 0:
            full, query = uri, ""
        else:
            full, query = uri[:mark], uri[mark + 1 :]
        if full[:1] != "/":
            full = origin_path(full)
        if "%" in full:
            full = wsgi_path(full)
        if "QUERY_STRING" not in environ:
            environ["QUERY_STRING"] = query
    else:
        full = cgi_path(environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", ""))
    if root_path:
        if not root_path.isascii():
            root_path = native_root_path(root_path)
        environ["SCRIPT_NAME"], environ["PATH_INFO"] = split_path(full, root_path)
    else:
        environ["SCRIPT_NAME"] = ""
        environ["PATH_INFO"] = full

    https: str | None = environ.get("HTTPS")
    if https and https.lower() != "off":
        environ["wsgi.url_scheme"] = scheme = "https"
    else:
        environ["wsgi.url_scheme"] = scheme = environ.get("REQUEST_SCHEME") or "http"
    if not environ.get("SERVER_NAME"):
        host: str = environ.get("HTTP_HOST", "")
        if host:
            colon = host.rfind(":")
            if colon > host.rfind("]"):
                host = host[:colon]
        environ["SERVER_NAME"] = host or environ.get("SERVER_ADDR") or "localhost"
    if not environ.get("SERVER_PORT"):
        environ["SERVER_PORT"] = "443" if scheme == "https" else "80"
    if "REQUEST_METHOD" not in environ:
        environ["REQUEST_METHOD"] = "GET"
    if "QUERY_STRING" not in environ:
        environ["QUERY_STRING"] = ""
    if "SERVER_PROTOCOL" not in environ:
        environ["SERVER_PROTOCOL"] = "HTTP/1.1"
    return environ
