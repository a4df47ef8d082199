"""The speedups switch: which optional native modules the gateway uses, decided in one place.

Native code is allowed only as a pure bytes-to-tuples scanner inside ``gateway/protocol/``,
with the Python code it stands in for as the reference and the fallback. ``NATIVE`` lists
every such module. ``FCGI_GATEWAY_NO_SPEEDUPS=1`` (any value but empty, ``0``, ``false``,
``no`` or ``off``) turns them all off: the gateway then runs pure Python and never imports
them. The variable is read once, when this module is first imported (in the master,
before it forks, so every worker of a run makes the same choice); it is not a serve
option, so a config file cannot set it.

The same switch covers the modules compiled with mypyc (``COMPILED``): built only on
request (``FCGI_GATEWAY_MYPYC=1`` at install time, see setup.py), from the very ``.py``
files, which stay the reference and the fallback. A compiled module is an extension
module next to its ``.py`` (``connection.cpython-311-x86_64-linux-gnu.so``), which a plain
import prefers; ``install_import_switch`` (called by ``gateway/__init__.py``, before any
of them is imported) puts a finder first on ``sys.meta_path`` that imports the ``.py``
instead when speedups are off, or when a ``.py`` is not the one it was compiled from (an
edited source with a stale build: the source wins; setup.py records the hash of each
source in ``gateway/_compiled_sources.json``).

Users of a native module get it through ``load_native(name)``: the module, or None when
speedups are off, when it was not built (no C compiler at install time: setup.py builds it
with ``optional=True``), or when it fails to import; the reason is kept. ``report()`` and
``describe()`` say which are loaded and why not, for ``fcgi-gateway check`` and the
master's start-up log.

This module is a leaf: it imports nothing from the gateway, so the sans-IO codec can use
it (tests/protocol/test_sans_io.py allows this one import and checks that it stays so).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from types import ModuleType

#: The switch (an environment variable: it must reach every process, workers included).
ENV_VAR = "FCGI_GATEWAY_NO_SPEEDUPS"

#: Every native speedup: module -> the pure-Python code that is its reference and fallback.
NATIVE: dict[str, str] = {
    "gateway.protocol._pairs": "gateway.protocol.records.py_split_records and py_decode_pairs",
}

#: The modules compiled with mypyc by ``FCGI_GATEWAY_MYPYC=1 pip install .`` (setup.py reads
#: this list): the sync worker's per-request path. Each is its own reference and fallback.
COMPILED: tuple[str, ...] = (
    "gateway.isolation.probe",
    "gateway.protocol.connection",
    "gateway.protocol.constants",
    "gateway.protocol.errors",
    "gateway.protocol.events",
    "gateway.protocol.records",
    "gateway.protocol.state",
    "gateway.response",
    "gateway.wsgi.environ",
    "gateway.wsgi.handler",
    "gateway.wsgi.streams",
    "gateway.workers.base",
    "gateway.workers.sync_conn",
    "gateway.workers.sync_worker",
    "gateway.workers.sync_threads",
)

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


_ROOT = os.path.dirname(os.path.abspath(__file__))
_COMPILED_SET = frozenset(COMPILED)
_UNDECIDED = "?"
#: Why the ``COMPILED`` modules are imported from their ``.py`` although built (all of them:
#: compiled modules call each other directly, so they run compiled together or not at
#: all), or None: compiled when built. Decided at the first import of one of them.
_source_reason: str | None = _UNDECIDED


def _files(name: str) -> tuple[str, str | None]:
    """The ``.py`` of a ``COMPILED`` module and its compiled module (None: not built)."""
    base = os.path.join(_ROOT, *name.split(".")[1:])
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if os.path.exists(base + suffix):
            return base + ".py", base + suffix
    return base + ".py", None


def _decide() -> str | None:
    files = [_files(name) for name in COMPILED]
    built = [b for _, b in files if b is not None]
    if not built:
        return None  # an ordinary install: the usual import finds the .py
    if not ENABLED:
        return DISABLED_REASON
    try:  # written by setup.py with the build: the sources it was made from
        with open(os.path.join(_ROOT, "_compiled_sources.json"), "rb") as f:
            hashes: dict[str, str] = json.load(f)
    except (OSError, ValueError):
        hashes = {}
    if len(built) < len(files) or len(hashes) != len(files):
        return "partly built"
    for source, _ in files:
        key = os.path.relpath(source, os.path.dirname(_ROOT)).replace(os.sep, "/")
        with open(source, "rb") as f:
            if hashes.get(key) != hashlib.sha256(f.read()).hexdigest():
                return f"{os.path.basename(source)} changed since the build"
    return None


class _SourceSwitch:
    """The meta path finder of ``install_import_switch``: the ``.py`` spec for a module of
    ``COMPILED`` when they must not run compiled (``_source_reason``), else None (the usual
    finders then pick the compiled module, or the ``.py`` when none is built)."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> object:
        global _source_reason
        if name not in _COMPILED_SET:
            return None
        if _source_reason is _UNDECIDED:
            _source_reason = _decide()
        if _source_reason is None:
            return None
        return importlib.util.spec_from_file_location(name, _files(name)[0])


def install_import_switch() -> None:
    """Put ``_SourceSwitch`` first on ``sys.meta_path`` (once)."""
    if not any(f is _SourceSwitch for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceSwitch)  # type: ignore[arg-type]


def compiled_state() -> tuple[int, str | None]:
    """How many ``COMPILED`` modules are built, and why they run from source (None: they
    run compiled, or none is built)."""
    global _source_reason
    if _source_reason is _UNDECIDED:
        _source_reason = _decide()
    return sum(_files(name)[1] is not None for name in COMPILED), _source_reason


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
    built, reason = compiled_state()
    if built and reason is None:
        loaded.append(f"{built} modules compiled with mypyc")
    elif built:
        missing.append(f"mypyc-compiled modules not used: {reason}")
    state = "off" if not loaded else "partly on" if missing else "on"
    return f"{state} ({'; '.join([*loaded, *missing])})"


__all__ = [
    "COMPILED",
    "ENABLED",
    "ENV_VAR",
    "NATIVE",
    "Speedup",
    "compiled_state",
    "describe",
    "install_import_switch",
    "load_native",
    "report",
    "switched_off",
]
