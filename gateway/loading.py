"""Loading the user's application from ``"package.module:attribute"`` and detecting its
interface (ASGI 3, ASGI 2 or WSGI).

Errors are AppLoadError with a message that tells apart a module that does not exist, an
ImportError raised *inside* the user's module (with the original traceback kept as the
cause), and a missing attribute.

Detection: an async callable (or an object whose ``__call__`` is async) is ASGI 3; a class
is WSGI when it takes ``(environ, start_response)``, else ASGI 2; any other callable is
told by its positional parameters (following ``functools.wraps``): two is WSGI, one ASGI 2
(``app(scope)`` returns an async callable), three ASGI 3 (a plain function returning
the coroutine). A plain callable whose signature says nothing, ``(*args, **kwargs)`` or
none at all (``wsgiref.validate.validator(app)``, a decorator without ``functools.wraps``,
a C callable), is WSGI: an ASGI 3 app is awaited, so it is an async callable. That guess is
logged, naming ``--interface`` to override it.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from .errors import AppLoadError

logger = logging.getLogger("gateway.error")


def import_from_string(spec: str) -> Any:
    module_name, sep, attrs = spec.partition(":")
    if not sep or not module_name or not attrs:
        raise AppLoadError(f"application must be given as 'module:attribute', got {spec!r}")
    obj: Any = import_module(module_name)
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise AppLoadError(f"attribute {attrs!r} not found in module {module_name!r}") from None
    return obj


def import_module(module_name: str) -> Any:
    """The module, or AppLoadError telling a missing module from an error raised inside it."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise AppLoadError(
                f"could not import module {module_name!r}: no module named {missing!r} "
                f"(working directory {os.getcwd()!r}; use --chdir or --app-dir)"
            ) from None
        raise AppLoadError(f"error while importing {module_name!r}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise AppLoadError(f"error while importing {module_name!r}: {type(exc).__name__}: {exc}") from exc
    return module


def add_app_dir(app_dir: str) -> None:
    """Put ``--app-dir`` (absolute) first on ``sys.path``, unless it is there already."""
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)


def load_app(spec: str, *, factory: bool = False, app_dir: str | None = ".") -> Any:
    """Import the application object (calling it first when ``factory`` is set)."""
    if app_dir is not None:
        add_app_dir(app_dir)
    app = import_from_string(spec)
    if factory:
        if not callable(app):
            raise AppLoadError(f"--factory given but {spec!r} is not callable")
        try:
            app = app()
        except Exception as exc:
            raise AppLoadError(f"application factory {spec!r} raised {type(exc).__name__}: {exc}") from exc
    if not callable(app):
        raise AppLoadError(f"{spec!r} is not callable (got {type(app).__name__})")
    return app


def _positional_count(fn: Callable[..., Any]) -> int | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = list(sig.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return None
    return sum(1 for p in params if p.kind in kinds)


def _detect(app: Any) -> tuple[str, bool]:
    """(``"asgi3"``, ``"asgi2"`` or ``"wsgi"``, whether that is the guess for a plain callable
    whose signature tells nothing); AppLoadError when it cannot be told."""
    if inspect.isclass(app):
        # PEP 3333 allows a class as the application: AppClass(environ, start_response).
        if _positional_count(app) == 2:
            return "wsgi", False
        return ("asgi3" if hasattr(app, "__await__") else "asgi2"), False
    target = app if inspect.isfunction(app) or inspect.ismethod(app) else getattr(app, "__call__", None)  # noqa: B004
    if target is None:
        raise AppLoadError("application is not callable")
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(app):
        return "asgi3", False
    # the signature of the object itself: right for instances with __call__ and partials,
    # and inspect.signature follows functools.wraps to the decorated application
    count = _positional_count(app)
    if count is None:  # (*args, **kwargs) or no signature: not async, so not ASGI 3
        return "wsgi", True
    if count in (1, 2, 3):
        return {1: "asgi2", 2: "wsgi", 3: "asgi3"}[count], False
    hint = " (an application factory? pass --factory)" if count == 0 else ""
    raise AppLoadError(
        f"cannot tell whether {app!r} is an ASGI or a WSGI application: it takes {count} "
        f"positional arguments{hint}; pass --interface asgi or wsgi"
    )


def detect_interface(app: Any) -> str:
    """``"asgi3"``, ``"asgi2"`` or ``"wsgi"``; AppLoadError when it cannot be told."""
    return _detect(app)[0]


def resolve_interface(app: Any, requested: str) -> str:
    """The interface to serve: ``"asgi"`` or ``"wsgi"``, honouring ``--interface``."""
    if requested in ("asgi", "wsgi"):
        return requested
    interface, guessed = _detect(app)
    if guessed:
        name = getattr(app, "__qualname__", None) or type(app).__qualname__
        logger.info(
            "detected WSGI: %s is a plain callable (not async, generic signature); "
            "pass --interface to override",
            name,
        )
    return "wsgi" if interface == "wsgi" else "asgi"


def _is_double_callable(app: Any) -> bool:
    """ASGI 2 (``app(scope)`` returns ``instance(receive, send)``)? asgiref's test, without
    importing asgiref (its ``sync`` module) into every async worker."""
    import asyncio  # the async worker has it already

    if getattr(app, "_asgi_single_callable", False):
        return False
    if getattr(app, "_asgi_double_callable", False) or inspect.isclass(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004
    if call is not None and asyncio.iscoroutinefunction(call):
        return False
    if asyncio.iscoroutinefunction(app):
        return False
    # a plain callable taking (scope, receive, send), such as a sync functools.wraps
    # decorator around an ASGI 3 app, returns the coroutine: single, as detect_interface says
    return _positional_count(app) != 3


def as_asgi3(app: Any) -> Any:
    """Wrap an ASGI 2 application as ASGI 3 (no-op for ASGI 3)."""
    if not _is_double_callable(app):
        return app

    async def asgi3(scope: Any, receive: Any, send: Any) -> Any:
        instance = app(scope)
        return await instance(receive, send)

    return asgi3
