"""The isolation layer: keeps one request from reading or corrupting the next in a
long-running worker.

Always on: every request runs in a fresh copy of a baseline contextvars Context (taken
after the app loaded and lifespan started; see the workers). On top of that, checkers run
after each request (after the response was sent, so the client does not wait) and report
``Finding``s; a policy per finding kind decides what happens: ``log`` (default),
``repair``, ``recycle`` (replace the worker gracefully) or ``fail`` (development: the
response becomes a 500 naming the leak; responses are then buffered).

Public API for writing a checker: ``Checker``, ``Finding``, ``RequestInfo``; register one
with ``--isolation-checker module:callable`` (the callable returns a Checker) or
``register_checker``. See docs/isolation.md.

The names are loaded from ``gateway.isolation.base`` on first use, not when the package is:
every worker imports ``gateway.isolation.setup`` to learn whether any checker runs, and
when none does (a hello-world app) it never imports the layer itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import POLICIES, Checker, Finding, IsolationLayer, RequestInfo, register_checker

__all__ = ["POLICIES", "Checker", "Finding", "IsolationLayer", "RequestInfo", "register_checker"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
