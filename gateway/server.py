"""Start-up orchestration for one serving process: bind, load the app, pick the worker, run.

``run(config)`` raises GatewayError subclasses on failure; the CLI maps them to exit
codes. (The prefork arbiter plugs in here when ``workers > 1``.)
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from .config import Config
from .errors import ConfigError
from .loading import as_asgi3, load_app, resolve_interface
from .sockets import cleanup_unix_sockets, create_sockets

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

        app = bridge_wsgi(app, threads=config.bridge_threads)
    return app, interface, kind


def make_worker(config: Config, app: Any, kind: str, sockets: list[socket.socket]) -> Any:
    if kind == "async":
        from .workers.async_worker import AsyncWorker

        return AsyncWorker(config, app, sockets)
    from .workers.sync_worker import SyncWorker

    return SyncWorker(config, app, sockets)


def run(config: Config) -> None:
    if config.chdir:
        os.chdir(config.chdir)
    sockets = create_sockets(
        config.binds, backlog=config.backlog, mode=config.socket_mode, owner=config.socket_owner
    )
    try:
        app, interface, kind = prepare_app(config)
        logger.info("application %s loaded (%s, %s worker)", config.app, interface, kind)
        make_worker(config, app, kind, sockets).run()
    finally:
        cleanup_unix_sockets(sockets)
        for sock in sockets:
            sock.close()
