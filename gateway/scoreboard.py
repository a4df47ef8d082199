"""The scoreboard: per-worker and pool-wide counters in anonymous shared memory.

The master creates it before forking; each worker writes only its own slot (a fixed-size
struct, ``struct.pack_into``), the master writes the pool header, and whoever renders the
status page reads everything. No locks: a reader may see a slot half-updated, which for
counters on a status page is harmless (the same trade-off as PHP-FPM's scoreboard).

Workers update their slot only when the status page is enabled, so the hot path pays
nothing otherwise. The pool header also carries what the ping page needs from the master
(draining, ready workers), so a scoreboard exists whenever a status or ping page does.
"""

from __future__ import annotations

import mmap
import struct
import time
from dataclasses import dataclass

MAX_SLOTS = 512
STATE_FREE, STATE_IDLE, STATE_RUNNING, STATE_STOPPING = 0, 1, 2, 3
STATE_NAMES = {STATE_IDLE: "Idle", STATE_RUNNING: "Running", STATE_STOPPING: "Finishing"}

# pid, state, generation, started, requests, accepted, slow, req_start, last_duration,
# last_cpu, content_length, method, uri
_SLOT = struct.Struct("=iBHdQQQdddq8s240s")
#: Pool-wide fields the master keeps (after the start time, a double).
HEADER_FIELDS = (
    "max_listen_queue",
    "max_active",
    "max_children_reached",
    "accepted_retired",
    "requests_retired",
    "slow_retired",
    "generation",
    "reloads",
    "stale_workers",
    "respawn_crash",
    "respawn_max_requests",
    "respawn_max_memory",
    "respawn_max_lifetime",
    "respawn_timeout",
    "respawn_leak",
    "draining",  # 1 from the moment the master begins to stop: ping answers 503
    "ready_workers",  # ready workers not being retired (the master's ping: 503 at 0)
)
_HEADER = struct.Struct("=d" + "Q" * len(HEADER_FIELDS))
_FINDING = struct.Struct("=32sQ")
MAX_FINDING_KINDS = 32
_REQ_START = struct.Struct("=Bdq8s240s")  # state, req_start, content_length, method, uri
_REQ_END = struct.Struct("=BQ")  # state, requests
_OFF_STATE = 4
_OFF_REQUESTS = struct.calcsize("=iBHd")
_OFF_ACCEPTED = _OFF_REQUESTS + 8
_OFF_SLOW = _OFF_ACCEPTED + 8
_OFF_REQ_START = _OFF_SLOW + 8
_OFF_DURATION = _OFF_REQ_START + 8
_OFF_CONTENT_LENGTH = _OFF_DURATION + 16


@dataclass
class SlotView:
    pid: int
    state: int
    generation: int
    started: float
    requests: int
    accepted: int
    slow: int
    req_start: float
    last_duration: float
    last_cpu: float
    content_length: int
    method: str
    uri: str


class Scoreboard:
    def __init__(self, slots: int = MAX_SLOTS) -> None:
        self.slots = slots
        self._findings_off = _HEADER.size
        self._slots_off = _HEADER.size + _FINDING.size * MAX_FINDING_KINDS
        self.mem = mmap.mmap(-1, self._slots_off + _SLOT.size * slots)
        _HEADER.pack_into(self.mem, 0, time.time(), *([0] * len(HEADER_FIELDS)))

    # -- master ------------------------------------------------------------------------

    def claim(self, pid: int, generation: int) -> int:
        """A free slot for a new worker (the master calls this right after fork)."""
        for i in range(self.slots):
            off = self._off(i)
            if self.mem[off + _OFF_STATE] == STATE_FREE:
                _SLOT.pack_into(self.mem, off, pid, STATE_IDLE, generation, time.time(), 0, 0, 0,
                                0.0, 0.0, 0.0, 0, b"", b"")  # fmt: skip
                return i
        return -1

    def set_pid(self, index: int, pid: int) -> None:
        if 0 <= index < self.slots:
            struct.pack_into("=i", self.mem, self._off(index), pid)

    def release(self, index: int) -> None:
        """Free a dead worker's slot, keeping its totals in the pool header."""
        if not 0 <= index < self.slots:
            return
        off = self._off(index)
        v = _SLOT.unpack_from(self.mem, off)
        head = self.header()
        self.update(
            accepted_retired=head["accepted_retired"] + v[5],
            requests_retired=head["requests_retired"] + v[4],
            slow_retired=head["slow_retired"] + v[6],
        )
        self.mem[off + _OFF_STATE] = STATE_FREE

    @property
    def start_time(self) -> float:
        return _HEADER.unpack_from(self.mem, 0)[0]

    def header(self) -> dict[str, int]:
        return dict(zip(HEADER_FIELDS, _HEADER.unpack_from(self.mem, 0)[1:], strict=True))

    def update(self, **fields: int) -> None:
        head = self.header()
        head.update(fields)
        _HEADER.pack_into(self.mem, 0, self.start_time, *(head[name] for name in HEADER_FIELDS))

    def read(self) -> list[SlotView]:
        out = []
        for i in range(self.slots):
            off = self._off(i)
            if self.mem[off + _OFF_STATE] == STATE_FREE:
                continue
            v = _SLOT.unpack_from(self.mem, off)
            out.append(
                SlotView(
                    *v[:11], v[11].rstrip(b"\0").decode("latin-1"), v[12].rstrip(b"\0").decode("latin-1")
                )
            )
        return out

    # -- worker ------------------------------------------------------------------------

    def _off(self, index: int) -> int:
        return self._slots_off + index * _SLOT.size

    def set_findings(self, counts: dict[str, int]) -> None:
        """Isolation findings by kind (the master writes them)."""
        for i, (kind, n) in enumerate(sorted(counts.items())[:MAX_FINDING_KINDS]):
            _FINDING.pack_into(self.mem, self._findings_off + i * _FINDING.size, kind.encode()[:32], n)

    def findings(self) -> dict[str, int]:
        out = {}
        for i in range(MAX_FINDING_KINDS):
            kind, n = _FINDING.unpack_from(self.mem, self._findings_off + i * _FINDING.size)
            kind = kind.rstrip(b"\0")
            if not kind:
                break
            out[kind.decode("latin-1")] = n
        return out


class WorkerSlot:
    """A worker's handle on its own slot."""

    __slots__ = ("cpu_start", "mem", "off", "requests")

    def __init__(self, board: Scoreboard, index: int) -> None:
        self.mem = board.mem
        self.off = board._off(index)
        self.requests = 0
        self.cpu_start = 0.0

    def accepted(self) -> None:
        off = self.off + _OFF_ACCEPTED
        n = struct.unpack_from("=Q", self.mem, off)[0]
        struct.pack_into("=Q", self.mem, off, n + 1)

    def slow(self) -> None:
        off = self.off + _OFF_SLOW
        struct.pack_into("=Q", self.mem, off, struct.unpack_from("=Q", self.mem, off)[0] + 1)

    def start(self, method: str, uri: str, content_length: int) -> None:
        self.cpu_start = time.process_time()
        mem = self.mem
        mem[self.off + _OFF_STATE] = STATE_RUNNING
        struct.pack_into("=d", mem, self.off + _OFF_REQ_START, time.time())
        struct.pack_into("=q8s240s", mem, self.off + _OFF_CONTENT_LENGTH, content_length,
                         method.encode("latin-1", "replace"), uri.encode("latin-1", "replace"))  # fmt: skip

    def finish(self, still_busy: bool = False) -> None:
        """The request ended; ``still_busy`` when others run on (the async worker)."""
        mem = self.mem
        off = self.off
        self.requests += 1
        start = struct.unpack_from("=d", mem, off + _OFF_REQ_START)[0]
        struct.pack_into("=Q", mem, off + _OFF_REQUESTS, self.requests)
        struct.pack_into(
            "=dd", mem, off + _OFF_DURATION, time.time() - start, time.process_time() - self.cpu_start
        )
        if not still_busy:
            mem[off + _OFF_STATE] = STATE_IDLE

    def stopping(self) -> None:
        self.mem[self.off + _OFF_STATE] = STATE_STOPPING
