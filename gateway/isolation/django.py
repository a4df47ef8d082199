"""Django checker: database connections a request left in a transaction, left open, or
with a query log that grows outside the request cycle; ``CONN_MAX_AGE`` under ASGI.

Strategy
--------
Django's connections are per thread (``connections`` is a thread-critical asgiref Local),
so each check runs in the thread that served the request:

- **WSGI** (sync worker, or the a2wsgi bridge's pool thread): ``thread_exit``, after the
  response was closed — i.e. after Django's ``request_finished`` ran
  ``close_old_connections``;
- **ASGI** (Django's ``ASGIHandler`` runs each request's sync code in a thread of its own,
  via asgiref): a ``request_finished`` receiver connected after Django's own, in that
  thread, reporting to the request's layer (``IsolationLayer.report``).

Findings, per initialised connection:

- ``django-atomic-leak``: still ``in_atomic_block`` (an ``atomic()`` never exited) or out of
  its configured autocommit mode. On a WSGI worker every later request of that thread then
  fails ("Cannot operate on a closed database" once Django closed it mid-transaction).
  Reported once per leak (later requests of that thread find it still there).
  ``repair``: roll back what is still open, reset the transaction state, close.
- ``django-connection-open``: still open although it should be closed: ``CONN_MAX_AGE=0``
  (an app that uses the ORM outside Django's handler never closes it), or any open
  connection at the end of an ASGI request (its thread is discarded: the connection leaks
  until garbage collection). ``repair``: close it.
- ``django-query-log``: with ``DEBUG`` on, a WSGI request that did not go through Django's
  handler (no ``request_started``, which is what resets ``queries_log``) left queries in
  the log: it grows with every request (up to 9000 per connection). ``repair``: clear it.
- ``django-conn-max-age`` (at load, ASGI only): ``CONN_MAX_AGE`` is not 0.

Cost: on WSGI, a look at each connection the thread opened (``connection_created`` keeps
the list, so ``connections``, an asgiref Local, is not searched per request). With
``DEBUG`` off nothing else: only the query log check needs ``request_started``, so the
checker then connects no receiver to it and turns its ``thread_enter`` off (``hooks_off``),
and the layer stays light (no RequestInfo per request). On ASGI one look at each
configured alias; nothing runs when Django is not imported.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from .base import Checker, Finding, RequestInfo, current_layer

_REPORTED = "fcgi_gateway_atomic_leak_reported"  # set on a DatabaseWrapper


class _Started(threading.local):
    started = True  # Django's request_started ran in this thread during the request
    #: the connections this thread opened (WSGI: the thread serves request after request)
    conns: tuple[Any, ...] = ()


def _serves_asgi(app: Any) -> bool:
    if getattr(app, "gateway_wsgi_app", None) is not None:  # WSGI through the bridge
        return False
    from ..loading import detect_interface

    try:
        return detect_interface(app) != "wsgi"
    except Exception:
        return False


def _reset(conn: Any) -> None:
    """Roll back and forget an abandoned transaction, then close the connection."""
    raw = conn.connection
    if raw is not None and not conn.closed_in_transaction:
        try:
            raw.rollback()
        except Exception:
            pass
    conn.in_atomic_block = False
    conn.needs_rollback = False
    conn.closed_in_transaction = False
    conn.atomic_blocks = []
    conn.savepoint_ids = []
    conn.savepoint_state = 0
    conn.commit_on_exit = True
    conn.run_on_commit = []
    try:
        conn.close()
    except Exception:
        conn.connection = None


class DjangoChecker(Checker):
    name = "django"
    kinds = ("django-atomic-leak", "django-connection-open", "django-query-log", "django-conn-max-age")
    #: Safe to undo by default: rolling back and resetting a connection left in atomic()
    #: (every later request on it fails otherwise), closing a connection the request cycle
    #: would not close, clearing the DEBUG query log. CONN_MAX_AGE under ASGI is a setting
    #: to change, reported at start-up.
    default_policies = {
        "django-atomic-leak": "repair",
        "django-connection-open": "repair",
        "django-query-log": "repair",
    }
    recycle_unrepaired = frozenset({"django-atomic-leak"})
    uses_info = False  # thread_exit reads nothing of the request

    def __init__(self) -> None:
        self.connections: Any = None
        self.settings: Any = None
        self.asgi = False
        self._state = _Started()

    def after_load(self, app: Any) -> list[Finding]:
        self.active = False
        if "django" not in sys.modules:
            return []
        from django.conf import settings

        if not settings.configured:
            return []
        self.active = True
        from django.core.signals import request_finished, request_started
        from django.db import connections

        self.connections, self.settings = connections, settings
        self.asgi = _serves_asgi(app)
        if not self.asgi:
            from django.db.backends.signals import connection_created

            if settings.DEBUG:  # only the query log check asks whether request_started ran
                request_started.connect(self._started, weak=False, dispatch_uid="fcgi-gateway-isolation")
            else:
                self.hooks_off = frozenset({"thread_enter"})
            connection_created.connect(self._created, weak=False, dispatch_uid="fcgi-gateway-isolation")
            self._state.conns = tuple(connections.all(initialized_only=True))  # opened at import
            return []
        request_finished.connect(self._finished, weak=False, dispatch_uid="fcgi-gateway-isolation")
        findings = []
        for alias in connections:
            max_age = connections.settings[alias].get("CONN_MAX_AGE", 0)
            if max_age != 0:
                findings.append(
                    Finding(
                        "django-conn-max-age",
                        f"database {alias!r} has CONN_MAX_AGE={max_age} under ASGI: Django opens a "
                        "connection in a new thread for each request, so persistent connections are "
                        "never reused and leak; use CONN_MAX_AGE=0 (or a pooler)",
                        {"alias": alias, "conn_max_age": max_age},
                        self.name,
                    )
                )
        return findings

    # -- WSGI: in the thread that ran the request ----------------------------------------

    def _started(self, sender: Any = None, **kwargs: Any) -> None:
        self._state.started = True  # Django's handler resets the query log now

    def _created(self, sender: Any = None, connection: Any = None, **kwargs: Any) -> None:
        """Django opened a connection in this thread: checked after every later request of
        the thread, without a look through ``connections`` (an asgiref Local) each time."""
        state = self._state
        if connection is not None and all(c is not connection for c in state.conns):
            state.conns = (*state.conns, connection)

    def thread_enter(self, info: RequestInfo) -> None:
        self._state.started = False

    def thread_exit(self, info: RequestInfo) -> list[Finding]:
        if self.connections is None or self.asgi:
            return []
        conns = self._state.conns
        findings = self._check(False, conns)
        if self.settings.DEBUG and not self._state.started:
            findings += self._query_log(conns)
        return findings

    def _query_log(self, conns: tuple[Any, ...]) -> list[Finding]:
        findings = []
        for conn in conns:
            n = len(conn.queries_log)
            if n:
                findings.append(
                    Finding(
                        "django-query-log",
                        f"query log of database {conn.alias!r} holds {n} queries: with DEBUG on it "
                        "grows until a request_started resets it (ORM used outside Django's request cycle)",
                        {"alias": conn.alias, "queries": n, "_conn": conn},
                        self.name,
                    )
                )
        return findings

    # -- ASGI: Django's request_finished, in the request's own thread --------------------

    def _finished(self, sender: Any = None, **kwargs: Any) -> None:
        cur = current_layer()
        if cur is None or cur[1].interface != "asgi":
            return
        findings = self._check(True, self.connections.all(initialized_only=True))
        if findings:
            cur[0].report(self, findings, cur[1])

    # -- shared ---------------------------------------------------------------------------

    def _check(self, asgi: bool, conns: Any) -> list[Finding]:
        findings = []
        for conn in conns:
            autocommit = conn.settings_dict.get("AUTOCOMMIT", True)
            is_open = conn.connection is not None and not conn.closed_in_transaction
            stuck = conn.in_atomic_block or (is_open and conn.autocommit != autocommit)
            if stuck and getattr(conn, _REPORTED, False):
                continue  # the same leak, left by an earlier request (not repaired): once
            setattr(conn, _REPORTED, stuck)
            if stuck:
                where = "an atomic() block" if conn.in_atomic_block else "a transaction (autocommit off)"
                findings.append(
                    Finding(
                        "django-atomic-leak",
                        f"database connection {conn.alias!r} left in {where} by the request "
                        f"(thread {threading.current_thread().name})",
                        {"alias": conn.alias, "_conn": conn},
                        self.name,
                    )
                )
            elif is_open and (asgi or conn.settings_dict.get("CONN_MAX_AGE", 0) == 0):
                why = (
                    "its ASGI request thread is discarded"
                    if asgi
                    else "CONN_MAX_AGE is 0 (ORM used outside Django's request cycle?)"
                )
                findings.append(
                    Finding(
                        "django-connection-open",
                        f"database connection {conn.alias!r} still open after the request: {why}",
                        {"alias": conn.alias, "_conn": conn},
                        self.name,
                    )
                )
        return findings

    def repair(self, finding: Finding) -> bool:
        conn = finding.details.get("_conn")
        if conn is None:
            return False
        if finding.kind == "django-atomic-leak":
            _reset(conn)
            setattr(conn, _REPORTED, False)
        elif finding.kind == "django-connection-open":
            conn.close()
        elif finding.kind == "django-query-log":
            conn.queries_log.clear()
        else:
            return False
        return True
