"""The one immutable Config, and the unit-aware parsers for sizes and durations.

``Config`` is built once (by ``gateway.cli`` from the command line, the environment and an
optional TOML file) and passed everywhere read-only. Field names carry their units
(``*_bytes``, ``*_s``). Its field defaults are the only statement of the defaults: the
command line takes them from here (``Config.default``) and shows them with
``format_size``/``format_duration``, the inverses of the parsers.
``parse_size``/``parse_duration`` reject nonsense instead of guessing
(docs/protocol-notes.md, peer bug 20: "256m" must never become 256 bytes).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?", re.IGNORECASE | re.ASCII)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_size(value: str | int) -> int:
    """Bytes from ``"512"``, ``"64K"``, ``"256M"``, ``"1G"``, ``"1.5GiB"`` (binary units)."""
    if isinstance(value, bool):
        raise ConfigError(f"invalid size {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"size must not be negative: {value}")
        return value
    m = _SIZE_RE.match(str(value))
    if not m or (m.group(3) and m.group(3).lower() == "i"):
        raise ConfigError(f"invalid size {value!r} (use a number with an optional unit K, M, G or T)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_duration(value: str | float | int) -> float:
    """Seconds from ``"30"``, ``"500ms"``, ``"2m"``, ``"1h30m"``, ``"1.5s"``."""
    if isinstance(value, bool):
        raise ConfigError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"duration must not be negative: {value}")
        return float(value)
    text = str(value).strip()
    total = 0.0
    pos = 0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos or not m.group(0):
            break
        if m.group(2) is None and (pos or m.end() != len(text)):
            break  # a bare number only alone: "1h30" is not 1h + 30 s
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2).lower() if m.group(2) else None]
        pos = m.end()
    if not text or pos != len(text):
        raise ConfigError(f"invalid duration {value!r} (use e.g. 30, 500ms, 2m, 1h30m)")
    return total


def format_size(value: int) -> str:
    """The shortest text ``parse_size`` reads back as ``value``: 262144 -> ``"256K"``."""
    for unit in ("t", "g", "m", "k"):
        if value and value % _SIZE_UNITS[unit] == 0:
            return f"{value // _SIZE_UNITS[unit]}{unit.upper()}"
    return str(value)


def format_duration(value: float) -> str:
    """A text ``parse_duration`` reads back as ``value``: 30.0 -> ``"30s"``, 0.5 -> ``"500ms"``."""
    if value == 0:
        return "0"
    if value == int(value):
        return f"{int(value)}s"
    if value < 1 and value * 1000 == int(value * 1000):
        return f"{int(value * 1000)}ms"
    text = repr(float(value))
    return (f"{value:.9f}".rstrip("0") if "e" in text else text) + "s"


INTERFACES = ("auto", "asgi", "wsgi")
WORKER_KINDS = ("auto", "async", "sync")
LIFESPAN_MODES = ("auto", "on", "off")
LOOPS = ("auto", "asyncio", "uvloop")
PM_MODES = ("static", "dynamic", "ondemand")


@dataclass(frozen=True)
class Config:
    """Everything the server needs, fixed at start-up."""

    app: str = ""
    factory: bool = False
    chdir: str | None = None
    app_dir: str = "."
    interface: str = "auto"
    worker: str = "auto"
    binds: tuple[str, ...] = ("127.0.0.1:9000",)
    backlog: int = 2048
    socket_mode: int = 0o660
    socket_owner: str | None = None
    root_path: str = ""
    lifespan: str = "auto"
    loop: str = "auto"
    log_level: str = "info"
    error_log: str | None = None
    access_log: str | None = None
    access_log_format: str | None = None
    log_config: str | None = None
    debug: bool = False
    graceful_timeout_s: float = 30.0
    #: SIGTERM: keep serving this long (ping answers 503) before the drain (gateway/shutdown.py)
    shutdown_delay_s: float = 0.0
    workers: int = 1
    #: the process manager (gateway/pool.py): static, dynamic or ondemand
    pm: str = "static"
    max_workers: int = 0  # 0: twice the usable CPUs (pool.default_max_workers)
    min_spare_workers: int = 1
    max_spare_workers: int = 3
    process_idle_timeout_s: float = 10.0
    max_spawn_rate: int = 32
    preload: bool = False
    max_requests: int = 0
    max_requests_jitter: int = 0
    max_lifetime_s: float = 0.0
    max_lifetime_jitter_s: float = 0.0
    max_memory_bytes: int = 0
    trace_memory_frames: int = 0
    max_concurrent_recycles: int = 1
    heartbeat_timeout_s: float = 60.0
    request_timeout_s: float = 0.0
    slow_request_timeout_s: float = 0.0
    #: answer 503 to a request that waited longer since X-Request-Start (0 = off; gateway/queueing.py)
    max_queue_time_s: float = 0.0
    slow_log: str | None = None
    pid_file: str | None = None
    #: the lifecycle hooks module or .py file (gateway/hooks.py), imported once by the master
    hooks: str | None = None
    status_path: str | None = None
    ping_path: str | None = None
    ping_response: str = "pong"
    status_binds: tuple[str, ...] = ()
    pool_name: str = "www"
    isolation_checkers: str = "auto"
    isolation_user_checkers: tuple[str, ...] = ()
    isolation_policies: tuple[str, ...] = ()
    isolation_default_policy: str = "auto"
    reload: bool = False
    reload_dirs: tuple[str, ...] = ()
    reload_backend: str = "auto"
    threads: int = 1
    bridge_threads: int = 10
    max_params_bytes: int = 256 * 1024
    max_params_count: int = 1000
    max_body_bytes: int | None = None
    max_requests_per_connection: int | None = None
    max_connections: int = 1024
    allowed_clients: tuple[str, ...] = ()
    user: str | None = None
    group: str | None = None
    forward_stderr: bool = False
    read_timeout_s: float = 30.0
    keepalive_timeout_s: float = 75.0
    #: ``--config`` (absolute); with it, the serve command line as given and the directory it
    #: was given in: SIGHUP parses them again, reading the file anew (gateway/reload_config.py)
    config_file: str | None = None
    command_line: tuple[str, ...] = ()
    start_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name, allowed in (
            ("interface", INTERFACES),
            ("worker", WORKER_KINDS),
            ("lifespan", LIFESPAN_MODES),
            ("loop", LOOPS),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if not self.binds:
            raise ConfigError("at least one bind address is needed")
        if self.workers < 1 or self.threads < 1 or self.bridge_threads < 1:
            raise ConfigError("workers, threads and bridge threads must be at least 1")
        if self.pm not in PM_MODES:
            raise ConfigError(f"pm must be one of {', '.join(PM_MODES)}, not {self.pm!r}")
        if self.max_workers < 0 or self.min_spare_workers < 1 or self.max_spare_workers < 1:
            raise ConfigError("max workers must be at least 0 (auto), and spare workers at least 1")
        if self.max_spawn_rate < 1 or self.process_idle_timeout_s <= 0:
            raise ConfigError("the spawn rate must be at least 1 and the idle timeout above 0")
        if not 0 <= self.trace_memory_frames <= 65535:  # tracemalloc's range (0 = off)
            raise ConfigError(f"trace memory takes 0 to 65535 frames, not {self.trace_memory_frames}")
        # A world-writable socket lets any local user talk to the app as the web server.
        if self.socket_mode & 0o002 and not self.extra.get("allow_world_writable_socket"):
            raise ConfigError(f"socket mode {self.socket_mode:#o} is world-writable; refusing")

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name`` (KeyError for a name that is not a field)."""
        f = cls.__dataclass_fields__[name]
        return f.default_factory() if f.default is dataclasses.MISSING else f.default

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)
