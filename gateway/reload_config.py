"""``--config`` read again on SIGHUP: the options that can change without rebinding are
applied to the new generation, the others are refused, and a broken file changes nothing.

Strategy
--------
The master never imports click (gateway/__main__.py: it would count in every worker's
RSS), so it does not parse the file itself: ``reread`` forks a short-lived child that
runs the ``serve`` command line again, exactly as given at start (``Config.command_line``,
in ``Config.start_dir``, with the master's environment), and sends back the Config it
built. The file is one input of that parse, so the precedence is the start's:
command line > FCGI_GATEWAY_* > file > WEB_CONCURRENCY > defaults, every value goes
through the same types, and the same combination checks (gateway/conflicts.py) apply.

``merge`` compares that Config with the running one, field by field:

- ``RELOADABLE`` fields (read by each worker when it starts, or by the master's loop) are
  applied: the new generation runs with them. One log line per option:
  ``reload: max-requests 500 -> 1000``.
- every other field keeps its running value, with one log line saying why (``RESTART``):
  the sockets are bound once, privileges are dropped by workers of a master that keeps
  them, logging and the status pages are set up by the master, ``--chdir``/``--app-dir``
  are followed anew as given (gateway/releases.py) but not replaced, and with
  ``--preload`` the app was loaded once in the master.

A file that cannot be read, parsed or validated refuses the whole reload (decided: no new
generation, not a reload with the old options): the operator who sent SIGHUP after
editing the file would otherwise get a generation that silently ignores the edit. The
running generation keeps serving and the log says why.
"""

from __future__ import annotations

import ast
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any

from .config import Config, format_duration, format_size
from .errors import ConfigError

logger = logging.getLogger("gateway.error")

#: Fields a new generation may take from the file (read by each worker as it starts, or by
#: the master's loop: workers, graceful/heartbeat timeouts, shutdown delay, concurrent recycles)
RELOADABLE = frozenset(
    {
        "app", "factory", "interface", "worker", "loop", "lifespan", "root_path", "debug",
        "workers", "threads", "bridge_threads", "max_concurrent_recycles",
        "max_requests", "max_requests_jitter", "max_lifetime_s", "max_lifetime_jitter_s",
        "max_memory_bytes", "trace_memory_frames", "graceful_timeout_s", "shutdown_delay_s",
        "heartbeat_timeout_s",
        "request_timeout_s", "slow_request_timeout_s", "max_body_bytes", "max_params_bytes",
        "max_params_count", "max_requests_per_connection", "max_connections", "read_timeout_s",
        "keepalive_timeout_s", "allowed_clients", "forward_stderr", "access_log_format",
        "isolation_checkers", "isolation_user_checkers", "isolation_policies",
        "isolation_default_policy", "max_queue_time_s",
        "max_workers", "min_spare_workers", "max_spare_workers", "process_idle_timeout_s",
        "max_spawn_rate",
    }
)  # fmt: skip

#: Why each other field needs a restart (a test checks that every field is in one of both)
RESTART = {
    **dict.fromkeys(
        ("binds", "backlog", "socket_mode", "socket_owner", "status_binds"), "the sockets are bound once"
    ),
    **dict.fromkeys(("user", "group"), "the master keeps the privileges it started with"),
    **dict.fromkeys(("chdir", "app_dir"), "the paths as given are followed anew, not replaced"),
    **dict.fromkeys(
        ("log_level", "error_log", "access_log", "log_config", "slow_log"), "logging is set up at start"
    ),
    **dict.fromkeys(
        ("status_path", "ping_path", "ping_response", "pool_name"), "the status pages are set up at start"
    ),
    **dict.fromkeys(("reload", "reload_dirs", "reload_backend"), "the source watcher is set up at start"),
    "pm": "the process manager (and the scoreboard it reads) is chosen at start",
    "preload": "the app is loaded (or not) in the master at start",
    "pid_file": "the pid file is written at start",
    "hooks": "the hooks module is imported once, by the master, at start",
}
#: With --preload the master loaded the app: what decides how it is loaded stays
PRELOADED = frozenset({"app", "factory", "interface", "worker", "bridge_threads"})
#: Not options: the same in every parse of the same command line
IGNORED = frozenset({"config_file", "command_line", "start_dir", "extra"})

REREAD_TIMEOUT_S = 30.0


def show(name: str, value: Any) -> str:
    """A field's value as its option takes it (sizes, durations, modes), for the log."""
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if name.endswith("_s"):
        return format_duration(value)
    if name.endswith("_bytes"):
        return format_size(value)
    return f"{value:04o}" if name == "socket_mode" else str(value)


def merge(
    running: Config, new: Config, names: dict[str, str], given_app_dir: str
) -> tuple[Config, list[str]]:
    """(the Config of the next generation, the log lines): ``new``'s reloadable changes
    applied to ``running``, the others refused. ``given_app_dir`` is ``--app-dir`` as given
    (``running.app_dir`` holds its resolved path)."""
    lines: list[str] = []
    changes: dict[str, Any] = {}
    for name in sorted(Config.field_names() - IGNORED):
        old = given_app_dir if name == "app_dir" else getattr(running, name)
        value = getattr(new, name)
        if value == old:
            continue
        option = names.get(name, name.replace("_", "-"))
        change = f"{option} {show(name, old)} -> {show(name, value)}"
        if name in RELOADABLE and not (running.preload and name in PRELOADED):
            changes[name] = value
            lines.append(f"reload: {change}")
        else:
            why = RESTART.get(name) or "the app was loaded in the master (--preload)"
            lines.append(f"reload: {change} refused, needs a restart ({why}); keeping {show(name, old)}")
    return (running.replace(**changes) if changes else running), lines


def _parse_in_child(config: Config, write_fd: int) -> None:
    """In the forked child: parse the command line again; write the Config's fields and
    the options' names, or the error, as a Python literal."""
    result: dict[str, Any]
    try:
        from . import cli  # only in this child: the master stays free of click

        os.chdir(config.start_dir or "/")
        handoff = cli.ConfigOnly()
        cli.serve.main(
            args=list(config.command_line), prog_name="fcgi-gateway", obj=handoff, standalone_mode=False
        )
        if not handoff:
            raise ConfigError("the command line did not produce a configuration")
        fields = {name: getattr(handoff[0], name) for name in Config.field_names()}
        names = {opt.field: next(d for d in opt.decls if d.startswith("--"))[2:] for opt in cli.SERVE_OPTIONS}
        result = {"fields": fields, "names": names}
    except Exception as exc:  # click's errors included: each says what is wrong
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        result = {"error": message or type(exc).__name__}
    with os.fdopen(write_fd, "w") as pipe:
        pipe.write(repr(result))


def reread(config: Config, timeout_s: float = REREAD_TIMEOUT_S) -> tuple[Config, dict[str, str]]:
    """The Config the command line and the file give now, with the options' names
    (ConfigError saying why when the file cannot be read, parsed or validated)."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # child: no handler of the master's, no cleanup of its; only the parse
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            os.close(read_fd)
            _parse_in_child(config, write_fd)
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while (left := deadline - time.monotonic()) > 0:
            if select.select([read_fd], [], [], left)[0]:
                data = os.read(read_fd, 65536)
                if not data:
                    break
                chunks.append(data)
        else:
            os.kill(pid, signal.SIGKILL)
            raise ConfigError(f"reading {config.config_file} took more than {timeout_s:g}s")
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    try:
        result = ast.literal_eval(b"".join(chunks).decode("utf-8", "replace"))
    except (SyntaxError, ValueError):
        raise ConfigError(f"reading {config.config_file} failed (no result from the parse)") from None
    if "error" in result:
        raise ConfigError(result["error"])
    return Config(**result["fields"]), result["names"]


def reload_config(
    running: Config, given_app_dir: str, read: Callable[[Config], tuple[Config, dict[str, str]]] = reread
) -> Config | None:
    """On SIGHUP: the next generation's Config (changes logged), or None when the file is
    refused (logged: the running configuration and generation are kept)."""
    try:
        new, names = read(running)
    except ConfigError as exc:
        why = str(exc) if str(running.config_file) in str(exc) else f"{running.config_file}: {exc}"
        logger.error("reload refused: %s; the running configuration and generation are kept", why)
        return None
    config, lines = merge(running, new, names, given_app_dir)
    for line in lines:
        (logger.warning if " refused, " in line else logger.info)("%s", line)
    if not lines:
        logger.info("reload: %s read again, no option changed", running.config_file)
    return config


__all__ = ["RELOADABLE", "RESTART", "merge", "reload_config", "reread", "show"]
