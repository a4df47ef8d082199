"""The routing rule that the WSGI environ and the ASGI scope share, written once: the
request's path from REQUEST_URI (an absolute-form target reduced to its path), or from
SCRIPT_NAME + PATH_INFO without it, and the mount point from ``--root-path`` only.
``gateway.wsgi.environ``'s module docstring states the whole rule and why."""

from __future__ import annotations

from typing import AnyStr


def origin_path(target: str) -> str:
    """The path of a request target that does not start with ``/``: an absolute-form target
    (``http://host:8080/a`` -> ``/a``, ``http://host`` -> ``/``), which Apache passes on as
    REQUEST_URI; any other target (``*``) as it is."""
    scheme, sep, rest = target.partition("://")
    if not sep or not scheme.isalnum():
        return target
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"


def cgi_path(script: AnyStr, info: AnyStr) -> AnyStr:
    """SCRIPT_NAME + PATH_INFO as one path (``str`` or ``bytes``), the slash they share
    kept once: the request's path when no REQUEST_URI was sent."""
    slash = "/" if isinstance(script, str) else b"/"
    if script[-1:] == slash and info[:1] == slash:
        return script[:-1] + info
    return script + info


def under_root(path: str, root_path: str) -> bool:
    """Whether ``path`` is ``root_path`` or below it at a segment boundary (never a
    prefix like ``/app`` of ``/application``)."""
    return path == root_path or path.startswith(root_path + "/")


def split_path(full: str, root_path: str) -> tuple[str, str]:
    """(SCRIPT_NAME, PATH_INFO) for ``full`` mounted at ``root_path``: ``root_path`` and the
    rest of ``full`` when ``full`` is under it, else ``root_path`` and the whole of
    ``full`` (the prefix was stripped before the gateway, or the request is outside the
    mount point)."""
    if root_path and under_root(full, root_path):
        return root_path, full[len(root_path) :]
    return root_path, full
