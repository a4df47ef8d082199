"""Request timeouts and the slow log, from inside the worker (no SIGALRM, no ptrace).

The sync worker records the request each thread is running in ``Watchdog.running`` (one
dict assignment on the hot path, only when a timeout is configured). A daemon thread
looks at it a few times a second:

- past ``--slow-request-timeout`` it writes the Python stack of the serving thread, read
  with ``sys._current_frames()``, to the slow log (once per request);
- past ``--request-timeout`` it answers the request itself — 504 when no header was sent
  yet, else it just ends the response — so nginx gets END_REQUEST instead of waiting for
  ``fastcgi_read_timeout``, and asks the master to recycle the worker. If the app never
  returns (stuck in C code), the master kills the worker after the graceful timeout.

The async worker uses ``loop.call_later`` for the same two deadlines (see asgi/cycle.py);
``format_task_stack`` is shared.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

slow_logger = logging.getLogger("gateway.slow")
logger = logging.getLogger("gateway.error")


class Running:
    """The request a sync worker is running now."""

    __slots__ = ("describe", "responder", "slow_logged", "started", "thread_id", "timed_out")

    def __init__(self, responder: Any, describe: str) -> None:
        self.responder = responder
        self.describe = describe
        self.started = time.monotonic()
        self.thread_id = threading.get_ident()
        self.slow_logged = False
        self.timed_out = False


def log_slow(describe: str, elapsed: float, stack: str) -> None:
    slow_logger.warning(
        "slow request (%.1fs so far, pid %d): %s\n%s", elapsed, os.getpid(), describe, stack.rstrip()
    )


def _request_stack(frame: Any) -> str:
    """The stack from the WSGI call down (the server's own frames above it are noise)."""
    entries = traceback.extract_stack(frame)
    for i, entry in enumerate(entries):
        if entry.filename.endswith(("wsgi/handler.py", "wsgi\\handler.py")) and entry.name == "run":
            entries = entries[i:]
            break
    return "".join(traceback.format_list(entries))


def format_task_stack(task: asyncio.Task[Any]) -> str:
    """The await chain of a suspended task, outermost first (get_stack() shows one frame)."""
    entries = []
    obj: Any = task.get_coro()
    while obj is not None:
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        if frame is None:
            break
        entries.append(traceback.FrameSummary(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
    return "".join(traceback.format_list(entries)) if entries else "(no stack)\n"


class Watchdog:
    """The sync worker's timer thread (started only when a timeout is configured)."""

    def __init__(self, request_timeout: float, slow_timeout: float, on_timeout: Any) -> None:
        self.request_timeout = request_timeout
        self.slow_timeout = slow_timeout
        self.on_timeout = on_timeout
        #: thread id -> the request that thread is running (one entry without --threads)
        self.running: dict[int, Running] = {}
        self._stop = threading.Event()
        limits = [t for t in (request_timeout, slow_timeout) if t]
        self.interval = max(0.02, min(0.25, min(limits) / 10)) if limits else 0.25
        self._thread = threading.Thread(target=self._run, name="gateway-watchdog", daemon=True)

    @property
    def enabled(self) -> bool:
        return bool(self.request_timeout or self.slow_timeout)

    def start(self) -> None:
        if self.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for cur in list(self.running.values()):
                self._check(cur)

    def _check(self, cur: Running) -> None:
        elapsed = time.monotonic() - cur.started
        if self.slow_timeout and elapsed >= self.slow_timeout and not cur.slow_logged:
            cur.slow_logged = True
            frame = sys._current_frames().get(cur.thread_id)
            stack = _request_stack(frame) if frame is not None else "(no stack)\n"
            log_slow(cur.describe, elapsed, stack)
        if self.request_timeout and elapsed >= self.request_timeout and not cur.timed_out:
            cur.timed_out = True
            logger.error(
                "request timeout (%.1fs): %s; answering 504 and recycling the worker",
                elapsed,
                cur.describe,
            )
            try:
                cur.responder.timeout()
            finally:
                self.on_timeout()
