"""Why a worker's memory grew: the cause logged when a worker is recycled for
``--max-memory`` or the memory checker reports ``memory-growth``.

Strategy
--------
Nothing here runs per request. ``LeakTracker.warm_up`` takes one *census* after the
warm-up request (called by ``WorkerControl.request_done`` after the first request when
``--max-memory`` is set, and by the memory checker): the gc-tracked objects counted by type,
the length of the app's containers, of every large gc-tracked container, and of the list
attributes of logging handlers; with ``--trace-memory N`` also a tracemalloc snapshot.
``LeakTracker.report`` takes a second census and logs the difference, at most once per
reason (``max-memory``, ``memory-growth``) in a worker's life:

- the types whose instance counts grew most (qualified with their module unless builtin);
- the containers that grew most, named (``module:NAME``, ``module:Class.attr``, or, for a
  large container outside the app's modules, what holds it: one ``gc.get_referrers``
  pass) with the types of a sample of their newest items. gc does not track ``str``,
  ``bytes``, ``int`` nor dicts of such values: a list of those shows up only here;
- the classic culprits, when present: Django's per-connection query log under
  ``DEBUG=True``, SQLAlchemy engines with ``echo`` (or the ``sqlalchemy.engine`` logger at
  INFO), Sessions holding many objects, logging handlers that keep records
  (``MemoryHandler`` without a target never empties its buffer);
- with tracing, the top allocation sites by growth (``Snapshot.compare_to(base, "lineno")``)
  and, with more than one frame, the tracebacks of the first three. Tracing stops at the
  first report: the traces are grouped much faster once nothing is traced any more.

Bounds: a census is one ``gc.collect()`` (garbage is not growth), then C loops
(``map``/``compress``) over ``gc.get_objects()`` for the type count and the containers;
lengths are read for at most ``MAX_CONTAINERS`` containers, item types for ``SAMPLE``
items of the few containers shown; the app's containers are found by
``gateway.isolation.appmodules.walk`` (module globals, attributes of their classes and of
their module-level instances) and capped at ``MAX_NAMED``.
"""

from __future__ import annotations

import collections
import gc
import logging
import logging.handlers
import os
import sys
import threading
import time
import tracemalloc
import types
from collections import Counter
from dataclasses import dataclass, field
from itertools import compress, islice
from typing import Any

logger = logging.getLogger("gateway.isolation")

MiB = 1 << 20
TOP_TYPES = 10
TOP_CONTAINERS = 5
TOP_SITES = 10
#: a gc-tracked container at least this long is followed by identity
BIG = 1000
#: containers whose length is read per census (the rest is not looked at)
MAX_CONTAINERS = 500_000
#: the app's containers followed by name
MAX_NAMED = 20_000
#: items whose types are sampled in each container shown
SAMPLE = 50
#: a handler's list attribute that grew by this many items is named
HANDLER_GROWTH = 100
_KINDS = frozenset({list, dict, set, collections.deque, collections.OrderedDict, collections.defaultdict})
#: the app's containers followed by name (``bytearray`` is not gc-tracked: by name only)
_NAMED_KINDS = (list, dict, set, collections.deque, bytearray)
#: items whose ``sys.getsizeof`` is their whole size: the container's share is estimated
_LEAVES = frozenset({str, bytes, bytearray, int, float})
#: (module, class, key) of the objects the culprits are about, found among gc objects
_SPECIAL_ROOTS = (
    ("django.db.backends.base.base", "BaseDatabaseWrapper", "django"),
    ("sqlalchemy.engine.base", "Engine", "engine"),
    ("sqlalchemy.orm.session", "Session", "session"),
)


def _size(n: float) -> str:
    return f"{n / MiB:.1f} MiB" if abs(n) >= MiB else f"{n / 1024:.0f} KiB"


def type_name(cls: type) -> str:
    """``LeakItem`` -> ``app.LeakItem``; builtins keep their bare name."""
    module = getattr(cls, "__module__", None)
    name = getattr(cls, "__qualname__", None) or getattr(cls, "__name__", "?")
    return name if module in (None, "builtins") or not isinstance(module, str) else f"{module}.{name}"


@dataclass
class Census:
    """What is counted at report time (the objects are kept for the report)."""

    types: Counter[str] = field(default_factory=Counter)
    #: id -> (container, length) of the gc-tracked containers of at least BIG items
    big: dict[int, tuple[Any, int]] = field(default_factory=dict)
    #: ``module:label`` -> (container, length) of the app's containers
    named: dict[str, tuple[Any, int]] = field(default_factory=dict)
    #: (logger name, handler, attribute) -> length of the handler's list attributes
    handlers: dict[tuple[str, Any, str], int] = field(default_factory=dict)
    #: key of _SPECIAL_ROOTS -> instances (``census(full=True)`` only)
    special: dict[str, list[Any]] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class Baseline:
    """What the warm-up census keeps: counts and lengths, no reference to any object."""

    types: Counter[str]
    big: dict[int, int]
    named: dict[str, int]
    handlers: dict[tuple[int, str], int]

    @classmethod
    def of(cls, c: Census) -> Baseline:
        return cls(
            c.types,
            {i: n for i, (_, n) in c.big.items()},
            {k: n for k, (_, n) in c.named.items()},
            {(id(h), attr): n for (_, h, attr), n in c.handlers.items()},
        )


EMPTY = Baseline(Counter(), {}, {}, {})


def _special_types() -> dict[type, str]:
    out: dict[type, str] = {}
    for module, name, key in _SPECIAL_ROOTS:
        root = getattr(sys.modules.get(module), name, None)
        stack = [root] if isinstance(root, type) else []
        while stack:
            cls = stack.pop()
            out[cls] = key
            stack.extend(cls.__subclasses__())
    return out


def _app_containers() -> dict[str, tuple[Any, int]]:
    from .appmodules import app_modules, walk

    out: dict[str, tuple[Any, int]] = {}
    try:
        for module, _name, label, value in walk(app_modules()):
            if isinstance(value, _NAMED_KINDS):
                out[f"{module}:{label}"] = (value, len(value))
                if len(out) >= MAX_NAMED:
                    break
    except RuntimeError:  # a namespace changed under us (another thread): keep what we have
        pass
    return out


def _handlers() -> dict[tuple[str, Any, str], int]:
    """The list attributes of every logging handler attached to a logger."""
    loggers: list[tuple[str, Any]] = [("root", logging.getLogger())]
    named = list(logging.Logger.manager.loggerDict.items())
    loggers += [(n, lg) for n, lg in named if isinstance(lg, logging.Logger)]
    out: dict[tuple[str, Any, str], int] = {}
    seen: set[int] = set()
    for name, lg in loggers:
        for handler in list(lg.handlers):
            if id(handler) in seen:
                continue
            seen.add(id(handler))
            for attr, value in list(vars(handler).items()):
                if isinstance(value, list | collections.deque):
                    out[(name, handler, attr)] = len(value)
    return out


def census(full: bool) -> Census:
    """Count the objects (``full``: also keep the culprits' objects, for the report)."""
    t0 = time.perf_counter()
    # first: what the first walk imports and caches is then in both counts
    result = Census(handlers=_handlers(), named=_app_containers())
    gc.collect()  # unreachable cycles are not growth
    objs = gc.get_objects()
    try:
        by_type = Counter(map(type, objs))
        for cls, n in by_type.items():
            result.types[type_name(cls)] += n
        kinds = list(islice(compress(objs, map(_KINDS.__contains__, map(type, objs))), MAX_CONTAINERS))
        for c in compress(kinds, map(BIG.__le__, map(len, kinds))):
            result.big[id(c)] = (c, len(c))
        del kinds
        if full:
            special = _special_types()
            for obj in compress(objs, map(special.__contains__, map(type, objs))):
                result.special.setdefault(special[type(obj)], []).append(obj)
    finally:
        del objs
    result.seconds = time.perf_counter() - t0
    return result


def _sample(container: Any) -> str:
    """The types of a sample of the newest items, e.g. ``items: bytes, ~12.0 MiB``."""
    if isinstance(container, bytearray):
        return "bytes"
    try:
        if isinstance(container, dict):
            items = list(islice(reversed(container.values()), SAMPLE))
        elif isinstance(container, list | collections.deque):
            items = list(islice(reversed(container), SAMPLE))
        else:
            items = list(islice(container, SAMPLE))
    except RuntimeError:  # changed size while sampled
        return "items not sampled"
    if not items:
        return "empty now"
    kinds = Counter(type_name(type(x)) for x in items)
    shown = kinds.most_common(3)
    text = ", ".join(name if len(kinds) == 1 else f"{name} {n}/{len(items)}" for name, n in shown)
    text = ("values: " if isinstance(container, dict) else "items: ") + text
    if all(type(x) in _LEAVES for x in items):
        each = sum(map(sys.getsizeof, items)) / len(items)
        text += f", ~{_size(each * len(container))}"
    return text


def _holder(ref: Any, key: Any, module: str | None) -> str:
    if type(ref) is dict:
        return f"{module}:{key}" if module else f"an entry {key!r:.60} of a dict"
    if isinstance(ref, types.CellType):
        return "a closure variable"
    if isinstance(ref, type):
        return f"{type_name(ref)}.{key}"
    return f"attribute {key!r} of an instance of {type_name(type(ref))}"


def _entries(ref: Any) -> list[tuple[Any, Any]]:
    if isinstance(ref, types.CellType):
        return [("", ref.cell_contents)]
    if type(ref) is dict:
        return list(islice(ref.items(), 100_000))
    try:
        return list(vars(ref).items())
    except TypeError:  # no __dict__ (slots, builtins)
        return []


def _holders(targets: list[Any]) -> dict[int, str]:
    """What holds each target: one pass of ``gc.get_referrers`` for all of them."""
    wanted = {id(t) for t in targets}
    module_dicts = {id(vars(m)): n for n, m in list(sys.modules.items()) if isinstance(m, types.ModuleType)}
    found: dict[int, str] = {}
    for ref in gc.get_referrers(*targets):
        if isinstance(ref, types.FrameType | list | tuple):
            continue  # our own frame and lists, the arguments' tuple
        for key, value in _entries(ref):
            if id(value) in wanted and id(value) not in found:
                found[id(value)] = _holder(ref, key, module_dicts.get(id(ref)))
    return found


def _grown_containers(base: Baseline, now: Census) -> list[str]:
    rows: list[tuple[int, str | None, Any, int]] = []  # (growth, name, container, length)
    named_ids = set()
    for label, (c, n) in now.named.items():
        named_ids.add(id(c))
        rows.append((n - base.named.get(label, 0), label, c, n))
    for i, (c, n) in now.big.items():
        if i not in named_ids:
            rows.append((n - base.big.get(i, 0), None, c, n))
    rows = sorted((r for r in rows if r[0] > 0), key=lambda r: -r[0])[:TOP_CONTAINERS]
    unnamed = [r[2] for r in rows if r[1] is None]
    holders = _holders(unnamed) if unnamed else {}
    return [
        f"{name or holders.get(id(c), 'a ' + type_name(type(c)))} +{g:,} to {n:,} ({_sample(c)})"
        for g, name, c, n in rows
    ]


def _django(now: Census) -> list[str]:
    conf = sys.modules.get("django.conf")
    try:
        if conf is None or not conf.settings.configured or not conf.settings.DEBUG:
            return []
    except Exception:  # settings that cannot be read
        return []
    conns = now.special.get("django", [])
    logs = ", ".join(f"{c.alias!r} holds {len(c.queries_log):,} queries" for c in conns)
    limit = conns[0].queries_limit if conns else 9000
    return [
        "Django DEBUG=True keeps a query log per database connection (connection.queries_log, "
        f"up to {limit:,} queries each, emptied by Django's request_started only): "
        + (logs or "no connection open now")
    ]


def _sqlalchemy(now: Census) -> list[str]:
    out = []
    echoing = [repr(e) for e in now.special.get("engine", []) if getattr(e, "echo", False)]
    if echoing:
        out.append(
            f"SQLAlchemy engine echo on ({', '.join(echoing[:3])}): every statement and its "
            "parameters are logged through the 'sqlalchemy.engine' logger"
        )
    elif logging.getLogger("sqlalchemy.engine").isEnabledFor(logging.INFO) and "sqlalchemy" in sys.modules:
        out.append("the 'sqlalchemy.engine' logger is at INFO: every statement is logged")
    for session in now.special.get("session", []):
        n = len(getattr(session, "identity_map", ()))
        if n >= BIG:
            out.append(f"a SQLAlchemy Session holds {n:,} objects in its identity map (until closed)")
    return out


def _logging(base: Baseline, now: Census) -> list[str]:
    out = []
    for (name, handler, attr), n in now.handlers.items():
        grown = n - base.handlers.get((id(handler), attr), 0)
        # a MemoryHandler flushes into its target when full: without one it only grows
        unbounded = isinstance(handler, logging.handlers.MemoryHandler) and handler.target is None
        if (unbounded and attr == "buffer" and n) or grown >= HANDLER_GROWTH:
            text = f"logging handler {type_name(type(handler))} of logger {name!r}: {n:,} items in .{attr}"
            text += f" (+{grown:,} since warm-up)" if base is not EMPTY else ""
            if unbounded and attr == "buffer":
                text += "; a MemoryHandler without a target never empties its buffer"
            out.append(text)
    return out


def start_tracing(frames: int) -> None:
    """``--trace-memory N``: trace allocations with N frames from now on in this process."""
    if frames > 0 and not tracemalloc.is_tracing():
        tracemalloc.start(frames)


#: allocation sites not shown: the tracing and this module's own work
_NOT_SITES = frozenset({tracemalloc.__file__, __file__, "<unknown>"})


def _sites(base: tracemalloc.Snapshot) -> list[str]:
    """The top allocation sites since ``base``. Tracing stops first: grouping the traces
    while every allocation is still traced is many times slower (the explanation is
    given once; a later one has no warm-up snapshot left to compare with)."""
    now = tracemalloc.take_snapshot()
    frames = tracemalloc.get_traceback_limit()
    tracemalloc.stop()
    out = []
    stats = (s for s in now.compare_to(base, "lineno") if s.size_diff > 0)
    for stat in islice((s for s in stats if s.traceback[0].filename not in _NOT_SITES), TOP_SITES):
        frame = stat.traceback[0]
        out.append(
            f"allocated since warm-up at {frame.filename}:{frame.lineno}: +{_size(stat.size_diff)} "
            f"in {stat.count_diff:+,} blocks"
        )
    if frames > 1:
        stats = (s for s in now.compare_to(base, "traceback") if s.size_diff > 0)
        for stat in islice((s for s in stats if s.traceback[-1].filename not in _NOT_SITES), 3):
            calls = " <- ".join(f"{f.filename}:{f.lineno}" for f in reversed(stat.traceback))
            out.append(f"+{_size(stat.size_diff)} allocated from {calls}")
    return out


class LeakTracker:
    """One per worker process (``tracker()``): the warm-up census and the reports."""

    def __init__(self) -> None:
        self.base: Baseline | None = None
        self.snapshot: tracemalloc.Snapshot | None = None
        self.reported: set[str] = set()
        self._lock = threading.Lock()  # --threads: two requests may end at once

    def warm_up(self) -> None:
        """Take the warm-up census (once: later calls do nothing)."""
        with self._lock:
            if self.base is not None:
                return
            try:
                self.base = Baseline.of(census(full=False))
                if tracemalloc.is_tracing():  # after the census: what it imported is not growth
                    self.snapshot = tracemalloc.take_snapshot()
            except Exception:  # an explanation must never break the worker
                self.base = EMPTY
                logger.exception("memory: the warm-up census failed")

    def report(self, reason: str, headline: str) -> None:
        """Log why memory grew (once per ``reason``); ``headline`` starts the first line."""
        with self._lock:
            if reason in self.reported:
                return
            self.reported.add(reason)
            try:
                self._report(headline)
            except Exception:  # an explanation must never break the worker
                logger.exception("memory: could not explain the growth")

    def _report(self, headline: str) -> None:
        pid = os.getpid()
        sites = _sites(self.snapshot) if self.snapshot is not None else []
        self.snapshot = None
        now = census(full=True)
        base = self.base or EMPTY
        since = "grew most since warm-up" if base is not EMPTY else "most numerous (no warm-up census)"
        grown = now.types - base.types
        if base is not EMPTY:  # the baseline itself (its dicts hold no object: not tracked)
            grown -= Counter({type_name(Baseline): 1, type_name(Counter): 1})
        top = ", ".join(f"{name} +{n:,}" for name, n in grown.most_common(TOP_TYPES)) or "nothing"
        logger.warning("%s; %s: %s (census %.0f ms)", headline, since, top, now.seconds * 1000)
        containers = _grown_containers(base, now)
        if containers:
            logger.warning("memory: worker %d: containers grown most: %s", pid, "; ".join(containers))
        for culprit in _django(now) + _sqlalchemy(now) + _logging(base, now):
            logger.warning("memory: worker %d: known culprit: %s", pid, culprit)
        for site in sites:
            logger.warning("memory: worker %d: %s", pid, site)


_tracker: LeakTracker | None = None


def tracker() -> LeakTracker:
    """This worker's tracker (made on first use: in the worker, after fork)."""
    global _tracker
    if _tracker is None:
        _tracker = LeakTracker()
    return _tracker
