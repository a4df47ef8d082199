"""Which imported modules are the app's, and what they hold: the module globals, the
attributes of the classes they define and of their module-level instances of those
classes (``walk``), and the ``module:name`` allowlist. Shared by the globals, threadlocals
and sqlalchemy checkers.

*App modules* are the imported modules whose file lies outside the standard library,
site-packages and this package (or, with ``FCGI_GATEWAY_ISOLATION_MODULES=pkg,other``,
exactly those packages). The verdict is cached per module name: the list is cheap to
rebuild when ``len(sys.modules)`` changed, and never rescanned per request.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import sysconfig
import types
from collections.abc import Iterable, Iterator
from typing import Any

ALLOW_ENV = "FCGI_GATEWAY_ISOLATION_ALLOW"
MODULES_ENV = "FCGI_GATEWAY_ISOLATION_MODULES"

# -- which modules are the app's ----------------------------------------------------------

_verdicts: dict[str, bool] = {}
_roots: tuple[str, ...] | None = None


def _library_roots() -> tuple[str, ...]:
    global _roots
    if _roots is None:
        import site

        paths = {
            sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib", "scripts")
        }
        try:
            paths.update(site.getsitepackages())
            paths.add(site.getusersitepackages())
        except AttributeError:  # some virtualenvs' site module
            pass
        paths.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # gateway/
        _roots = tuple(os.path.realpath(p) + os.sep for p in paths if p)
    return _roots


def _explicit() -> tuple[str, ...]:
    return tuple(p.strip() for p in os.environ.get(MODULES_ENV, "").split(",") if p.strip())


def is_app_module(name: str, module: Any) -> bool:
    verdict = _verdicts.get(name)
    if verdict is None:
        explicit = _explicit()
        if explicit:
            verdict = any(name == p or name.startswith(p + ".") for p in explicit)
        else:
            path = getattr(module, "__file__", None)
            verdict = bool(
                isinstance(module, types.ModuleType)
                and isinstance(path, str)
                and path.endswith((".py", ".pyc"))
                and not os.path.realpath(path).startswith(_library_roots())
            )
        _verdicts[name] = verdict
    return verdict


def app_modules() -> list[tuple[str, types.ModuleType]]:
    """The app's modules now in sys.modules (a copy is iterated: safe while importing)."""
    return [(n, m) for n, m in list(sys.modules.items()) if m is not None and is_app_module(n, m)]


def _app_type(obj: Any, app_names: set[str]) -> bool:
    return type(obj).__module__ in app_names


def walk(modules: Iterable[tuple[str, types.ModuleType]]) -> Iterator[tuple[str, str, str, Any]]:
    """(module, name, label, object) for each module global, each attribute of a class
    defined in an app module, and each attribute of an instance of such a class. Only
    ``vars()`` is read: no attribute access that could run code (proxies, properties)."""
    modules = list(modules)
    app_names = {n for n, _ in modules}
    for modname, module in modules:
        for name, value in list(vars(module).items()):
            if name.startswith("__") and name.endswith("__"):
                continue
            yield modname, name, name, value
            if isinstance(value, type):
                if value.__module__ != modname:
                    continue
                inner = vars(value)
            elif _app_type(value, app_names) and not isinstance(value, types.ModuleType):
                try:
                    inner = vars(value)
                except TypeError:  # __slots__
                    continue
            else:
                continue
            for attr, sub in list(inner.items()):
                if not (attr.startswith("__") and attr.endswith("__")):
                    yield modname, f"{name}.{attr}", f"{name}.{attr}", sub


class Allowlist:
    """``module:name`` fnmatch patterns; ``module`` alone allows the whole module."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        env = os.environ.get(ALLOW_ENV, "")
        items = [p.strip() for p in [*patterns, *env.replace(" ", ",").split(",")] if p.strip()]
        self.patterns = [p if ":" in p else p + ":*" for p in items]

    def allows(self, module: str, name: str, extra: Iterable[str] = ()) -> bool:
        if name in extra or name.split(".", 1)[0] in extra:
            return True
        key = f"{module}:{name}"
        return any(fnmatch.fnmatchcase(key, p) for p in self.patterns)
