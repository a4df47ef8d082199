"""The scoreboard: per-worker and pool-wide counters in anonymous shared memory.

The master creates it before forking; each worker writes only its own slot (a fixed-size
struct, ``struct.pack_into``, and a histogram area: request duration by status class,
queue time, requests in flight), the master writes the pool header, and whoever renders the
status page reads everything, summing the workers' histograms. No locks: a reader may see
a slot half-updated, which for counters on a status page is harmless (the same trade-off
as PHP-FPM's scoreboard).

Workers update their slot only when the status page is enabled, so the hot path pays
nothing otherwise. The pool header also carries what the ping page needs from the master
(draining, ready workers), so a scoreboard exists whenever a status or ping page does.
"""

from __future__ import annotations

import mmap
import struct
import time
from bisect import bisect_left
from dataclasses import dataclass

MAX_SLOTS = 512
STATE_FREE, STATE_IDLE, STATE_RUNNING, STATE_STOPPING = 0, 1, 2, 3
STATE_NAMES = {STATE_IDLE: "Idle", STATE_RUNNING: "Running", STATE_STOPPING: "Finishing"}

#: A worker's slot, field by field (struct formats, no padding); SlotView follows this order.
_SLOT_FIELDS = (
    ("pid", "i"), ("state", "B"), ("generation", "H"), ("capacity", "I"), ("started", "d"), ("requests", "Q"),
    ("accepted", "Q"), ("slow", "Q"), ("shed", "Q"), ("req_start", "d"), ("last_duration", "d"),
    ("last_cpu", "d"), ("queue_time", "d"), ("content_length", "q"), ("method", "8s"), ("uri", "240s"),
)  # fmt: skip
_SLOT = struct.Struct("=" + "".join(fmt for _, fmt in _SLOT_FIELDS))
_OFF = {
    name: struct.calcsize("=" + "".join(fmt for _, fmt in _SLOT_FIELDS[:i]))
    for i, (name, _) in enumerate(_SLOT_FIELDS)
}
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
    "shed_retired",
    "workers_wanted",  # the arbiter's wanted count (TTIN/TTOU, the process manager move it)
    "max_workers",  # --pm dynamic/ondemand: the ceiling (0 in static)
)
_HEADER = struct.Struct("=d" + "Q" * len(HEADER_FIELDS))
_FINDING = struct.Struct("=32sQ")
MAX_FINDING_KINDS = 32
_SLOT_INDEX = {name: i for i, (name, _) in enumerate(_SLOT_FIELDS)}
_OFF_STATE = _OFF["state"]
_OFF_REQUESTS = _OFF["requests"]
_OFF_ACCEPTED = _OFF["accepted"]
_OFF_SLOW = _OFF["slow"]
_OFF_SHED = _OFF["shed"]
_OFF_REQ_START = _OFF["req_start"]
_OFF_DURATION = _OFF["last_duration"]  # then last_cpu, queue_time
_OFF_CONTENT_LENGTH = _OFF["content_length"]  # then method, uri

# Histograms, one area per slot (after the slots; area 0 keeps the retired workers' counts),
# in 8-byte words: the requests in flight, then per status class the bucket counts (each
# request counted once, in the first bucket whose bound it does not exceed; the last is
# +Inf), then the queue time's bucket counts, then the sums (doubles) in the same order.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_NB = len(BUCKETS) + 1
#: Status classes by ``code // 100``; "other" holds requests that sent no status (client gone).
STATUS_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")
_QUEUE = len(STATUS_CLASSES)  # the queue time histogram's index, after the classes
_N_HIST = _QUEUE + 1
_SUMS = 1 + _N_HIST * _NB  # the first sum's word
_HIST_WORDS = _SUMS + _N_HIST
_HIST_SIZE = 8 * _HIST_WORDS


@dataclass
class Histogram:
    """Bucket counts (not cumulative; the last is +Inf) and the sum of the values."""

    counts: list[int]
    total: float

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass
class Histograms:
    """The pool's histograms: request duration by status class, and queue time."""

    duration: dict[str, Histogram]
    queue: Histogram


@dataclass
class SlotView:
    pid: int
    state: int
    generation: int
    capacity: int  # requests the worker serves at once (0: not said)
    started: float
    requests: int
    accepted: int
    slow: int
    shed: int
    req_start: float
    last_duration: float
    last_cpu: float
    queue_time: float
    content_length: int
    method: str
    uri: str
    in_flight: int = 0


class Scoreboard:
    def __init__(self, slots: int = MAX_SLOTS) -> None:
        self.slots = slots
        self._findings_off = _HEADER.size
        self._slots_off = _HEADER.size + _FINDING.size * MAX_FINDING_KINDS
        self._hist_off = -(-(self._slots_off + _SLOT.size * slots) // 8) * 8  # 8-byte aligned
        self.mem = mmap.mmap(-1, self._hist_off + _HIST_SIZE * (slots + 1))
        _HEADER.pack_into(self.mem, 0, time.time(), *([0] * len(HEADER_FIELDS)))

    # -- master ------------------------------------------------------------------------

    def claim(self, pid: int, generation: int) -> int:
        """A free slot for a new worker (the master calls this right after fork)."""
        for i in range(self.slots):
            off = self._off(i)
            if self.mem[off + _OFF_STATE] == STATE_FREE:
                _SLOT.pack_into(self.mem, off, pid, STATE_IDLE, generation, 0, time.time(), 0, 0, 0, 0,
                                0.0, 0.0, 0.0, 0.0, 0, b"", b"")  # fmt: skip
                hist = self.hist_off(i)
                self.mem[hist : hist + _HIST_SIZE] = bytes(_HIST_SIZE)
                return i
        return -1

    def set_pid(self, index: int, pid: int) -> None:
        if 0 <= index < self.slots:
            struct.pack_into("=i", self.mem, self._off(index), pid)

    def release(self, index: int) -> None:
        """Free a dead worker's slot, keeping its totals in the pool header (its histograms
        in the retired area), so that counters never go back."""
        if not 0 <= index < self.slots:
            return
        off = self._off(index)
        v = _SLOT.unpack_from(self.mem, off)
        head = self.header()
        self.update(
            accepted_retired=head["accepted_retired"] + v[_SLOT_INDEX["accepted"]],
            requests_retired=head["requests_retired"] + v[_SLOT_INDEX["requests"]],
            slow_retired=head["slow_retired"] + v[_SLOT_INDEX["slow"]],
            shed_retired=head["shed_retired"] + v[_SLOT_INDEX["shed"]],
        )
        counts, sums = self._hist_words(self.hist_off(-1))
        mine, my_sums = self._hist_words(self.hist_off(index))
        for k in range(1, _SUMS):  # not the in-flight word
            counts[k] += mine[k]
        for k in range(_SUMS, _HIST_WORDS):
            sums[k] += my_sums[k]
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
            method, uri = (x.rstrip(b"\0").decode("latin-1") for x in v[-2:])
            out.append(SlotView(*v[:-2], method, uri, max(self.in_flight(i), 0)))
        return out

    def in_flight(self, index: int) -> int:
        """Requests running on slot ``index`` (several at once on the async worker)."""
        return struct.unpack_from("=q", self.mem, self.hist_off(index))[0]

    def idle_since(self, index: int) -> float | None:
        """When slot ``index``'s worker last became idle (its start, before any request;
        ``time.time()`` clock), or None while it serves a request (the process manager's
        spare and idle counts, gateway/pool.py)."""
        off = self._off(index)
        if not 0 <= index < self.slots or self.mem[off + _OFF_STATE] != STATE_IDLE:
            return None
        started = struct.unpack_from("=d", self.mem, off + _OFF["started"])[0]
        if not struct.unpack_from("=Q", self.mem, off + _OFF_REQUESTS)[0]:
            return float(started)
        req_start, duration = struct.unpack_from("=dd", self.mem, off + _OFF_REQ_START)
        return float(max(started, req_start + duration))

    def histograms(self) -> Histograms:
        """The pool's histograms: the retired workers' plus every live worker's."""
        fmt = struct.Struct(f"=q{_SUMS - 1}Q{_N_HIST}d")
        counts = [0] * _SUMS
        sums = [0.0] * _N_HIST
        live = [i for i in range(self.slots) if self.mem[self._off(i) + _OFF_STATE] != STATE_FREE]
        for i in (-1, *live):
            words = fmt.unpack_from(self.mem, self.hist_off(i))
            for k in range(1, _SUMS):
                counts[k] += words[k]
            for k in range(_N_HIST):
                sums[k] += words[_SUMS + k]

        def hist(h: int) -> Histogram:
            return Histogram(counts[1 + h * _NB : 1 + (h + 1) * _NB], sums[h])

        return Histograms({name: hist(c) for c, name in enumerate(STATUS_CLASSES)}, hist(_QUEUE))

    # -- worker ------------------------------------------------------------------------

    def _off(self, index: int) -> int:
        return self._slots_off + index * _SLOT.size

    def hist_off(self, index: int) -> int:
        """Offset of slot ``index``'s histogram area (-1: the retired workers')."""
        return self._hist_off + (index + 1) * _HIST_SIZE

    def _hist_words(self, off: int) -> tuple[memoryview, memoryview]:
        area = memoryview(self.mem)[off : off + _HIST_SIZE]
        return area.cast("q"), area.cast("d")

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
    """A worker's handle on its own slot.

    Per request: ``start`` (the request is in flight; its queue time, when measured, counted
    in the queue histogram) and ``finish`` (its duration counted under its status class);
    ``shed`` for a request answered 503 for its queue time. A few integer increments on
    memoryviews of the shared memory, no locks.
    """

    __slots__ = ("cpu_start", "mem", "off", "requests", "sums", "words")

    def __init__(self, board: Scoreboard, index: int) -> None:
        self.mem = board.mem
        self.off = board._off(index)
        self.requests = 0
        self.cpu_start = 0.0
        self.words, self.sums = board._hist_words(board.hist_off(index))

    def set_capacity(self, requests: int) -> None:
        """How many requests this worker serves at once (its threads; the async worker's
        connections), for the status page's busy ratio."""
        struct.pack_into("=I", self.mem, self.off + _OFF["capacity"], max(0, requests))

    def accepted(self) -> None:
        off = self.off + _OFF_ACCEPTED
        n = struct.unpack_from("=Q", self.mem, off)[0]
        struct.pack_into("=Q", self.mem, off, n + 1)

    def slow(self) -> None:
        off = self.off + _OFF_SLOW
        struct.pack_into("=Q", self.mem, off, struct.unpack_from("=Q", self.mem, off)[0] + 1)

    def _queued(self, seconds: float) -> None:
        self.words[1 + _QUEUE * _NB + bisect_left(BUCKETS, seconds)] += 1
        self.sums[_SUMS + _QUEUE] += seconds
        struct.pack_into("=d", self.mem, self.off + _OFF["queue_time"], seconds)

    def shed(self, queued: float) -> None:
        """A request answered 503 because it waited ``queued`` seconds (--max-queue-time)."""
        off = self.off + _OFF_SHED
        struct.pack_into("=Q", self.mem, off, struct.unpack_from("=Q", self.mem, off)[0] + 1)
        self._queued(queued)

    def start(self, method: str, uri: str, content_length: int, queued: float | None = None) -> None:
        self.cpu_start = time.process_time()
        mem = self.mem
        mem[self.off + _OFF_STATE] = STATE_RUNNING
        self.words[0] += 1
        if queued is not None:
            self._queued(queued)
        struct.pack_into("=d", mem, self.off + _OFF_REQ_START, time.time())
        struct.pack_into("=q8s240s", mem, self.off + _OFF_CONTENT_LENGTH, content_length,
                         method.encode("latin-1", "replace"), uri.encode("latin-1", "replace"))  # fmt: skip

    def finish(self, status: int) -> None:
        """The request ended with ``status`` (0: none was sent); the slot turns idle unless
        others still run (the async worker, --threads)."""
        mem = self.mem
        off = self.off
        self.requests += 1
        duration = time.time() - struct.unpack_from("=d", mem, off + _OFF_REQ_START)[0]
        struct.pack_into("=Q", mem, off + _OFF_REQUESTS, self.requests)
        struct.pack_into("=dd", mem, off + _OFF_DURATION, duration, time.process_time() - self.cpu_start)
        c = status // 100
        if not 0 < c < 6:
            c = 0
        words = self.words
        words[1 + c * _NB + bisect_left(BUCKETS, duration)] += 1
        self.sums[_SUMS + c] += duration
        words[0] -= 1
        if words[0] <= 0:
            mem[off + _OFF_STATE] = STATE_IDLE

    def stopping(self) -> None:
        self.mem[self.off + _OFF_STATE] = STATE_STOPPING
