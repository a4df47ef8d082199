"""Thread-local guard (opt-in: ``--isolation-checkers threadlocals`` or ``all``).

A ``threading.local`` outlives the request on every worker model: the sync worker serves
request after request on one thread, a2wsgi's pool reuses its threads, and ASGI apps all
share the event loop thread. This guard resets the app's thread-locals after each request
and reports the attributes it found set (``threadlocal-leak``).

Strategy
--------
*Which* thread-locals: instances of ``threading.local`` (or of a subclass defined in an
app module) bound in an app module — as a global, or as an attribute of a class or
instance defined there (``gateway.isolation.appmodules.walk``) — plus those passed to
``track()``. A thread-local that a library module also binds is the library's and is
never touched, nor is any thread-local not found that way: asgiref's ``Local``, Django's
connections, asyncio's running loop and SQLAlchemy's registries are not app globals.
The scan runs at load and again whenever ``len(sys.modules)`` changed.

*When*: ``thread_enter`` copies each tracked local's ``__dict__`` as seen by the thread
about to run the request (its initial state: a subclass's ``__init__`` has run);
``thread_exit``, in the same thread after the response was closed, compares by identity
and puts the copy back — so the next request on that thread starts clean. On the event
loop thread (ASGI), where requests overlap, the reset waits until no request is in
flight. Cost: one dict copy per tracked local per request, nothing without any.
"""

from __future__ import annotations

import _thread
import _threading_local
import sys
import threading
import weakref
from typing import Any, TypeVar

from .appmodules import app_modules, is_app_module, walk
from .base import Checker, Finding, RequestInfo

LOCAL_TYPES = (_thread._local, _threading_local.local)
_MISSING = object()
_tracked: list[tuple[str, weakref.ref[Any]]] = []
_L = TypeVar("_L")


def track(local: _L, label: str | None = None) -> _L:
    """Have the guard reset ``local`` after each request (for thread-locals that are not
    module or class attributes); returns it: ``ctx = track(threading.local())``."""
    _tracked.append((label or f"tracked {type(local).__name__} {id(local):#x}", weakref.ref(local)))
    return local


class _State(threading.local):
    """Per thread: requests in flight on it, and the copies taken when the first began."""

    depth = 0
    snap: list[tuple[str, Any, dict[str, Any]]] | None = None


def _is_local(value: Any) -> bool:
    return issubclass(type(value), LOCAL_TYPES)


class ThreadLocalChecker(Checker):
    name = "threadlocals"
    kinds = ("threadlocal-leak",)

    def __init__(self) -> None:
        self.locals: list[tuple[str, Any]] = []
        self.nmods = -1
        self.ntracked = 0
        self._state = _State()  # ours, in gateway: never an app global
        self._library_seen: set[str] = set()
        self._library_locals: set[int] = set()

    def after_load(self, app: Any) -> list[Finding]:
        self._scan()
        return []

    def _scan(self) -> None:
        self.nmods = len(sys.modules)
        self.ntracked = len(_tracked)
        for name, module in list(sys.modules.items()):
            if name in self._library_seen or module is None or is_app_module(name, module):
                continue
            self._library_seen.add(name)
            try:
                self._library_locals.update(id(v) for v in list(vars(module).values()) if _is_local(v))
            except TypeError:
                continue
        found: dict[int, tuple[str, Any]] = {}
        modules = app_modules()
        app_names = {n for n, _ in modules}
        for modname, _name, label, value in walk(modules):
            if (
                _is_local(value)
                and id(value) not in self._library_locals
                and (type(value) in LOCAL_TYPES or type(value).__module__ in app_names)
            ):
                found.setdefault(id(value), (f"{modname}.{label}", value))
        for label, ref in _tracked:
            obj = ref()
            if obj is not None:
                found.setdefault(id(obj), (label, obj))
        self.locals = list(found.values())

    def thread_enter(self, info: RequestInfo) -> None:
        if len(sys.modules) != self.nmods or len(_tracked) != self.ntracked:
            self._scan()
        if not self.locals:
            return
        st = self._state
        depth = st.depth
        st.depth = depth + 1
        if depth == 0:
            st.snap = [(label, obj, dict(vars(obj))) for label, obj in self.locals] if self.locals else None

    def thread_exit(self, info: RequestInfo) -> list[Finding]:
        st = self._state
        if st.depth == 0:
            return []  # nothing tracked when this request began
        depth = st.depth = st.depth - 1
        if depth > 0:
            return []  # other requests still running on this thread (event loop)
        snap, st.snap = st.snap, None
        if not snap:
            return []
        findings = []
        for label, obj, before in snap:
            now = vars(obj)
            if len(now) == len(before) and all(now.get(k, _MISSING) is v for k, v in before.items()):
                continue
            changed = sorted(
                k for k in {*now, *before} if now.get(k, _MISSING) is not before.get(k, _MISSING)
            )
            now.clear()
            now.update(before)
            findings.append(
                Finding(
                    "threadlocal-leak",
                    f"thread-local {label} still had {', '.join(changed)} set after the request "
                    f"(thread {threading.current_thread().name}); reset",
                    {"name": label, "attributes": changed},
                    self.name,
                )
            )
        return findings

    def repair(self, finding: Finding) -> bool:
        return finding.kind == "threadlocal-leak"  # already reset in thread_exit
