"""The places the globals checker watches, each with its snapshot, its diff and its repair.

A *place* is one object whose contents outlive requests:

- ``Namespace``: the globals of an app module, the attributes of a class defined there,
  or the attributes of a module-level instance of such a class. Its *state* names — not
  dunders, not code (functions, classes, modules, descriptors) — are compared by identity.
- ``Entries``: a dict (bound at module level, or as an attribute of such a class or
  instance), compared entry by entry: keys set, replaced or deleted.
- ``Items``: a list, deque or set, compared item by item by identity: growth, items
  replaced.
- ``Sampled``: a container too big to compare item by item on every request (more than
  the tracking limit), and every bytearray: its length, and for dicts, lists and deques
  its first and last ``SAMPLE`` entries.

A place's ``fingerprint``: its ``views()`` (live iterables) listed, or for a ``Sampled``
its ``sample()``. The checker's per-request comparison is cheaper still (see
gateway/isolation/globals.py); when it sees a difference, it compares each place's
fingerprint with the last one and asks the places that differ for their ``changes()``.
``changes()`` names what changed, never the values (type names only), and moves the
place's ``last`` snapshot forward: each change is reported once. ``restore()`` puts back
the state of the *baseline* (taken after the warm-up), shallowly.

Labels: ``module:NAME``, ``module:Class.attr``, ``module:NAME[key]`` (a str key by its
repr, cut at 40 characters; any other key by its type: ``module:NAME[<int>]``).
"""

from __future__ import annotations

import collections
import gc
import operator
import types
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

from .base import Finding

_MISSING: Any = object()
#: entries at each end of a sampled container compared on every request
SAMPLE = 16
#: more changes than this in one place make one finding listing them all
MAX_FINDINGS = 5
#: data containers: dicts are compared entry by entry, the others item by item
CONTAINERS = (dict, list, set, collections.deque, bytearray)
_CODE = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)


def same(a: list[Any], b: list[Any]) -> bool:
    """Identity, item by item (and inside the lists of a fingerprint), lengths by value:
    no ``__eq__`` of the app's objects runs."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y) or not all(map(operator.is_, x, y)):
                return False
        elif x is not y and not (type(x) is int and type(y) is int and x == y):
            return False
    return True


def fingerprint(place: Place) -> list[Any]:
    """What the checker compares after each request: the listed views, or the sample."""
    if isinstance(place, Sampled):
        return sample(place.obj)
    return [list(view) for view in place.views()]


def is_code(value: Any) -> bool:
    """Functions, classes, modules and descriptors (methods, properties, ORM fields):
    rebinding them is monkeypatching, not request data."""
    return isinstance(value, _CODE) or hasattr(type(value), "__get__")


def is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def describe(value: Any) -> str:
    return "(unbound)" if value is _MISSING else type(value).__name__


def key_label(key: Any) -> str:
    if isinstance(key, str):
        text = repr(key)
        return text if len(text) <= 40 else text[:36] + "...'"
    return f"<{type(key).__name__}>"


class Place:
    """One watched object. ``kind`` of its findings, ``label`` for log lines."""

    label: str
    obj: Any

    def views(self) -> list[Iterable[Any]]:
        raise NotImplementedError

    def changes(self, checker: str) -> list[Finding]:
        raise NotImplementedError

    def restore(self, finding: Finding) -> bool:
        return False

    def _finding(self, kind: str, message: str, checker: str, **details: Any) -> Finding:
        return Finding(kind, message, {"name": self.label, "_place": self, **details}, checker)


def _behind(proxy: Any) -> dict[str, Any] | None:
    """The dict a class's mappingproxy shows (read only: writes go through setattr)."""
    inner = [d for d in gc.get_referents(proxy) if type(d) is dict]
    return inner[0] if len(inner) == 1 else None


class Namespace(Place):
    """A module's globals (``global-rebound``), or the attributes of an app class or of a
    module-level instance of one (``global-attribute``)."""

    def __init__(
        self,
        label: str,
        owner: Any,
        what: str,
        allowed: Callable[[str], bool],
    ) -> None:
        self.label = label
        self.obj = owner
        self.what = what  # "module" | "class" | "instance"
        self.allowed = allowed
        self.ns = vars(owner)  # a dict, or a class's read-only mappingproxy
        #: the dict itself, to read without a copy (a class's, behind its mappingproxy)
        self.dict: dict[str, Any] | None = self.ns if isinstance(self.ns, dict) else _behind(self.ns)
        state = {k: v for k, v in self.ns.items() if self._is_state(k, v)}
        self.code = {k for k in self.ns if k not in state}
        self.baseline = dict(state)
        self.last = state

    def _is_state(self, name: str, value: Any) -> bool:
        return not is_dunder(name) and not is_code(value) and not self.allowed(name)

    def views(self) -> list[Iterable[Any]]:
        return [self.ns.values()]

    def _where(self, name: str) -> str:
        return f"{self.label}:{name}" if self.what == "module" else f"{self.label}.{name}"

    def changes(self, checker: str) -> list[Finding]:
        now = dict(self.ns)  # one C-level copy: safe while other threads run
        fresh = [n for n, v in now.items() if n not in self.last and self._is_state(n, v)]
        findings = []
        for name in [*self.last, *fresh]:
            old, new = self.last.get(name, _MISSING), now.get(name, _MISSING)
            if old is new:
                continue
            self.last[name] = new
            if new is _MISSING:
                del self.last[name]
            if old is _MISSING and name in self.code:
                what, was = "rebound", "code"  # e.g. a function replaced by data
            else:
                what = "added" if old is _MISSING else "deleted" if new is _MISSING else "rebound"
                was = describe(old)
            if self.what == "module":
                kind, text = "global-rebound", f"module global {self._where(name)}"
            else:
                kind, text = "global-attribute", f"{self.what} attribute {self._where(name)}"
                what = "assigned" if what == "rebound" else what
            findings.append(
                self._finding(
                    kind,
                    f"{text} {what} during the request ({was} -> {describe(new)})",
                    checker,
                    name=self._where(name),
                    attribute=name,
                    change=what,
                )
            )
        return findings

    def restore(self, finding: Finding) -> bool:
        name = finding.details["attribute"]
        old = self.baseline.get(name, _MISSING)
        if self.what == "class":  # a class's namespace is written through setattr
            if old is _MISSING:
                if name in self.ns:
                    delattr(self.obj, name)
            else:
                setattr(self.obj, name, old)
        elif old is _MISSING:
            self.ns.pop(name, None)
        else:
            self.ns[name] = old
        if old is _MISSING:
            self.last.pop(name, None)
        else:
            self.last[name] = old
        return True


def _restore_entries(d: dict[Any, Any], baseline: dict[Any, Any], keys: list[Any]) -> bool:
    for key in keys:
        old = baseline.get(key, _MISSING)
        if old is _MISSING:
            d.pop(key, None)
        else:
            d[key] = old
    return True


class Entries(Place):
    """A dict compared entry by entry (``global-entry``)."""

    def __init__(self, label: str, obj: dict[Any, Any]) -> None:
        self.label = label
        self.obj = obj
        self.baseline = dict(obj)
        self.last = dict(obj)

    def views(self) -> list[Iterable[Any]]:
        return [self.obj.keys(), self.obj.values()]

    def changes(self, checker: str) -> list[Finding]:
        now, last = dict(self.obj), self.last
        changed = [(k, "set" if last.get(k, _MISSING) is _MISSING else "replaced") for k, v in now.items()
                   if last.get(k, _MISSING) is not v]  # fmt: skip
        changed += [(k, "deleted") for k in last if k not in now]
        self.last = now
        return entry_findings(self, changed, last, now, checker)

    def restore(self, finding: Finding) -> bool:
        keys = finding.details["keys"]
        _restore_entries(self.obj, self.baseline, keys)
        for key in keys:
            self.last.pop(key, None)
        self.last.update({k: self.obj[k] for k in keys if k in self.obj})
        return True


def entry_findings(
    place: Place, changed: list[tuple[Any, str]], last: dict[Any, Any], now: dict[Any, Any], checker: str
) -> list[Finding]:
    """One ``global-entry`` per changed key, or one for them all when there are many."""
    if not changed:
        return []
    keys = [k for k, _ in changed]
    if len(changed) > MAX_FINDINGS:
        shown = ", ".join(f"{key_label(k)} {what}" for k, what in changed[:3])
        return [
            place._finding(
                "global-entry",
                f"{len(changed)} entries of {place.label} set, replaced or deleted during the "
                f"request ({shown}, ...)",
                checker,
                keys=keys,
            )
        ]
    return [
        place._finding(
            "global-entry",
            f"entry {place.label}[{key_label(k)}] {what} during the request "
            f"({describe(last.get(k, _MISSING))} -> {describe(now.get(k, _MISSING))})",
            checker,
            keys=[k],
        )
        for k, what in changed
    ]


class Items(Place):
    """A list, deque or set: growth (``global-growth``) and, at the same length, items
    replaced (``global-entry``). Shrinking is not reported (a queue being consumed)."""

    def __init__(self, label: str, obj: Any) -> None:
        self.label = label
        self.obj = obj
        self.baseline = list(obj)
        self.last = list(obj)

    def views(self) -> list[Iterable[Any]]:
        return [self.obj]

    def changes(self, checker: str) -> list[Finding]:
        now, last = list(self.obj), self.last
        self.last = now
        if len(now) > len(last):
            return [growth(self, len(last), len(now), checker)]
        if len(now) < len(last):
            return []
        if isinstance(self.obj, set):
            before = {id(x) for x in last}
            added = sum(id(x) not in before for x in now)
            if not added:
                return []
            return [
                self._finding(
                    "global-entry",
                    f"{added} items of {self.label} replaced during the request",
                    checker,
                )
            ]
        positions = [i for i, (a, b) in enumerate(zip(last, now, strict=True)) if a is not b]
        if not positions:
            return []
        where = ", ".join(f"[{i}]" for i in positions[:MAX_FINDINGS])
        more = ", ..." if len(positions) > MAX_FINDINGS else ""
        return [
            self._finding(
                "global-entry",
                f"items {self.label}{where}{more} replaced during the request",
                checker,
                positions=positions,
            )
        ]

    def restore(self, finding: Finding) -> bool:
        positions = finding.details.get("positions")
        obj = self.obj
        if not positions or not isinstance(obj, list) or len(obj) != len(self.baseline):
            return False  # growth, sets and resized lists: which items to drop is unknown
        for i in positions:
            obj[i] = self.baseline[i]
        self.last = list(obj)
        return True


def growth(place: Place, before: int, after: int, checker: str) -> Finding:
    return place._finding(
        "global-growth",
        f"{place.label} grew from {before} to {after} items during the request",
        checker,
        before=before,
        after=after,
    )


def sample(obj: Any) -> list[Any]:
    """The fingerprint of a big container: its length and its first and last entries."""
    if isinstance(obj, dict):
        return [
            len(obj),
            *islice(obj.keys(), SAMPLE),
            *islice(obj.values(), SAMPLE),
            *islice(reversed(obj.keys()), SAMPLE),
            *islice(reversed(obj.values()), SAMPLE),
        ]
    if isinstance(obj, list):
        return [len(obj), *obj[:SAMPLE], *obj[-SAMPLE:]]
    if isinstance(obj, collections.deque):
        return [len(obj), *islice(obj, SAMPLE), *islice(reversed(obj), SAMPLE)]
    return [len(obj)]  # sets (no stable ends to compare), bytearrays


def _ends(d: dict[Any, Any]) -> dict[Any, Any]:
    ends = dict(islice(d.items(), SAMPLE))
    ends.update(islice(reversed(d.items()), SAMPLE))
    return ends


class Sampled(Place):
    """A container watched by its length and the entries at its ends: growth, and for a
    dict the keys among those entries set, replaced or deleted."""

    def __init__(self, label: str, obj: Any) -> None:
        self.label = label
        self.obj = obj
        self.n = len(obj)
        self.baseline = _ends(obj) if isinstance(obj, dict) else {}
        self.last = dict(self.baseline)
        self.seen = sample(obj)

    def changes(self, checker: str) -> list[Finding]:
        obj, before = self.obj, self.n
        self.n = len(obj)
        findings = [growth(self, before, self.n, checker)] if self.n > before else []
        if isinstance(obj, dict):
            now, last = _ends(obj), self.last
            changed = [(k, "replaced") for k, v in now.items() if k in last and last[k] is not v]
            if self.n > before:
                changed += [(k, "set") for k in now if k not in last]
            changed += [(k, "deleted") for k in last if k not in obj]
            self.last = now
            if changed:
                findings = entry_findings(self, changed, last, now, checker)
        elif self.n == before and not same(sample(obj), self.seen):
            message = f"items at the ends of {self.label} replaced during the request"
            findings = [self._finding("global-entry", message, checker)]
        self.seen = sample(obj)
        return findings

    def restore(self, finding: Finding) -> bool:
        keys = finding.details.get("keys")
        if not keys or not isinstance(self.obj, dict):
            return False
        known = [k for k in keys if k in self.baseline or k in self.obj]
        _restore_entries(self.obj, self.baseline, known)
        self.n = len(self.obj)
        self.last = _ends(self.obj)
        return True


def place_for(label: str, obj: Any, limit: int) -> Place:
    """The place watching a data container: entry by entry up to ``limit`` items."""
    if isinstance(obj, bytearray) or len(obj) > limit:
        return Sampled(label, obj)
    if isinstance(obj, dict):
        return Entries(label, obj)
    return Items(label, obj)
