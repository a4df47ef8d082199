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
    return out


def check_combinations(config: Config) -> None:
    """ConfigError naming the options of every impossible combination in ``config``."""
    found = conflicts(config)
    if found:
        raise ConfigError("; ".join(found))


__all__ = ["check_combinations", "conflicts"]
