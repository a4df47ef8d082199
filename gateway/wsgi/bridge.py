"""WSGI apps on the async worker, through a2wsgi's WSGIMiddleware (the bridge).

a2wsgi builds its environ from the ASGI scope, which loses the FastCGI-only params
(SCRIPT_FILENAME, HTTPS, DOCUMENT_ROOT, custom ``fastcgi_param``s) and points
``wsgi.errors`` at stdout. ``_reinject`` wraps the WSGI app so that it sees them again,
taken from ``scope["extensions"]["fastcgi"]["params"]`` without overriding what a2wsgi
computed (the request line, path split, headers).
"""

from __future__ import annotations

from typing import Any

from a2wsgi import WSGIMiddleware

from .streams import ErrorStream, FileWrapper

#: Keys a2wsgi derives itself (or that must stay absent when empty).
_COMPUTED = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH", "PATH_INFO", "SCRIPT_NAME"})


def _reinject(app: Any) -> Any:
    def with_fastcgi_params(environ: dict[str, Any], start_response: Any) -> Any:
        scope = environ.get("asgi.scope")
        if scope is not None:
            fcgi = scope.get("extensions", {}).get("fastcgi")
            if fcgi is not None:
                for name, value in fcgi["params"]:
                    key = name.decode("latin-1")
                    if key not in environ and key[:5] != "HTTP_" and key not in _COMPUTED:
                        environ[key] = value.decode("latin-1")
        environ["wsgi.errors"] = ErrorStream()
        environ.setdefault("wsgi.file_wrapper", FileWrapper)
        return app(environ, start_response)

    return with_fastcgi_params


def bridge_wsgi(app: Any, *, threads: int = 10) -> Any:
    """An ASGI app running the WSGI ``app`` in a pool of ``threads`` threads."""
    return WSGIMiddleware(_reinject(app), workers=threads)
