"""Lifecycle hooks (``--hooks MODULE``): loading the user's hooks module, checking it, and
calling its functions at the points of the server's life gunicorn users know.

This module owns the hook names and what each receives (``HOOKS``), the argument objects
(``Server``, a read-only view of the master; ``WorkerInfo``, a snapshot of one worker),
the checks made once at start (``load_hooks``) and the calls (``Hooks.call``,
``Hooks.boot``). The call sites are one line each, in gateway/server.py (``on_starting``,
``post_worker_init``, ``on_exit``) and gateway/arbiter.py (the others). Without
``--hooks`` this module is never imported (the arbiter's ``NoHooks`` does nothing), and
nothing runs per request either way.

==================  =======  ===================  =========================================
hook                runs in  arguments            when
==================  =======  ===================  =========================================
on_starting         master   (server)             before binding and forking (and before
                                                  ``--preload`` loads the app)
post_fork           worker   (server, worker)     right after the fork, before the app is
                                                  loaded (unless ``--preload``)
post_worker_init    worker   (worker)             the app loaded, before the worker accepts
when_ready          master   (server)             once: every worker of the first
                                                  generation is ready
on_reload           master   (server)             SIGHUP (or ``--reload``) accepted,
                                                  ``--config`` read again: the generation
                                                  is the new one, its workers forked next
worker_exit         worker   (server, worker)     the worker is about to exit (stop,
                                                  recycle, retirement, boot failure)
child_exit          master   (server, worker)     a worker was reaped (``worker.exit_code``,
                                                  ``worker.reason``)
on_exit             master   (server)             the master is about to exit
==================  =======  ===================  =========================================

Failures, decided: a module that cannot be imported, a hook that is not callable or does
not take its arguments is a ConfigError at start (exit 2); a public function whose name is
close to a hook's (``on_start``, ``postfork``) or is a gunicorn hook this server does not
call (``pre_request``) is logged as a warning. A hook that raises is logged with its
traceback (logger ``gateway.error``) and the server goes on, except the two that prepare
serving: ``on_starting`` raising stops the start (GatewayError, exit 1), and
``post_worker_init`` raising is that worker's boot failure (AppLoadError: exit 4 at the
first start, an abandoned reload later, as when the app cannot be imported).

The module is imported once, in the master, at start: a reload does not import it again
(gateway/reload_config.py classifies ``hooks`` as needing a restart).
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

from .errors import AppLoadError, ConfigError, GatewayError
from .loading import add_app_dir, import_module

if TYPE_CHECKING:
    from .config import Config

logger = logging.getLogger("gateway.error")

#: hook name -> the arguments it is called with, in order
HOOKS: dict[str, tuple[str, ...]] = {
    "on_starting": ("server",),
    "when_ready": ("server",),
    "post_fork": ("server", "worker"),
    "post_worker_init": ("worker",),
    "worker_exit": ("server", "worker"),
    "child_exit": ("server", "worker"),
    "on_reload": ("server",),
    "on_exit": ("server",),
}

#: gunicorn's other server hooks: a module written for gunicorn may define them
GUNICORN_ONLY = frozenset(
    {"pre_fork", "pre_exec", "pre_request", "post_request", "worker_int", "worker_abort", "nworkers_changed"}
)

#: the name a hooks module given as a file path is imported under
FILE_MODULE = "fcgi_gateway_hooks"

#: ``WorkerInfo.reason`` of ``child_exit``, in the order they are told apart
EXIT_REASONS = ("stop", "boot-error", "recycle", "retired", "crash")


class Master(Protocol):
    """What the hooks read from the master (the arbiter; a stand-in for ``on_starting``)."""

    pid: int
    config: Config
    generation: int
    num_workers: int


class Server:
    """The ``server`` argument: a read-only view of the master, read when used. In a worker
    (``post_fork``, ``worker_exit``) it shows the master as it was when that worker was
    forked."""

    __slots__ = ("_master",)

    def __init__(self, master: Master) -> None:
        self._master = master

    @property
    def pid(self) -> int:
        """The master's pid (in a worker too)."""
        return self._master.pid

    @property
    def config(self) -> Config:
        """The running Config (a reload with ``--config`` may have changed it)."""
        return self._master.config

    @property
    def generation(self) -> int:
        """1 at start, one more at each reload."""
        return self._master.generation

    @property
    def workers(self) -> int:
        """How many workers the master wants now (``--workers``, changed by SIGTTIN/SIGTTOU,
        and by the process manager with ``--pm dynamic`` or ``ondemand``)."""
        return self._master.num_workers

    def __repr__(self) -> str:
        return f"<Server pid={self.pid} generation={self.generation} workers={self.workers}>"


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """The ``worker`` argument: one worker process."""

    pid: int
    generation: int
    #: its status-page scoreboard slot (-1 without a status page)
    slot: int
    #: ``child_exit``: its exit status (negative: killed by that signal); ``worker_exit``:
    #: the status it is about to exit with; None for the other hooks
    exit_code: int | None = None
    #: ``child_exit`` only: one of ``EXIT_REASONS``
    reason: str | None = None


def exit_reason(master: Any, worker: Any, exit_code: int) -> str:
    """Why a reaped worker ended: ``stop`` (the master is stopping), ``boot-error`` (it could
    not load the app), ``recycle`` (at a limit: --max-requests, --max-memory...), ``retired``
    (an old generation after a reload, a worker fewer, a silent heartbeat), else ``crash``."""
    from .arbiter import WORKER_BOOT_ERROR

    if master.stopping:
        return "stop"
    if exit_code == WORKER_BOOT_ERROR:
        return "boot-error"
    if worker.recycle is not None or worker.replace_soon is not None:
        return "recycle"
    return "retired" if worker.retiring else "crash"


class Hooks:
    """The hooks a module defines (``load_hooks``), and the calls."""

    def __init__(self, spec: str, functions: dict[str, Callable[..., Any]]) -> None:
        self.spec = spec
        self.functions = functions

    def _arguments(self, name: str, master: Master, worker: Any, exit_code: int | None) -> list[Any]:
        reason = None
        if name == "child_exit" and exit_code is not None:
            reason = exit_reason(master, worker, exit_code)
        return [
            Server(master)
            if param == "server"
            else WorkerInfo(worker.pid, worker.generation, worker.slot, exit_code, reason)
            for param in HOOKS[name]
        ]

    def call(self, name: str, master: Master, worker: Any = None, exit_code: int | None = None) -> None:
        """Call hook ``name`` if the module has it; one that raises is logged, and that is all.
        ``worker``: the arbiter's record of the worker (pid, generation, slot)."""
        function = self.functions.get(name)
        if function is None:
            return
        try:
            function(*self._arguments(name, master, worker, exit_code))
        except Exception:
            logger.exception("--hooks %s: %s raised; going on", self.spec, name)

    def boot(self, name: str, master: Master, worker: Any = None) -> None:
        """``on_starting`` or ``post_worker_init``: one that raises stops this start
        (GatewayError) or this worker's boot (AppLoadError), its traceback logged."""
        function = self.functions.get(name)
        if function is None:
            return
        try:
            function(*self._arguments(name, master, worker, None))
        except Exception as exc:
            logger.exception("--hooks %s: %s raised", self.spec, name)
            error = AppLoadError if name == "post_worker_init" else GatewayError
            raise error(f"--hooks {self.spec}: {name} raised {type(exc).__name__}: {exc}") from exc

    def starting(self, config: Config) -> None:
        """``on_starting``, before the arbiter exists: the server is this process."""
        stand_in = SimpleNamespace(pid=os.getpid(), config=config, generation=1, num_workers=config.workers)
        self.boot("on_starting", stand_in)

    def describe(self) -> str:
        """For ``fcgi-gateway check``: the module and the hooks it defines."""
        return f"{self.spec} ({', '.join(self.functions) or 'no hook defined'})"


def _where(exc: BaseException | None) -> str:
    """`` (file:line)`` of the innermost frame of an exception raised by user code."""
    frames = traceback.extract_tb(exc.__traceback__) if exc is not None else []
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def import_hooks(spec: str, app_dir: str = ".") -> ModuleType:
    """The module ``spec`` names: a path to a ``.py`` file, or a module importable from
    ``sys.path`` with ``--app-dir`` first (as the app is). ConfigError when it cannot be
    imported."""
    if spec.endswith(".py") or os.sep in spec:
        path = os.path.abspath(spec)
        module_spec = importlib.util.spec_from_file_location(FILE_MODULE, path)
        if not os.path.isfile(path) or module_spec is None or module_spec.loader is None:
            raise ConfigError(f"--hooks {spec}: no such file ({path})")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[FILE_MODULE] = module  # as an import would (dataclasses look it up)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[FILE_MODULE]
            raise ConfigError(
                f"--hooks {spec}: error while importing {path}: {type(exc).__name__}: {exc}{_where(exc)}"
            ) from exc
        return module
    add_app_dir(app_dir)
    try:
        imported: ModuleType = import_module(spec)
    except AppLoadError as exc:
        raise ConfigError(f"--hooks: {exc}{_where(exc.__cause__)}") from exc.__cause__
    return imported


def _check_arguments(spec: str, name: str, function: Callable[..., Any]) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # a builtin without a signature: it will tell when called
    params = HOOKS[name]
    try:
        signature.bind(*params)
    except TypeError:
        raise ConfigError(
            f"--hooks {spec}: {name} must take ({', '.join(params)}), not {name}{signature}"
        ) from None


def doubtful_names(module: ModuleType) -> list[str]:
    """Warnings for the module's own public functions that look like hooks but are not:
    a gunicorn hook this server does not call, or a name close to a hook's."""
    import difflib

    warnings = []
    for attr, value in vars(module).items():
        if attr in HOOKS or attr.startswith("_") or not callable(value):
            continue
        if getattr(value, "__module__", None) != module.__name__:
            continue  # imported from elsewhere
        if attr in GUNICORN_ONLY:
            warnings.append(f"{attr} is a gunicorn hook that fcgi-gateway does not call")
        elif close := difflib.get_close_matches(attr.lower(), HOOKS, n=1, cutoff=0.8):
            warnings.append(f"{attr} is not a hook name (did you mean {close[0]}?); it is never called")
    return warnings


def load_hooks(spec: str, app_dir: str = ".") -> Hooks:
    """Import the hooks module and check it (ConfigError: exit 2); warnings are logged."""
    module = import_hooks(spec, app_dir)
    functions: dict[str, Callable[..., Any]] = {}
    for name in HOOKS:
        function = getattr(module, name, None)
        if function is None:
            continue
        if not callable(function):
            raise ConfigError(f"--hooks {spec}: {name} is not callable (it is a {type(function).__name__})")
        _check_arguments(spec, name, function)
        functions[name] = function
    for warning in doubtful_names(module):
        logger.warning("--hooks %s: %s", spec, warning)
    if not functions:
        logger.warning("--hooks %s defines none of the hooks (%s)", spec, ", ".join(HOOKS))
    return Hooks(spec, functions)


__all__ = [
    "EXIT_REASONS",
    "HOOKS",
    "Hooks",
    "Server",
    "WorkerInfo",
    "exit_reason",
    "import_hooks",
    "load_hooks",
]
