"""Noticing code changes: ``--reload`` for development and stale-code detection in
production.

- ``SourceWatcher`` (master, ``--reload``): watches ``*.py`` files under the app
  directories and reports a change; the master answers with a rolling reload, so workers
  import the new code. It uses watchfiles when installed (inotify, a background thread)
  and falls back to polling mtimes once a second.
- ``StaleCodeDetector`` (worker): remembers the mtime of every module file imported when
  the app finished loading; ``check`` (called from the worker's heartbeat, spread over
  time) finds a file changed on disk since, so "forgot to reload after deploy" shows up
  as one warning in the log and a flag in the status. It also finds a worker whose
  release is no longer current: the ``--chdir``/``--app-dir`` it imported from now
  resolves elsewhere (a ``current`` symlink flipped without a reload; see
  gateway/releases.py). No file it imported changed then, so only the path tells; the
  master logs that one (a worker cannot tell a flip followed by a reload from a forgotten
  reload).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator

from . import releases

logger = logging.getLogger("gateway.error")

_SKIP_DIRS = {"__pycache__", ".git", ".venv", "venv", "node_modules", ".tox", ".mypy_cache", ".pytest_cache"}


def _py_files(roots: Iterable[str]) -> Iterator[str]:
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
            for name in filenames:
                if name.endswith(".py"):
                    yield os.path.join(dirpath, name)


def _mtimes(paths: Iterable[str]) -> dict[str, float]:
    out = {}
    for path in paths:
        try:
            out[path] = os.stat(path).st_mtime
        except OSError:
            continue
    return out


class SourceWatcher:
    """Reports whether a ``*.py`` file under ``roots`` changed since the last ``changed()``."""

    def __init__(self, roots: list[str], interval: float = 1.0, backend: str = "auto") -> None:
        self.roots = [os.path.abspath(r) for r in roots]
        self.interval = interval
        self._flag = threading.Event()
        self._stop = threading.Event()
        self.backend = "polling"
        if backend != "polling":
            try:
                import watchfiles  # noqa: F401

                self.backend = "watchfiles"
            except ImportError:
                if backend == "watchfiles":
                    logger.warning("--reload-backend watchfiles: watchfiles is not installed; polling")
        # watchfiles: compared once its watches are in place, for what changed before
        self._snapshot = _mtimes(_py_files(self.roots))
        self._last_poll = time.monotonic()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.backend == "watchfiles":
            self._thread = threading.Thread(target=self._watch, name="gateway-reload", daemon=True)
            self._thread.start()
        else:
            logger.info("--reload: watching %s (%s)", ", ".join(self.roots), self.backend)

    def _watch(self) -> None:
        import watchfiles

        watching = False
        for changes in watchfiles.watch(
            *self.roots, stop_event=self._stop, debounce=200, rust_timeout=500, yield_on_timeout=True
        ):
            if not watching:
                # The first yield (a change, or the first timeout) comes once the watches are
                # in place: only then say so, and catch what changed while they were set up.
                watching = True
                logger.info("--reload: watching %s (watchfiles)", ", ".join(self.roots))
                if _mtimes(_py_files(self.roots)) != self._snapshot:
                    self._flag.set()
            if any(path.endswith(".py") for _, path in changes):
                self._flag.set()

    def stop(self) -> None:
        self._stop.set()

    def changed(self) -> bool:
        if self.backend == "polling" and time.monotonic() - self._last_poll >= self.interval:
            self._last_poll = time.monotonic()
            now = _mtimes(_py_files(self.roots))
            if now != self._snapshot:
                self._snapshot = now
                self._flag.set()
        if self._flag.is_set():
            self._flag.clear()
            return True
        return False


class StaleCodeDetector:
    """Worker side: has a module this process imported changed on disk since start-up?"""

    def __init__(self, batch: int = 200) -> None:
        self.batch = batch
        self.stale: str | None = None
        self.moved: str | None = None
        files = []
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if path and path.endswith(".py"):
                files.append(path)
        self._known = _mtimes(files)
        self._order = list(self._known)
        self._pos = 0

    def check(self) -> str | None:
        """Stat the next batch of files; the first changed path (reported once), else None.
        Before that, once: ``release <path> now resolves to ...`` when the release moved."""
        if self.moved is None:
            self.moved = releases.moved()
            if self.moved is not None:
                return self.moved
        if self.stale is not None or not self._order:
            return None
        end = min(self._pos + self.batch, len(self._order))
        for path in self._order[self._pos : end]:
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                mtime = -1.0
            if mtime != self._known[path]:
                self.stale = path
                logger.warning(
                    "stale code: %s changed on disk after this worker (pid %d) started; "
                    "reload (SIGHUP) to serve the new code",
                    path,
                    os.getpid(),
                )
                return path
        self._pos = 0 if end >= len(self._order) else end
        return None
