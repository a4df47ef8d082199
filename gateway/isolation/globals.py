"""Global-state guard: module globals of the app's own modules rebound, added or deleted by
a request, and module-level containers that grow request after request.

Strategy
--------
*App modules* are the imported modules whose file lies outside the standard library,
site-packages and this package (or, with ``FCGI_GATEWAY_ISOLATION_MODULES=pkg,other``,
exactly those packages). The verdict is cached per module name, and the list is only
rebuilt when ``len(sys.modules)`` changed: no per-request scan of sys.modules.

After a warm-up (``FCGI_GATEWAY_ISOLATION_WARMUP`` requests, default 1: lazy
initialisation done by the first request is not a leak) each app module's namespace is
snapshotted: the list of its values, and for every container (list, dict, set, deque,
bytearray) bound at module level, as an attribute of a class defined in the module or of
an instance of such a class, its length. After each request the check is:

The check runs in ``thread_exit`` (the thread that ran the request, right after its
response was closed; serialised by a lock):

- per module, ``len(namespace)`` and ``all(map(operator.is_, values, snapshot))``: a C loop,
  ~20 ns a name; only when it fails are the names compared one by one;
- per tracked container, ``len()``.

Findings: ``global-rebound`` (a name now bound to another object, added or deleted;
only type names are logged, never values) and ``global-growth``. ``repair`` puts back
the object bound at snapshot time (or removes the added name); growth cannot be undone
safely and is only reported. Dunder names and submodule bindings are ignored.

Allowlist: ``FCGI_GATEWAY_ISOLATION_ALLOW`` — comma-separated ``module:name`` patterns
(fnmatch; ``module`` or ``module:*`` for a whole module; ``module:Class.attr`` for a
container attribute) — plus ``__isolation_allow__ = ("name", ...)`` in a module.

Concurrency: with several requests in flight (async worker, ``--threads``), a change made
by one request may be reported after another, and a request that starts before the
previous one's check ran can still see what it left (the check runs after the response).
"""

from __future__ import annotations

import collections
import fnmatch
import operator
import os
import sys
import sysconfig
import threading
import types
from collections.abc import Iterable, Iterator
from typing import Any

from .base import Checker, Finding, RequestInfo

ALLOW_ENV = "FCGI_GATEWAY_ISOLATION_ALLOW"
MODULES_ENV = "FCGI_GATEWAY_ISOLATION_MODULES"
WARMUP_ENV = "FCGI_GATEWAY_ISOLATION_WARMUP"
CONTAINERS = (list, dict, set, bytearray, collections.deque)
_MISSING = object()
_is = operator.is_

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


# -- the checker --------------------------------------------------------------------------


class _Module:
    __slots__ = ("baseline", "last", "module", "n", "name", "ns", "values")

    def __init__(self, name: str, module: types.ModuleType, watched: dict[str, Any]) -> None:
        self.name = name
        self.module = module
        self.ns = vars(module)
        self.baseline = dict(watched)  # what repair restores
        self.last = dict(watched)  # what was last seen (each change reported once)
        self.sync()

    def sync(self) -> None:
        self.values = list(self.ns.values())
        self.n = len(self.values)


def _watched(value: Any) -> bool:
    return not isinstance(value, types.ModuleType)


def _describe(value: Any) -> str:
    return "(unbound)" if value is _MISSING else type(value).__name__


class GlobalsChecker(Checker):
    name = "globals"
    kinds = ("global-rebound", "global-growth")

    def __init__(self, allow: Iterable[str] = (), warmup: int | None = None) -> None:
        self.allowlist = Allowlist(allow)
        self.warmup = int(os.environ.get(WARMUP_ENV, "1")) if warmup is None else warmup
        self.seen = 0
        self.ready = False
        self.modules: list[_Module] = []
        #: label -> [object, last length, module, name]
        self.containers: dict[str, list[Any]] = {}
        self.nmods = 0
        self._lock = threading.Lock()  # thread_exit runs in several bridge threads

    def after_load(self, app: Any) -> list[Finding]:
        if self.warmup <= 0:
            self._snapshot()
        else:
            app_modules()  # the verdicts cached now: the snapshot after warm-up is quick
        return []

    def _snapshot(self) -> None:
        self.ready = True
        self.modules = []
        self.containers = {}
        self._add(app_modules())

    def _add(self, modules: list[tuple[str, types.ModuleType]]) -> None:
        self.nmods = len(sys.modules)
        known = {m.name for m in self.modules}
        fresh = [(n, m) for n, m in modules if n not in known]
        watched: dict[str, dict[str, Any]] = {n: {} for n, _ in fresh}
        extra = {n: set(getattr(m, "__isolation_allow__", ()) or ()) for n, m in fresh}
        for modname, name, label, value in walk(fresh):
            if self.allowlist.allows(modname, name, extra[modname]):
                continue
            if "." not in name and _watched(value):
                watched[modname][name] = value
            if isinstance(value, CONTAINERS):
                self.containers[f"{modname}:{label}"] = [value, len(value), modname, name]
        self.modules += [_Module(n, m, watched[n]) for n, m in fresh]

    def thread_exit(self, info: RequestInfo) -> list[Finding]:
        # In the thread that ran the request, right after its response was closed: on the
        # async worker this is earlier than after_request (the WSGI bridge's pool thread).
        with self._lock:
            return self._check()

    def _check(self) -> list[Finding]:
        if not self.ready:
            self.seen += 1
            if self.seen >= self.warmup:
                self._snapshot()
            return []
        if len(sys.modules) != self.nmods:
            self._add(app_modules())
        findings: list[Finding] = []
        for mod in self.modules:
            ns = mod.ns
            if len(ns) != mod.n or not all(map(_is, ns.values(), mod.values)):
                findings += self._rebound(mod)
        for label, entry in self.containers.items():
            n = len(entry[0])
            if n > entry[1]:
                findings.append(
                    Finding(
                        "global-growth",
                        f"{label} grew from {entry[1]} to {n} items during the request",
                        {"name": label, "before": entry[1], "after": n},
                        self.name,
                    )
                )
            entry[1] = n
        return findings

    def _rebound(self, mod: _Module) -> list[Finding]:
        now = dict(mod.ns)  # one C-level copy: safe while other threads run
        extra = set(getattr(mod.module, "__isolation_allow__", ()) or ())
        findings = []
        names = list(mod.last) + [n for n in now if n not in mod.last]
        for name in names:
            old, new = mod.last.get(name, _MISSING), now.get(name, _MISSING)
            if old is new or (name.startswith("__") and name.endswith("__")):
                continue
            if name not in mod.last and (not _watched(new) or self.allowlist.allows(mod.name, name, extra)):
                continue
            mod.last[name] = new
            label = f"{mod.name}.{name}"
            what = "added" if old is _MISSING else "deleted" if new is _MISSING else "rebound"
            findings.append(
                Finding(
                    "global-rebound",
                    f"module global {label} {what} during the request ({_describe(old)} -> {_describe(new)})",
                    {"module": mod.name, "name": name, "change": what, "_module": mod},
                    self.name,
                )
            )
            if isinstance(new, CONTAINERS):
                self.containers[f"{mod.name}:{name}"] = [new, len(new), mod.name, name]
        mod.sync()
        return findings

    def repair(self, finding: Finding) -> bool:
        mod: _Module | None = finding.details.get("_module")
        if finding.kind != "global-rebound" or mod is None:
            return False
        with self._lock:
            return self._restore(mod, finding)

    def _restore(self, mod: _Module, finding: Finding) -> bool:
        name = finding.details["name"]
        old = mod.baseline.get(name, _MISSING)
        if old is _MISSING:
            mod.ns.pop(name, None)
        else:
            mod.ns[name] = old
        mod.last[name] = old
        if isinstance(old, CONTAINERS):
            self.containers[f"{mod.name}:{name}"] = [old, len(old), mod.name, name]
        mod.sync()
        return True
