"""The ``fcgi-gateway`` command line: options -> one Config, and (with gateway/exits.py, its
click-free half) the only place that decides exit codes.

``fcgi-gateway APP`` serves (``serve`` is the default command). The serve options are one
table, ``SERVE_OPTIONS``: each row names the Config field it fills, so an option is
written once (CLI flag, ``FCGI_GATEWAY_<OPTION>`` environment variable, help text), and
its default is that field's default in gateway/config.py (shown by ``--help`` in the
option's own units). Precedence: command line > environment > config file > defaults;
``WEB_CONCURRENCY`` (``Opt.default_env``) replaces the default of ``--workers``, below the
file, as in gunicorn (platforms such as Heroku set it; what the user wrote wins).
``--workers auto`` is resolved here, once (gateway/cpus.py). ``config_from_options`` also
refuses impossible combinations (gateway/conflicts.py). With ``--config``, ``serve``
records its arguments in the Config: SIGHUP parses them again (gateway/reload_config.py).

``serve`` runs the server (``gateway.exits.run_server`` maps its failures to the exit
statuses ``EXIT_*``), unless the group was invoked with a list as ``obj``: then it appends
its Config to that list and returns. ``python -m gateway`` (gateway/__main__.py) parses
this way in a short-lived child process and serves in a process that never imported
click (so that neither the master nor its workers hold it; see gateway/__main__.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

from . import __version__
from .config import (
    INTERFACES,
    LIFESPAN_MODES,
    LOOPS,
    PM_MODES,
    WORKER_KINDS,
    Config,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)
from .conflicts import check_combinations
from .errors import ConfigError
from .exits import EXIT_APP_LOAD, EXIT_BIND, EXIT_CONFIG, EXIT_ERROR, EXIT_LIFESPAN, EXIT_OK, run_server
from .isolation.base import DEFAULT_POLICIES
from .isolation.setup import checker_names, parse_policies
from .log import LEVELS, check_access_format, configure
from .releases import logical_cwd
from .sockets import check_user_group, parse_networks

# The exit statuses (and run_server, which maps serve's failures to them) live in
# gateway/exits.py, so that ``python -m gateway`` can serve without importing click.
__all__ = ["EXIT_APP_LOAD", "EXIT_BIND", "EXIT_CONFIG", "EXIT_ERROR", "EXIT_LIFESPAN", "EXIT_OK", "main"]


class _UnitType(click.ParamType):
    """A value with units: ``parse`` reads the text, ``show`` writes a default for --help."""

    def __init__(self, name: str, parse: Callable[[Any], Any], show: Callable[[Any], str]) -> None:
        self.name = name
        self.parse = parse
        self.show = show

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        try:
            return self.parse(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


def _octal(value: Any) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 8)
    except ValueError:
        raise ConfigError(f"{value!r} is not an octal mode such as 0660") from None


class _Workers(click.ParamType):
    """``--workers``: a count (1 to 512) or ``auto`` (resolved by ``config_from_options``
    from the CPU affinity and the cgroup quota, gateway/cpus.py)."""

    name = "count|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            count = int(value)
        except (TypeError, ValueError):
            count = 0
        if not 1 <= count <= 512 or isinstance(value, bool):
            given = f"{value!r}"
            if ctx is not None and ctx.get_parameter_source(param.name).name == "DEFAULT":
                given = f"WEB_CONCURRENCY={value!r}"  # the only non-default default
            self.fail(f"{given} is not a count from 1 to 512 or auto", param, ctx)
        return count


SIZE = _UnitType("size", parse_size, format_size)
DURATION = _UnitType("duration", parse_duration, format_duration)
OCTAL = _UnitType("mode", _octal, lambda mode: f"{mode:04o}")


@dataclass(frozen=True)
class Opt:
    """One serve option: click declarations + the Config field it sets (and whose default
    it takes; ``kwargs`` never holds a default)."""

    decls: tuple[str, ...]
    field: str
    help: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: an environment variable read only when neither the command line, FCGI_GATEWAY_*
    #: nor the file set the option (a default set from outside, e.g. by the platform)
    default_env: str | None = None


def _o(*decls: str, field: str, help: str, default_env: str | None = None, **kwargs: Any) -> Opt:
    return Opt(decls, field, help, kwargs, default_env)


SERVE_OPTIONS: tuple[Opt, ...] = (
    # sockets
    _o("-b", "--bind", field="binds", multiple=True,
       help="Listen on HOST:PORT, [::1]:PORT, unix:/PATH or fd://N. Repeatable."),
    _o("--backlog", field="backlog", type=click.IntRange(1, 65535), help="Listen backlog."),
    _o("--socket-mode", field="socket_mode", type=OCTAL,
       help="Permissions of unix sockets (never world-writable unless --allow-world-writable)."),
    _o("--socket-owner", field="socket_owner",
       help="USER[:GROUP] owning unix sockets (e.g. www-data)."),
    _o("--allow-world-writable", field="allow_world_writable", is_flag=True,
       help="Permit a world-writable --socket-mode."),
    # application
    _o("--factory", field="factory", is_flag=True, help="APP is a callable returning the application."),
    _o("--chdir", field="chdir", type=click.Path(file_okay=False, exists=True),
       help="Change to this directory before loading the app."),
    _o("--app-dir", field="app_dir", help="Directory added to sys.path before importing APP."),
    _o("--interface", field="interface", type=click.Choice(INTERFACES),
       help="Application interface."),
    _o("--root-path", field="root_path",
       help="Mount point of the app (ASGI root_path / WSGI SCRIPT_NAME)."),
    _o("--lifespan", field="lifespan", type=click.Choice(LIFESPAN_MODES),
       help="ASGI lifespan protocol."),
    # workers
    _o("--worker", field="worker", type=click.Choice(WORKER_KINDS),
       help="Worker kind: auto = sync for WSGI, async for ASGI."),
    _o("-w", "--workers", field="workers", type=_Workers(), default_env="WEB_CONCURRENCY",
       help="Worker processes, or auto: one per usable CPU (CPU affinity and cgroup quota, not the "
            "host's cores). WEB_CONCURRENCY, when set, replaces the default."),
    _o("--pm", field="pm", type=click.Choice(PM_MODES),
       help="Process manager: static (--workers workers), dynamic (grow and shrink between the spare "
            "bounds, up to --max-workers) or ondemand (start workers as connections wait, retire them "
            "after --process-idle-timeout), as PHP-FPM's pm."),
    _o("--max-workers", field="max_workers", type=click.IntRange(0, 256),
       help="dynamic/ondemand: the most workers (PHP-FPM's pm.max_children; 0: twice the usable CPUs, "
            "at least --workers and --max-spare-workers)."),
    _o("--min-spare-workers", field="min_spare_workers", type=click.IntRange(1, 256),
       help="dynamic: start workers when fewer are idle."),
    _o("--max-spare-workers", field="max_spare_workers", type=click.IntRange(1, 256),
       help="dynamic: retire idle workers above this many, one a second."),
    _o("--process-idle-timeout", field="process_idle_timeout_s", type=DURATION,
       help="ondemand: retire a worker idle this long."),
    _o("--max-spawn-rate", field="max_spawn_rate", type=click.IntRange(1, 256),
       help="dynamic/ondemand: the most workers started in one second (the rate doubles from 1)."),
    _o("--preload", field="preload", is_flag=True,
       help="Load the app in the master before forking (shares memory; reloads keep the old code)."),
    _o("--reload", field="reload", is_flag=True,
       help="Development: rolling-restart the workers when a .py file under --reload-dir changes."),
    _o("--reload-dir", field="reload_dirs", multiple=True,
       help="Directory watched by --reload (repeatable; default: --app-dir)."),
    _o("--reload-backend", field="reload_backend", type=click.Choice(("auto", "watchfiles", "polling")),
       help="How --reload notices changes (polling also works on network mounts)."),
    _o("--loop", field="loop", type=click.Choice(LOOPS),
       help="Event loop of the async worker (auto: uvloop when installed)."),
    _o("--threads", field="threads", type=click.IntRange(1, 1024),
       help="Sync worker: threads serving requests (1 = on the worker's own thread)."),
    _o("--bridge-threads", field="bridge_threads", type=click.IntRange(1, 1024),
       help="Async worker with a WSGI app: a2wsgi thread pool size."),
    # recycling and timeouts
    _o("--max-requests", field="max_requests", type=click.IntRange(0),
       help="Recycle a worker after this many requests (0 = never)."),
    _o("--max-requests-jitter", field="max_requests_jitter", type=click.IntRange(0),
       help="Add 0..N to each worker's --max-requests."),
    _o("--max-lifetime", field="max_lifetime_s", type=DURATION,
       help="Recycle a worker after this long (e.g. 1h)."),
    _o("--max-lifetime-jitter", field="max_lifetime_jitter_s", type=DURATION,
       help="Add up to this much to each worker's --max-lifetime."),
    _o("--max-memory", field="max_memory_bytes", type=SIZE,
       help="Recycle a worker whose RSS exceeds this after a request (e.g. 256M), logging what grew."),
    _o("--trace-memory", field="trace_memory_frames", type=click.IntRange(0, 65535),
       help="Diagnosis: trace allocations (tracemalloc, N frames; 0 = off) and log the top "
            "allocation sites at a --max-memory recycle or memory-growth. Slows the worker."),
    _o("--max-concurrent-recycles", field="max_concurrent_recycles", type=click.IntRange(1),
       help="Workers replaced at once for recycling."),
    _o("--graceful-timeout", field="graceful_timeout_s", type=DURATION,
       help="How long in-flight requests may run after SIGTERM."),
    _o("--shutdown-delay", field="shutdown_delay_s", type=DURATION,
       help="On SIGTERM, keep accepting and serving this long, the ping page answering 503, before "
            "the graceful stop (for a Kubernetes Service's endpoint removal; SIGQUIT skips it)."),
    _o("--request-timeout", field="request_timeout_s", type=DURATION,
       help="Answer 504 and recycle the worker when a request runs longer (0 = off)."),
    _o("--slow-request-timeout", field="slow_request_timeout_s", type=DURATION,
       help="Log the Python stack of requests running longer than this (0 = off)."),
    _o("--slow-log", field="slow_log", type=click.Path(dir_okay=False),
       help="File for slow-request stacks (default: the error log)."),
    _o("--heartbeat-timeout", field="heartbeat_timeout_s", type=DURATION,
       help="Kill a worker whose loop has been silent this long (0 = off)."),
    _o("--max-queue-time", field="max_queue_time_s", type=DURATION,
       help="Answer 503 with Retry-After, before the app runs, to a request that waited longer "
            "than this since the web server stamped it (X-Request-Start; 0 = off)."),
    # limits
    _o("--max-body-size", field="max_body_bytes", type=SIZE,
       help="Largest request body (e.g. 10M); larger ones get 413."),
    _o("--max-params-size", field="max_params_bytes", type=SIZE,
       help="Largest FastCGI params block of one request."),
    _o("--max-connections", field="max_connections", type=click.IntRange(1),
       help="Connections served at once (reported as FCGI_MAX_CONNS)."),
    _o("--read-timeout", field="read_timeout_s", type=DURATION,
       help="Close a connection that sends no complete request (or stalls mid-body) this long."),
    _o("--keepalive-timeout", field="keepalive_timeout_s", type=DURATION,
       help="Close a kept-alive connection idle this long (keep it above nginx's keepalive_timeout)."),
    # isolation
    _o("--isolation-checkers", field="isolation_checkers",
       help="Checkers run after each request: auto, all, none, or a list of globals, threadlocals, "
            "tasks, django, sqlalchemy, memory."),
    _o("--isolation-checker", field="isolation_user_checkers", multiple=True,
       help="MODULE:CALLABLE returning your own gateway.isolation.Checker (repeatable)."),
    _o("--isolation-policy", field="isolation_policies", multiple=True,
       help="KIND=POLICY for a finding kind; POLICY is log, repair, recycle or fail (repeatable)."),
    _o("--isolation-default-policy", field="isolation_default_policy",
       type=click.Choice(DEFAULT_POLICIES),
       help="Policy for finding kinds without --isolation-policy: auto (each kind's own: repair "
            "what is safe to undo, recycle a worker left unusable, log the rest; see "
            "docs/isolation.md), strict (repair every kind, recycle the worker when a repair "
            "is not possible), or one policy for every kind."),
    # status and ping
    _o("--status-path", field="status_path",
       help="Answer this path with the PHP-FPM compatible status page (?json, ?openmetrics, ?full)."),
    _o("--ping-path", field="ping_path", help="Answer this path with --ping-response."),
    _o("--ping-response", field="ping_response", help="Body of the ping page."),
    _o("--status-bind", field="status_binds", multiple=True,
       help="Extra address where the master itself answers the status and ping pages, even when "
            "every worker is busy. Repeatable."),
    _o("--pool-name", field="pool_name", help="Pool name shown on the status page."),
    _o("--allowed-clients", field="allowed_clients", multiple=True,
       help="Addresses or networks (127.0.0.1, 10.0.0.0/8) allowed to connect over TCP; others are "
            "closed and logged. Default: FCGI_WEB_SERVER_ADDRS when set, else everyone."),
    _o("--user", field="user", help="Run the workers as this user (the master binds as root)."),
    _o("--group", field="group", help="Run the workers with this group."),
    _o("--forward-stderr", field="forward_stderr", is_flag=True,
       help="Also send what a WSGI app writes to wsgi.errors to the web server as FCGI_STDERR."),
    # process and logging
    _o("--pid", field="pid_file", type=click.Path(dir_okay=False),
       help="Write the master's pid to this file."),
    _o("--hooks", field="hooks",
       help="Lifecycle hooks: a module (or .py file) defining on_starting, when_ready, post_fork, "
            "post_worker_init, worker_exit, child_exit, on_reload or on_exit (docs/hooks.md)."),
    _o("--error-log", field="error_log",
       help="Error log file (default: stderr; - for stdout)."),
    _o("--access-log", field="access_log",
       help="Access log file, or - for stdout (default: off)."),
    _o("--access-log-format", field="access_log_format",
       help="%-format over remote_addr, time, method, uri, protocol, status, bytes, duration_ms, "
            "request_id, pid, queue_ms (text: %(queue_ms)s, - without X-Request-Start)."),
    _o("--log-config", field="log_config", type=click.Path(dir_okay=False, exists=True),
       help="logging.config.dictConfig file (JSON, or TOML by extension) applied after the defaults."),
    _o("--log-level", field="log_level", type=click.Choice(LEVELS), help="Error log level."),
    _o("--debug", field="debug", is_flag=True, help="Show tracebacks in 500 responses (development only)."),
)  # fmt: skip


def _file_key_map() -> dict[str, str]:
    """Config-file key (an option's long name, dashes or underscores) -> parameter name."""
    keys = {"app": "app"}
    for opt in SERVE_OPTIONS:
        long = next(d for d in opt.decls if d.startswith("--"))[2:]
        keys[long] = keys[long.replace("-", "_")] = opt.field
    return keys


def load_config_file(path: str) -> dict[str, Any]:
    """A TOML file's settings as click defaults (ConfigError naming any unknown key).

    The keys are the long option names (``workers = 4``, ``max-body-size = "10M"``,
    ``bind = ["unix:/run/app.sock"]``, ``app = "mysite.wsgi:application"``); a
    ``[fcgi-gateway]`` table may hold them instead of the top level.
    """
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from None
    data = data.get("fcgi-gateway", data)
    keys = _file_key_map()
    unknown = sorted(k for k in data if k not in keys)
    if unknown:
        raise ConfigError(f"unknown key(s) in {path}: {', '.join(unknown)}")
    return {keys[k]: v for k, v in data.items()}


def _use_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # Eager: runs before the other options are resolved, so the file's values become their
    # defaults (precedence: command line > environment > file > built-in defaults).
    if value:
        try:
            ctx.default_map = {**(ctx.default_map or {}), **load_config_file(value)}
        except ConfigError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


def option_default(opt: Opt) -> Any:
    """The option's default: its Config field's, written in the option's units for a size,
    duration or mode (``"256K"``, ``"30s"``, ``"0660"``: what ``--help`` shows; click parses
    it back to the field's value). False for the one flag outside Config."""
    if opt.field not in Config.field_names():
        assert opt.kwargs.get("is_flag"), f"{opt.decls}: only a flag may lack a Config field"
        return False
    value = Config.default(opt.field)
    kind = opt.kwargs.get("type")
    return kind.show(value) if isinstance(kind, _UnitType) and value is not None else value


def _env_default(name: str, default: Any) -> Callable[[], Any]:
    return lambda: os.environ.get(name) or default


def _add_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(SERVE_OPTIONS):
        long = next(d for d in opt.decls if d.startswith("--"))
        envvar = "FCGI_GATEWAY_" + long[2:].upper().replace("-", "_")
        default = option_default(opt)
        shown: Any = not opt.kwargs.get("is_flag") and default not in (None, "", ())
        if opt.default_env:
            shown = f"{default}, or ${opt.default_env}"
            default = _env_default(opt.default_env, default)
        command = click.option(
            *opt.decls, opt.field, help=opt.help, envvar=envvar, show_envvar=True,
            default=default, show_default=shown, **opt.kwargs,
        )(command)  # fmt: skip
    return click.option(
        "--config", "config_file", type=click.Path(dir_okay=False), is_eager=True, expose_value=True,
        callback=_use_config_file, envvar="FCGI_GATEWAY_CONFIG", show_envvar=True,
        help="TOML file with the same keys as the long options (CLI > environment > file > defaults); "
             "read again on SIGHUP.",
    )(command)  # fmt: skip


def config_from_options(app: str, values: dict[str, Any]) -> Config:
    """The one place options become a Config (ConfigError on invalid combinations)."""
    fields = dict(values)
    config_file = fields.pop("config_file", None)
    # absolute through a symlinked start directory, as a reload's parse reads it (its $PWD)
    start = logical_cwd() or os.getcwd()
    fields["config_file"] = os.path.normpath(os.path.join(start, config_file)) if config_file else None
    if fields.get("workers") == "auto":
        from .cpus import cpu_budget

        fields["workers"] = cpu_budget().auto_workers
    allow_ww = fields.pop("allow_world_writable", False)
    fields["binds"] = tuple(fields.get("binds") or ()) or Config.default("binds")
    fields["reload_dirs"] = tuple(fields.get("reload_dirs") or ())
    fields["status_binds"] = tuple(fields.get("status_binds") or ())
    allowed = tuple(fields.get("allowed_clients") or ())
    if not allowed and os.environ.get("FCGI_WEB_SERVER_ADDRS"):
        allowed = tuple(a.strip() for a in os.environ["FCGI_WEB_SERVER_ADDRS"].split(",") if a.strip())
    fields["allowed_clients"] = allowed
    parse_networks(allowed)  # ConfigError for a bad address
    check_user_group(fields.get("user"), fields.get("group"))
    fields["isolation_user_checkers"] = tuple(fields.get("isolation_user_checkers") or ())
    fields["isolation_policies"] = tuple(fields.get("isolation_policies") or ())
    parse_policies(fields["isolation_policies"])  # ConfigError early, in the master
    checker_names(fields.get("isolation_checkers") or Config.default("isolation_checkers"))
    if fields.get("access_log_format"):
        check_access_format(fields["access_log_format"])
    fields["root_path"] = (fields.get("root_path") or "").rstrip("/")
    config = Config(app=app, extra={"allow_world_writable_socket": allow_ww}, **fields)
    check_combinations(config)  # ConfigError naming both options
    return config


#: ``ctx.meta`` key of the arguments ``serve`` parsed (kept for a reload's parse)
ARGS_KEY = "gateway.serve_args"


class ServeCommand(click.Command):
    """Records its arguments: with ``--config``, SIGHUP parses them again, with the file read
    anew (gateway/reload_config.py), so the command line keeps its precedence."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGS_KEY] = tuple(args)
        return super().parse_args(ctx, args)


class ConfigOnly(list):  # type: ignore[type-arg]
    """``obj`` of a reload's parse: ``serve`` appends its Config, logging is left alone."""


class DefaultGroup(click.Group):
    """A group whose default command is ``serve``: ``fcgi-gateway APP`` just works."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h", "--version")):
            args = ["serve", *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """``fcgi-gateway --help`` also lists the options of the default command."""
        super().format_help(ctx, formatter)
        serve = self.commands.get("serve")
        if serve is not None:
            sub = click.Context(serve, info_name="serve", parent=ctx)
            params = [p for p in serve.get_params(sub) if p.name != "help"]
            records = [r for p in params if (r := p.get_help_record(sub)) is not None]
            with formatter.section("Options of serve, the default command ([serve] [OPTIONS] APP)"):
                formatter.write_dl(records)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fcgi-gateway")
def main() -> None:
    """fcgi-gateway: serve an ASGI or WSGI application over FastCGI (nginx fastcgi_pass).

    \b
    fcgi-gateway myproject.asgi:application
    fcgi-gateway --bind unix:/run/app.sock mysite.wsgi:application
    """


@main.command(cls=ServeCommand)
@click.argument("app", envvar="FCGI_GATEWAY_APP", required=False)
@_add_options
def serve(app: str, **values: Any) -> None:
    """Serve APP (module:attribute) over FastCGI."""
    ctx = click.get_current_context()
    handoff = ctx.obj
    if not isinstance(handoff, ConfigOnly):
        configure(
            values["log_level"],
            slow_log=values["slow_log"],
            error_log=values["error_log"],
            access_log=values["access_log"],
            log_config=values["log_config"],
        )
    if not app:
        raise click.UsageError("missing APP (module:attribute), on the command line or as `app` in --config")
    try:
        config = config_from_options(app, values)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if config.config_file:  # what a reload parses again (gateway/reload_config.py)
        start_dir = logical_cwd() or os.getcwd()
        config = config.replace(command_line=ctx.meta.get(ARGS_KEY, ()), start_dir=start_dir)
    if isinstance(handoff, list):  # ``python -m gateway`` serves once click has returned
        handoff.append(config)
        return
    sys.exit(run_server(config))


from . import cli_tools  # noqa: E402,F401 - registers ping, request and check
