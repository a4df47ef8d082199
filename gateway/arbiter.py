"""The master process: owns the listening sockets, forks workers, watches and replaces them.

Strategy
--------
Signal handlers only append the signal number to a list (and wake the loop through
``signal.set_wakeup_fd``); ``Arbiter.run`` dispatches ``handle_<signal>`` from its loop.
Signals are blocked around ``fork`` and reset to their defaults in the child before the
worker installs its own.

Workers talk back on one pipe (see ``gateway.workers.base``): ``ready`` after the app is
loaded and the worker accepts, ``beat``, ``recycle-soon <reason>`` (start my replacement,
but do not retire me yet), ``recycle <reason>``, ``boot-error <message>``.

Every loop turn ``_reconcile`` restores the invariant: ``workers`` fresh (current
generation, not asked to recycle) workers exist; old-generation and recycling workers are
retired (SIGTERM, graceful) only while the ready workers left would still number at least
``workers``. That one rule gives both the rolling reload (HUP: a new generation is
spawned; each new worker that becomes ready lets one old worker go) and recycling (the
replacement is started and ready before the old worker is told to stop). A new generation
that cannot load the app is abandoned and the old one keeps serving. A reload first enters
``--chdir``/``--app-dir`` again from the paths as given (gateway/releases.py: a flipped
``current`` symlink is followed) after reading ``--config`` again (gateway/reload_config.py:
a file refused keeps the running configuration and generation); each worker stops by
itself if the master dies (gateway/orphans.py). USR2 (upgrade in place: a new master
process, the old one retiring once it serves) is gateway/upgrade.py's. The wanted count
(``num_workers``) is ``--workers``, moved by TTIN/TTOU; with ``--pm dynamic`` or
``ondemand`` gateway/pool.py moves it between the bounds and names the idle workers to retire.

Crashes are replaced with exponential backoff; more than ``CRASH_LIMIT`` crashes within
``CRASH_WINDOW`` seconds, or a boot failure of the very first generation, stops the master
(AppLoadError / HaltServer: the CLI picks the exit code). Stopping (the shutdown delay,
then the drain) is gateway/shutdown.py's.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import orphans, speedups, systemd, upgrade
from .child_exit import describe_exit, lifespan_error
from .config import Config
from .errors import AppLoadError, HaltServer
from .log import reopen_files
from .pool import start_count
from .reload_config import reload_config
from .shutdown import Stopping

if TYPE_CHECKING:
    from .codewatch import SourceWatcher
    from .hooks import Hooks
    from .pool import ProcessManager
    from .releases import ReleaseDirs
    from .scoreboard import Scoreboard
    from .status_server import StatusServer

logger = logging.getLogger("gateway.error")

WORKER_BOOT_ERROR = 3
CRASH_WINDOW = 60.0
CRASH_LIMIT = 10
HANDLED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
)


@dataclass
class Worker:
    pid: int
    generation: int
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    retiring: bool = False
    recycle: str | None = None
    #: "recycle-soon": a replacement is started now, but this worker is not retired
    #: until it sends "recycle" (or exits by itself).
    replace_soon: str | None = None
    last_beat: float = field(default_factory=time.monotonic)
    slot: int = -1
    retire_deadline: float = 0.0


class NoHooks:
    def call(self, name: str, master: Any, worker: Any = None, exit_code: int | None = None) -> None:
        """No --hooks: nothing to call (gateway/hooks.py is not imported)."""


class Arbiter(Stopping):
    """Prefork master. ``child_main(control_fd, slot)`` runs in each forked worker (``slot``:
    its scoreboard index, -1 without a scoreboard). How it stops (SIGTERM, SIGQUIT, SIGINT;
    the shutdown delay): gateway/shutdown.py."""

    def __init__(
        self,
        config: Config,
        sockets: list[socket.socket],
        child_main: Callable[[int, int], None],
        board: Scoreboard | None = None,
        status_server: StatusServer | None = None,
        releases: ReleaseDirs | None = None,
        pool: ProcessManager | None = None,
    ) -> None:
        self.releases = releases  # the generation's directories: config.app_dir is its real path
        if releases is not None:
            config = replace(config, app_dir=releases.current.app_dir)
        self.board = board
        self.status_server = status_server
        self.hooks: Hooks | NoHooks = NoHooks()  # with --hooks, server.py sets gateway/hooks.py's
        self.max_active = 0
        self._all_busy = False
        self.config = config
        self.sockets = sockets
        self.child_main = child_main
        self.pool = pool  # --pm dynamic or ondemand (gateway/pool.py): moves num_workers
        self.num_workers = start_count(config)
        self.workers: dict[int, Worker] = {}
        self.generation = 1
        self.signals: list[int] = []
        self.crashes: list[float] = []
        self.backoff_until = 0.0
        self.reloads = 0
        self.respawns: dict[str, int] = {}
        self.booted = False
        self.boot_error: str | None = None
        self.started = time.time()
        self.pid = os.getpid()
        self._pipe_r = self._pipe_w = self._wake_r = self._wake_w = -1
        self._buf = b""
        self._watchdog = systemd.watchdog_interval()
        self._last_watchdog = 0.0
        self._reloading = False
        self.stale: dict[int, str] = {}
        self.findings: dict[str, int] = {}
        self.watcher: SourceWatcher | None = None
        self.upgrader = upgrade.Upgrader(self)  # SIGUSR2
        if config.reload:
            from .codewatch import SourceWatcher

            roots = list(config.reload_dirs) or [config.app_dir]
            self.watcher = SourceWatcher(roots, backend=config.reload_backend)

    # -- signals -----------------------------------------------------------------------

    def _record(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)  # only record: the loop acts

    def _install(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in HANDLED:
            signal.signal(sig, self._record)
        self._pipe_r, self._pipe_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self._pipe_r, False)

    # -- spawning ----------------------------------------------------------------------

    def spawn(self) -> Worker:
        slot = self.board.claim(0, self.generation) if self.board is not None else -1
        # The worker starts with everything alive now in the GC's permanent generation: its
        # collections never walk (so never copy-on-write) the pages it shares with the
        # master. The master unfreezes its own copy at once (its garbage stays collectable).
        gc.freeze()
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            pid = os.fork()
        except OSError:
            gc.unfreeze()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
            if self.board is not None:
                self.board.release(slot)
            raise
        if pid == 0:  # child
            status = 1
            me = Worker(os.getpid(), self.generation, slot=slot)
            try:
                signal.set_wakeup_fd(-1)
                for sig in HANDLED:
                    signal.signal(sig, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                signal.signal(signal.SIGTTIN, signal.SIG_IGN)
                signal.signal(signal.SIGTTOU, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
                for fd in (self._pipe_r, self._wake_r, self._wake_w):
                    os.close(fd)
                if self.status_server is not None:
                    self.status_server.close()
                if self.releases is not None:
                    self.releases.pin_worker()
                orphans.watch_master(self.pid, self.config.graceful_timeout_s)
                self.hooks.call("post_fork", self, me)
                self.child_main(self._pipe_w, slot)
                status = 0
            except (AppLoadError, lifespan_error()) as exc:
                # A lifespan startup failure is a boot failure too (exit 5, not a crash loop).
                tag = "" if isinstance(exc, AppLoadError) else "lifespan "
                msg = f"{os.getpid()} boot-error {tag}{exc}".replace("\n", " ")[:500]
                try:
                    os.write(self._pipe_w, msg.encode("utf-8", "replace") + b"\n")
                except OSError:
                    pass
                status = WORKER_BOOT_ERROR
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                logger.exception("worker %d failed", os.getpid())
                status = 1
            finally:
                self.hooks.call("worker_exit", self, me, exit_code=status)
                logging.shutdown()
                os._exit(status)
        gc.unfreeze()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        worker = Worker(pid, self.generation)
        worker.slot = slot
        if self.board is not None:
            self.board.set_pid(slot, pid)
        self.workers[pid] = worker
        logger.info("booted worker %d (generation %d)", pid, self.generation)
        return worker

    # -- main loop ---------------------------------------------------------------------

    def run(self) -> None:
        self._install()
        if self.watcher is not None:
            self.watcher.start()
        logger.info("speedups: %s", speedups.describe())
        systemd.notify("STATUS=starting workers")
        try:
            for _ in range(self.num_workers):
                self.spawn()
            self._publish()  # the status page's pool figures, before any worker answers
            while True:
                self._loop_once()
                if self.stopping and not self.workers:
                    break
        finally:
            systemd.notify("STOPPING=1")
            self._kill_all(signal.SIGKILL)
            signal.set_wakeup_fd(-1)
            for fd in (self._pipe_r, self._pipe_w, self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
        if self.boot_error is not None and not self.booted:
            if self.boot_error.startswith("lifespan "):
                from .asgi.lifespan import LifespanError

                raise LifespanError(self.boot_error.removeprefix("lifespan "))
            raise AppLoadError(self.boot_error)
        if self.halt_reason:
            raise HaltServer(self.halt_reason, 1)

    halt_reason: str | None = None

    def _loop_once(self) -> None:
        try:
            status_fds = self.status_server.fds() if self.status_server is not None else []
            listening = self.pool.watched(self) if self.pool is not None else []  # ondemand
            fds = [self._wake_r, self._pipe_r, *status_fds, *listening]
            readable, _, _ = select.select(fds, [], [], 0.25)
        except InterruptedError:
            readable = listening = []
        if listening and (waiting := [s for s in listening if s in readable]):
            self.pool.connection_waiting(self, waiting)  # type: ignore[union-attr]
        if self._wake_r in readable:
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
        if self.status_server is not None:
            for fd in readable:
                if fd in status_fds:
                    self.status_server.handle(fd)
            self.status_server.sweep()
        if self._pipe_r in readable:
            self._read_messages()
        while self.signals:
            sig = self.signals.pop(0)
            handler = getattr(self, "handle_" + signal.Signals(sig).name.lower(), None)
            if handler is not None:
                handler()
        self.upgrader.poll()
        self._reap()
        self._delay_over(time.monotonic())
        if self.stopping:
            if time.monotonic() > self.stop_deadline and self.workers:
                logger.warning("graceful timeout: killing %d worker(s)", len(self.workers))
                self._kill_all(signal.SIGKILL)
            return
        self._check_heartbeats()
        self._publish()
        if self.watcher is not None and self.watcher.changed() and self.booted:
            logger.info("--reload: source changed")
            self.handle_sighup()
        self._reconcile()
        self._notify_watchdog()

    def _publish(self) -> None:
        if self.board is not None:
            from .pool_figures import publish  # only with a scoreboard (mmap, struct)

            publish(self, self.board)

    def _notify_watchdog(self) -> None:
        if self._watchdog and time.monotonic() - self._last_watchdog >= self._watchdog:
            self._last_watchdog = time.monotonic()
            systemd.notify("WATCHDOG=1")

    # -- messages from workers ---------------------------------------------------------

    def _read_messages(self) -> None:
        """Everything the workers have written so far (the pipe is read until empty)."""
        chunks = []
        while True:
            try:
                data = os.read(self._pipe_r, 65536)
            except BlockingIOError:
                break
            chunks.append(data)
            if len(data) < 65536:
                break
        if not chunks:
            return
        lines = (self._buf + b"".join(chunks)).split(b"\n")
        self._buf = lines.pop()
        for line in lines:
            parts = line.decode("utf-8", "replace").split(" ", 2)
            if len(parts) < 2 or not parts[0].isdigit():
                continue
            worker = self.workers.get(int(parts[0]))
            if worker is None:
                continue
            kind, detail = parts[1], parts[2] if len(parts) > 2 else ""
            worker.last_beat = time.monotonic()
            if kind == "ready":
                self._on_ready(worker)
            elif kind == "recycle-soon":
                if worker.recycle is None and worker.replace_soon is None and not worker.retiring:
                    worker.replace_soon = detail or "recycle"
                    logger.info("worker %d nears a limit (%s): starting its replacement", worker.pid, detail)
            elif kind == "recycle":
                if worker.recycle is None and not worker.retiring:
                    worker.recycle = detail or "recycle"
                    self.respawns[worker.recycle] = self.respawns.get(worker.recycle, 0) + 1
                    logger.info("worker %d asks to be recycled (%s)", worker.pid, worker.recycle)
            elif kind == "boot-error":
                self._on_boot_error(worker, detail)
            elif kind == "finding":
                self.findings[detail] = self.findings.get(detail, 0) + 1
            elif kind == "stale":
                self.stale[worker.pid] = detail
                if detail.startswith("release ") and worker.generation == self.generation:
                    logger.warning("worker %d serves a stale %s; reload (SIGHUP)", worker.pid, detail)

    def _on_ready(self, worker: Worker) -> None:
        worker.ready = True
        ready = sum(1 for w in self.workers.values() if w.ready and w.generation == self.generation)
        if not self.booted and ready >= self.num_workers:
            self.booted = True
            logger.info("%d worker(s) ready", self.num_workers)
            self.upgrader.serving()  # a new master (SIGUSR2) takes over now
            systemd.notify("READY=1", f"STATUS=serving with {self.num_workers} worker(s)")
            self.hooks.call("when_ready", self)

    def _on_boot_error(self, worker: Worker, message: str) -> None:
        logger.error("worker %d cannot load the application: %s", worker.pid, message)
        if not self.booted and worker.generation == 1:
            self.boot_error = message
            self._begin_stop(quick=True)
        elif worker.generation == self.generation and any(
            w.generation < self.generation and not w.retiring for w in self.workers.values()
        ):
            logger.error(
                "reload failed: generation %d cannot load the application; generation %d keeps serving",
                self.generation,
                self.generation - 1,
            )
            for w in list(self.workers.values()):
                if w.generation == self.generation:
                    self._retire(w, signal.SIGKILL)
            self.generation -= 1
            self._reloading = False
            systemd.notify("READY=1", "STATUS=reload failed; previous generation serving")

    # -- reaping and heartbeats --------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.workers:
                # What it wrote before exiting ("recycle" as it stops at its limit) is in
                # the pipe now, maybe unread: read it before telling a recycle from a crash.
                self._read_messages()
            worker = self.workers.pop(pid, None)
            if worker is None:
                self.upgrader.reaped(pid, status)  # an upgrade's new master
                continue
            if self.board is not None:
                self.board.release(worker.slot)
            code = os.waitstatus_to_exitcode(status)
            self.hooks.call("child_exit", self, worker, exit_code=code)
            if worker.retiring or self.stopping:
                logger.info("worker %d exited (%s)", pid, describe_exit(code))
            elif code == WORKER_BOOT_ERROR:
                self._crashed(f"worker {pid} failed to boot")
            elif worker.recycle is not None and code == 0:
                logger.info("worker %d recycled (%s)", pid, worker.recycle)
            else:
                logger.error("worker %d died unexpectedly (%s)", pid, describe_exit(code))
                self.respawns["crash"] = self.respawns.get("crash", 0) + 1
                self._crashed(f"worker {pid} {describe_exit(code)}")

    def _crashed(self, what: str) -> None:
        now = time.monotonic()
        self.crashes = [t for t in self.crashes if now - t < CRASH_WINDOW] + [now]
        if len(self.crashes) > CRASH_LIMIT:
            self.halt_reason = (
                f"crash loop: {len(self.crashes)} worker failures in {CRASH_WINDOW:.0f}s (last: {what})"
            )
            logger.error("%s; stopping", self.halt_reason)
            self._begin_stop(quick=True)
            return
        delay = min(0.05 * 2 ** (len(self.crashes) - 1), 10.0) if len(self.crashes) > 1 else 0.0
        self.backoff_until = now + delay

    def _check_heartbeats(self) -> None:
        timeout = self.config.heartbeat_timeout_s
        if not timeout:
            return
        now = time.monotonic()
        for w in list(self.workers.values()):
            if w.ready and not w.retiring and now - w.last_beat > timeout:
                logger.error("worker %d silent for %.0fs: killing it", w.pid, now - w.last_beat)
                self.respawns["timeout"] = self.respawns.get("timeout", 0) + 1
                self._retire(w, signal.SIGKILL)
                self._crashed(f"worker {w.pid} stopped responding")
            elif w.retiring and w.retire_deadline and now > w.retire_deadline:
                logger.warning("worker %d did not stop within the graceful timeout: killing it", w.pid)
                self._signal(w, signal.SIGKILL)
                w.retire_deadline = 0.0

    # -- the invariant -----------------------------------------------------------------

    def _reconcile(self) -> None:
        if self.pool is not None:
            self.pool.turn(self, time.monotonic())
        gen = self.generation
        live = [w for w in self.workers.values() if not w.retiring]
        fresh = [w for w in live if w.generation == gen and w.recycle is None and w.replace_soon is None]
        missing = self.num_workers - len(fresh)
        if missing > 0 and time.monotonic() >= self.backoff_until:
            # A reload (or the first boot) starts the whole generation at once; recycling
            # replaces at most --max-concurrent-recycles workers at a time.
            old = any(w.generation != gen for w in live)
            limit = self.num_workers if (old or not self.booted) else self.config.max_concurrent_recycles
            starting = sum(1 for w in fresh if not w.ready)
            for _ in range(min(missing, max(0, limit - starting))):
                self.spawn()
        elif missing < 0:  # TTOU: retire the oldest surplus
            for w in sorted(fresh, key=lambda w: w.started)[:-missing]:
                self._retire(w)
        # Old-generation workers that are not ready yet serve nothing: stop them now.
        for w in live:
            if w.generation != gen and not w.ready and not w.retiring:
                self._retire(w)
        ready = sum(1 for w in live if w.ready and not w.retiring)
        retirable = sorted(
            (
                w
                for w in live
                if w.ready and not w.retiring and (w.generation != gen or w.recycle is not None)
            ),
            key=lambda w: (w.generation, w.started),
        )
        for w in retirable:
            if ready - 1 >= self.num_workers:
                self._retire(w)
                ready -= 1
        if self._reloading and not any(w.generation != gen for w in self.workers.values()):
            self._reloading = False
            logger.info("reload complete: generation %d serving", gen)
            systemd.notify("READY=1", f"STATUS=serving generation {gen}")

    def _retire(self, worker: Worker, sig: int = signal.SIGTERM) -> None:
        worker.retiring = True
        worker.retire_deadline = time.monotonic() + self.config.graceful_timeout_s + 1
        self._signal(worker, sig)

    def _kill_all(self, sig: int) -> None:
        for w in list(self.workers.values()):
            self._signal(w, sig)
        if sig == signal.SIGKILL:
            deadline = time.monotonic() + 5
            while self.workers and time.monotonic() < deadline:
                try:
                    pid, status = os.waitpid(-1, 0)
                except ChildProcessError:
                    self.workers.clear()
                    break
                except InterruptedError:
                    continue
                if (gone := self.workers.pop(pid, None)) is not None:
                    self.hooks.call("child_exit", self, gone, exit_code=os.waitstatus_to_exitcode(status))

    # -- signal handlers (called from the loop) ------------------------------------------

    def handle_sighup(self) -> None:
        if not self.booted or self.delaying:
            why = "during the shutdown delay" if self.booted else "before the workers were ready"
            logger.warning("reload requested %s; ignored", why)
            return
        if self.config.config_file:  # re-read; a file refused keeps the config and generation
            given = self.releases.app_dir if self.releases is not None else self.config.app_dir
            if (config := reload_config(self.config, given)) is None:
                return
            if config.workers != self.config.workers:  # else a TTIN/TTOU count is kept
                self.num_workers = config.workers
            if self.pool is not None:
                self.pool.configure(config)
            self.config = config
        if self.releases is not None and self.releases.follow():
            self.config = replace(self.config, app_dir=self.releases.current.app_dir)
        self.generation += 1
        self.num_workers = max(self.num_workers, 1)  # ondemand: one proves the new code loads
        self.reloads += 1
        self._reloading = True
        logger.info("reloading: starting generation %d", self.generation)
        self.hooks.call("on_reload", self)
        systemd.notify(
            "RELOADING=1", systemd.monotonic_usec(), f"STATUS=reloading (generation {self.generation})"
        )

    def handle_sigusr2(self) -> None:
        self.upgrader.begin()  # upgrade in place: re-execute as a new master

    def handle_sigusr1(self) -> None:
        reopen_files()
        for w in list(self.workers.values()):
            self._signal(w, signal.SIGUSR1)

    def handle_sigttin(self) -> None:
        if self.pool is not None:  # the adaptive modes: the ceiling (--max-workers) moves
            return self.pool.ttin()
        self.num_workers += 1
        logger.info("workers: %d", self.num_workers)

    def handle_sigttou(self) -> None:
        if self.pool is not None:
            return self.pool.ttou(self)
        if self.num_workers > 1:
            self.num_workers -= 1
            logger.info("workers: %d", self.num_workers)

    def handle_sigchld(self) -> None:
        pass  # _reap runs every turn


__all__ = ["WORKER_BOOT_ERROR", "Arbiter", "lifespan_error"]
