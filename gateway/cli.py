"""The ``fcgi-gateway`` command line: options -> one Config, and the only place that
decides exit codes.

``fcgi-gateway APP`` serves (the ``serve`` command is the default); other commands sit
beside it. Every serve option can also come from an ``FCGI_GATEWAY_<OPTION>`` environment
variable (CLI > environment > defaults).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from . import __version__
from .asgi.lifespan import LifespanError
from .config import (
    INTERFACES,
    LIFESPAN_MODES,
    LOOPS,
    WORKER_KINDS,
    Config,
    parse_duration,
    parse_size,
)
from .errors import AppLoadError, BindError, ConfigError, GatewayError, HaltServer
from .log import LEVELS, configure

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_BIND = 3
EXIT_APP_LOAD = 4
EXIT_LIFESPAN = 5


class SizeType(click.ParamType):
    name = "size"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        try:
            return parse_size(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class DurationType(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            return parse_duration(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class OctalType(click.ParamType):
    name = "mode"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        try:
            return int(str(value), 8)
        except ValueError:
            self.fail(f"{value!r} is not an octal mode such as 0660", param, ctx)


SIZE, DURATION, OCTAL = SizeType(), DurationType(), OctalType()


def _opt(*decls: str, **kwargs: Any):
    """A click option that also reads FCGI_GATEWAY_<NAME> from the environment."""
    long = next(d for d in decls if d.startswith("--"))
    kwargs.setdefault("envvar", "FCGI_GATEWAY_" + long[2:].upper().replace("-", "_"))
    kwargs.setdefault("show_envvar", True)
    return click.option(*decls, **kwargs)


class DefaultGroup(click.Group):
    """A group whose default command is ``serve``: ``fcgi-gateway APP`` just works."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h", "--version")):
            args = ["serve", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fcgi-gateway")
def main() -> None:
    """fcgi-gateway: serve an ASGI or WSGI application over FastCGI (nginx fastcgi_pass).

    \b
    fcgi-gateway myproject.asgi:application
    fcgi-gateway --bind unix:/run/app.sock mysite.wsgi:application
    """


@main.command()
@click.argument("app", envvar="FCGI_GATEWAY_APP")
@_opt(
    "-b",
    "--bind",
    "binds",
    multiple=True,
    help="Listen on HOST:PORT, [::1]:PORT, unix:/PATH or fd://N. Repeatable. [default: 127.0.0.1:9000]",
)
@_opt("--factory", is_flag=True, help="APP is a callable returning the application.")
@_opt(
    "--chdir",
    type=click.Path(file_okay=False, exists=True),
    help="Change to this directory before loading the app.",
)
@_opt("--app-dir", default=".", show_default=True, help="Directory added to sys.path before importing APP.")
@_opt(
    "--interface",
    type=click.Choice(INTERFACES),
    default="auto",
    show_default=True,
    help="Application interface.",
)
@_opt(
    "--worker",
    type=click.Choice(WORKER_KINDS),
    default="auto",
    show_default=True,
    help="Worker kind: auto = sync for WSGI, async for ASGI.",
)
@_opt("--root-path", default="", help="Mount point of the app (ASGI root_path / WSGI SCRIPT_NAME).")
@_opt(
    "--lifespan",
    type=click.Choice(LIFESPAN_MODES),
    default="auto",
    show_default=True,
    help="ASGI lifespan protocol.",
)
@_opt(
    "--loop",
    type=click.Choice(LOOPS),
    default="auto",
    show_default=True,
    help="Event loop of the async worker (auto: uvloop when installed).",
)
@_opt(
    "-w",
    "--workers",
    type=click.IntRange(1, 512),
    default=1,
    show_default=True,
    help="Worker processes (one per core is a good start; more for I/O-bound WSGI apps).",
)
@_opt(
    "--preload",
    is_flag=True,
    help="Load the app in the master before forking (shares memory; a reload then cannot pick up new code).",
)
@_opt(
    "--max-requests",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Recycle a worker after this many requests (0 = never).",
)
@_opt(
    "--max-requests-jitter",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Add 0..N to each worker's --max-requests.",
)
@_opt("--max-lifetime", type=DURATION, default="0", help="Recycle a worker after this long (e.g. 1h).")
@_opt(
    "--max-lifetime-jitter",
    type=DURATION,
    default="0",
    help="Add up to this much to each worker's --max-lifetime.",
)
@_opt(
    "--max-memory",
    type=SIZE,
    default="0",
    help="Recycle a worker whose RSS exceeds this after a request (e.g. 256M).",
)
@_opt(
    "--max-concurrent-recycles",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Workers replaced at once for recycling.",
)
@_opt(
    "--heartbeat-timeout",
    type=DURATION,
    default="60s",
    show_default=True,
    help="Kill a worker whose loop has been silent this long (0 = off).",
)
@_opt(
    "--pid",
    "pid_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the master's pid to this file.",
)
@_opt(
    "--threads",
    type=click.IntRange(1, 1024),
    default=1,
    show_default=True,
    help="Sync worker: threads serving requests (1 = on the worker's own thread).",
)
@_opt(
    "--bridge-threads",
    type=click.IntRange(1, 1024),
    default=10,
    show_default=True,
    help="Async worker with a WSGI app: a2wsgi thread pool size.",
)
@_opt(
    "--graceful-timeout",
    type=DURATION,
    default="30s",
    show_default=True,
    help="How long in-flight requests may run after SIGTERM.",
)
@_opt("--backlog", type=click.IntRange(1, 65535), default=2048, show_default=True, help="Listen backlog.")
@_opt(
    "--socket-mode",
    type=OCTAL,
    default="0660",
    show_default=True,
    help="Permissions of unix sockets (never world-writable unless --allow-world-writable).",
)
@_opt("--socket-owner", default=None, help="USER[:GROUP] owning unix sockets (e.g. www-data).")
@_opt("--allow-world-writable", is_flag=True, help="Permit a world-writable --socket-mode.")
@_opt(
    "--max-body-size", type=SIZE, default=None, help="Largest request body (e.g. 10M); larger ones get 413."
)
@_opt(
    "--max-params-size",
    type=SIZE,
    default="256K",
    show_default=True,
    help="Largest FastCGI params block of one request.",
)
@_opt(
    "--max-connections",
    type=click.IntRange(1),
    default=1024,
    show_default=True,
    help="Connections served at once (reported as FCGI_MAX_CONNS).",
)
@_opt("--log-level", type=click.Choice(LEVELS), default="info", show_default=True)
@_opt("--debug", is_flag=True, help="Show tracebacks in 500 responses (development only).")
def serve(app: str, binds: tuple[str, ...], **opts: Any) -> None:
    """Serve APP (module:attribute) over FastCGI."""
    configure(opts["log_level"])
    try:
        config = Config(
            app=app,
            binds=binds or ("127.0.0.1:9000",),
            factory=opts["factory"],
            chdir=opts["chdir"],
            app_dir=opts["app_dir"],
            interface=opts["interface"],
            worker=opts["worker"],
            root_path=opts["root_path"].rstrip("/"),
            lifespan=opts["lifespan"],
            loop=opts["loop"],
            threads=opts["threads"],
            workers=opts["workers"],
            preload=opts["preload"],
            max_requests=opts["max_requests"],
            max_requests_jitter=opts["max_requests_jitter"],
            max_lifetime_s=opts["max_lifetime"],
            max_lifetime_jitter_s=opts["max_lifetime_jitter"],
            max_memory_bytes=opts["max_memory"],
            max_concurrent_recycles=opts["max_concurrent_recycles"],
            heartbeat_timeout_s=opts["heartbeat_timeout"],
            pid_file=opts["pid_file"],
            bridge_threads=opts["bridge_threads"],
            graceful_timeout_s=opts["graceful_timeout"],
            backlog=opts["backlog"],
            socket_mode=opts["socket_mode"],
            socket_owner=opts["socket_owner"],
            max_body_bytes=opts["max_body_size"],
            max_params_bytes=opts["max_params_size"],
            max_connections=opts["max_connections"],
            log_level=opts["log_level"],
            debug=opts["debug"],
            extra={"allow_world_writable_socket": opts["allow_world_writable"]},
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(run_server(config))


def run_server(config: Config) -> int:
    """Run and map every failure to an exit code (the only place that does)."""
    import logging

    from .server import run

    logger = logging.getLogger("gateway.error")
    try:
        run(config)
    except AppLoadError as exc:
        logger.error("cannot load the application: %s", exc)
        return EXIT_APP_LOAD
    except BindError as exc:
        logger.error("%s", exc)
        return EXIT_BIND
    except LifespanError as exc:
        logger.error("%s", exc)
        return EXIT_LIFESPAN
    except ConfigError as exc:
        logger.error("configuration error: %s", exc)
        return EXIT_CONFIG
    except HaltServer as exc:
        logger.error("%s", exc.reason)
        return exc.exit_status
    except GatewayError as exc:
        logger.error("%s", exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK
