"""Queue time: how long a request waited between the web server and a worker, and shedding
the requests that waited longer than ``--max-queue-time``.

The web server stamps the request with ``X-Request-Start`` (or ``X-Queue-Start``), as the
New Relic and AppSignal agents expect; nginx does it with
``fastcgi_param HTTP_X_REQUEST_START "t=${msec}";`` (seconds with a millisecond fraction).
The value is ``t=<number>`` or a bare number in seconds, milliseconds or microseconds since
the epoch: the unit is told by magnitude, as those agents do (the first of µs, ms, s that
gives a time after 2000-01-01). A value that is not such a number is ignored; one from the
future (clock skew between the web server's host and ours) counts as 0 and is never shed.
Both only at debug level: a client can send the header itself when nginx does not set it.

A worker makes a ``Queueing`` at start only when something reads the queue time: the
status page (histogram, ``?full``), an access log format with ``queue_ms``, or
``--max-queue-time``. Otherwise it holds None and pays nothing per request.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("gateway.error")

#: The params that carry the stamp, in order of preference.
PARAMS = ("HTTP_X_REQUEST_START", "HTTP_X_QUEUE_START")
_PARAMS_BYTES = tuple(p.encode() for p in PARAMS)
#: 2000-01-01T00:00:00Z: a stamp read in a unit that puts it earlier is in a smaller unit.
_EARLIEST = 946684800.0
#: Seconds between two warnings about shed requests (each tells how many since the last).
SHED_LOG_INTERVAL_S = 10.0
RETRY_AFTER_S = 1
_SHED_BODY = b"Service Unavailable: the request waited too long in the queue\n"
#: The CGI response of a shed request.
SHED_RESPONSE = (
    f"Status: 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: {RETRY_AFTER_S}\r\n"
    f"Content-Length: {len(_SHED_BODY)}\r\nCache-Control: no-store\r\n\r\n"
).encode("latin-1") + _SHED_BODY


def parse_request_start(value: str | bytes) -> float | None:
    """Epoch seconds from an ``X-Request-Start`` value (``t=1700000000.123``,
    ``1700000000123``, ``t=1700000000123456``), or None when it is not a time."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    text = value.strip()
    if text[:2] in ("t=", "T="):
        text = text[2:].strip()
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    for divisor in (1_000_000.0, 1_000.0, 1.0):
        seconds = number / divisor
        if seconds > _EARLIEST:
            return seconds
    return None


def queue_time(value: str | bytes, now: float) -> float | None:
    """Seconds between the stamp ``value`` and ``now`` (0 for one from the future), or None."""
    start = parse_request_start(value)
    if start is None:
        logger.debug("ignoring X-Request-Start %r: not a time", value)
        return None
    waited = now - start
    if waited < 0:
        logger.debug("X-Request-Start %r is %.3fs in the future (clock skew): queue time 0", value, -waited)
        return 0.0
    return waited


class Queueing:
    """A worker's queue-time stage: measure, and tell whether to shed."""

    __slots__ = ("_last_log", "_longest", "_unlogged", "limit_s", "slot")

    def __init__(self, max_queue_time_s: float, slot: Any) -> None:
        #: the limit, or infinity when --max-queue-time is off
        self.limit_s = max_queue_time_s or math.inf
        self.slot = slot
        self._last_log = -math.inf
        self._unlogged = 0
        self._longest = 0.0

    def environ(self, environ: dict[str, Any]) -> float | None:
        """The queue time of a request with this environ (the sync worker's), or None."""
        value = environ.get("HTTP_X_REQUEST_START") or environ.get("HTTP_X_QUEUE_START")
        return None if value is None else queue_time(value, time.time())

    def params(self, params: list[tuple[bytes, bytes]]) -> float | None:
        """The queue time of a request with these FastCGI params (the async worker's)."""
        found: dict[bytes, bytes] = {}
        for name, value in params:
            if name in _PARAMS_BYTES:
                found[name] = value  # the last one wins, as in the environ
        value = found.get(_PARAMS_BYTES[0]) or found.get(_PARAMS_BYTES[1])
        return None if value is None else queue_time(value, time.time())

    def shed(self, waited: float, access: Any, env: Mapping[str, str], request_id: str) -> bytes:
        """The CGI response for a request shed after waiting ``waited`` seconds: counted on the
        status page, in the access log (``env``: its CGI variables), and in the error log at
        most every SHED_LOG_INTERVAL_S."""
        if access is not None:
            uri = env.get("REQUEST_URI") or env.get("PATH_INFO", "")
            method, protocol = env.get("REQUEST_METHOD", ""), env.get("SERVER_PROTOCOL", "")
            access.log(env.get("REMOTE_ADDR", ""), method, uri, protocol, 503, len(_SHED_BODY), 0.0,
                       request_id, waited)  # fmt: skip
        if self.slot is not None:
            self.slot.shed(waited)
        self._unlogged += 1
        self._longest = max(self._longest, waited)
        now = time.monotonic()
        if now - self._last_log >= SHED_LOG_INTERVAL_S:
            logger.warning(
                "shed %d request(s) that waited longer than --max-queue-time %gs (longest %.2fs): 503",
                self._unlogged,
                self.limit_s,
                self._longest,
            )
            self._last_log = now
            self._unlogged = 0
            self._longest = 0.0
        return SHED_RESPONSE


def make_queueing(config: Any, slot: Any, access: Any) -> Queueing | None:
    """A worker's Queueing when something reads the queue time, else None (chosen once)."""
    wanted = config.max_queue_time_s or slot is not None or (access is not None and access.wants_queue)
    return Queueing(config.max_queue_time_s, slot) if wanted else None
