"""The backends' processes: starting and stopping them, and reading their CPU time and
memory from ``/proc``.

Memory is VmRSS, read three ways (see results.py for the row fields):

* :func:`rss_reading`: the sum over the backend's process tree (master + workers; pages
  shared after ``fork()`` count once per process, as ``ps`` shows them), how many processes
  there are, and the largest *worker*: the process that serves requests. For a prefork
  server (the gateway, uWSGI ``--master``, gunicorn, uvicorn ``--workers N``) the workers
  are the root's descendants; a one-process server (flup, fcgisgi, uvicorn with one
  worker) is its own worker.
* :class:`PeakWatch`: the highest worker RSS since a mark, from VmHWM, which the mark
  resets (``5`` into ``/proc/PID/clear_refs``) so that start-up does not count.
* :class:`RssSampler`: polls the workers' VmRSS in a thread (memory scenarios), in case
  the reset is not allowed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from . import APPS
from .backends import Backend

_TICKS = os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """``root`` (first) and all its descendants (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def workers_of(tree: list[int]) -> list[int]:
    """The processes of a tree that serve requests: all but the root (the master) when it
    has children, else the root itself."""
    return tree[1:] if len(tree) > 1 else tree


def cpu_times(root: int) -> tuple[float, float]:
    """User and system CPU time of ``root``'s process tree so far (exited children not
    included: backends keep their workers during a run)."""
    user = system = 0
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])  # utime, stime: fields 14 and 15 of stat
        system += int(fields[12])
    return user / _TICKS, system / _TICKS


def cpu_seconds(root: int) -> float:
    """User + system CPU time of ``root``'s process tree so far (see ``cpu_times``)."""
    return sum(cpu_times(root))


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB ({} when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M)}


@dataclass(frozen=True)
class RssReading:
    total_mib: float  # sum of VmRSS over the process tree
    processes: int
    worker_mib: float | None  # VmRSS of the largest worker
    worker_pid: int | None


def rss_reading(root: int) -> RssReading:
    """The backend's memory now: the sum over its tree and its largest worker."""
    tree = process_tree(root)
    rss = {pid: kb for pid in tree if (kb := memory_kb(pid).get("VmRSS")) is not None}
    workers = [pid for pid in workers_of(tree) if pid in rss]
    worker = max(workers, key=rss.__getitem__, default=None)
    return RssReading(
        total_mib=sum(rss.values()) / 1024,
        processes=len(rss),
        worker_mib=None if worker is None else rss[worker] / 1024,
        worker_pid=worker,
    )


class PeakWatch:
    """The highest worker RSS since this object was made (the idle reading).

    Making it resets every process's VmHWM to its current RSS; :meth:`peak_mib` then reads
    the workers' VmHWM. Where the reset is refused, a VmHWM counts only once it rose above
    its value at the mark (a peak below it stays unseen: the caller also has the sampled
    and the final RSS). Workers started after the mark count in full.
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self.baseline: dict[int, int] = {}
        self.reset: set[int] = set()
        for pid in process_tree(root):
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
                self.reset.add(pid)
            except OSError:
                pass
            hwm = memory_kb(pid).get("VmHWM")
            if hwm is not None:
                self.baseline[pid] = hwm

    def peak_mib(self) -> float | None:
        best: int | None = None
        for pid in workers_of(process_tree(self.root)):
            hwm = memory_kb(pid).get("VmHWM")
            if hwm is None:
                continue
            if pid in self.reset or pid not in self.baseline or hwm > self.baseline[pid]:
                best = hwm if best is None else max(best, hwm)
        return None if best is None else best / 1024


class RssSampler:
    """``with RssSampler(root) as s: ...``: polls the workers' VmRSS every ``interval``
    seconds in a thread while the block runs; ``s.peak_mib`` is the highest seen."""

    def __init__(self, root: int, interval: float = 0.02) -> None:
        self.pids = workers_of(process_tree(root))
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while True:
            for pid in self.pids:
                self.peak_kb = max(self.peak_kb, memory_kb(pid).get("VmRSS", 0))
            if self._stop.wait(self.interval):
                return

    @property
    def peak_mib(self) -> float | None:
        return self.peak_kb / 1024 if self.peak_kb else None

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()


def stop_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """TERM the process group (each backend leads its own session), then KILL what is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def can_connect_unix(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(path)
        except OSError:
            return False
    return True


@dataclass
class Instance:
    """One running backend: ``backend`` serving ``app`` with ``workers`` processes."""

    backend: Backend
    app: str
    workers: int
    sock: str
    command: list[str]
    log: Path
    proc: subprocess.Popen | None = None
    error: str = ""
    variant: str = ""  # the gateway row's --variant label

    @property
    def label(self) -> str:
        """As ``Row.label``: the backend's name, with the variant's."""
        return f"{self.backend.name}/{self.variant}" if self.variant else self.backend.name

    def start(self, env: dict[str, str]) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(APPS),
                start_new_session=True,
            )

    def wait_listening(self, deadline: float) -> None:
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with status {self.proc.returncode}")
            if can_connect_unix(self.sock):
                return
            time.sleep(0.05)
        raise RuntimeError("not listening after the start-up timeout")

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
