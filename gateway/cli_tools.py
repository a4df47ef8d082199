"""``fcgi-gateway ping``, ``request`` and ``check``: the tooling commands of the CLI.

- ``ping ADDRESS``: a health check (Docker HEALTHCHECK, Kubernetes exec probes): exit 0
  when the server answers with a status below 500, 1 with a one-line reason on stderr
  otherwise.
- ``request ADDRESS PATH``: one FastCGI request without nginx, like PHP-FPM's
  ``cgi-fcgi``: the body on stdout, FCGI_STDERR on stderr.
- ``check APP [serve options]``: loads the config and the app in this process, without
  binding or serving, and prints what ``serve`` would run (speedups included: on, or off
  and why, see ``gateway.speedups``; the ``--hooks`` module imported and checked, no hook
  called).

These commands are registered on ``gateway.cli.main`` (cli.py imports this module last)
and are part of the CLI: they use its option table (``SERVE_OPTIONS``), its
``config_from_options`` and its exit codes (``EXIT_*``); no other module decides exit codes.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

from .cli import (
    DURATION,
    EXIT_APP_LOAD,
    EXIT_BIND,
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_OK,
    _add_options,
    config_from_options,
    main,
)
from .errors import AppLoadError, ConfigError

# -- ping and request --------------------------------------------------------------------


def _address(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from .client import parse_address

    try:
        parse_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _fail(command: str, address: str, reason: str) -> NoReturn:
    click.echo(f"fcgi-gateway {command}: {address}: {reason}", err=True)
    sys.exit(EXIT_ERROR)


_address_arg = click.argument("address", callback=_address)
_timeout_opt = click.option(
    "--timeout", type=DURATION, default="5s", show_default=True,
    help="Bound on connecting and on each wait for the server (e.g. 2, 500ms).",
)  # fmt: skip


@main.command()
@_address_arg
@click.option("--path", default="/ping", show_default=True, help="Path requested (with GET).")
@_timeout_opt
def ping(address: str, path: str, timeout: float) -> None:
    """Health check: exit 0 when the server at ADDRESS answers PATH with a status below 500.

    ADDRESS is unix:/path, /path, host:port or [ipv6]:port. Exit status 1, with the reason
    on stderr, when the socket is missing, the connection is refused or times out, the
    answer breaks the FastCGI protocol, or the status is 5xx. With ``serve --ping-path
    /ping`` the gateway answers without calling the application, and answers 503
    (``draining``) from the moment it is told to stop: a readiness probe fails then.

    \b
    Docker:
      HEALTHCHECK --interval=10s --timeout=3s \\
        CMD ["fcgi-gateway", "ping", "unix:/run/app/app.sock", "--timeout", "2"]
    Kubernetes:
      livenessProbe:
        exec:
          command: ["fcgi-gateway", "ping", "127.0.0.1:9000", "--path", "/ping"]
    """
    from .client import ping as ping_server

    try:
        ok, reason = ping_server(address, path, timeout)
    except Exception as exc:  # whatever the client did not turn into a reason: still one line
        ok, reason = False, f"{type(exc).__name__}: {exc}"
    if not ok:
        _fail("ping", address, reason)
    click.echo(f"{address} {path}: {reason}")


def _header(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for item in values:
        name, sep, value = item.partition(":")
        if not sep or not name.strip() or name != name.strip():
            raise click.BadParameter(f"expected 'Name: value', got {item!r}")
        out.append((name, value.strip()))
    return out


def _param(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}")
        out.append((name, value))
    return out


def _body(data: str | None) -> bytes:
    if data is None:
        return b""
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        try:
            with open(data[1:], "rb") as f:
                return f.read()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {data[1:]}: {exc.strerror}", param_hint="--data") from None
    return data.encode("utf-8", "surrogateescape")


@main.command()
@_address_arg
@click.argument("path")
@click.option("-X", "--method", default=None, help="Request method. [default: GET, POST with --data]")
@click.option(
    "-H",
    "--header",
    "headers",
    multiple=True,
    callback=_header,
    help="'Name: value' request header, sent as HTTP_NAME (repeatable).",
)
@click.option(
    "-d",
    "--data",
    default=None,
    help="Request body: the text itself, @FILE for a file's bytes, @- for stdin.",
)
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    callback=_param,
    help="NAME=VALUE CGI param, replacing the nginx-like default of that name (repeatable).",
)
@click.option("-i", "--include", is_flag=True, help="Print the status line and headers before the body.")
@click.option("-f", "--fail", is_flag=True, help="Exit 1 for a 4xx status too (like curl --fail).")
@_timeout_opt
def request(
    address: str,
    path: str,
    method: str | None,
    headers: list[tuple[str, str]],
    data: str | None,
    params: list[tuple[str, str]],
    include: bool,
    fail: bool,
    timeout: float,
) -> None:
    """Send one request for PATH (with its ?query) to the FastCGI server at ADDRESS.

    The CGI params are those nginx sends with Debian's stock fastcgi_params. The response
    body goes to stdout, the server's FCGI_STDERR to stderr.

    Exit status: 0 when the answer has a status below 500 (below 400 with --fail); 1, with
    the reason on stderr, for a 5xx (4xx with --fail), no answer (missing socket, refused,
    timed out, closed early) or a protocol error. The body is printed in every case.

    \b
    fcgi-gateway request unix:/run/app.sock /health
    fcgi-gateway request -i -X POST -H 'Content-Type: application/json' \\
        -d '{"a": 1}' 127.0.0.1:9000 '/api/items?page=2'
    """
    from .client import ClientError, FastCGIClient
    from .protocol.constants import ProtocolStatus

    body = _body(data)
    method = (method or ("POST" if data is not None else "GET")).upper()
    try:
        with FastCGIClient(address, timeout=timeout) as client:
            resp = client.request(method, path, headers=headers, params=params, body=body)
    except ClientError as exc:
        _fail("request", address, str(exc))
    except Exception as exc:  # e.g. a malformed record: still a one-line reason
        _fail("request", address, f"{type(exc).__name__}: {exc}")
    if resp.stderr:
        sys.stderr.buffer.write(resp.stderr if resp.stderr.endswith(b"\n") else resp.stderr + b"\n")
        sys.stderr.flush()
    out = sys.stdout.buffer
    if include and resp.status:
        out.write(f"Status: {resp.status} {resp.reason}".rstrip().encode("latin-1") + b"\r\n")
        out.writelines(f"{k}: {v}\r\n".encode("latin-1") for k, v in resp.headers)
        out.write(b"\r\n")
    out.write(resp.body)
    out.flush()
    if resp.protocol_status != ProtocolStatus.REQUEST_COMPLETE:
        names = {int(s): s.name for s in ProtocolStatus}
        what = f"{names.get(resp.protocol_status, 'unknown')}, protocol status {resp.protocol_status}"
        _fail("request", address, f"request refused ({what})")
    if not resp.status:
        _fail("request", address, "response without a valid CGI header block")
    if resp.status >= 500 or (fail and resp.status >= 400):
        _fail("request", address, f"{resp.status} {resp.reason}".rstrip())


# -- check -------------------------------------------------------------------------------


def _size(n: int | None, unset: str = "unlimited") -> str:
    if not n:
        return unset
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n} bytes"


def _secs(s: float) -> str:
    return f"{s:g}s" if s else "off"


def _stop_bound(config: Any) -> str:
    from .shutdown import stop_bound_s

    bound = stop_bound_s(config)
    return f" (a stop takes up to {bound:g}s: give the platform a longer grace period than that)"


def _jitter(value: str, jitter: str) -> str:
    return value if jitter in ("0", "off") or value in ("0", "off") else f"{value} (+ up to {jitter})"


def _check_binds(config: Any) -> list[str]:
    """Each bind as the server would read it: ConfigError for a bad address or owner,
    ``_BindProblem`` for one that cannot be bound (found without binding)."""
    import grp
    import pwd

    from .sockets import parse_bind

    if config.socket_owner:
        user, _, group = config.socket_owner.partition(":")
        try:
            if user:
                pwd.getpwnam(user)
            if group:
                grp.getgrnam(group)
        except KeyError as exc:
            raise ConfigError(f"unknown socket owner {config.socket_owner!r}: {exc}") from None
    lines = []
    for text in (*config.binds, *config.status_binds):
        spec = parse_bind(text)
        what = str(spec) + (" (status)" if text in config.status_binds else "")
        if spec.kind == "unix":
            parent = os.path.dirname(spec.path) or "."
            if not os.path.isdir(parent):
                raise _BindProblem(f"cannot bind {spec}: directory {parent} does not exist")
            what += f", mode {config.socket_mode:04o}"
            if config.socket_owner:
                what += f", owner {config.socket_owner}"
        lines.append(what)
    return lines


class _BindProblem(Exception):
    pass


def describe_config(config: Any, interface: str, kind: str, workers_from: str = "") -> list[tuple[str, str]]:
    """What ``serve`` would run, as (label, value) rows (``workers_from``: where the count
    came from when not from an explicit number: ``auto``, ``WEB_CONCURRENCY``)."""
    from . import speedups
    from .cpus import cpu_budget
    from .isolation.setup import build_layer, parse_policies
    from .pool import describe as describe_pm

    c = config
    worker = f"{kind}" + (" (auto)" if c.worker == "auto" else "")
    worker += f", {c.workers} process{'es' * (c.workers != 1)}" + (f" ({workers_from})" * bool(workers_from))
    if kind == "sync":
        worker += f", {c.threads} thread{'s' * (c.threads != 1)} each"
    else:
        worker += f", loop {c.loop}"
        if interface == "wsgi":
            worker += f", {c.bridge_threads} WSGI bridge threads"
    layer = build_layer(
        c.isolation_checkers, c.isolation_user_checkers, parse_policies(c.isolation_policies),
        c.isolation_default_policy, worker=kind,
    )  # fmt: skip
    policies = [f"{k}={v}" for k, v in layer.effective_policies().items()]
    other = {
        "auto": "log (auto: each kind's own default)",
        "strict": "repair, recycling the worker when not repaired (strict)",
    }.get(c.isolation_default_policy, c.isolation_default_policy)
    policies.append(f"other kinds {other}")
    rows = [
        ("app", c.app + (" (factory)" * c.factory)),
        ("app dir", os.path.abspath(c.app_dir) + (f" (chdir {c.chdir})" if c.chdir else "")),
        ("interface", interface + (" (detected)" if c.interface == "auto" else "")),
        ("worker", worker),
        ("process manager", describe_pm(c, cpu_budget().usable)),
        ("cpus", (budget := cpu_budget()).describe() + f"; --workers auto = {budget.auto_workers}"),
        ("speedups", speedups.describe()),
    ]
    if interface == "asgi":
        rows.append(("lifespan", f"{c.lifespan} (not run by check)"))
    rows += [
        ("binds", "; ".join(_check_binds(c)) + f" (backlog {c.backlog})"),
        ("preload", "yes" if c.preload else "no"),
        ("reload", f"{', '.join(c.reload_dirs or (c.app_dir,))} ({c.reload_backend})" if c.reload else "off"),
        ("max body size", _size(c.max_body_bytes)),
        ("max params size", f"{_size(c.max_params_bytes)}, at most {c.max_params_count} params"),
        ("max connections", str(c.max_connections)),
        ("read timeout", _secs(c.read_timeout_s)),
        ("keepalive timeout", _secs(c.keepalive_timeout_s)),
        ("request timeout", _secs(c.request_timeout_s)),
        ("slow request log", _secs(c.slow_request_timeout_s) + (f" -> {c.slow_log}" if c.slow_log else "")),
        ("graceful timeout", _secs(c.graceful_timeout_s)),
        ("shutdown delay", _secs(c.shutdown_delay_s) + _stop_bound(c)),
        ("heartbeat timeout", _secs(c.heartbeat_timeout_s)),
        ("max requests", _jitter(str(c.max_requests or "off"), str(c.max_requests_jitter))),
        ("max lifetime", _jitter(_secs(c.max_lifetime_s), _secs(c.max_lifetime_jitter_s))),
        ("max memory", _size(c.max_memory_bytes, "off")),
        ("trace memory", f"{c.trace_memory_frames} frames" if c.trace_memory_frames else "off"),
        ("isolation checkers", ", ".join(ch.name for ch in layer.checkers) or "none"),
        ("isolation policies", ", ".join(policies)),
        ("status page", c.status_path or "off"),
        ("ping page", f"{c.ping_path} -> {c.ping_response!r}" if c.ping_path else "off"),
        ("pool", c.pool_name),
        ("log level", c.log_level + (", debug responses" * c.debug)),
        ("error log", getattr(c, "error_log", None) or "stderr"),
        ("access log", getattr(c, "access_log", None) or "off"),
    ]
    return rows


def _workers_from(values: dict[str, Any]) -> str:
    """``auto``, ``WEB_CONCURRENCY``, both, or "" (a count given as an option)."""
    source = click.get_current_context().get_parameter_source("workers")
    from_env = source is not None and source.name == "DEFAULT" and bool(os.environ.get("WEB_CONCURRENCY"))
    auto = values.get("workers") == "auto"
    return " from ".join(filter(None, ["auto" * auto, "WEB_CONCURRENCY" * from_env]))


@main.command()
@click.argument("app", envvar="FCGI_GATEWAY_APP", required=False)
@click.option(
    "--grace-period", type=DURATION, default=None,
    help="The platform's time between SIGTERM and SIGKILL (Kubernetes terminationGracePeriodSeconds, "
         "docker --stop-timeout): a configuration error unless --shutdown-delay + --graceful-timeout "
         "fit in it.",
)  # fmt: skip
@_add_options
def check(app: str | None, grace_period: float | None, **values: Any) -> None:
    """Load the config and APP without binding or serving; print what would run.

    Takes the options of serve (and the same FCGI_GATEWAY_* variables). Exit status: 0 when
    everything loads, 2 for a configuration error (a stop longer than --grace-period too), 3
    for a bind address that cannot work (e.g. a missing directory), 4 when the application
    cannot be loaded.
    """
    from .server import prepare_app
    from .shutdown import stop_bound_s

    if not app:
        raise click.UsageError("missing APP (module:attribute), on the command line or as `app` in --config")
    config_file = values.get("config_file")

    def problem(status: int, what: str, exc: BaseException) -> None:
        click.echo(f"fcgi-gateway check: {what}: {exc}", err=True)
        sys.exit(status)

    try:
        config = config_from_options(app, values)
        if grace_period is not None and stop_bound_s(config) >= grace_period:
            raise ConfigError(
                f"a stop takes up to --shutdown-delay {_secs(config.shutdown_delay_s)} + --graceful-timeout "
                f"{_secs(config.graceful_timeout_s)} = {stop_bound_s(config):g}s, not less than "
                f"--grace-period {grace_period:g}s: requests still running would be killed (SIGKILL)"
            )
        if config.chdir:
            os.chdir(config.chdir)
        _, interface, kind = prepare_app(config)
        rows = describe_config(config, interface, kind, _workers_from(values))
        if config.hooks:  # imported and checked as serve does (gateway/hooks.py), never called
            from .hooks import load_hooks

            rows.append(("hooks", load_hooks(config.hooks, config.app_dir).describe()))
        if config_file:
            rows.insert(0, ("config file", os.path.abspath(config_file)))
    except ConfigError as exc:
        problem(EXIT_CONFIG, "configuration error", exc)
    except AppLoadError as exc:
        problem(EXIT_APP_LOAD, "cannot load the application", exc)
    except _BindProblem as exc:
        problem(EXIT_BIND, "bind error", exc)
    width = max(len(label) for label, _ in rows) + 1
    for label, value in rows:
        click.echo(f"{label + ':':<{width}} {value}")
    click.echo("fcgi-gateway check: OK")
    sys.exit(EXIT_OK)
