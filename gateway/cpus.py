"""How many CPUs this process may use, for ``--workers auto``: its CPU affinity and the CPU
quota of its cgroup, never the host's core count.

A container or a systemd unit limited to 2 CPUs on a 64-core host sees 64 cores in
``os.cpu_count()``; a pool sized from that is 64 processes competing for 2 CPUs' worth of
time (and 64 times the memory). Two limits are read:

- the affinity (``os.sched_getaffinity``: ``taskset``, ``docker --cpuset-cpus``, systemd's
  ``CPUAffinity=``): the CPUs the process may run on;
- the cgroup CPU quota (``docker --cpus``, Kubernetes ``limits.cpu``, systemd's
  ``CPUQuota=``): cgroup v2 ``cpu.max`` (``"150000 100000"`` = 1.5 CPUs, ``"max ..."`` =
  none), cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1 = none). The process's
  cgroup comes from ``/proc/self/cgroup``, placed under its mount point through
  ``/proc/self/mountinfo`` (inside a container the mount's root is the container's cgroup).
  The cgroup's ancestors are read too, up to the mount point (a systemd slice's quota
  applies to every unit in it); the smallest quota wins.

Usable CPUs = the affinity count, capped by the quota rounded *up* (1.5 CPUs -> 2, 0.5 ->
1: the workers together can use the whole quota); at least 1. ``--workers auto`` is that
number, one worker per usable CPU (the reasons are in README.md and docs/deployment.md).
The file paths are parameters, so tests feed fake cgroup trees.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

PROC_CGROUP = "/proc/self/cgroup"
PROC_MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class Quota:
    """A CPU quota: ``quota_us`` of CPU time per ``period_us``, read from ``source``."""

    quota_us: int
    period_us: int
    source: str

    @property
    def cpus(self) -> float:
        return self.quota_us / self.period_us

    def describe(self) -> str:
        return f"{self.cpus:g} CPUs ({self.quota_us}/{self.period_us} in {self.source})"


@dataclass(frozen=True)
class CpuBudget:
    """The inputs of ``--workers auto`` and its result."""

    affinity: int
    quota: Quota | None

    @property
    def usable(self) -> int:
        n = self.affinity
        if self.quota is not None:
            n = min(n, math.ceil(self.quota.cpus))
        return max(1, n)

    @property
    def auto_workers(self) -> int:
        """``--workers auto``: one worker per usable CPU."""
        return self.usable

    def describe(self) -> str:
        quota = self.quota.describe() if self.quota is not None else "none"
        return f"affinity {self.affinity}, cgroup quota {quota} -> {self.usable} usable"


def affinity_count() -> int:
    """CPUs this process may run on (``os.cpu_count()`` where affinity is unknown)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """(fstype, root, mount point, super options) of each cgroup mount."""
    out = []
    for line in (_read(mountinfo) or "").splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        out.append((tail[0], fields[3], fields[4], set(tail[2].split(","))))
    return out


def _dirs(mount_root: str, mount_point: str, path: str) -> list[str]:
    """The cgroup's directory and its ancestors up to the mount point, innermost first."""
    if mount_root == "/":
        rel = path
    elif path == mount_root or path.startswith(mount_root.rstrip("/") + "/"):
        rel = path[len(mount_root) :]
    else:
        rel = ""  # the cgroup is outside this mount's view: only its root is readable
    parts = [p for p in rel.split("/") if p and p != ".."]
    dirs = [os.path.join(mount_point, *parts[:i]) for i in range(len(parts), -1, -1)]
    return dirs


def _v2_quota(directory: str) -> Quota | None:
    source = os.path.join(directory, "cpu.max")
    text = _read(source)
    if not text:
        return None
    quota, _, period = text.partition(" ")
    if quota == "max" or not quota.isdigit() or not period.strip().isdigit() or not int(period):
        return None
    return Quota(int(quota), int(period), source)


def _v1_quota(directory: str) -> Quota | None:
    source = os.path.join(directory, "cpu.cfs_quota_us")
    quota, period = _read(source), _read(os.path.join(directory, "cpu.cfs_period_us"))
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return Quota(q, p, source) if q > 0 and p > 0 else None


def cgroup_quota(proc_cgroup: str = PROC_CGROUP, mountinfo: str = PROC_MOUNTINFO) -> Quota | None:
    """The smallest CPU quota of this process's cgroup and its ancestors (v2, else v1)."""
    v2_path = v1_path = None
    for line in (_read(proc_cgroup) or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            v2_path = path
        elif "cpu" in controllers.split(","):
            v1_path = path
    found: list[Quota] = []
    for fstype, root, point, options in _mounts(mountinfo):
        if fstype == "cgroup2" and v2_path is not None:
            found += filter(None, map(_v2_quota, _dirs(root, point, v2_path)))
        elif fstype == "cgroup" and "cpu" in options and v1_path is not None:
            found += filter(None, map(_v1_quota, _dirs(root, point, v1_path)))
    return min(found, key=lambda q: q.cpus, default=None)


def cpu_budget(proc_cgroup: str = PROC_CGROUP, mountinfo: str = PROC_MOUNTINFO) -> CpuBudget:
    return CpuBudget(affinity_count(), cgroup_quota(proc_cgroup, mountinfo))


__all__ = ["CpuBudget", "Quota", "affinity_count", "cgroup_quota", "cpu_budget"]
