"""The PEP 3333 environ, built directly from FastCGI params (they already are CGI
meta-variables), for the sync worker.

Strategy
--------
Every param is passed through as a native (latin-1 decoded) string, custom
``fastcgi_param``s and SCRIPT_FILENAME/HTTPS/DOCUMENT_ROOT included. Then:

- empty CONTENT_TYPE/CONTENT_LENGTH are dropped, and so is a CONTENT_LENGTH that is not a
  number; HTTP_CONTENT_TYPE/HTTP_CONTENT_LENGTH are folded into them (PEP 3333 and
  wsgiref.validate forbid the HTTP_ forms);
- repeated HTTP_COOKIE params are joined with ``; ``, other repeated headers with ``, ``;
- SCRIPT_NAME/PATH_INFO: when the web server sent PATH_INFO they are kept as sent (with
  ``--root-path`` overriding SCRIPT_NAME; a SCRIPT_NAME of "/" becomes ""). nginx's
  default sends none and puts the decoded full path in SCRIPT_NAME, so the full path is
  taken from REQUEST_URI (percent-decoded to bytes, then latin-1: the WSGI "bytes as
  str" form) and split at ``--root-path`` when that is a prefix at a segment boundary;
  otherwise SCRIPT_NAME is still the root path and PATH_INFO the full path, never a
  slice like "lication" (PITFALLS peer bug 8);
- wsgi.url_scheme from HTTPS (on/1) or REQUEST_SCHEME; SERVER_NAME filled from HTTP_HOST or
  SERVER_ADDR when nginx sends it empty.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

_JOIN = {"HTTP_COOKIE": "; "}


def wsgi_path(raw: str) -> str:
    """Percent-decode a raw URI path into the WSGI latin-1 'bytes as str' form."""
    if "%" not in raw:
        return raw
    # ``raw`` holds the URI's bytes as latin-1; a str argument would be UTF-8 encoded first,
    # doubling any raw non-ASCII byte nginx passed through (``/caf\xc3\xa9%20x``).
    return unquote_to_bytes(raw.encode("latin-1")).decode("latin-1")


def split_path(full: str, root_path: str) -> tuple[str, str]:
    """(SCRIPT_NAME, PATH_INFO) for ``full`` mounted at ``root_path``."""
    if root_path and (full == root_path or full.startswith(root_path + "/")):
        return root_path, full[len(root_path) :]
    return root_path, full


def text_params(params: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """``bytes`` params (the async codec's) as latin-1 native strings, for build_environ."""
    return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in params]


def build_environ(
    params: list[tuple[str, str]],
    base: dict[str, Any],
    *,
    root_path: str = "",
) -> dict[str, Any]:
    """A new environ: ``base`` (the wsgi.* constants, copied) plus the request's params,
    given as latin-1 ``str`` pairs (a codec built with ``text_params``, or text_params())."""
    environ = base.copy()
    # One C-level pass for the common case; repeated names (two Cookie lines) show up as
    # a size mismatch and take the slow path that joins them.
    environ.update(params)
    if len(environ) != len(base) + len(params):
        environ = base.copy()
        for key, val in params:
            if key in environ and key[:5] == "HTTP_":
                environ[key] = environ[key] + _JOIN.get(key, ", ") + val
            else:
                environ[key] = val

    get = environ.get
    if "HTTP_CONTENT_TYPE" in environ or not get("CONTENT_TYPE"):
        ctype = environ.pop("HTTP_CONTENT_TYPE", None)
        if not get("CONTENT_TYPE"):
            environ.pop("CONTENT_TYPE", None)
            if ctype:
                environ["CONTENT_TYPE"] = ctype
    clen = get("CONTENT_LENGTH")
    if "HTTP_CONTENT_LENGTH" in environ or not clen:
        hlen = environ.pop("HTTP_CONTENT_LENGTH", None)
        if not clen:
            environ.pop("CONTENT_LENGTH", None)
            if hlen:
                environ["CONTENT_LENGTH"] = clen = hlen
    if clen and not (clen.isascii() and clen.isdigit()):
        del environ["CONTENT_LENGTH"]  # not a length: the body is read to its end anyway

    if "PATH_INFO" in environ:
        if root_path:
            environ["SCRIPT_NAME"] = root_path
        elif environ.setdefault("SCRIPT_NAME", "") == "/":
            # PEP 3333 (and wsgiref.validate): SCRIPT_NAME "/" must be "", its slash in PATH_INFO
            environ["SCRIPT_NAME"] = ""
            if not environ["PATH_INFO"].startswith("/"):
                environ["PATH_INFO"] = "/" + environ["PATH_INFO"]
    else:
        uri = get("REQUEST_URI")
        if uri is not None:
            full, _, query = uri.partition("?")
            if "%" in full:
                full = wsgi_path(full)
            if "QUERY_STRING" not in environ:
                environ["QUERY_STRING"] = query
        else:
            full = get("SCRIPT_NAME", "")
        if root_path:
            environ["SCRIPT_NAME"], environ["PATH_INFO"] = split_path(full, root_path)
        else:
            environ["SCRIPT_NAME"] = ""
            environ["PATH_INFO"] = full

    https = get("HTTPS")
    if https and https.lower() != "off":
        environ["wsgi.url_scheme"] = scheme = "https"
    else:
        environ["wsgi.url_scheme"] = scheme = get("REQUEST_SCHEME") or "http"
    if not get("SERVER_NAME"):
        host = get("HTTP_HOST", "")
        if host:
            host = host[: host.rfind(":")] if host.rfind(":") > host.rfind("]") else host
        environ["SERVER_NAME"] = host or get("SERVER_ADDR") or "localhost"
    if not get("SERVER_PORT"):
        environ["SERVER_PORT"] = "443" if scheme == "https" else "80"
    if "REQUEST_METHOD" not in environ:
        environ["REQUEST_METHOD"] = "GET"
    if "QUERY_STRING" not in environ:
        environ["QUERY_STRING"] = ""
    if "SERVER_PROTOCOL" not in environ:
        environ["SERVER_PROTOCOL"] = "HTTP/1.1"
    return environ
