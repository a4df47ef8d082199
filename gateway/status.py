"""The status and ping pages, PHP-FPM compatible.

``render_status`` produces PHP-FPM's status page — same keys, so existing exporters and
agents keep working — as text (default), ``?json`` or ``?openmetrics``; ``?full`` adds a
block per worker. ``?openmetrics`` also has the histograms the workers keep in the
scoreboard (request duration by status class, queue time), summed over the pool. Our own
fields follow PHP-FPM's: generation, reloads, respawns by reason, stale code, shed
requests, requests in flight and the busy ratio (in flight over what the workers serve at
once: their threads, the async worker's connections). ``answer`` turns a request's params into a complete CGI
response when its path is the configured status or ping path (None otherwise), so both
the workers (on the main socket, before the app) and the master (on ``--status-bind``,
which answers even when every worker is busy) serve the same pages.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from .scoreboard import BUCKETS, STATE_NAMES, STATE_RUNNING, Histogram, Histograms, Scoreboard, SlotView
from .sockdiag import listen_queue

_TIME_FMT = "%d/%b/%Y:%H:%M:%S %z"


def snapshot(
    board: Scoreboard, pool: str, sockets: list[socket.socket], process_manager: str = "static"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The pool summary and the per-worker rows, read from the scoreboard."""
    now = time.time()
    head = board.header()
    slots = board.read()
    active = sum(1 for s in slots if s.state == STATE_RUNNING)
    queued, qlen = listen_queue(sockets)  # now; the master samples the maximum
    summary: dict[str, Any] = {
        "pool": pool,
        "process manager": process_manager,
        "start time": int(board.start_time),
        "start since": int(now - board.start_time),
        "accepted conn": head["accepted_retired"] + sum(s.accepted for s in slots),
        "listen queue": queued,
        "max listen queue": max(head["max_listen_queue"], queued),
        "listen queue len": qlen,
        "idle processes": len(slots) - active,
        "active processes": active,
        "total processes": len(slots),
        "max active processes": max(head["max_active"], active),
        "max children reached": head["max_children_reached"],
        "slow requests": head["slow_retired"] + sum(s.slow for s in slots),
        # ours
        "requests": head["requests_retired"] + sum(s.requests for s in slots),
        "shed requests": head["shed_retired"] + sum(s.shed for s in slots),
        "in flight requests": sum(s.in_flight for s in slots),
        "busy ratio": _ratio(sum(s.in_flight for s in slots), sum(s.capacity for s in slots)),
        "workers wanted": head["workers_wanted"],
        "max workers": head["max_workers"] or head["workers_wanted"],
        "generation": head["generation"],
        "reloads": head["reloads"],
        "stale workers": head["stale_workers"],
        "isolation findings": board.findings(),
        "respawns": {
            reason.replace("_", "-"): head["respawn_" + reason]
            for reason in ("crash", "max_requests", "max_memory", "max_lifetime", "timeout", "leak")
        },
    }
    return summary, [_row(s, now) for s in slots]


def _ratio(in_flight: int, capacity: int) -> float:
    """Requests in flight over the requests the workers serve at once (0 when unknown)."""
    return round(in_flight / capacity, 3) if capacity > 0 else 0.0


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _cpu_percent(s: SlotView) -> float:
    """CPU time of the last request over its wall time, as PHP-FPM shows it (0..100)."""
    if s.last_duration <= 0:
        return 0.0
    return round(min(100.0, s.last_cpu * 100 / s.last_duration), 2)


def _row(s: SlotView, now: float) -> dict[str, Any]:
    running = s.state == STATE_RUNNING
    duration = (now - s.req_start) if running else s.last_duration
    return {
        "pid": s.pid,
        "state": STATE_NAMES.get(s.state, "Idle"),
        "start time": int(s.started),
        "start since": int(now - s.started),
        "requests": s.requests,
        "request duration": int(max(duration, 0) * 1_000_000),
        "request queue time": int(s.queue_time * 1_000_000),
        "in flight requests": s.in_flight,
        "busy ratio": _ratio(s.in_flight, s.capacity),
        "request method": s.method or "-",
        "request uri": s.uri or "-",
        "content length": s.content_length,
        "user": "-",
        "script": "-",
        "last request cpu": _cpu_percent(s),
        "last request memory": _rss(s.pid),
        "generation": s.generation,
    }


def _text(summary: dict[str, Any], rows: list[dict[str, Any]] | None) -> str:
    def fmt(key: str, value: Any) -> str:
        if key == "start time":
            value = time.strftime(_TIME_FMT, time.localtime(value))
        return f"{key + ':':<21} {value}\n"

    out = []
    for key, value in summary.items():
        if isinstance(value, dict):
            out.extend(fmt(f"{key} {k}", v) for k, v in value.items())
        else:
            out.append(fmt(key, value))
    for row in rows or ():
        out.append("\n************************\n")
        for key, value in row.items():
            out.append(fmt(key, value))
    return "".join(out)


def _metric_name(key: str) -> str:
    return "fcgi_gateway_" + key.replace(" ", "_").replace("-", "_")


_COUNTERS = {"accepted conn", "slow requests", "requests", "shed requests", "reloads", "max children reached"}


def _histogram(name: str, series: list[tuple[str, Histogram]]) -> list[str]:
    """One OpenMetrics histogram family in seconds: cumulative buckets, count, sum per
    label set (``labels``: the label text, from ``pool``)."""
    out = [f"# TYPE {name} histogram\n# UNIT {name} seconds\n"]
    bounds = [repr(b) for b in BUCKETS] + ["+Inf"]
    for labels, h in series:
        cumulative = 0
        for le, n in zip(bounds, h.counts, strict=True):
            cumulative += n
            out.append(f'{name}_bucket{{{labels},le="{le}"}} {cumulative}\n')
        out.append(f"{name}_count{{{labels}}} {cumulative}\n{name}_sum{{{labels}}} {h.total!r}\n")
    return out


def _histograms(pool: str, hist: Histograms) -> list[str]:
    """Request duration by status class (2xx always, the others once seen), queue time."""
    by_class = [
        (f'pool="{pool}",code="{code}"', h) for code, h in hist.duration.items() if code == "2xx" or h.count
    ]
    return [
        *_histogram("fcgi_gateway_request_duration_seconds", by_class),
        *_histogram("fcgi_gateway_queue_time_seconds", [(f'pool="{pool}"', hist.queue)]),
    ]


def _openmetrics(
    summary: dict[str, Any], rows: list[dict[str, Any]] | None, hist: Histograms | None = None
) -> str:
    out = []
    pool = summary["pool"]
    for key, value in summary.items():
        if key in ("pool", "process manager"):
            continue
        if isinstance(value, dict):  # respawns by reason, isolation findings by kind
            name = _metric_name(key)
            label = "reason" if key == "respawns" else "kind"
            out.append(f"# TYPE {name} counter\n")
            for item, n in value.items():
                out.append(f'{name}_total{{pool="{pool}",{label}="{item}"}} {n}\n')
            continue
        name = _metric_name(key)
        if key in _COUNTERS:
            out.append(f'# TYPE {name} counter\n{name}_total{{pool="{pool}"}} {value}\n')
        else:
            out.append(f'# TYPE {name} gauge\n{name}{{pool="{pool}"}} {value}\n')
    if hist is not None:
        out.extend(_histograms(pool, hist))
    if rows:
        for key in (
            "requests",
            "request duration",
            "request queue time",
            "in flight requests",
            "busy ratio",
            "last request memory",
        ):
            name = _metric_name("process " + key)
            kind = "counter" if key == "requests" else "gauge"
            out.append(f"# TYPE {name} {kind}\n")
            suffix = "_total" if kind == "counter" else ""
            for row in rows:
                out.append(f'{name}{suffix}{{pool="{pool}",pid="{row["pid"]}"}} {row[key]}\n')
    out.append("# EOF\n")
    return "".join(out)


def render_status(
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    query: str,
    histograms: Callable[[], Histograms] | None = None,
) -> tuple[str, bytes]:
    """(content type, body) for the status page in the format the query asks for;
    ``histograms`` (read only for ``?openmetrics``) gives the pool's histograms."""
    flags = {part.split("=")[0] for part in query.split("&") if part}
    full = rows if "full" in flags else None
    if "json" in flags:
        data = dict(summary)
        if full is not None:
            data["processes"] = full
        return "application/json", json.dumps(data).encode()
    if "openmetrics" in flags:
        return "application/openmetrics-text; version=1.0.0; charset=utf-8", _openmetrics(
            summary, full, histograms() if histograms is not None else None
        ).encode()
    return "text/plain; charset=utf-8", _text(summary, full).encode()


def cgi_response(status: str, content_type: str, body: bytes) -> bytes:
    return (
        f"Status: {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n\r\n"
    ).encode("latin-1") + body


class StatusPages:
    """Matches the status and ping paths and renders their responses."""

    def __init__(
        self,
        board: Scoreboard | None,
        *,
        status_path: str | None,
        ping_path: str | None,
        ping_response: str = "pong",
        pool: str = "www",
        sockets: list[socket.socket] | None = None,
        process_manager: str = "static",
    ) -> None:
        self.board = board
        self.status_path = status_path
        self.ping_path = ping_path
        self.ping_response = ping_response.encode()
        self.pool = pool
        self.sockets = sockets or []
        self.process_manager = process_manager
        self.paths = {p for p in (status_path, ping_path) if p}

    def answer(self, params: list[tuple[bytes, bytes]], *, master: bool = False) -> bytes | None:
        """The full CGI response for a status/ping request, or None for any other path.
        ``master``: answered by the master (``--status-bind``), where ping also says 503
        while no worker is ready."""
        uri = script = info = query = b""
        for name, value in params:  # the last one wins, as in the environ and the scope
            if name == b"REQUEST_URI":
                uri = value
            elif name == b"SCRIPT_NAME":
                script = value
            elif name == b"PATH_INFO":
                info = value
            elif name == b"QUERY_STRING":
                query = value
        return self.answer_request(
            uri.decode("latin-1"), (script + info).decode("latin-1"), query.decode("latin-1"), master=master
        )

    def answer_environ(self, environ: Mapping[str, Any]) -> bytes | None:
        """``answer`` for a WSGI environ (the sync worker's)."""
        return self.answer_request(
            environ.get("REQUEST_URI", ""),
            environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
        )

    def answer_request(
        self, request_uri: str, script: str, query_string: str, *, master: bool = False
    ) -> bytes | None:
        """``answer`` for REQUEST_URI, SCRIPT_NAME + PATH_INFO and QUERY_STRING ("" when
        absent), decoded as latin-1.

        The path is REQUEST_URI's, else SCRIPT_NAME's: PHP-FPM exporters and ``cgi-fcgi``
        health checks send only ``SCRIPT_NAME=/status`` and ``QUERY_STRING=json&full``. The
        format comes from QUERY_STRING, as in PHP-FPM, else from REQUEST_URI's query (nginx
        sends both, and they agree)."""
        path, _, uri_query = request_uri.partition("?")
        path = path or script
        if path not in self.paths:
            return None
        if path == self.ping_path:
            return self._ping(master)
        if self.board is None:
            return cgi_response(_UNAVAILABLE, "text/plain", b"status unavailable\n")
        summary, rows = snapshot(self.board, self.pool, self.sockets, self.process_manager)
        ctype, body = render_status(summary, rows, query_string or uri_query, self.board.histograms)
        return cgi_response("200 OK", ctype, body)

    def _ping(self, master: bool) -> bytes:
        """pong; 503 ``draining`` once the master stops (SIGTERM, SIGQUIT, SIGINT), and from
        the master, 503 ``no ready worker`` while none is ready (starting, crash loop)."""
        head = self.board.header() if self.board is not None else None
        if head is not None and head["draining"]:
            return cgi_response(_UNAVAILABLE, "text/plain", b"draining")
        if master and head is not None and not head["ready_workers"]:
            return cgi_response(_UNAVAILABLE, "text/plain", b"no ready worker")
        return cgi_response("200 OK", "text/plain", self.ping_response)


_UNAVAILABLE = "503 Service Unavailable"
