"""Logging set-up: the error log (``gateway`` loggers), the slow log, the access log, and
reopening their files on SIGUSR1 (log rotation).

``configure`` installs the handlers once per process (it replaces those it installed
before). ``--log-config FILE`` (a ``logging.config.dictConfig`` in JSON or TOML) replaces
all of this for people who ship logs as JSON. ``AccessLog`` formats one line per request
with a %-style format over named fields (see ``ACCESS_FIELDS``); it costs nothing when the
access log is off (the workers hold None). ``queue_ms`` is text, ``-`` when the request
carried no ``X-Request-Start`` (gateway/queueing.py), so it takes ``%(queue_ms)s``; the
workers measure the queue time for it only when the format uses it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S %z"
LEVELS = ("critical", "error", "warning", "info", "debug")

#: Fields of the access log format.
ACCESS_FIELDS = (
    "remote_addr", "time", "method", "uri", "protocol", "status", "bytes", "duration_ms", "request_id", "pid",
    "queue_ms",
)  # fmt: skip
DEFAULT_ACCESS_FORMAT = (
    '%(remote_addr)s - - [%(time)s] "%(method)s %(uri)s %(protocol)s" %(status)s %(bytes)s '
    "%(duration_ms).1fms id=%(request_id)s pid=%(pid)s"
)

_installed: list[tuple[logging.Logger, logging.Handler]] = []


def _file_handler(path: str) -> logging.Handler:
    if path == "-":
        return logging.StreamHandler(sys.stdout)
    return logging.FileHandler(path, encoding="utf-8")


def configure(
    level: str = "info",
    stream: Any = None,
    slow_log: str | None = None,
    error_log: str | None = None,
    access_log: str | None = None,
    log_config: str | None = None,
) -> None:
    for logger, handler in _installed:
        logger.removeHandler(handler)
        handler.close()
    _installed.clear()
    root = logging.getLogger("gateway")
    formatter = logging.Formatter(FORMAT, DATEFMT)

    def add(logger: logging.Logger, handler: logging.Handler, fmt: logging.Formatter) -> None:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
        _installed.append((logger, handler))

    add(
        root,
        _file_handler(error_log) if error_log else logging.StreamHandler(stream or sys.stderr),
        formatter,
    )
    root.setLevel(level.upper())
    root.propagate = False
    slow = logging.getLogger("gateway.slow")
    slow.propagate = not slow_log
    if slow_log:
        add(slow, _file_handler(slow_log), formatter)
    access = logging.getLogger("gateway.access")
    access.propagate = False
    access.setLevel(logging.INFO)
    if access_log:
        add(access, _file_handler(access_log), logging.Formatter("%(message)s"))
    if log_config:
        from logging.config import dictConfig  # only for --log-config: every worker would hold it

        dictConfig(load_log_config(log_config))


def load_log_config(path: str) -> dict[str, Any]:
    from .errors import ConfigError

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read --log-config {path}: {exc.strerror}") from None
    try:
        if path.endswith(".toml"):
            import tomllib

            return tomllib.loads(raw.decode())
        import json

        return json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"invalid --log-config {path}: {exc}") from None


def reopen_files() -> None:
    """Reopen every log file this process writes (SIGUSR1, after logrotate moved them)."""
    for _, handler in _installed:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                if handler.stream is not None:
                    handler.stream.close()
                handler.stream = handler._open()
            finally:
                handler.release()


class AccessLog:
    """One line per request on the ``gateway.access`` logger."""

    def __init__(self, fmt: str = DEFAULT_ACCESS_FORMAT) -> None:
        self.fmt = fmt
        #: the format shows the queue time (the workers measure it only then, or for others)
        self.wants_queue = "%(queue_ms)" in fmt
        self.logger = logging.getLogger("gateway.access")
        self.pid = os.getpid()
        self._second = -1
        self._time = ""

    def _now(self) -> str:
        now = int(time.time())
        if now != self._second:  # strftime once a second, not once a request
            self._second = now
            self._time = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))
        return self._time

    def log(
        self, remote_addr: str, method: str, uri: str, protocol: str, status: int, nbytes: int,
        duration_s: float, request_id: str, queued_s: float | None = None,
    ) -> None:  # fmt: skip
        self.logger.info(
            self.fmt,
            {
                "remote_addr": remote_addr or "-", "time": self._now(), "method": method, "uri": uri,
                "protocol": protocol, "status": status, "bytes": nbytes, "duration_ms": duration_s * 1000.0,
                "request_id": request_id, "pid": self.pid,
                "queue_ms": "-" if queued_s is None else f"{queued_s * 1000.0:.1f}",
            },
        )  # fmt: skip


def check_access_format(fmt: str) -> None:
    """ConfigError when ``fmt`` uses an unknown field or is not a valid %-format."""
    from .errors import ConfigError

    sample: dict[str, Any] = dict.fromkeys(ACCESS_FIELDS, 0)
    sample.update(remote_addr="", time="", method="", uri="", protocol="", request_id="", queue_ms="-")
    try:
        fmt % sample
    except KeyError as exc:
        raise ConfigError(f"unknown access log field {exc}; known: {', '.join(ACCESS_FIELDS)}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid --access-log-format: {exc}") from None
