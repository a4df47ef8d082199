"""Global-state guard: what a request leaves in the app's module-level state, including
what it writes in place.

Strategy
--------
After a warm-up (``FCGI_GATEWAY_ISOLATION_WARMUP`` requests, default 1: lazy
initialisation done by the first request is not a leak; 0 = snapshot at load) the checker
snapshots every *place* of the app's modules (``gateway.isolation.appmodules``), each a
``gateway.isolation.places.Place``:

- the module's globals (``global-rebound``: a state name rebound, added or deleted);
- the attributes of each class defined in the module, and of each module-level instance
  of such a class (``global-attribute``);
- every data container bound there or as such an attribute: dict entries set, replaced
  or deleted (``global-entry``); list, deque and set items replaced (``global-entry``)
  or added (``global-growth``).

Containers of more than ``FCGI_GATEWAY_ISOLATION_TRACK_MAX`` items (default 1000) are
not compared item by item: only their length and the entries at their ends are (a log
line at the snapshot names them), so a big cache does not make every request O(n).

The check runs in ``thread_exit``: in the thread that ran the request, right after its
response was closed (on the async worker's WSGI bridge that is before ``after_request``).
The common case — nothing changed — is the checker's ``Probe`` (gateway/isolation/probe.py,
compiled with the request path), read without a lock: the number of modules and the
lengths of the namespaces, the object bound to each state name by identity, each data
container against a copy of it from the last check (identity first, then ``==``: an
object replaced by an equal one is not a change), then the samples of the big
containers. The sync worker asks the probe itself after each request and calls the
layer only when it saw something. Only then are the places compared one by one, under
a lock, to name what changed.

Findings carry type names, never values. ``repair`` puts back the snapshot's object
(shallow): a rebound global or attribute, a dict entry, a replaced list item. Growth of
a list or set cannot be undone safely and is only reported.

Allowlist: ``FCGI_GATEWAY_ISOLATION_ALLOW`` — comma-separated ``module:name`` patterns
(fnmatch; ``module`` or ``module:*`` for a whole module; ``module:Class.attr`` for an
attribute) — plus ``__isolation_allow__ = ("name", ...)`` in a module.

Concurrency: with several requests in flight (async worker, ``--threads``), a change made
by one request may be reported after another, and a request that starts before the
previous one's check ran can still see what it left (the check runs after the response).
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

from .appmodules import Allowlist, app_modules
from .base import _NOTHING, Checker, Finding, RequestInfo
from .places import CONTAINERS, Namespace, Place, Sampled, fingerprint, is_code, place_for, same, sample
from .probe import Probe, Snapshot

WARMUP_ENV = "FCGI_GATEWAY_ISOLATION_WARMUP"
TRACK_MAX_ENV = "FCGI_GATEWAY_ISOLATION_TRACK_MAX"
logger = logging.getLogger("gateway.isolation")


def _copy(place: Place, fp: list[Any]) -> Any:
    """The container as of its fingerprint, of its base type (``==`` between a container
    and its copy then compares their items): a dict from its keys and values, a list, set
    or deque from its items; a namespace read through a mappingproxy, as a dict."""
    obj = place.obj
    if isinstance(place, Namespace):
        return dict(place.ns)
    if isinstance(obj, dict):
        return dict(zip(fp[0], fp[1], strict=True))
    if isinstance(obj, set):
        return set(fp[0])
    if isinstance(obj, collections.deque):
        return collections.deque(fp[0])
    return list(fp[0])


def _attrs(allowed: Callable[[str], bool], name: str) -> Callable[[str], bool]:
    """The allowlist of the attributes of what ``name`` is bound to (``name.attr``)."""
    return lambda attr: allowed(f"{name}.{attr}")


class GlobalsChecker(Checker):
    name = "globals"
    kinds = ("global-rebound", "global-attribute", "global-entry", "global-growth")
    uses_info = False  # thread_exit reads nothing of the request

    def __init__(
        self, allow: tuple[str, ...] = (), warmup: int | None = None, limit: int | None = None
    ) -> None:
        self.allowlist = Allowlist(allow)
        self.warmup = int(os.environ.get(WARMUP_ENV, "1")) if warmup is None else warmup
        self.limit = int(os.environ.get(TRACK_MAX_ENV, "1000")) if limit is None else limit
        self.seen = 0
        self.ready = False
        #: label -> place; the places' fingerprints as of the last check
        self.places: dict[str, Place] = {}
        self._fps: dict[str, list[Any]] = {}
        self._ids: dict[int, str] = {}  # id of a watched object -> its label: watched once
        self.modules: set[str] = set()
        self.nmods = 0
        #: the lock-free check (see _index); never unchanged until the first snapshot
        self.probe = Probe()
        self._lock = threading.Lock()  # thread_exit runs in several bridge threads

    def after_load(self, app: Any) -> list[Finding]:
        if self.warmup <= 0:
            self._snapshot()
        else:
            app_modules()  # the verdicts cached now: the snapshot after warm-up is quick
        return []

    # -- the snapshot ---------------------------------------------------------------------

    def _snapshot(self) -> None:
        self.ready = True
        self.places, self._fps, self._ids, self.modules = {}, {}, {}, set()
        self._add(app_modules())
        for place in self.places.values():
            if isinstance(place, Sampled):
                logger.info(
                    "isolation: %s holds %d items, more than %d: only its size and the entries "
                    "at its ends are compared after each request (%s)",
                    place.label,
                    len(place.obj),
                    self.limit,
                    TRACK_MAX_ENV,
                )

    def _add(self, modules: list[tuple[str, types.ModuleType]]) -> None:
        self.nmods = len(sys.modules)
        fresh = [(n, m) for n, m in modules if n not in self.modules]
        self.modules.update(n for n, _ in fresh)
        for modname, module in fresh:
            extra = set(getattr(module, "__isolation_allow__", ()) or ())

            def allowed(name: str, modname: str = modname, extra: set[str] = extra) -> bool:
                return self.allowlist.allows(modname, name, extra)

            space = self._watch(Namespace(modname, module, "module", allowed))
            if space is None:
                continue
            self._inside(space)
            for name, value in list(vars(module).items()):  # the classes defined there
                if isinstance(value, type) and value.__module__ == modname and not allowed(name):
                    inner = self._watch(Namespace(f"{modname}:{name}", value, "class", _attrs(allowed, name)))
                    if inner is not None:
                        self._inside(inner)
        self._index()

    def _watch(self, place: Place) -> Place | None:
        """Add ``place`` unless its object is watched already (imported by another module);
        a place with the same label (a rebound container) is replaced."""
        label = self._ids.get(id(place.obj))
        if label is not None and label in self.places and self.places[label].obj is place.obj:
            return None
        old = self.places.get(place.label)
        if old is not None:
            self._ids.pop(id(old.obj), None)
        self.places[place.label] = place
        self._ids[id(place.obj)] = place.label
        self._fps[place.label] = fingerprint(place)
        return place

    def _inside(self, space: Namespace) -> None:
        """What the state names of ``space`` hold: data containers, and in a module its
        instances of the app's classes (a module-level singleton) with what they hold.
        Called again after ``space`` changed: what a request bound there is watched."""
        for name, value in list(space.last.items()):
            label = f"{space.label}:{name}" if space.what == "module" else f"{space.label}.{name}"
            if isinstance(value, CONTAINERS):
                self._watch(place_for(label, value, self.limit))
            elif space.what == "module" and type(value).__module__ in self.modules and not is_code(value):
                try:
                    inner = self._watch(Namespace(label, value, "instance", _attrs(space.allowed, name)))
                except TypeError:  # no __dict__ (__slots__)
                    continue
                if inner is not None:
                    self._inside(inner)

    def _index(self) -> None:
        """The probe's new snapshot (gateway/isolation/probe.py), swapped in whole: the
        number of modules and the namespaces' lengths; the object bound to each state name
        of each namespace; and each data container, with a copy of it as of now."""
        spaces = [p for p in self.places.values() if isinstance(p, Namespace) and p.dict is not None]
        indexed = set(map(id, spaces))
        data = [p for p in self.places.values() if not isinstance(p, Sampled) and id(p) not in indexed]
        big = [p for p in self.places.values() if isinstance(p, Sampled)]
        bound = [(p.dict, name, value) for p in spaces for name, value in p.last.items()]
        self.probe.now = Snapshot(
            [sys.modules, *(p.dict for p in spaces)],
            [len(sys.modules), *(len(p.ns) for p in spaces)],
            [d for d, _, _ in bound],
            [name for _, name, _ in bound],
            [value for _, _, value in bound],
            [p.ns if isinstance(p, Namespace) else p.obj for p in data],
            [_copy(p, self._fps[p.label]) for p in data],
            [p.obj for p in big],
            [self._fps[p.label] for p in big],
            sample,
        )

    # -- the check ------------------------------------------------------------------------

    def thread_exit(self, info: RequestInfo) -> list[Finding]:
        # In the thread that ran the request, right after its response was closed. The
        # common case reads only, without the lock (the probe); the sync worker asks the
        # probe itself and calls this only when it saw something.
        if self.probe.unchanged():
            return _NOTHING
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
        for label, place in list(self.places.items()):
            if self.places.get(label) is not place:
                continue  # replaced while this loop ran (a container rebound in a namespace)
            now = fingerprint(place)
            if same(now, self._fps[label]):
                continue
            findings += place.changes(self.name)
            self._fps[label] = fingerprint(place)
            if isinstance(place, Namespace):
                self._inside(place)  # containers newly bound there
        self._index()
        return findings

    def repair(self, finding: Finding) -> bool:
        place: Place | None = finding.details.get("_place")
        if place is None or self.places.get(place.label) is not place:
            return False
        with self._lock:
            done = place.restore(finding)
            self._fps[place.label] = fingerprint(place)
            if isinstance(place, Namespace):
                self._inside(place)
            self._index()
            return done
