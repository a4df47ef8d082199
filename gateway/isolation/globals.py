"""Global-state guard: module globals of the app's own modules rebound, added or deleted by
a request, and module-level containers that grow request after request.

Strategy
--------
*App modules* are the imported modules whose file lies outside the standard library,
site-packages and this package (or, with ``FCGI_GATEWAY_ISOLATION_MODULES=pkg,other``,
exactly those packages). The verdict is cached per module name, and the list is only
rebuilt when ``len(sys.modules)`` changed: no per-request scan of sys.modules.

After a warm-up (``FCGI_GATEWAY_ISOLATION_WARMUP`` requests, default 1: lazy
initialisation done by the first request is not a leak; 0 = snapshot at load) each app
module is snapshotted: the objects bound to its *state* names — every global except
dunders and names bound to code (functions, classes, modules: rebinding those is
monkeypatching, not request data) — and the length of every container (list, dict, set,
deque, bytearray) bound at module level, as an attribute of a class defined in the
module, or of an instance of such a class.

The check runs in ``thread_exit``: in the thread that ran the request, right after its
response was closed (on the async worker's WSGI bridge that is before ``after_request``).
The common case reads only, without a lock, in two C loops: ``len()`` of each app
namespace and container, then ``all(map(operator.is_, map(dict.get, namespaces, names),
snapshot))`` over the watched names (no Python bytecode per item). Only when one differs
are the names compared one by one, under a lock.

Findings: ``global-rebound`` (a state name now bound to another object, added or deleted;
only type names are logged, never values) and ``global-growth``. ``repair`` puts back the
object bound at snapshot time (or removes the added name); growth cannot be undone safely
and is only reported.

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
    __slots__ = ("baseline", "code", "last", "module", "n", "name", "ns")

    def __init__(self, name: str, module: types.ModuleType, watched: dict[str, Any]) -> None:
        self.name = name
        self.module = module
        self.ns = vars(module)
        self.baseline = dict(watched)  # what repair restores
        self.last = dict(watched)  # what was last seen (each change reported once)
        self.code = {k for k in self.ns if k not in watched}  # names not watched
        self.n = len(self.ns)


#: Names bound to these are code, not state: not watched (rebinding them at run time is
#: monkeypatching, not a request's data); nor are submodules.
_CODE = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)


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
        self._index()
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
            if "." not in name and not isinstance(value, _CODE):
                watched[modname][name] = value
            if isinstance(value, CONTAINERS):
                self.containers[f"{modname}:{label}"] = [value, len(value), modname, name]
        self.modules += [_Module(n, m, watched[n]) for n, m in fresh]
        self._index()

    def _index(self) -> None:
        """Flat lists for the lock-free fast path (rebuilt after any change)."""
        entries = list(self.containers.values())
        self._sized = [m.ns for m in self.modules] + [e[0] for e in entries]
        self._lengths = [m.n for m in self.modules] + [e[1] for e in entries]
        pairs = [(m.ns, k, v) for m in self.modules for k, v in m.last.items() if v is not _MISSING]
        self._where = [p[0] for p in pairs]
        self._names = [p[1] for p in pairs]
        self._values = [p[2] for p in pairs]

    def thread_exit(self, info: RequestInfo) -> list[Finding]:
        # In the thread that ran the request, right after its response was closed: on the
        # async worker this is earlier than after_request (the WSGI bridge's pool thread).
        # The common case — nothing changed — reads only, without the lock, in C loops:
        # the sizes of the namespaces and containers, each watched name's value.
        if (
            self.ready
            and len(sys.modules) == self.nmods
            and list(map(len, self._sized)) == self._lengths
            and all(map(_is, map(dict.get, self._where, self._names), self._values))
        ):
            return []
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
            if len(ns) != mod.n or any(ns.get(k, _MISSING) is not v for k, v in mod.last.items()):
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
        self._index()
        return findings

    def _rebound(self, mod: _Module) -> list[Finding]:
        now = dict(mod.ns)  # one C-level copy: safe while other threads run
        extra = set(getattr(mod.module, "__isolation_allow__", ()) or ())
        findings = []
        fresh = [
            n
            for n, v in now.items()
            if n not in mod.last
            and not (n.startswith("__") and n.endswith("__"))
            and not isinstance(v, _CODE)
            and not self.allowlist.allows(mod.name, n, extra)
        ]
        for name in [*mod.last, *fresh]:
            old, new = mod.last.get(name, _MISSING), now.get(name, _MISSING)
            if old is new:
                continue
            mod.last[name] = new
            label = f"{mod.name}.{name}"
            if old is _MISSING and name in mod.code:
                what, was = "rebound", "code"  # e.g. a function replaced by data
            else:
                what = "added" if old is _MISSING else "deleted" if new is _MISSING else "rebound"
                was = _describe(old)
            findings.append(
                Finding(
                    "global-rebound",
                    f"module global {label} {what} during the request ({was} -> {_describe(new)})",
                    {"module": mod.name, "name": name, "change": what, "_module": mod},
                    self.name,
                )
            )
            if isinstance(new, CONTAINERS):
                self.containers[f"{mod.name}:{name}"] = [new, len(new), mod.name, name]
        mod.n = len(now)
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
        mod.n = len(mod.ns)
        self._index()
        return True
