"""Start-up orchestration for one serving process: bind, load the app, pick the worker, run.

``run(config)`` raises GatewayError subclasses on failure; the CLI maps them to exit
codes. The master binds once and runs the arbiter; workers load the app after fork.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Any

from .arbiter import Arbiter
from .config import Config
from .errors import AppLoadError, ConfigError
from .isolation.setup import build_layer, parse_policies
from .loading import as_asgi3, load_app, resolve_interface
from .log import DEFAULT_ACCESS_FORMAT, AccessLog
from .scoreboard import Scoreboard, WorkerSlot
from .sockets import cleanup_unix_sockets, create_sockets
from .status import StatusPages
from .status_server import StatusServer

# Imported here, in the master, rather than after fork: shared by the forked workers, and
# readable even when a worker has dropped privileges (--user) to an account that cannot
# read the Python installation.
from .workers import async_worker, sync_threads, sync_worker
from .workers.base import Limits, WorkerControl

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


def make_worker(
    config: Config,
    app: Any,
    kind: str,
    sockets: list[socket.socket],
    control: WorkerControl | None = None,
    pages: StatusPages | None = None,
    slot: WorkerSlot | None = None,
) -> Any:
    if kind == "async":
        return async_worker.AsyncWorker(config, app, sockets, control, pages, slot)
    if config.threads > 1:
        return sync_threads.ThreadedSyncWorker(config, app, sockets, control, pages, slot)
    return sync_worker.SyncWorker(config, app, sockets, control, pages, slot)


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


def run(config: Config) -> None:
    """Bind, then run the arbiter; each forked worker loads the app (unless --preload)."""
    if config.chdir:
        os.chdir(config.chdir)
    sockets = create_sockets(
        config.binds, backlog=config.backlog, mode=config.socket_mode, owner=config.socket_owner
    )
    preloaded = None
    if config.preload:
        preloaded = prepare_app(config)
        logger.info("application %s preloaded (%s, %s worker)", config.app, preloaded[1], preloaded[2])

    board = Scoreboard() if (config.status_path or config.status_binds) else None
    pages = None
    if config.status_path or config.ping_path or config.status_binds:
        pages = StatusPages(
            board,
            status_path=config.status_path or ("/status" if config.status_binds else None),
            ping_path=config.ping_path or ("/ping" if config.status_binds else None),
            ping_response=config.ping_response,
            pool=config.pool_name,
            sockets=sockets,
            workers_wanted=config.workers,
        )
    status_server = None
    if config.status_binds:
        status_socks = create_sockets(
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

    def child_main(control_fd: int, slot: int) -> None:
        drop_privileges(config.user, config.group)
        control = WorkerControl(control_fd, limits_of(config), heartbeat_s=1.0)
        app, interface, kind = preloaded or prepare_app(config)
        if preloaded is None:
            logger.info("application %s loaded (%s, %s worker)", config.app, interface, kind)
        worker_slot = WorkerSlot(board, slot) if board is not None and slot >= 0 else None
        try:
            layer = build_layer(
                config.isolation_checkers,
                config.isolation_user_checkers,
                parse_policies(config.isolation_policies),
                config.isolation_default_policy,
                worker=kind,
                on_recycle=control.request_recycle,
                on_finding=control.finding,
            )
        except Exception as exc:  # a boot failure (exit 4), not a crash loop
            raise AppLoadError(f"cannot set up the isolation checkers: {type(exc).__name__}: {exc}") from exc
        layer.after_load(app)
        worker = make_worker(config, app, kind, sockets, control, worker_pages, worker_slot)
        worker.isolation = layer if layer.enabled else None
        worker.interface = interface
        if logging.getLogger("gateway.access").handlers:
            worker.access = AccessLog(config.access_log_format or DEFAULT_ACCESS_FORMAT)
        worker.run()

    if config.pid_file:
        with open(config.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    try:
        Arbiter(config, sockets, child_main, board=board, status_server=status_server).run()
    finally:
        cleanup_unix_sockets(sockets_to_clean)
        for sock in sockets_to_clean:
            sock.close()
        if config.pid_file:
            with contextlib.suppress(OSError):
                os.unlink(config.pid_file)
