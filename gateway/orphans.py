"""No orphaned workers: a worker whose master died stops by itself, and a new master waits
for such workers to release the unix socket instead of giving up at once.

Worker side. A master killed with SIGKILL (the OOM killer, an operator, supervisord without
``killasgroup``) cannot stop its workers; left alone they would serve the old code for good,
with nobody to recycle, reload or watch them. The arbiter calls ``watch_master`` in each
forked worker; ``check_master`` runs from the worker's heartbeat (between requests, about
once a second) and compares ``os.getppid()`` with the master's pid: when a parent dies its
children are re-parented (to init or a subreaper), so a changed parent pid means the master
is gone. This is portable and costs one system call per beat, where the parent-death
signal (``PR_SET_PDEATHSIG``) is Linux-only and fires when the *thread* that forked exits.
The worker then sends itself SIGTERM: the same graceful stop the master would have asked
for (stop accepting, serve what waits in the backlog, finish in-flight requests within
``--graceful-timeout``). A timer ends the process if that stop does not finish in time
(nobody is left to SIGKILL it).

Master side. A socket whose listeners are alive refuses a new master (exit 3, "another
server is already listening"); when those listeners are the orphaned workers of a dead
master, a supervisor restarting the new master would loop until they exit.
``wait_if_orphaned`` tells them apart from a live server by who called ``listen()`` last
(``listener_pid``: the peer credentials of a probe connection) and whether that process, or
its parent, still runs; orphans get up to the graceful timeout to close the socket, and the
error then names the processes that hold it (``holder_pids``, from /proc). A TCP port in
use is told the same way from its holders alone (``wait_if_tcp_orphaned``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import threading
import time

from .errors import BindError

logger = logging.getLogger("gateway.error")

_master_pid = 0
_graceful_s = 0.0
_noticed = False

#: seconds past the graceful timeout before an orphaned worker that is still stopping exits
GRACE_MARGIN_S = 2.0
#: how long a listener that may be an orphaned worker gets to stop listening (two heartbeats)
PROBATION_S = 3.0


# -- worker side ----------------------------------------------------------------------------


def watch_master(master_pid: int, graceful_s: float) -> None:
    """In a forked worker: the master's pid, and how long a stop may take without it."""
    global _master_pid, _graceful_s, _noticed
    _master_pid, _graceful_s, _noticed = master_pid, graceful_s, False


def check_master() -> bool:
    """True once, when the master died: the worker is then stopping gracefully."""
    global _noticed
    if not _master_pid or _noticed or os.getppid() == _master_pid:
        return False
    _noticed = True
    logger.warning(
        "worker %d: master %d is gone; finishing in-flight requests (up to %gs) and exiting",
        os.getpid(),
        _master_pid,
        _graceful_s,
    )
    timer = threading.Timer(_graceful_s + GRACE_MARGIN_S, _give_up)
    timer.daemon = True
    timer.start()
    os.kill(os.getpid(), signal.SIGTERM)  # recorded by the worker's handler; its loop stops
    return True


def _give_up() -> None:
    logger.error("worker %d: still stopping after the graceful timeout, with no master; exiting", os.getpid())
    logging.shutdown()
    os._exit(1)


# -- master side ----------------------------------------------------------------------------


def listener_pid(conn: socket.socket) -> int:
    """The pid that last called ``listen()`` on the socket ``conn`` is connected to (0:
    unknown): the master for the sync worker, a worker for the async one (asyncio's
    servers call ``listen()`` again in each worker)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return 0
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return 0
    return int(struct.unpack("3i", raw)[0])


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (exited, or a zombie its parent has not reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat[stat.rindex(")") + 2] in "ZX"
    except FileNotFoundError:
        return True
    except (OSError, ValueError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _listening_inodes(path: str) -> set[str] | None:
    """Inodes of the listening unix sockets bound to ``path`` (None without /proc)."""
    try:
        with open("/proc/net/unix") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    inodes = set()
    for line in lines:
        fields = line.split(None, 7)
        # Num RefCount Protocol Flags Type St Inode Path; flags __SO_ACCEPTCON: listening
        if len(fields) == 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
            inodes.add(fields[6])
    return inodes


def _tcp_listening_inodes(host: str, port: int) -> set[str]:
    """Inodes of the listening TCP sockets on ``port`` (on ``host`` or a wildcard address,
    for IPv4; any address for IPv6), from /proc/net/tcp and tcp6."""
    try:
        packed = socket.inet_aton(host)
        want = {f"{int.from_bytes(packed, 'little'):08X}", "00000000"}
    except OSError:
        want = set()  # IPv6 or a name: the port decides
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if len(fields) < 10 or fields[3] != "0A":  # TCP_LISTEN
                continue
            address, _, port_hex = fields[1].rpartition(":")
            if int(port_hex, 16) == port and (not want or len(address) != 8 or address in want):
                inodes.add(fields[9])
    return inodes


def holder_pids(path: str) -> list[int]:
    """The processes holding a listening socket bound to ``path`` (those /proc shows us)."""
    return _pids_holding(_listening_inodes(path))


def tcp_holder_pids(host: str, port: int) -> list[int]:
    """The processes holding a listening TCP socket on ``host:port`` (those /proc shows us)."""
    return _pids_holding(_tcp_listening_inodes(host, port))


def _pids_holding(inodes: set[str] | None) -> list[int]:
    if not inodes:
        return []
    targets = {f"socket:[{inode}]" for inode in inodes}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in targets:
                    found.append(int(entry))
                    break
            except OSError:
                continue
    return sorted(found)


def _still_listening(path: str) -> bool:
    inodes = _listening_inodes(path)
    if inodes is not None:
        return bool(inodes)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _released_within(path: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _still_listening(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def wait_if_orphaned(path: str, listener: int, timeout_s: float) -> bool:
    """Whether ``path`` was held by orphaned workers that have released it now (waiting up
    to ``timeout_s``); False for a live server (the caller refuses to replace it), and
    BindError naming the holders when orphans still hold it after ``timeout_s``.

    The listener (``listener_pid``) tells: when it is gone, the holders are the workers it
    left (the sync worker's case: the master called ``listen()``). When it runs and one
    holder of the socket is the parent of another, a live master serves there with its
    workers. Otherwise the holders are orphaned async workers, or a server of another kind;
    an orphaned worker stops listening within a heartbeat or two of noticing, so they get
    ``PROBATION_S`` to do so before the socket counts as another server's."""
    if not listener or listener == os.getpid():
        return False
    if process_gone(listener):
        wait_for_orphans(path, listener, timeout_s)
        return True
    holders = holder_pids(path)
    if timeout_s <= 0 or any(_parent(pid) in holders for pid in holders):
        return False  # a master and its workers
    if _released_within(path, min(timeout_s, PROBATION_S)):
        named = ", ".join(map(str, holders)) or "unknown"
        logger.info("%s: its listeners (orphaned workers, pids %s) stopped listening", path, named)
        return True
    return False


def wait_if_tcp_orphaned(host: str, port: int, timeout_s: float) -> bool:
    """Whether ``host:port`` (a bind refused: in use) was held by orphaned workers that have
    released it now. There are no peer credentials to name who called ``listen()`` on a TCP
    socket, so the holders tell: a master and its workers (one holder the parent of
    another) are a live server. Otherwise they may be orphaned workers, which close their
    listening sockets within a heartbeat or two of noticing (then finish their requests):
    they get ``PROBATION_S`` to do so before the port counts as another server's."""
    holders = tcp_holder_pids(host, port)
    if not holders or timeout_s <= 0 or any(_parent(pid) in holders for pid in holders):
        return False

    def released(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while _tcp_listening_inodes(host, port):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    named = ", ".join(map(str, holders))
    if released(min(timeout_s, PROBATION_S)):
        logger.info("%s:%d: its listeners (orphaned workers, pids %s) stopped listening", host, port, named)
        return True
    return False


def wait_for_orphans(path: str, master_pid: int, timeout_s: float) -> None:
    """Wait until the orphaned workers of dead ``master_pid`` release ``path`` (BindError,
    naming them, when they still hold it after ``timeout_s``)."""
    holders = holder_pids(path)
    named = ", ".join(map(str, holders)) or "unknown pids"
    logger.warning(
        "%s is held by workers of master %d, which is gone (pids %s); waiting up to %gs for them to exit",
        path,
        master_pid,
        named,
        timeout_s,
    )
    deadline = time.monotonic() + timeout_s
    while _still_listening(path):
        if time.monotonic() >= deadline:
            holders = holder_pids(path) or holders
            hint = f"kill -TERM {' '.join(map(str, holders))}" if holders else "stop them"
            raise BindError(
                f"{path} is still held by orphaned workers of master {master_pid} "
                f"(pids {', '.join(map(str, holders)) or 'unknown'}) after {timeout_s:g}s; {hint}"
            )
        time.sleep(0.1)
    logger.info("the orphaned workers of master %d released %s", master_pid, path)


__all__ = [
    "check_master",
    "holder_pids",
    "listener_pid",
    "process_gone",
    "tcp_holder_pids",
    "wait_for_orphans",
    "wait_if_orphaned",
    "wait_if_tcp_orphaned",
    "watch_master",
]
