"""Option combinations that cannot work, refused before anything starts.

``check_combinations(config)`` raises ConfigError naming both options (the command line
turns it into exit status 2): an option that only modifies another one that is off, or
two options that contradict each other. Each rule says why in its message. The same check
runs on SIGHUP when ``--config`` is read again (gateway/reload_config.py), so a file edited
into such a combination is refused as a whole.

Not here: a value that is invalid on its own (gateway/config.py, the command line's types),
and ``--trace-memory`` without ``--max-memory`` or the memory checker, which only warns
(gateway/server.py: the trace still starts nothing, and the option may come from a shared
file).
"""

from __future__ import annotations

from .config import Config
from .errors import ConfigError


def _default(config: Config, name: str) -> bool:
    return bool(getattr(config, name) == Config.default(name))


def conflicts(config: Config) -> list[str]:
    """One message per impossible combination, each naming both options."""
    c = config
    out: list[str] = []
    if c.max_requests_jitter and not c.max_requests:
        out.append("--max-requests-jitter needs --max-requests (jitter is added to the limit; there is none)")
    if c.max_lifetime_jitter_s and not c.max_lifetime_s:
        out.append("--max-lifetime-jitter needs --max-lifetime (jitter is added to the limit; there is none)")
    if c.worker == "sync" and c.interface == "asgi":
        out.append("--worker sync: the sync worker serves WSGI applications only, not --interface asgi")
    async_only = c.worker == "async" or (c.worker == "auto" and c.interface == "asgi")
    if c.threads > 1 and async_only:
        what = "--worker async" if c.worker == "async" else "--interface asgi (async worker)"
        out.append(f"--threads is the sync worker's thread pool, not used with {what}; see --bridge-threads")
    if not _default(c, "bridge_threads") and (c.worker == "sync" or c.interface == "asgi"):
        what = "--worker sync" if c.worker == "sync" else "--interface asgi"
        out.append(f"--bridge-threads sizes the async worker's WSGI bridge, not used with {what}")
    if c.loop != "auto" and c.worker == "sync":
        out.append("--loop picks the async worker's event loop, not used with --worker sync")
    if c.reload and c.preload:
        out.append("--reload cannot reload code that --preload loaded once in the master")
    if c.reload_dirs and not c.reload:
        out.append("--reload-dir needs --reload")
    if not _default(c, "reload_backend") and not c.reload:
        out.append("--reload-backend needs --reload")
    if c.slow_log and not c.slow_request_timeout_s:
        out.append("--slow-log needs --slow-request-timeout (nothing is written to it otherwise)")
    if not _default(c, "ping_response") and not (c.ping_path or c.status_binds):
        out.append("--ping-response needs --ping-path or --status-bind (no ping page answers otherwise)")
    out += _pm_conflicts(c)
    return out


def _pm_conflicts(c: Config) -> list[str]:
    """The process manager's options (gateway/pool.py)."""
    out: list[str] = []
    if c.pm == "static":
        for name, option in _PM_OPTIONS:
            if not _default(c, name):
                out.append(f"{option} needs --pm dynamic or ondemand (--pm static keeps --workers workers)")
        return out
    if c.pm == "ondemand":
        if not _default(c, "workers"):
            out.append(
                "--workers (or WEB_CONCURRENCY) is the start count of --pm static or dynamic; --pm ondemand "
                "starts workers as connections come, up to --max-workers"
            )
        for name, option in _PM_OPTIONS[1:3]:
            if not _default(c, name):
                out.append(f"{option} bounds the idle workers of --pm dynamic, not used with --pm ondemand")
    elif not _default(c, "process_idle_timeout_s"):
        out.append("--process-idle-timeout retires idle workers in --pm ondemand, not used with --pm dynamic")
    if c.min_spare_workers > c.max_spare_workers and c.pm == "dynamic":
        out.append(
            f"--min-spare-workers {c.min_spare_workers} is above --max-spare-workers {c.max_spare_workers}"
        )
    if c.max_workers:
        if c.pm == "dynamic" and c.workers > c.max_workers:
            out.append(f"--workers {c.workers} (the start count) is above --max-workers {c.max_workers}")
        if c.pm == "dynamic" and c.max_spare_workers > c.max_workers and not _default(c, "max_spare_workers"):
            out.append(
                f"--max-spare-workers {c.max_spare_workers} is above --max-workers {c.max_workers} "
                "(the pool could never keep that many idle)"
            )
    return out


#: (Config field, option) of the options only the adaptive modes use
_PM_OPTIONS = (
    ("max_workers", "--max-workers"),
    ("min_spare_workers", "--min-spare-workers"),
    ("max_spare_workers", "--max-spare-workers"),
    ("process_idle_timeout_s", "--process-idle-timeout"),
    ("max_spawn_rate", "--max-spawn-rate"),
)


def check_combinations(config: Config) -> None:
    """ConfigError naming the options of every impossible combination in ``config``."""
    found = conflicts(config)
    if found:
        raise ConfigError("; ".join(found))


__all__ = ["check_combinations", "conflicts"]
