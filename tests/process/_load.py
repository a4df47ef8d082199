"""Load and process helpers for tests/process: wrk runs with a tally script, and /proc.

``Wrk`` runs ``wrk`` (its own process group) against a URL for a bounded time, with a Lua
script that counts every response by status and by body (bodies are short: a pid, a
version, "pid rss"), and parses wrk's own summary too (requests, non-2xx, socket errors).
``children(pid)`` lists the live (non-zombie) children of a process from /proc.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.nginx import kill_group

WRK = shutil.which("wrk") or ("/usr/bin/wrk" if os.path.exists("/usr/bin/wrk") else None)

_TALLY_LUA = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  statuses = {}
  bodies = {}
  wrk.method = "%(method)s"
  %(body)s
  %(headers)s
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local key = string.sub(string.gsub(body or "", "%%s+", " "), 1, 120)
  bodies[key] = (bodies[key] or 0) + 1
end
function done(summary, latency, requests)
  local s, b = {}, {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do s[k] = (s[k] or 0) + v end
    for k, v in pairs(t:get("bodies")) do b[k] = (b[k] or 0) + v end
  end
  for k, v in pairs(s) do io.write(string.format("TALLY STATUS %%d %%d\n", k, v)) end
  for k, v in pairs(b) do io.write(string.format("TALLY BODY %%d %%s\n", v, k)) end
end
"""


def require_wrk() -> str:
    """wrk's path; skips (fails under CI, where a skip would hide the load tests)."""
    if WRK is None:
        message = "wrk is not installed (apt-get install wrk)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return WRK


@dataclass
class WrkResult:
    output: str
    requests: int = 0
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    bodies: Counter[str] = field(default_factory=Counter)

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values())

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def failed(self) -> int:
        """Responses that were not 2xx, plus socket errors (connect/read/write/timeout)."""
        return sum(n for s, n in self.statuses.items() if not 200 <= s < 300) + self.errors

    def summary(self) -> str:
        return (
            f"{self.requests} requests, statuses {dict(self.statuses)}, "
            f"socket errors {self.socket_errors or 'none'}"
        )


def parse_wrk(output: str) -> WrkResult:
    result = WrkResult(output)
    m = re.search(r"^\s*(\d+) requests in ", output, re.M)
    if not m:
        raise AssertionError(f"unexpected wrk output:\n{output}")
    result.requests = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result.non_2xx = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        result.socket_errors = dict(
            zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)
        )
    for line in output.splitlines():
        if line.startswith("TALLY STATUS "):
            _, _, status, count = line.split(" ", 3)
            result.statuses[int(status)] += int(count)
        elif line.startswith("TALLY BODY "):
            _, _, count, *body = line.split(" ", 3)
            result.bodies[body[0] if body else ""] += int(count)
    return result


class Wrk:
    """One background ``wrk`` run; ``result()`` waits for it and parses the output."""

    def __init__(
        self,
        workdir: Path,
        url: str,
        *,
        duration: float,
        connections: int = 8,
        threads: int = 2,
        method: str = "GET",
        body: bytes | None = None,
        timeout: str = "5s",
    ) -> None:
        self.dir = Path(workdir)
        self.script = self.dir / f"tally-{os.getpid()}-{id(self)}.lua"
        headers = ""
        body_line = ""
        if body is not None:
            body_line = f'wrk.body = "{body.decode("ascii")}"'
            headers = 'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"'
        self.script.write_text(_TALLY_LUA % {"method": method, "body": body_line, "headers": headers})
        self.cmd = [
            require_wrk(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration:g}s",
            f"--timeout={timeout}",
            "-s",
            str(self.script),
            url,
        ]
        self.duration = duration
        self.out_path = self.dir / f"wrk-{id(self)}.out"
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> Wrk:
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started = time.monotonic()
        return self

    def result(self) -> WrkResult:
        assert self.proc is not None
        self.proc.wait(self.duration + 30)
        output = self.out_path.read_text(errors="replace")
        assert self.proc.returncode == 0, f"wrk failed ({self.proc.returncode}):\n{output}"
        return parse_wrk(output)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            kill_group(self.proc, timeout=2)


# -- /proc -----------------------------------------------------------------------------


def children(pid: int) -> set[int]:
    """Live (not zombie) children of ``pid``."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def socket_fds(pid: int) -> int:
    """How many sockets ``pid`` has open (listening socket included)."""
    count = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    count += 1
            except OSError:
                pass
    except OSError:
        pass
    return count


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
