"""Building the worker's IsolationLayer from the Config: which checkers, which policies.

``--isolation-checkers`` takes ``auto`` (the default: the globals checker, plus the
Django/SQLAlchemy checkers when the app imported those libraries), ``all``, ``none`` or a
comma list of names: globals, threadlocals, tasks, django, sqlalchemy, memory. User
checkers come from ``--isolation-checker module:callable`` (repeatable) and from
``register_checker``. Policies: ``--isolation-policy KIND=POLICY`` (repeatable) over
``--isolation-default-policy``.

``any_checker`` tells, without importing the layer (gateway.isolation.base), whether
``build_layer`` would have a checker to run: when it would not, the worker does without a
layer (the fresh Context of every request is the worker's own doing).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..loading import import_from_string

if TYPE_CHECKING:
    from .base import Checker, IsolationLayer

#: name -> (module, class); imported only when used
BUILTIN: dict[str, tuple[str, str]] = {
    "globals": ("gateway.isolation.globals", "GlobalsChecker"),
    "threadlocals": ("gateway.isolation.threadlocals", "ThreadLocalChecker"),
    "tasks": ("gateway.isolation.tasks", "AsyncTaskChecker"),
    "django": ("gateway.isolation.django", "DjangoChecker"),
    "sqlalchemy": ("gateway.isolation.sqlalchemy", "SQLAlchemyChecker"),
    "memory": ("gateway.isolation.memory", "MemoryChecker"),
}
#: ``auto``: cheap and always meaningful, plus the framework checkers when in use
#: (threadlocals is opt-in: it resets state, which an app may not expect)
AUTO: tuple[str, ...] = ("globals",)
#: module that must be imported (by the app) -> checker
AUTO_IF_IMPORTED: dict[str, str] = {"django": "django", "sqlalchemy": "sqlalchemy"}


def parse_policies(items: tuple[str, ...]) -> dict[str, str]:
    if not items:
        return {}
    from .base import POLICIES

    policies = {}
    for item in items:
        kind, sep, policy = item.partition("=")
        if not sep or not kind or policy not in POLICIES:
            raise ConfigError(
                f"--isolation-policy takes KIND=POLICY with POLICY one of {', '.join(POLICIES)}: {item!r}"
            )
        policies[kind.strip()] = policy
    return policies


def checker_names(spec: str) -> list[str]:
    spec = spec.strip()
    if spec == "none":
        return []
    if spec == "all":
        return list(BUILTIN)
    if spec == "auto":
        names = list(AUTO)
        names += [name for module, name in AUTO_IF_IMPORTED.items() if module in sys.modules]
        return names
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in BUILTIN]
    if unknown:
        raise ConfigError(f"unknown isolation checker(s) {', '.join(unknown)}; known: {', '.join(BUILTIN)}")
    return names


def any_checker(spec: str, user_checkers: tuple[str, ...]) -> bool:
    """Whether ``build_layer`` would make a checker (called once the app is imported: ``auto``
    looks at sys.modules). A checker registered by the app imported the layer already."""
    if checker_names(spec) or user_checkers:
        return True
    base = sys.modules.get("gateway.isolation.base")
    return base is not None and bool(base.registered_checkers())


def _instantiate(factory: Callable[[], Any], what: str) -> Checker:
    from .base import Checker

    try:
        checker = factory()
    except Exception as exc:
        raise ConfigError(f"{what} could not make an isolation checker: {exc!r}") from exc
    if not isinstance(checker, Checker):
        raise ConfigError(f"{what} did not return a gateway.isolation.Checker (got {type(checker).__name__})")
    return checker


def build_layer(
    spec: str,
    user_checkers: tuple[str, ...],
    policies: dict[str, str],
    default_policy: str,
    *,
    worker: str,
    on_recycle: Callable[[str], None] | None = None,
    on_finding: Callable[[str], None] | None = None,
) -> IsolationLayer:
    """Called in the worker after the app is imported (``auto`` looks at sys.modules)."""
    from .base import IsolationLayer, registered_checkers

    checkers: list[Checker] = []
    for name in checker_names(spec):
        if name == "tasks" and worker != "async":
            continue  # no event loop in the sync worker
        module, cls = BUILTIN[name]
        checkers.append(_instantiate(getattr(importlib.import_module(module), cls), f"checker {name}"))
    for factory in registered_checkers():
        checkers.append(_instantiate(factory, repr(factory)))
    for target in user_checkers:
        checkers.append(_instantiate(import_from_string(target), target))
    return IsolationLayer(checkers, policies, default_policy, on_recycle=on_recycle, on_finding=on_finding)
