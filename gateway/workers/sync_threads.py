"""The sync worker with ``--threads N``: requests handed to a pool of N threads.

The main thread keeps the epoll loop (accepting, watching idle keep-alive connections);
a connection with bytes to process is taken out of epoll and handed to a pool thread,
which serves its request start to finish (reading the body, running the app, writing the
response) and then puts the connection back under epoll. The main thread waits for a free
thread before taking more work, so a saturated worker leaves new connections in the
listen backlog for its siblings instead of queueing them internally.

For I/O-bound WSGI apps (waiting on databases or upstream APIs); CPU-bound apps are
better served by more processes (``--workers``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .sync_conn import Conn
from .sync_worker import SyncWorker


class ThreadedSyncWorker(SyncWorker):
    multithread = True

    def run(self) -> None:
        n = self.config.threads
        self._slots = threading.BoundedSemaphore(n)
        self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="gateway-request")
        try:
            super().run()
        finally:
            self._pool.shutdown(wait=True)

    def _process(self, conn: Conn, data: bytes) -> None:
        self._hand_over(conn, SyncWorker._process, data)

    def _hand_over(self, conn: Conn, serve: Callable[..., None], *args: Any) -> None:
        # Main thread: wait for a free thread (checking for signals), then hand over.
        while not self._slots.acquire(timeout=0.2):
            if self.signal_received is not None and self.stopping:
                self._slots.acquire()
                break
        conn.busy = True
        if conn.registered:
            conn.registered = False
            try:
                self._ep.unregister(conn.fd)
            except (OSError, ValueError):
                pass
        self._pool.submit(self._work, conn, serve, args)

    def _work(self, conn: Conn, serve: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            serve(self, conn, *args)
        finally:
            conn.busy = False
            self._slots.release()
