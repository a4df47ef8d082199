"""SQLAlchemy checker: sessions, ``scoped_session`` registries and pooled connections a
request left behind. Works with plain SQLAlchemy and Flask-SQLAlchemy.

Strategy
--------
Listeners installed once at load (class-level, so they cover every Session subclass —
Flask-SQLAlchemy's too — and every pool, including those created before):
``Session.after_begin`` and ``Session.transient_to_pending`` note the session, and
``Pool.checkout``/``checkin`` the pooled connections, in the current request's bucket
(``RequestInfo.extra`` on the async worker, where the request's Context reaches the
bridge's thread; a thread-local bucket on the sync worker). Nothing is scanned per
request: the bucket holds only what the request touched (weak references).

``thread_exit`` (in the thread that ran the request, where thread-scoped registries
live) then reports:

- ``sqlalchemy-scoped-session``: a ``scoped_session`` still holding a session for this
  thread (thread-local registry) or for a scope this request used (``scopefunc``
  registries such as Flask-SQLAlchemy's, keyed by app context): the next request on the
  thread would reuse it — and commit what this one left pending. ``repair``: ``remove()``.
  The registries are the ``scoped_session`` objects (and Flask-SQLAlchemy ``db.session``)
  found among the app modules' globals at load and whenever ``len(sys.modules)`` changes.
- ``sqlalchemy-session-open``: a session the request used that still has an open
  transaction or pending changes (new, dirty, deleted). ``repair``: ``close()``.
- ``sqlalchemy-connection-checked-out``: pooled connections checked out during the request
  and not returned (e.g. an unclosed Session: it keeps its connection until garbage
  collection), with the pool's ``checkedout()``. ``repair``: close the request's sessions
  that still hold a transaction, then invalidate what is still out (the pool slot is
  returned; whoever still holds that connection cannot share it with the next user).
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import Any

from .appmodules import app_modules, walk
from .base import Checker, Finding, RequestInfo, current_request

_KEY = "isolation.sqlalchemy"
_MAX_BUCKET = 1000  # a thread that never ends a request (a background thread) stays bounded


class _Bucket:
    __slots__ = ("records", "sessions")

    def __init__(self) -> None:
        self.sessions: dict[int, weakref.ref[Any]] = {}
        #: id(record) -> (record, checkout token, weak ref to the pool's proxy, pool)
        self.records: dict[int, tuple[Any, object, weakref.ref[Any] | None, Any]] = {}


class _ThreadBucket(threading.local):
    bucket: _Bucket | None = None  # a class default: no AttributeError on the hot path


def _pending(session: Any) -> int:
    return len(session.new) + len(session.dirty) + len(session.deleted)


class SQLAlchemyChecker(Checker):
    name = "sqlalchemy"
    kinds = ("sqlalchemy-scoped-session", "sqlalchemy-session-open", "sqlalchemy-connection-checked-out")
    #: Safe to undo by default: ``remove()`` a leaked scoped_session (its pending changes
    #: would be committed by the next request), close a Session left open, return a pooled
    #: connection. A connection that cannot be returned exhausts the pool: recycle then.
    default_policies = dict.fromkeys(kinds, "repair")
    recycle_unrepaired = frozenset({"sqlalchemy-connection-checked-out"})

    def __init__(self) -> None:
        self.scoped: list[tuple[str, Any]] = []
        self.nmods = -1
        #: id(connection record) -> a token unique to its current checkout
        self._out: dict[int, object] = {}
        self._tls = _ThreadBucket()

    def after_load(self, app: Any) -> list[Finding]:
        self.active = "sqlalchemy" in sys.modules
        if not self.active:
            return []
        from sqlalchemy import event
        from sqlalchemy.orm import Session
        from sqlalchemy.pool import Pool

        event.listen(Session, "after_begin", self._on_begin)
        event.listen(Session, "transient_to_pending", self._on_pending)
        event.listen(Pool, "checkout", self._on_checkout)
        event.listen(Pool, "checkin", self._on_checkin)
        from sqlalchemy.util import ThreadLocalRegistry

        self._thread_registry = ThreadLocalRegistry
        self._scan()
        return []

    def _scan(self) -> None:
        from sqlalchemy.orm import scoped_session

        self.nmods = len(sys.modules)
        fsa = sys.modules.get("flask_sqlalchemy")
        extension = getattr(fsa, "SQLAlchemy", None)
        found: dict[int, tuple[str, Any]] = {}
        for modname, _name, label, value in walk(app_modules()):
            if extension is not None and issubclass(type(value), extension):
                value = vars(value).get("session")
                label += ".session"
            if issubclass(type(value), scoped_session):
                found.setdefault(id(value), (f"{modname}.{label}", value))
        self.scoped = list(found.values())

    # -- events (any thread) ---------------------------------------------------------------

    def _bucket(self) -> _Bucket:
        info = current_request()
        if info is not None:
            bucket = info.extra.get(_KEY)
            if bucket is None:
                bucket = info.extra[_KEY] = _Bucket()
            return bucket
        bucket = self._tls.bucket
        if bucket is None or len(bucket.sessions) + len(bucket.records) > _MAX_BUCKET:
            bucket = self._tls.bucket = _Bucket()
        return bucket

    def _on_begin(self, session: Any, transaction: Any, connection: Any) -> None:
        self._bucket().sessions[id(session)] = weakref.ref(session)

    def _on_pending(self, session: Any, instance: Any) -> None:
        self._bucket().sessions[id(session)] = weakref.ref(session)

    def _on_checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        token = self._out[id(record)] = object()
        try:
            fairy = weakref.ref(proxy)
        except TypeError:
            fairy = None
        self._bucket().records[id(record)] = (record, token, fairy, getattr(proxy, "_pool", None))

    def _on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        self._out.pop(id(record), None)

    # -- after the request, in its thread ---------------------------------------------------

    def thread_exit(self, info: RequestInfo) -> list[Finding]:
        if len(sys.modules) != self.nmods:
            self._scan()
        bucket = info.extra.pop(_KEY, None)
        local = self._tls.bucket
        if local is not None:
            self._tls.bucket = None
            if bucket is None:
                bucket = local
            else:
                bucket.sessions.update(local.sessions)
                bucket.records.update(local.records)
        findings = self._scoped(bucket)
        if bucket is None:
            return findings
        reported = {id(s) for f in findings for s in f.details["_sessions"]}
        sessions = [s for s in (ref() for ref in bucket.sessions.values()) if s is not None]
        for session in sessions:
            if id(session) in reported:
                continue
            pending, in_tx = _pending(session), session.in_transaction()
            if pending or in_tx:
                what = ["an open transaction"] if in_tx else []
                what += [f"{pending} pending change(s)"] if pending else []
                findings.append(
                    Finding(
                        "sqlalchemy-session-open",
                        f"{type(session).__name__} left with {' and '.join(what)} after the request",
                        {"pending": pending, "in_transaction": in_tx, "_sessions": [session]},
                        self.name,
                    )
                )
        out = [entry for entry in bucket.records.values() if self._still_out(entry)]
        if out:
            pools = {id(e[3]): e[3] for e in out if e[3] is not None}
            total = sum(p.checkedout() for p in pools.values())
            findings.append(
                Finding(
                    "sqlalchemy-connection-checked-out",
                    f"{len(out)} pooled connection(s) checked out during the request and not returned "
                    f"(pool checkedout(): {total}); an unclosed Session or Connection holds them",
                    {"count": len(out), "pool_checked_out": total, "_out": out, "_sessions": sessions},
                    self.name,
                )
            )
        return findings

    def _still_out(self, entry: tuple[Any, object, Any, Any]) -> bool:
        return self._out.get(id(entry[0])) is entry[1]

    def _scoped(self, bucket: _Bucket | None) -> list[Finding]:
        findings = []
        used = bucket.sessions if bucket is not None else {}
        for label, scoped in self.scoped:
            registry = scoped.registry
            if isinstance(registry, self._thread_registry):
                left = [registry()] if registry.has() else []
            else:
                left = [s for s in list(registry.registry.values()) if id(s) in used]
            if not left:
                continue
            session = left[0]
            pending, in_tx = _pending(session), session.in_transaction()
            findings.append(
                Finding(
                    "sqlalchemy-scoped-session",
                    f"scoped_session {label} not removed after the request "
                    f"({pending} pending change(s), transaction {'open' if in_tx else 'closed'}): "
                    "the next request on this thread would reuse its session",
                    {"name": label, "pending": pending, "_scoped": scoped, "_sessions": left},
                    self.name,
                )
            )
        return findings

    def repair(self, finding: Finding) -> bool:
        details = finding.details
        if finding.kind == "sqlalchemy-scoped-session":
            scoped = details["_scoped"]
            registry = scoped.registry
            if isinstance(registry, self._thread_registry):
                scoped.remove()
            else:
                for key, session in list(registry.registry.items()):
                    if any(session is s for s in details["_sessions"]):
                        session.close()
                        registry.registry.pop(key, None)
            return True
        if finding.kind == "sqlalchemy-session-open":
            for session in details["_sessions"]:
                session.close()
            return True
        if finding.kind == "sqlalchemy-connection-checked-out":
            for session in details["_sessions"]:
                if session.in_transaction():
                    session.close()
            for entry in details["_out"]:
                fairy = entry[2]() if entry[2] is not None else None
                if self._still_out(entry) and fairy is not None:
                    fairy.invalidate()
            return not any(self._still_out(entry) for entry in details["_out"])
        return False
