"""The checker interface, findings, policies, and the layer that runs the checkers.

Strategy
--------
A ``Checker`` has up to five hooks: ``after_load(app)`` (once per worker, after the app is
loaded: take snapshots, install event listeners), ``before_request(info)`` and
``after_request(info)`` (in the worker, around each request; ``after_request`` returns
findings), and ``thread_enter(info)``/``thread_exit(info)`` (in *the thread that ran the
app*, just before it and right after its response was closed). The thread hooks exist for
per-thread state — thread-locals, Django's per-thread connections, SQLAlchemy's
thread-scoped sessions — which only that thread can see or safely undo:

- sync worker: the worker's own thread (or its ``--threads`` pool thread) runs both;
- WSGI on the async worker: the bridge (``gateway.wsgi.bridge``) runs them in a2wsgi's
  pool thread, via ``enter_app_thread``/``exit_app_thread``; the request's (layer, info)
  reaches that thread in a contextvar (a2wsgi copies the request's Context);
- ASGI: the event loop thread, in ``before_request``/``after_request``.

``IsolationLayer.after_request`` gathers the thread findings and its checkers' own, then
applies the policy of each finding's kind:

- ``log``: one warning line with the request's method, path and id;
- ``repair``: the checker is asked to undo what it found (``checker.repair(finding)``) —
  for thread findings right away, in the thread that owns the state; what cannot be
  undone safely is reported as not repaired;
- ``recycle``: the worker finishes the response and asks the master for a graceful
  replacement (``WorkerControl.request_recycle("leak")``);
- ``fail``: the worker turns the (buffered) response into a 500 naming the leak.

Defaults are per kind (``--isolation-default-policy auto``, the default): each checker
declares in ``default_policies`` the kinds whose repair is known to be safe (``repair``),
and in ``recycle_unrepaired`` the kinds that leave the worker unusable when the repair
fails or raises: those recycle the worker gracefully. Every other kind is logged.
``strict`` repairs every kind and recycles the worker whenever a repair is not possible.
An explicit ``--isolation-default-policy`` applies one policy to every kind, and
``--isolation-policy KIND=POLICY`` overrides any of these for one kind. docs/isolation.md
has the table and the reasons.

Only the hooks a checker overrides are called, so an idle hook costs nothing. Findings are
counted per kind in the worker and reported to the master for the status page. A checker
that raises is logged and disabled, never allowed to break requests.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .probe import Probe

logger = logging.getLogger("gateway.isolation")
_pid = os.getpid

POLICIES = ("log", "repair", "recycle", "fail")
#: ``--isolation-default-policy`` values: each kind's own default, ``strict`` (repair every
#: kind, recycle the worker when that is not possible), or one policy for every kind
DEFAULT_POLICIES = ("auto", "strict", *POLICIES)
_HOOKS = ("before_request", "after_request", "thread_enter", "thread_exit")
#: ``repaired`` of a finding whose repair raised
_RAISED: Any = object()
#: what after_request returns when nothing is to fail (shared: never mutated)
_NOTHING: list[Finding] = []


@dataclass(frozen=True)
class Finding:
    """Something a request left behind. ``kind`` selects the policy (e.g. "global-rebound").
    ``details`` keys starting with ``_`` are for the checker's own ``repair``."""

    kind: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    checker: str = ""


class RequestInfo:
    """What checkers know about the request being checked: ``method``, ``path``,
    ``request_id``, ``worker`` ("sync" | "async"), ``interface`` ("wsgi" | "asgi") and
    ``extra``, a dict for the checkers' own per-request data.

    Made for every request, so it is kept lean: the request id can be given as a
    function, called only when ``request_id`` is read (a log line); without one (``None``:
    no X-Request-Id header) it is made from the worker's pid and ``seq``."""

    __slots__ = ("_rid", "extra", "found", "interface", "method", "path", "seq", "worker")

    def __init__(
        self,
        method: str,
        path: str,
        request_id: str | Callable[[], str] | None,
        worker: str,
        interface: str,
        seq: int = 0,
    ) -> None:
        self.method = method
        self.path = path
        self._rid = request_id
        self.worker = worker
        self.interface = interface
        self.seq = seq
        #: (checker, finding, repaired) of the findings the thread hooks made
        self.found: list[tuple[Checker, Finding, Any]] | None = None

    extra: dict[str, Any]  # made when first used (most requests never need it)

    def __getattr__(self, name: str) -> Any:
        if name == "extra":
            self.extra = {}
            return self.extra
        raise AttributeError(name)

    @property
    def request_id(self) -> str:
        rid = self._rid
        if rid is None or rid == "":
            return f"{_pid()}-{self.seq}"
        return rid if isinstance(rid, str) else rid()

    def __repr__(self) -> str:
        where = f"{self.worker}, {self.interface}"
        return f"RequestInfo({self.method} {self.path}, request {self.request_id}, {where})"


class Checker:
    """Base class of checkers; override what you need. ``kinds`` lists the finding kinds it
    reports (documentation and policy validation)."""

    name = "checker"
    kinds: tuple[str, ...] = ()
    #: kind -> policy under ``--isolation-default-policy auto`` (unlisted kinds: log)
    default_policies: dict[str, str] = {}
    #: kinds whose finding leaves the worker unusable when not repaired: recycle then
    recycle_unrepaired: frozenset[str] = frozenset()
    #: set to False in ``after_load`` when there is nothing to watch (e.g. the library the
    #: checker is about is not used): the layer then drops the checker
    active = True
    #: False when ``thread_exit`` never reads its ``info`` until it has something to
    #: report: the sync worker then makes the RequestInfo only when a finding needs it
    uses_info = True
    #: hooks this checker turned off in ``after_load`` because the app does not need them
    #: (Django's ``thread_enter`` with ``DEBUG`` off): the layer does not call them
    hooks_off: frozenset[str] = frozenset()

    def after_load(self, app: Any) -> list[Finding]:
        return []

    def before_request(self, info: RequestInfo) -> None:
        return None

    def after_request(self, info: RequestInfo) -> list[Finding]:
        return []

    def thread_enter(self, info: RequestInfo) -> None:
        """In the thread about to run the app for this request."""
        return None

    def thread_exit(self, info: RequestInfo) -> list[Finding]:
        """In the thread that ran the app, after its response was closed; ``repair`` of
        these findings runs in this thread too."""
        return []

    def repair(self, finding: Finding) -> bool:
        """Undo what ``finding`` reports; True when it was undone."""
        return False


_registered: list[Callable[[], Checker]] = []
_current: contextvars.ContextVar[tuple[IsolationLayer, RequestInfo] | None] = contextvars.ContextVar(
    "gateway_isolation_current", default=None
)


def register_checker(factory: Callable[[], Checker]) -> Callable[[], Checker]:
    """Register a checker factory from Python code (also usable as a decorator)."""
    _registered.append(factory)
    return factory


def registered_checkers() -> list[Callable[[], Checker]]:
    return list(_registered)


def current_request() -> RequestInfo | None:
    """The request being served in this context (async worker: the request's task and the
    threads it hands work to with a copied Context); None on the sync worker, whose thread
    hooks run in the request's own thread."""
    cur = _current.get()
    return cur[1] if cur is not None else None


def current_layer() -> tuple[IsolationLayer, RequestInfo] | None:
    return _current.get()


def enter_app_thread() -> tuple[IsolationLayer, RequestInfo] | None:
    """Called by the WSGI bridge in its pool thread before the app runs; pass the result
    to ``exit_app_thread`` once the response is closed."""
    cur = _current.get()
    if cur is not None and cur[0]._threaded:
        cur[0].thread_enter(cur[1])
        return cur
    return None


def exit_app_thread(token: tuple[IsolationLayer, RequestInfo] | None) -> None:
    if token is not None:
        token[0].thread_exit(token[1])


def _overrides(checker: Checker, hook: str) -> bool:
    return hook not in checker.hooks_off and getattr(type(checker), hook) is not getattr(Checker, hook)


class IsolationLayer:
    """Runs the checkers around each request and applies the policies."""

    _before_request: list[Checker]
    _after_request: list[Checker]
    _thread_enter: list[Checker]
    _thread_exit: list[Checker]

    def __init__(
        self,
        checkers: Iterable[Checker],
        policies: dict[str, str] | None = None,
        default_policy: str = "auto",
        on_recycle: Callable[[str], None] | None = None,
        on_finding: Callable[[str], None] | None = None,
    ) -> None:
        self.checkers = list(checkers)
        self.policies = dict(policies or {})
        self.default_policy = default_policy
        self._kind_defaults: dict[str, str] = {}
        self._recycle_unrepaired: set[str] = set()
        self.on_recycle = on_recycle
        self.on_finding = on_finding
        self.counts: Counter[str] = Counter()
        self._fails = "fail" in self.policies.values() or default_policy == "fail"
        self._index()

    def _index(self) -> None:
        """Per hook, the checkers that override it (lists are replaced, never mutated, so
        a thread iterating the old one is unaffected)."""
        for hook in _HOOKS:
            setattr(self, "_" + hook, [c for c in self.checkers if _overrides(c, hook)])
        self._threaded = bool(self._thread_enter or self._thread_exit)
        #: whether ``before_request`` does anything for a request whose app runs on the
        #: worker's own thread (the sync worker skips the call otherwise)
        self.needs_before = bool(self._before_request or self._thread_enter)
        #: only thread_exit hooks that read no RequestInfo: see ``after_sync``
        self.light = not (self.needs_before or self._after_request) and not any(
            c.uses_info for c in self._thread_exit
        )
        self.enabled = bool(self.checkers)
        #: A "fail" policy needs the response held back until the checks have run.
        self.buffering = self.enabled and self._fails
        #: the sole checker's lock-free probe (the globals checker's:
        #: gateway/isolation/probe.py) when the layer is light and holds no response back:
        #: the sync worker then reads only this before a request, asks the probe after
        #: it, and calls ``after_sync`` only when the probe saw a change
        probe = getattr(self._thread_exit[0], "probe", None) if len(self._thread_exit) == 1 else None
        usable = self.light and not self.buffering and isinstance(probe, Probe)
        self.probe: Probe | None = probe if usable else None
        for checker in self.checkers:
            self._kind_defaults.update(checker.default_policies)
            self._recycle_unrepaired.update(checker.recycle_unrepaired)

    #: the class describing a request, for callers that hold only the layer (no import)
    RequestInfo = RequestInfo

    def policy_for(self, kind: str) -> str:
        """An explicit ``--isolation-policy``, else the default policy, which under ``auto``
        is the kind's own default (``log`` for kinds without one)."""
        policy = self.policies.get(kind)
        if policy is not None:
            return policy
        if self.default_policy == "strict":
            return "repair"
        if self.default_policy != "auto":
            return self.default_policy
        return self._kind_defaults.get(kind, "log")

    def _recycles_unrepaired(self, kind: str) -> bool:
        """Whether a finding of ``kind`` left unrepaired recycles the worker."""
        if self.default_policy == "strict" and kind not in self.policies:
            return True
        return kind in self._recycle_unrepaired

    def effective_policies(self) -> dict[str, str]:
        """Every kind the checkers report, with the policy it gets (for ``check``)."""
        kinds = {kind: None for checker in self.checkers for kind in checker.kinds}
        kinds.update(dict.fromkeys(self.policies))
        return {kind: self.policy_for(kind) for kind in kinds}

    def _disable(self, checker: Checker, hook: str) -> None:
        """A checker raised: logged with its traceback, counted (kind ``checker-error``),
        and dropped; the response is never affected."""
        logger.exception("isolation checker %s failed in %s; disabling it", checker.name, hook)
        self.checkers = [c for c in self.checkers if c is not checker]
        self._index()
        self._count("checker-error")

    def _repair(self, checker: Checker, finding: Finding) -> Any:
        """The checker's repair: True when undone, False when not, ``_RAISED`` when it
        raised (the state is then unknown: the caller recycles the worker)."""
        try:
            return bool(checker.repair(finding))
        except Exception:
            self._disable(checker, "repair")
            return _RAISED

    def _guard(self, checker: Checker, hook: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception:
            self._disable(checker, hook)
            return None

    def after_load(self, app: Any) -> None:
        for checker in list(self.checkers):
            for finding in self._guard(checker, "after_load", lambda c=checker: c.after_load(app)) or ():
                logger.warning("isolation: %s [%s]", finding.message, finding.kind)
                self._count(finding.kind)
        self.checkers = [c for c in self.checkers if c.active]
        self._index()

    def before_request(self, info: RequestInfo) -> None:
        if self._threaded:
            if info.worker == "async":
                _current.set((self, info))  # the request task's own Context
            if self._thread_enter and (info.worker == "sync" or info.interface == "asgi"):
                self.thread_enter(info)  # the app runs on this thread
        for checker in self._before_request:
            try:
                checker.before_request(info)
            except Exception:
                self._disable(checker, "before_request")

    def thread_enter(self, info: RequestInfo) -> None:
        for checker in self._thread_enter:
            try:
                checker.thread_enter(info)
            except Exception:
                self._disable(checker, "thread_enter")

    def thread_exit(self, info: RequestInfo) -> None:
        for checker in self._thread_exit:
            try:
                findings = checker.thread_exit(info)
            except Exception:
                self._disable(checker, "thread_exit")
                continue
            if findings:
                self.report(checker, findings, info)

    def after_sync(self, describe: Callable[..., RequestInfo], *request: Any) -> list[Finding]:
        """``after_request`` for a request that ran on the worker's own thread, when the
        layer is ``light``: the checks run without a RequestInfo, which
        ``describe(*request)`` makes only when a finding needs one (its policy, its log
        line)."""
        info = None
        for checker in self._thread_exit:
            try:
                found = checker.thread_exit(None)  # type: ignore[arg-type]
            except Exception:
                self._disable(checker, "thread_exit")
                continue
            if found:
                if info is None:
                    info = describe(*request)
                self.report(checker, found, info)
        return _NOTHING if info is None else self.after_request(info, checked=True)

    def report(self, checker: Checker, findings: list[Finding], info: RequestInfo) -> None:
        """Findings made in the thread that owns the state (thread hooks, or a checker's
        own callback such as a Django signal): ``repair`` runs now, in this thread; logging,
        counting and the other policies follow in ``after_request``."""
        out = info.found
        if out is None:
            out = info.found = []
        for finding in findings:
            repaired = None
            if self.policy_for(finding.kind) == "repair":
                repaired = self._repair(checker, finding)
            out.append((checker, finding, repaired))

    def after_request(self, info: RequestInfo, checked: bool = False) -> list[Finding]:
        """Run the checks and apply the policies; returns the findings whose policy is
        ``fail`` (the caller turns the response into a 500). ``checked``: the thread hooks
        ran already (``after_sync``)."""
        if self._thread_exit and not checked and (info.worker == "sync" or info.interface == "asgi"):
            self.thread_exit(info)  # the app ran on this thread
        results = info.found
        info.found = None
        for checker in self._after_request:
            try:
                findings = checker.after_request(info)
            except Exception:
                self._disable(checker, "after_request")
                continue
            if findings:
                results = [*(results or ()), *((checker, f, None) for f in findings)]
        if not results:
            return _NOTHING
        failing: list[Finding] = []
        recycle = False
        for checker, finding, repaired in results:
            policy = self.policy_for(finding.kind)
            self._count(finding.kind)
            if policy == "repair" and repaired is None:
                repaired = self._repair(checker, finding)
            if policy == "repair" and repaired is _RAISED:
                repaired = False
                policy = "recycle"  # the repair raised: the state is unknown, replace the worker
            elif policy == "repair" and not repaired and self._recycles_unrepaired(finding.kind):
                policy = "recycle"  # the worker is unusable as it is: replace it gracefully
            if policy == "recycle":
                recycle = True
            elif policy == "fail":
                failing.append(finding)
            logger.warning(
                "isolation: %s [%s] after %s %s (request %s)%s",
                finding.message,
                finding.kind,
                info.method,
                info.path,
                info.request_id,
                {
                    "repair": " - repaired" if repaired else " - could not repair",
                    "recycle": " - could not repair; recycling" if repaired is False else " - recycling",
                }.get(policy, ""),
            )
        if recycle and self.on_recycle is not None:
            self.on_recycle("leak")
        return failing

    def _count(self, kind: str) -> None:
        self.counts[kind] += 1
        if self.on_finding is not None:
            self.on_finding(kind)


def describe_failure(findings: list[Finding]) -> str:
    """The body of the 500 a ``fail`` policy answers with."""
    lines = ["The request left state behind that would leak into later requests:", ""]
    lines += [f"- [{f.kind}] {f.message}" for f in findings]
    lines += ["", "(fcgi-gateway isolation layer, policy 'fail'; development only)"]
    return "\n".join(lines)
