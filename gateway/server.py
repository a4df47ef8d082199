"""Start-up orchestration for one serving process: bind, load the app, pick the worker, run.

``run(config)`` raises GatewayError subclasses on failure; the command line maps them to
exit statuses (gateway/exits.py). The master binds once and runs the arbiter; workers load the app after fork.

Memory: every page resident in the master when it forks counts in each worker's RSS, so
the master imports only what its workers will use. When the Config decides the worker
kind (``--worker``, or ``--interface``), only that worker's module is imported before
forking: the sync worker needs no asyncio (nor the ssl module it brings). When the kind
follows the app (``auto``), both are (``AUTO_KINDS``): importing asyncio after fork would
cost each async worker its own copy of asyncio's objects and of the pages of libcrypto and
uvloop its initialisation touches, while in the master it is paid once and shared (see
docs/benchmarks.md for the worker RSS). With ``--preload`` the master loads the app too.
The status pages, the scoreboard and the status server are imported only when configured,
the isolation layer only when a checker runs (``any_checker``), the lifecycle hooks
(gateway/hooks.py) only with ``--hooks``; with ``--user``/``--group``
the worker imports what it may still need before dropping privileges (the Python
installation may not be readable by that account).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from .arbiter import Arbiter, Worker
from .config import Config
from .errors import AppLoadError, ConfigError
from .isolation.setup import any_checker, build_layer, checker_names, parse_policies
from .loading import as_asgi3, load_app, resolve_interface
from .log import DEFAULT_ACCESS_FORMAT, AccessLog
from .releases import ReleaseDirs
from .sockets import cleanup_unix_sockets, create_sockets
from .upgrade import inherited_sockets, remove_pid_file, write_pid_file
from .workers.base import Limits, WorkerControl

if TYPE_CHECKING:
    from .hooks import Hooks
    from .scoreboard import Scoreboard, WorkerSlot
    from .status import StatusPages

logger = logging.getLogger("gateway.error")


def choose_worker(interface: str, requested: str) -> str:
    """``auto`` = sync for WSGI apps, async for ASGI apps."""
    if requested != "auto":
        if requested == "sync" and interface == "asgi":
            raise ConfigError("the sync worker serves WSGI applications only; use --worker async for ASGI")
        return requested
    return "sync" if interface == "wsgi" else "async"


def prepare_app(config: Config) -> tuple[Any, str, str]:
    """(app ready for the chosen worker, interface, worker kind)."""
    app = load_app(config.app, factory=config.factory, app_dir=config.app_dir)
    interface = resolve_interface(app, config.interface)
    kind = choose_worker(interface, config.worker)
    if interface == "asgi":
        app = as_asgi3(app)
    elif kind == "async":
        from .wsgi.bridge import bridge_wsgi

        app = bridge_wsgi(app, threads=config.bridge_threads, multiprocess=config.workers > 1)
    return app, interface, kind


#: worker kind -> (module, class); imported by ``worker_class`` only in the worker that runs it
WORKER_CLASSES: dict[str, tuple[str, str]] = {
    "async": ("gateway.workers.async_worker", "AsyncWorker"),
    "sync": ("gateway.workers.sync_worker", "SyncWorker"),
    "threads": ("gateway.workers.sync_threads", "ThreadedSyncWorker"),
}


def _class_key(config: Config, kind: str) -> str:
    return "threads" if kind == "sync" and config.threads > 1 else kind


def worker_class(config: Config, kind: str) -> type:
    """The worker class for ``kind``, importing its module now (first use in this process)."""
    module, name = WORKER_CLASSES[_class_key(config, kind)]
    cls: type = getattr(importlib.import_module(module), name)
    return cls


#: Worker modules imported by the master when the kind follows the app (see the docstring)
AUTO_KINDS: tuple[str, ...] = ("sync", "async")


def candidate_kinds(config: Config) -> tuple[str, ...]:
    """The worker kind when the Config decides it, else every kind the app may need."""
    if config.worker != "auto":
        return (config.worker,)
    known = {"asgi": "async", "wsgi": "sync"}.get(config.interface)
    return (known,) if known else AUTO_KINDS


def preimport_workers(config: Config, kinds: tuple[str, ...], *, bridge: bool = False) -> None:
    """Import what workers of these kinds import when they start: the worker module and, for
    the async worker, uvloop (unless --loop asyncio) and with ``bridge`` the WSGI bridge;
    also what the options make them import lazily: the slow log, the isolation layer."""
    for kind in kinds:
        worker_class(config, kind)
    if "async" in kinds:
        if config.loop != "asyncio":
            with contextlib.suppress(ImportError):
                importlib.import_module("uvloop")
        if bridge:
            importlib.import_module("gateway.wsgi.bridge")
        if config.slow_request_timeout_s:
            importlib.import_module("gateway.watchdog")
    if config.isolation_user_checkers or config.isolation_checkers.strip() not in ("auto", "none"):
        importlib.import_module("gateway.isolation.base")


def make_worker(
    config: Config,
    app: Any,
    kind: str,
    sockets: list[socket.socket],
    control: WorkerControl | None = None,
    pages: StatusPages | None = None,
    slot: WorkerSlot | None = None,
) -> Any:
    return worker_class(config, kind)(config, app, sockets, control, pages, slot)


def drop_privileges(user: str | None, group: str | None) -> None:
    """Run the worker as ``user``/``group`` (the master keeps what it needs to bind)."""
    if not user and not group:
        return
    import grp
    import pwd

    try:
        pw = pwd.getpwnam(user) if user else None
        gid = grp.getgrnam(group).gr_gid if group else (pw.pw_gid if pw else None)
    except KeyError as exc:
        raise ConfigError(f"unknown user or group: {exc}") from None
    if gid is not None:
        os.setgid(gid)
    if pw is not None:
        os.initgroups(pw.pw_name, gid if gid is not None else pw.pw_gid)
        os.setuid(pw.pw_uid)


def limits_of(config: Config) -> Limits:
    return Limits(
        max_requests=config.max_requests,
        max_requests_jitter=config.max_requests_jitter,
        max_lifetime_s=config.max_lifetime_s,
        max_lifetime_jitter_s=config.max_lifetime_jitter_s,
        max_memory_bytes=config.max_memory_bytes,
    )


def trace_frames(config: Config) -> int:
    """--trace-memory's frames when it serves: it explains a --max-memory recycle or a
    memory-growth finding, and does nothing without one of them."""
    explained = config.max_memory_bytes or "memory" in checker_names(config.isolation_checkers)
    return config.trace_memory_frames if explained else 0


def run(config: Config) -> None:
    """Bind, then run the arbiter; each forked worker loads the app (unless --preload)."""
    # --chdir (or $PWD through a symlink) entered; entered again on each reload (releases.py)
    releases = ReleaseDirs(config.chdir, config.app_dir)
    hooks: Hooks | None = None
    if config.hooks:  # imported once, here; on_starting raising stops the start (gateway/hooks.py)
        from .hooks import load_hooks

        hooks = load_hooks(config.hooks, config.app_dir)
        hooks.starting(config)
    # Shared copy-on-write by the workers (see the docstring); imported before binding, so
    # that the socket accepts only shortly before the workers are forked, as it always did.
    kinds = candidate_kinds(config)
    if not config.preload:
        preimport_workers(config, kinds, bridge=config.interface == "wsgi")
        gc.collect()  # garbage left now would be kept for good by the arbiter's gc.freeze
    sockets = inherited_sockets("listen") or create_sockets(  # SIGUSR2: the old master's
        config.binds,
        backlog=config.backlog,
        mode=config.socket_mode,
        owner=config.socket_owner,
        orphan_wait_s=config.graceful_timeout_s,  # a dead master's workers still finishing
    )
    preloaded = None
    if config.preload:
        preloaded = prepare_app(config)
        logger.info("application %s preloaded (%s, %s worker)", config.app, preloaded[1], preloaded[2])
        kinds = (preloaded[2],)
        preimport_workers(config, kinds)
        gc.collect()

    board: Scoreboard | None = None
    pages = None
    if config.pm != "static" or config.status_path or config.ping_path or config.status_binds:
        from .scoreboard import Scoreboard

        # with a ping page only, just for the master's flags (draining); the adaptive process
        # managers read the workers' idle times in it (gateway/pool.py)
        board = Scoreboard()
    if config.status_path or config.ping_path or config.status_binds:
        from .status import StatusPages

        pages = StatusPages(
            board,
            status_path=config.status_path or ("/status" if config.status_binds else None),
            ping_path=config.ping_path or ("/ping" if config.status_binds else None),
            ping_response=config.ping_response,
            pool=config.pool_name,
            sockets=sockets,
            process_manager=config.pm,
        )
    status_server = None
    if config.status_binds:
        from .status_server import StatusServer

        status_socks = inherited_sockets("status") or create_sockets(
            config.status_binds,
            backlog=64,
            mode=config.socket_mode,
            owner=config.socket_owner,
            use_inherited=False,
        )
        status_server = StatusServer(status_socks, pages)  # type: ignore[arg-type]
        sockets_to_clean = [*sockets, *status_socks]
    else:
        sockets_to_clean = sockets
    worker_pages = pages if (config.status_path or config.ping_path) else None
    if config.trace_memory_frames and not trace_frames(config):
        logger.warning("--trace-memory does nothing without --max-memory or the memory checker")

    def child_main(control_fd: int, slot: int) -> None:
        # This generation's Config: a reload may have read --config again (reload_config.py)
        config = arbiter.config
        if (config.user or config.group) and preloaded is None:
            # before the drop: the Python installation may be unreadable by that account
            preimport_workers(config, kinds, bridge=config.interface != "asgi")
        drop_privileges(config.user, config.group)
        control = WorkerControl(control_fd, limits_of(config), heartbeat_s=1.0)
        app, interface, kind = preloaded or prepare_app(config)  # this generation's app_dir
        if preloaded is None:
            logger.info("application %s loaded (%s, %s worker)", config.app, interface, kind)
        worker_slot = None
        slots_read = config.status_path or config.status_binds or config.pm != "static"
        if board is not None and slot >= 0 and slots_read:
            from .scoreboard import WorkerSlot

            worker_slot = WorkerSlot(board, slot)
            worker_slot.set_capacity(config.threads if kind == "sync" else config.max_connections)
        try:
            policies = parse_policies(config.isolation_policies)
            layer = None
            if any_checker(config.isolation_checkers, config.isolation_user_checkers):
                layer = build_layer(
                    config.isolation_checkers,
                    config.isolation_user_checkers,
                    policies,
                    config.isolation_default_policy,
                    worker=kind,
                    on_recycle=control.request_recycle,
                    on_finding=control.finding,
                )
        except Exception as exc:  # a boot failure (exit 4), not a crash loop
            raise AppLoadError(f"cannot set up the isolation checkers: {type(exc).__name__}: {exc}") from exc
        if layer is not None:
            layer.after_load(app)
        if trace_frames(config):
            from .isolation.leaks import start_tracing

            start_tracing(config.trace_memory_frames)  # after the app loaded: its growth is what counts
        worker = make_worker(config, app, kind, sockets, control, worker_pages, worker_slot)
        worker.isolation = layer if layer is not None and layer.enabled else None
        worker.interface = interface
        if logging.getLogger("gateway.access").handlers:
            worker.access = AccessLog(config.access_log_format or DEFAULT_ACCESS_FORMAT)
        if hooks is not None:  # post_worker_init raising is this worker's boot failure
            hooks.boot("post_worker_init", arbiter, Worker(os.getpid(), arbiter.generation, slot=slot))
        worker.run()

    pid_file = os.path.abspath(config.pid_file) if config.pid_file else None  # a reload may chdir
    if pid_file:
        write_pid_file(pid_file)  # a new master (SIGUSR2) writes it once it serves
    pool = None
    if config.pm != "static":
        from .cpus import cpu_budget
        from .pool import ProcessManager, default_max_workers

        most = config.max_workers or default_max_workers(config, cpu_budget().usable)
        pool = ProcessManager(config, board, most)  # type: ignore[arg-type]
        logger.info("process manager: %s, at most %d worker(s)", config.pm, most)
    arbiter = Arbiter(
        config, sockets, child_main, board=board, status_server=status_server, releases=releases, pool=pool
    )
    if hooks is not None:
        arbiter.hooks = hooks
    try:
        arbiter.run()
    finally:
        cleanup_unix_sockets(sockets_to_clean)
        for sock in sockets_to_clean:
            sock.close()
        if pid_file:
            remove_pid_file(pid_file)  # not once it names an upgrade's new master
        if hooks is not None:
            hooks.call("on_exit", arbiter)
