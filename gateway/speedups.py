"""The speedups switch: which optional native modules the gateway uses, decided in one place.

Native code is allowed only as a pure bytes-to-tuples scanner inside ``gateway/protocol/``,
with the Python code it stands in for as the reference and the fallback. ``NATIVE`` lists
every such module. ``FCGI_GATEWAY_NO_SPEEDUPS=1`` (any value but empty, ``0``, ``false``,
``no`` or ``off``) turns them all off: the gateway then runs pure Python and never imports
them. The variable is read once, when this module is first imported (in the master,
before it forks, so every worker of a run makes the same choice); it is not a serve
option, so a config file cannot set it.

Users of a native module get it through ``load_native(name)``: the module, or None when
speedups are off, when it was not built (no C compiler at install time: setup.py builds it
with ``optional=True``), or when it fails to import; the reason is kept. ``report()`` and
``describe()`` say which are loaded and why not, for ``fcgi-gateway check`` and the
master's start-up log.

This module is a leaf: it imports nothing from the gateway, so the sans-IO codec can use
it (tests/protocol/test_sans_io.py allows this one import and checks that it stays so).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType

#: The switch (an environment variable: it must reach every process, workers included).
ENV_VAR = "FCGI_GATEWAY_NO_SPEEDUPS"

#: Every native speedup: module -> the pure-Python code that is its reference and fallback.
NATIVE: dict[str, str] = {
    "gateway.protocol._pairs": "gateway.protocol.records.py_split_records and py_decode_pairs",
}

_OFF_VALUES = frozenset({"", "0", "false", "no", "off", "n", "f"})


def switched_off(value: str | None) -> bool:
    """Whether an ``FCGI_GATEWAY_NO_SPEEDUPS`` value turns speedups off. Unset, empty and
    the usual false words leave them on; any other value (a typo included) turns them off,
    the safe direction for a switch that exists to rule native code out."""
    return value is not None and value.strip().lower() not in _OFF_VALUES


#: False when ``FCGI_GATEWAY_NO_SPEEDUPS`` turned the speedups off (read once, at import).
ENABLED: bool = not switched_off(os.environ.get(ENV_VAR))

DISABLED_REASON = f"disabled by {ENV_VAR}"
NOT_BUILT = "not built"


@dataclass(frozen=True, slots=True)
class Speedup:
    """One native module: loaded or not, and why not (``reason`` is "loaded" when it is)."""

    module: str
    replaces: str
    loaded: bool
    reason: str


_outcomes: dict[str, tuple[ModuleType | None, str]] = {}


def load_native(name: str) -> ModuleType | None:
    """The native module ``name`` (one of ``NATIVE``), or None: switched off, not built, or
    its import failed (the reason is kept for ``report``). Imported at most once."""
    if name not in NATIVE:
        raise KeyError(f"{name} is not a registered native speedup (gateway.speedups.NATIVE)")
    if name not in _outcomes:
        if not ENABLED:
            _outcomes[name] = (None, DISABLED_REASON)
        else:
            try:
                _outcomes[name] = (importlib.import_module(name), "loaded")
            except ModuleNotFoundError as exc:
                if exc.name != name:  # a module it needs is missing: not "not built"
                    _outcomes[name] = (None, f"failed to load: {exc}")
                else:
                    _outcomes[name] = (None, NOT_BUILT)
            except ImportError as exc:  # built but unusable (ABI mismatch, missing symbol)
                _outcomes[name] = (None, f"failed to load: {exc}")
    return _outcomes[name][0]


def report() -> list[Speedup]:
    """Every native speedup and its state in this process (loading those not loaded yet,
    as their users would)."""
    out = []
    for name, replaces in NATIVE.items():
        module = load_native(name)
        out.append(Speedup(name, replaces, module is not None, _outcomes[name][1]))
    return out


def describe() -> str:
    """One line: "on (gateway.protocol._pairs)", "off (disabled by FCGI_GATEWAY_NO_SPEEDUPS)",
    "off (gateway.protocol._pairs not built)"; "partly on (...)" names both kinds."""
    if not ENABLED:
        return f"off ({DISABLED_REASON})"
    speedups = report()
    loaded = [s.module for s in speedups if s.loaded]
    missing = [f"{s.module} {s.reason}" for s in speedups if not s.loaded]
    state = "off" if not loaded else "partly on" if missing else "on"
    return f"{state} ({'; '.join([*loaded, *missing])})"


__all__ = ["ENABLED", "ENV_VAR", "NATIVE", "Speedup", "describe", "load_native", "report", "switched_off"]
