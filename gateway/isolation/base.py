"""The checker interface, findings, policies, and the layer that runs the checkers.

Strategy
--------
A ``Checker`` has three hooks: ``after_load(app)`` (once per worker, after the app is
loaded: take snapshots, install event listeners), ``before_request(info)`` and
``after_request(info)`` returning findings. ``IsolationLayer.after_request`` runs every
checker, then applies the policy of each finding's kind:

- ``log``: one warning line with the request's method, path and id;
- ``repair``: the checker is asked to undo what it found (``checker.repair(finding)``);
  what cannot be undone safely is reported as not repaired;
- ``recycle``: the worker finishes the response and asks the master for a graceful
  replacement (``WorkerControl.request_recycle("leak")``);
- ``fail``: the worker turns the (buffered) response into a 500 naming the leak.

Findings are counted per kind in the worker and reported to the master for the status
page. A checker that raises is logged and disabled, never allowed to break requests.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("gateway.isolation")

POLICIES = ("log", "repair", "recycle", "fail")


@dataclass(frozen=True)
class Finding:
    """Something a request left behind. ``kind`` selects the policy (e.g. "global-rebound")."""

    kind: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    checker: str = ""


@dataclass
class RequestInfo:
    """What checkers know about the request being checked."""

    method: str
    path: str
    request_id: str
    worker: str  # "sync" | "async"
    interface: str  # "wsgi" | "asgi"
    extra: dict[str, Any] = field(default_factory=dict)


class Checker:
    """Base class of checkers; override what you need. ``kinds`` lists the finding kinds it
    reports (documentation and policy validation)."""

    name = "checker"
    kinds: tuple[str, ...] = ()

    def after_load(self, app: Any) -> list[Finding]:
        return []

    def before_request(self, info: RequestInfo) -> None:
        return None

    def after_request(self, info: RequestInfo) -> list[Finding]:
        return []

    def repair(self, finding: Finding) -> bool:
        """Undo what ``finding`` reports; True when it was undone."""
        return False


_registered: list[Callable[[], Checker]] = []


def register_checker(factory: Callable[[], Checker]) -> Callable[[], Checker]:
    """Register a checker factory from Python code (also usable as a decorator)."""
    _registered.append(factory)
    return factory


def registered_checkers() -> list[Callable[[], Checker]]:
    return list(_registered)


class IsolationLayer:
    """Runs the checkers around each request and applies the policies."""

    def __init__(
        self,
        checkers: Iterable[Checker],
        policies: dict[str, str] | None = None,
        default_policy: str = "log",
        on_recycle: Callable[[str], None] | None = None,
        on_finding: Callable[[str], None] | None = None,
    ) -> None:
        self.checkers = list(checkers)
        self.policies = dict(policies or {})
        self.default_policy = default_policy
        self.on_recycle = on_recycle
        self.on_finding = on_finding
        self.counts: Counter[str] = Counter()
        self.enabled = bool(self.checkers)
        #: A "fail" policy needs the response held back until the checks have run.
        self.buffering = self.enabled and ("fail" in self.policies.values() or default_policy == "fail")

    def policy_for(self, kind: str) -> str:
        return self.policies.get(kind, self.default_policy)

    def _guard(self, checker: Checker, hook: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception:
            logger.exception("isolation checker %s failed in %s; disabling it", checker.name, hook)
            self.checkers.remove(checker)
            self.enabled = bool(self.checkers)
            return None

    def after_load(self, app: Any) -> None:
        for checker in list(self.checkers):
            for finding in self._guard(checker, "after_load", lambda c=checker: c.after_load(app)) or ():
                logger.warning("isolation: %s [%s]", finding.message, finding.kind)
                self._count(finding.kind)

    def before_request(self, info: RequestInfo) -> None:
        for checker in list(self.checkers):
            self._guard(checker, "before_request", lambda c=checker: c.before_request(info))

    def after_request(self, info: RequestInfo) -> list[Finding]:
        """Run the checks and apply the policies; returns the findings whose policy is
        ``fail`` (the caller turns the response into a 500)."""
        failing: list[Finding] = []
        recycle = False
        for checker in list(self.checkers):
            findings = self._guard(checker, "after_request", lambda c=checker: c.after_request(info)) or ()
            for finding in findings:
                policy = self.policy_for(finding.kind)
                self._count(finding.kind)
                repaired = False
                if policy == "repair":
                    repaired = bool(self._guard(checker, "repair", lambda c=checker, f=finding: c.repair(f)))
                elif policy == "recycle":
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
                        "recycle": " - recycling",
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
