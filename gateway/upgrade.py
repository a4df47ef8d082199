"""Upgrade in place (SIGUSR2): the master runs its own command again as a new master,
hands it the listening sockets, and retires once the new master serves.

This module owns both sides of that hand-over and the ``--pid`` file; the arbiter only
calls into it (``Upgrader.begin`` on SIGUSR2, ``poll`` every loop turn, ``reaped`` for a
child that is not a worker, ``serving`` once its first generation is ready) and
gateway/server.py takes the sockets and the pid file from here.

The old master (``Upgrader.begin``)
    forks; the child executes ``sys.executable`` with the arguments the interpreter was
    started with (``sys.orig_argv``: its options, then ``-m gateway`` or the path of the
    ``fcgi-gateway`` script, then the command's arguments), in the directory the command
    was started in (its logical path: ``$PWD`` when it names the same directory, so a
    ``current`` symlink is followed). ``remember_start`` records both when the command
    starts, before ``--chdir``. So a new Python, virtualenv or fcgi-gateway installed at
    the same paths is what runs. The child inherits only the listening sockets, the
    ``--status-bind`` sockets and the write end of a pipe (their numbers, with the old
    master's pid, in the ``FCGI_GATEWAY_UPGRADE_*`` variables); it stays in the old
    master's process group and cgroup.
The new master
    adopts those sockets instead of binding (``inherited_sockets``), keeps quiet towards
    systemd (``NOTIFY_SOCKET`` is set aside), leaves the ``--pid`` file alone and starts
    its workers, which watch it, not the old master, for orphans (gateway/orphans.py).
    Once its first generation is ready (``Upgrader.serving``) it takes over: it writes its
    pid to the ``--pid`` file, owns the unix socket files the old master had created (it
    removes them when it stops), sends systemd ``MAINPID=<its pid>`` (then the arbiter
    ``READY=1``) and writes ``ready`` on the pipe.
The old master then
    sends ``MAINPID=<new pid>`` and ``READY=1`` itself (heard even with
    ``NotifyAccess=main``), stops talking to systemd, forgets its unix socket files,
    stops accepting on the status sockets and drains its workers as a graceful stop does,
    without ``--shutdown-delay``; it exits 0 and leaves the ``--pid`` file, which names
    the new master now (``remove_pid_file`` removes only a file holding this process's pid).

A new master that exits before it serves (the app does not import, the configuration no
longer validates, the interpreter is gone) changes nothing: the old master logs its exit
status, sends systemd ``READY=1`` again and serves on. One that is not ready within
``BOOT_TIMEOUT_S`` is stopped the same way. One upgrade at a time: SIGUSR2 while one is in
flight, during a stop (or its delay) or before the first workers are ready is ignored with
a log line, and a stop during an upgrade stops the new master too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import systemd
from .child_exit import describe_exit
from .releases import logical_cwd
from .sockets import adopt_fd, owned_socket_files, set_socket_files_owned

if TYPE_CHECKING:
    import socket

    from .arbiter import Arbiter

logger = logging.getLogger("gateway.error")

#: What the old master passes to the new one (fd numbers comma-separated, in order)
FDS_VAR = "FCGI_GATEWAY_UPGRADE_FDS"  # the listening sockets
STATUS_FDS_VAR = "FCGI_GATEWAY_UPGRADE_STATUS_FDS"  # the --status-bind sockets
OWNED_VAR = "FCGI_GATEWAY_UPGRADE_OWNED"  # those whose unix socket files it created
PID_VAR = "FCGI_GATEWAY_UPGRADE_PID"  # the old master
PIPE_VAR = "FCGI_GATEWAY_UPGRADE_PIPE"  # the new master writes "ready" there
VARIABLES = (FDS_VAR, STATUS_FDS_VAR, OWNED_VAR, PID_VAR, PIPE_VAR)

#: How long a new master may take to have its first generation ready
BOOT_TIMEOUT_S = 120.0
#: The exit status of a child that could not execute the new master
EXEC_FAILED = 127

_start: tuple[tuple[str, ...], str] | None = None


def remember_start() -> None:
    """Record the command line and the start directory; the command calls it first thing
    (gateway/__main__.py), before anything changes directory."""
    global _start
    _start = (tuple(sys.orig_argv), logical_cwd() or os.getcwd())


def command(orig_argv: Sequence[str], executable: str) -> list[str]:
    """The new master's argv: the interpreter at the path this one runs from, then the
    arguments this one was given (``-m gateway ...`` or ``/venv/bin/fcgi-gateway ...``)."""
    return [executable, *orig_argv[1:]]


# -- the new master's side ---------------------------------------------------------------


@dataclass
class Handoff:
    """What a new master got from the master that started it."""

    old_pid: int
    pipe: int
    listen: list[int]
    status: list[int]
    owned: set[int]
    notify_socket: str | None
    pid_file: str | None = None
    done: bool = False


_handoff: Handoff | None = None
_read_env = False


def _fds(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def handoff() -> Handoff | None:
    """The hand-over when this process is a new master (SIGUSR2), else None. The first
    call takes the variables out of the environment (the workers never see them); like
    LISTEN_PID, they count only when the old master they name is this process's parent."""
    global _handoff, _read_env
    if _read_env:
        return _handoff
    _read_env = True
    env = {name: os.environ.pop(name) for name in VARIABLES if name in os.environ}
    if PID_VAR not in env:
        return None
    try:
        old_pid = int(env[PID_VAR])
        if old_pid != os.getppid():
            logger.warning("%s names %s, not the parent process: ignored", PID_VAR, env[PID_VAR])
            return None
        _handoff = Handoff(
            old_pid=old_pid,
            pipe=int(env.get(PIPE_VAR, "-1")),
            listen=_fds(env.get(FDS_VAR, "")),
            status=_fds(env.get(STATUS_FDS_VAR, "")),
            owned=set(_fds(env.get(OWNED_VAR, ""))),
            notify_socket=os.environ.pop("NOTIFY_SOCKET", None),  # set back at the takeover
        )
    except ValueError:
        logger.warning("invalid %s variables %s: ignored", "FCGI_GATEWAY_UPGRADE_*", env)
        return None
    return _handoff


def inherited_sockets(kind: str) -> list[socket.socket]:
    """In a new master, the old master's ``"listen"`` or ``"status"`` sockets; else []."""
    h = handoff()
    if h is None:
        return []
    return [adopt_fd(fd) for fd in (h.listen if kind == "listen" else h.status)]


def write_pid_file(path: str) -> None:
    """Write this process's pid to ``path``; a new master does it once it takes over."""
    h = handoff()
    if h is not None and not h.done:
        h.pid_file = path
        return
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")


def remove_pid_file(path: str) -> None:
    """Remove ``path`` if it holds this process's pid (not once a new master wrote its own)."""
    try:
        with open(path) as f:
            held = f.read().strip()
    except OSError:
        return
    if held == str(os.getpid()):
        with contextlib.suppress(OSError):
            os.unlink(path)


# -- the old master's side ----------------------------------------------------------------


def _exit_meaning(code: int) -> str:
    from .exits import EXIT_APP_LOAD, EXIT_BIND, EXIT_CONFIG, EXIT_LIFESPAN  # loaded by now

    meanings = {
        EXIT_CONFIG: "bad configuration",
        EXIT_BIND: "cannot bind",
        EXIT_APP_LOAD: "the application cannot be loaded",
        EXIT_LIFESPAN: "lifespan startup failed",
        EXEC_FAILED: "not started",
    }
    return f", {meanings[code]}" if code in meanings else ""


def spawn_master(argv: list[str], cwd: str, env: dict[str, str], fds: list[int]) -> int:
    """Fork; the child executes ``argv`` in ``cwd`` with ``env``, inheriting ``fds`` (the
    last one the pipe, where a failure to execute is written) and no signal handler,
    mask or wakeup fd of this process; a ``WATCHDOG_PID`` naming this process names the
    child."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if pid == 0:  # child: nothing but system calls until the exec
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores them: not inherited
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            for fd in fds:
                os.set_inheritable(fd, True)
            if env.get("WATCHDOG_PID") == str(os.getppid()):  # systemd's, for the old master
                env["WATCHDOG_PID"] = str(os.getpid())  # the exec keeps the pid
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                message = f"error cannot execute {argv[0]} in {cwd}: {exc}\n"
                os.write(fds[-1], message.encode("utf-8", "replace"))
        finally:
            os._exit(EXEC_FAILED)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return pid


class Upgrader:
    """An arbiter's upgrades: the one it runs as the old master (at most one at a time),
    and its own takeover when it is a new master."""

    def __init__(self, arbiter: Arbiter) -> None:
        self.arbiter = arbiter
        self.child = 0  # the new master of the upgrade in flight (0: none)
        self.pipe = -1
        self.deadline = 0.0
        self.handed_over = False
        self.stopped_at = 0.0  # when the new master was told to stop (0: not told)
        self.message = ""  # what the child wrote when it could not execute
        self._buf = b""

    def _status_listeners(self) -> list[socket.socket]:
        server = self.arbiter.status_server
        return list(server.listeners.values()) if server is not None else []

    def _refusal(self) -> str | None:
        a = self.arbiter
        if self.child:
            return f"while the upgrade to new master {self.child} is in progress"
        if a.stopping or a.delaying:
            return "during the stop"
        if not a.booted:
            return "before the workers were ready"
        if _start is None or not sys.executable:
            return "in a master not started by the fcgi-gateway command"
        if os.getpid() == 1:
            return "in process 1 (its exit would end the container); reload with SIGHUP"
        return None

    def begin(self) -> None:
        """SIGUSR2: start the new master (or log why not)."""
        if (why := self._refusal()) is not None:
            logger.warning("upgrade (SIGUSR2) requested %s; ignored", why)
            return
        assert _start is not None
        argv, cwd = command(_start[0], sys.executable), _start[1]
        a = self.arbiter
        listen = [s.fileno() for s in a.sockets]
        status = [s.fileno() for s in self._status_listeners()]
        owned = [s.fileno() for s in owned_socket_files([*a.sockets, *self._status_listeners()])]
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(read_fd, False)
        env = dict(os.environ)
        env.update(
            {
                FDS_VAR: ",".join(map(str, listen)),
                STATUS_FDS_VAR: ",".join(map(str, status)),
                OWNED_VAR: ",".join(map(str, owned)),
                PID_VAR: str(os.getpid()),
                PIPE_VAR: str(write_fd),
                "PWD": cwd,
            }
        )
        try:
            pid = spawn_master(argv, cwd, env, [*listen, *status, write_fd])
        except OSError as exc:
            os.close(read_fd)
            logger.error("upgrade failed: cannot fork the new master: %s", exc)
            return
        finally:
            os.close(write_fd)
        self.child, self.pipe, self._buf, self.message = pid, read_fd, b"", ""
        self.deadline = time.monotonic() + BOOT_TIMEOUT_S
        self.handed_over, self.stopped_at = False, 0.0
        logger.info("upgrade: started new master %d: %s (in %s)", pid, " ".join(argv), cwd)
        systemd.notify(
            "RELOADING=1", systemd.monotonic_usec(), f"STATUS=upgrading: new master {pid} starting"
        )

    def poll(self) -> None:
        """Every loop turn: the new master's message, the boot timeout, a stop meanwhile."""
        if not self.child:
            return
        self._read()
        if self.handed_over:
            return
        if self.stopped_at:
            if time.monotonic() > self.stopped_at + self.arbiter.config.graceful_timeout_s + 1:
                self._kill(signal.SIGKILL)
                self.stopped_at = float("inf")
        elif self.arbiter.stopping:
            self._stop_child("this master is stopping")
        elif time.monotonic() > self.deadline:
            self._stop_child(f"not ready after {BOOT_TIMEOUT_S:g}s")

    def _kill(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.child, sig)

    def _stop_child(self, why: str) -> None:
        logger.warning("upgrade abandoned (%s): stopping new master %d", why, self.child)
        self.stopped_at = time.monotonic()
        self._kill(signal.SIGTERM)

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.pipe, 4096)
            except (BlockingIOError, InterruptedError):
                break
            self._buf += data
            if not data:
                break
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            text = line.decode("utf-8", "replace")
            if text == "ready" and not self.handed_over and not self.stopped_at:
                self._hand_over()
            elif text.startswith("error "):
                self.message = text.removeprefix("error ")

    def _hand_over(self) -> None:
        a = self.arbiter
        self.handed_over = True
        set_socket_files_owned([*a.sockets, *self._status_listeners()], owned=False)
        if a.status_server is not None:
            a.status_server.listeners.clear()  # the new master answers there now
        systemd.notify(f"MAINPID={self.child}", "READY=1", f"STATUS=upgraded: master {self.child} serving")
        os.environ.pop("NOTIFY_SOCKET", None)  # the new master is the one systemd hears now
        logger.info(
            "upgrade: new master %d serves; master %d retires its workers (graceful stop)",
            self.child,
            os.getpid(),
        )
        a._begin_stop()

    def reaped(self, pid: int, status: int) -> None:
        """A child that is not a worker exited: the new master of the upgrade in flight?"""
        if pid != self.child:
            return
        self._read()
        code = os.waitstatus_to_exitcode(status)
        how = describe_exit(code) + _exit_meaning(code) + (f": {self.message}" if self.message else "")
        if self.handed_over:
            logger.error("upgrade: new master %d exited (%s) after taking over", pid, how)
        elif self.stopped_at:
            logger.warning("upgrade abandoned: new master %d exited (%s)", pid, how)
        else:
            logger.error(
                "upgrade failed: new master %d exited before serving (%s); master %d serves on",
                pid,
                how,
                os.getpid(),
            )
        if not self.handed_over and not self.arbiter.stopping:
            systemd.notify("READY=1", "STATUS=upgrade failed; the old master serves on")
        os.close(self.pipe)
        self.child, self.pipe = 0, -1

    # -- as the new master --------------------------------------------------------------

    def serving(self) -> None:
        """The first generation is ready: a new master takes over from the old one now."""
        h = handoff()
        if h is None or h.done:
            return
        h.done = True
        if h.pid_file:
            write_pid_file(h.pid_file)
        socks = [*self.arbiter.sockets, *self._status_listeners()]
        set_socket_files_owned([s for s in socks if s.fileno() in h.owned], owned=True)
        if h.notify_socket:
            os.environ["NOTIFY_SOCKET"] = h.notify_socket
        systemd.notify(f"MAINPID={os.getpid()}")
        try:
            os.write(h.pipe, b"ready\n")
        except OSError as exc:
            logger.warning("upgrade: cannot tell master %d that this one serves: %s", h.old_pid, exc)
        with contextlib.suppress(OSError):
            os.close(h.pipe)
        logger.info("upgrade: master %d takes over from master %d", os.getpid(), h.old_pid)


__all__ = [
    "BOOT_TIMEOUT_S",
    "Handoff",
    "Upgrader",
    "command",
    "handoff",
    "inherited_sockets",
    "remember_start",
    "remove_pid_file",
    "write_pid_file",
]
