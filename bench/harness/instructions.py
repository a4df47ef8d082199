"""``bench/run --instructions N``: the CPU instructions a server runs per request, counted
by Valgrind, not timed.

Why: on a shared 2-vCPU VM, req/s and even CPU time per request move by 10-30% from one
run to the next, so a ratio near 1.0 (the Flask and Django targets) cannot be decided by
timing. Instructions executed in user space repeat far better: within about 1% for the
Flask and Django views; for hello world, where a request is a few tens of thousands of
instructions, a few dict collisions more or less (each process draws its own hash seed, as
in production) move it by up to 10%. They leave out the kernel (system calls) and the cost
of cache misses, so they complement the load table, they do not replace it.

How: each row serves the scenario's app under ``valgrind --tool=cachegrind`` (following
forks); a client sends the scenario's request ``WARMUP`` times, then the server is stopped
and each process's instruction total read. A second run sends it ``WARMUP + N`` times. The
worker's difference divided by N is the cost of one request, start-up and warm-up
cancelled out; the worker is the process (paired between the runs in the order they
started) whose total grew. Sources are byte-compiled beforehand, so that the two runs
differ only by the requests.
Requests go as nginx sends them: FastCGI rows get a new connection per request with
nginx's stock fastcgi_params, in batches of 32 connections at a time (like wrk -c32);
in ``hello-keepconn`` they carry FCGI_KEEP_CONN and go in turn over 32 connections kept
open (``fastcgi_keep_conn on`` with upstream keepalive; uWSGI closes each, so it gets new
ones); gunicorn and uvicorn get HTTP/1.0 requests (nginx's proxy_pass default).
The gateway rows get ``--gateway-args``; with ``--variant`` (variants.py) they are counted
once per variant, and the table adds each count's change against the first variant's.
"""

from __future__ import annotations

import glob
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import APPS
from .backends import APPS_BY_FAMILY, BACKEND, PROJECT_ROWS, REFERENCE, backend_command
from .environment import backend_env, compile_sources
from .procs import Instance, stop_group
from .scenarios import SCENARIO
from .variants import relative

WARMUP = 50
BATCH = 32
SCENARIOS = ("hello", "hello-keepconn", "flask", "django")
ROWS = ("project-wsgi", "project-asgi", "uwsgi", "gunicorn", "uvicorn")


@dataclass
class Count:
    scenario: str
    backend: str
    per_request: float | None  # instructions per request (None: the row failed)
    error: str = ""
    variant: str = ""  # the gateway row's --variant label

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.variant}" if self.variant else self.backend


# The request is encoded here, not with gateway.protocol: the harness stands alone (it can
# measure another checkout with --project), and the bytes must not depend on the codec under
# test. tests/test_bench.py decodes them with the codec.
def _pairs(params: list[tuple[bytes, bytes]]) -> bytes:
    out = bytearray()
    for name, value in params:
        for item in (name, value):
            n = len(item)
            out += bytes([n]) if n < 128 else (n | 0x80000000).to_bytes(4, "big")
        out += name + value
    return bytes(out)


def _record(rtype: int, content: bytes) -> bytes:
    return bytes([1, rtype, 0, 1]) + len(content).to_bytes(2, "big") + b"\0\0" + content


def fastcgi_request(path: str, keep_conn: bool = False) -> bytes:
    """What nginx sends with the stock fastcgi_params for ``GET path`` (FCGI_KEEP_CONN set
    with ``keep_conn``, as with ``fastcgi_keep_conn on``)."""
    params = [
        (b"QUERY_STRING", b""), (b"REQUEST_METHOD", b"GET"), (b"CONTENT_TYPE", b""),
        (b"CONTENT_LENGTH", b""), (b"SCRIPT_NAME", path.encode()),
        (b"REQUEST_URI", path.encode()), (b"DOCUMENT_URI", path.encode()),
        (b"DOCUMENT_ROOT", b"/usr/share/nginx/html"), (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"REQUEST_SCHEME", b"http"), (b"GATEWAY_INTERFACE", b"CGI/1.1"),
        (b"SERVER_SOFTWARE", b"nginx/1.22.1"), (b"REMOTE_ADDR", b"127.0.0.1"),
        (b"REMOTE_PORT", b"49472"), (b"REMOTE_USER", b""), (b"SERVER_ADDR", b"127.0.0.1"),
        (b"SERVER_PORT", b"8080"), (b"SERVER_NAME", b""), (b"REDIRECT_STATUS", b"200"),
        (b"HTTP_HOST", b"127.0.0.1:8080"), (b"HTTP_USER_AGENT", b"wrk"), (b"HTTP_ACCEPT", b"*/*"),
    ]  # fmt: skip
    begin = _record(1, b"\0\1" + (b"\1" if keep_conn else b"\0") + b"\0\0\0\0\0")
    return begin + _record(4, _pairs(params)) + _record(4, b"") + _record(5, b"")


def http_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n".encode()


def send_requests(sock_path: str, request: bytes, count: int, ok: bytes) -> None:
    """``count`` requests, each on its own connection, ``BATCH`` connections at a time; every
    answer must contain ``ok`` (a status line of 200)."""
    done = 0
    while done < count:
        batch = []
        for _ in range(min(BATCH, count - done)):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(300)
            s.connect(sock_path)
            s.sendall(request)
            batch.append(s)
        for s in batch:
            with s:
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
            if ok not in answer[:300]:
                raise RuntimeError(f"unexpected answer: {answer[:200]!r}")
        done += len(batch)


def _answer(s: socket.socket) -> bytes | None:
    """One response on a kept connection, up to its END_REQUEST; None if the server closed
    the connection first."""
    answer = b""
    pos = 0  # the record being read
    while True:
        while len(answer) >= pos + 8:
            end = pos + 8 + int.from_bytes(answer[pos + 4 : pos + 6], "big") + answer[pos + 6]
            if len(answer) < end:
                break
            if answer[pos + 1] == 3:  # END_REQUEST
                return answer
            pos = end
        chunk = s.recv(65536)
        if not chunk:
            return None
        answer += chunk


def send_kept(sock_path: str, request: bytes, count: int, ok: bytes) -> None:
    """``count`` requests with FCGI_KEEP_CONN, in turn on ``BATCH`` connections kept open,
    each sent when the one before it on its connection was answered, as nginx's upstream
    keepalive does; a connection the server closes (uWSGI cannot keep them) is replaced."""
    conns: list[socket.socket | None] = [None] * BATCH
    try:
        for i in range(count):
            for _attempt in range(2):
                s = conns[i % BATCH]
                if s is None:
                    s = conns[i % BATCH] = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.settimeout(300)
                    s.connect(sock_path)
                try:
                    s.sendall(request)
                    answer = _answer(s)
                except OSError:
                    answer = None
                if answer is not None:
                    break
                s.close()  # closed after its last answer: send again on a new connection
                conns[i % BATCH] = None
            if answer is None or ok not in answer[:300]:
                raise RuntimeError(f"unexpected answer: {(answer or b'')[:200]!r}")
    finally:
        for s in conns:
            if s is not None:
                s.close()


def process_instructions(out_dir: Path) -> list[int]:
    """The instruction total of each process the server ran, in the order they started."""
    totals = []
    for path in sorted(glob.glob(str(out_dir / "cg.*")), key=lambda p: int(p.rsplit(".", 1)[1])):
        for line in Path(path).read_text(errors="replace").splitlines():
            if line.startswith("summary:"):
                totals.append(int(line.split()[1]))
    if not totals:
        raise RuntimeError("valgrind wrote no results")
    return totals


def per_request(base: list[int], more: list[int], n: int) -> float:
    """The worker's instructions per request: of the processes of the two runs, paired in
    the order they started, the one whose total grew with the extra ``n`` requests."""
    if len(base) != len(more):
        raise RuntimeError(f"the two runs had {len(base)} and {len(more)} processes")
    return max(b - a for a, b in zip(base, more, strict=True)) / n


def run_once(
    backend: str,
    scenario: str,
    python: str,
    project: Path,
    count: int,
    tmp: Path,
    gateway_args: tuple[str, ...] = (),
) -> list[int]:
    """Serve ``count`` requests under Valgrind (``gateway_args``: extra options of a gateway
    row); each process's instruction total."""
    sc = SCENARIO[scenario]
    b = BACKEND[backend]
    out_dir = Path(tempfile.mkdtemp(dir=tmp, prefix=f"{scenario}-{backend}-"))
    sock = str(out_dir / "s.sock")
    app = APPS_BY_FAMILY[sc.family][0][b.interface]
    command = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--trace-children=yes",
        f"--cachegrind-out-file={out_dir}/cg.%p", *backend_command(b, python, sock, app, 1, gateway_args),
    ]  # fmt: skip
    inst = Instance(b, app, 1, sock, command, out_dir / "log")
    inst.start(backend_env(project, data_dir=tmp))
    try:
        try:
            inst.wait_listening(time.monotonic() + 600)  # Django starts slowly under valgrind
        except RuntimeError as exc:
            raise RuntimeError(f"did not start under valgrind ({exc}): {inst.log_tail(800)}") from None
        fastcgi = b.protocol == "fastcgi"
        request = fastcgi_request(sc.path, sc.keep_conn) if fastcgi else http_request(sc.path)
        ok = b"Status: 200" if fastcgi else b" 200 "
        (send_kept if sc.keep_conn else send_requests)(sock, request, count, ok)
    finally:
        assert inst.proc is not None
        stop_group(inst.proc, timeout=60)
    return process_instructions(out_dir)


def count_instructions(args) -> list[Count]:  # type: ignore[no-untyped-def]
    """For each scenario and row: instructions per request (see the module docstring)."""
    if shutil.which("valgrind") is None:
        raise SystemExit("bench/run --instructions needs valgrind (apt-get install valgrind)")
    scenarios = [s for s in args.scenarios if s in SCENARIOS] or list(SCENARIOS)
    rows = args.only or list(ROWS)
    counts = []
    # Compiled once before any run: a run that compiled (and wrote) .pyc files would count
    # the compiler, and the two runs of a row would differ by it.
    compile_sources(args.python, args.project, APPS)
    with tempfile.TemporaryDirectory(prefix="fcgi-instr-") as tmp_name:
        tmp = Path(tmp_name)
        for scenario in scenarios:
            for backend in rows:
                if backend not in SCENARIO[scenario].backends or (
                    BACKEND[backend].interface not in APPS_BY_FAMILY[SCENARIO[scenario].family][0]
                ):
                    continue
                variants = args.variants if backend in PROJECT_ROWS else []
                for label, extra in [(v.label, v.args) for v in variants] or [("", ())]:
                    count = Count(scenario, backend, None, variant=label)
                    print(f"-- {scenario}: {count.label} under valgrind", flush=True)
                    n = args.instructions
                    gateway_args = (*args.gateway_args, *extra)
                    once = (backend, scenario, args.python, args.project)
                    try:
                        base = run_once(*once, WARMUP, tmp, gateway_args)
                        more = run_once(*once, WARMUP + n, tmp, gateway_args)
                        count.per_request = per_request(base, more, n)
                    except (RuntimeError, OSError) as exc:
                        count.error = str(exc)[:300]
                    counts.append(count)
    return counts


def instructions_table(counts: list[Count], reference: str | None = None) -> str:
    """A Markdown table: instructions per request, and that ÷ uWSGI's in the same scenario;
    with variants, also the change against the ``reference`` variant's count."""
    ref = {c.scenario: c.per_request for c in counts if c.backend == REFERENCE and c.per_request}
    base = {(c.scenario, c.backend): c.per_request for c in counts if reference and c.variant == reference}
    head = "| scenario | backend | instructions/request | ÷ uWSGI's |"
    lines = [
        head + f" vs {reference} |" if reference else head,
        "|---|---|---:|---:|" + "---:|" * bool(reference),
    ]
    for c in counts:
        if c.per_request is None:
            lines.append(f"| {c.scenario} | {c.label} | failed: {c.error} | |" + " |" * bool(reference))
            continue
        r = ref.get(c.scenario)
        ratio = f"{c.per_request / r:.2f}" if r else "-"
        name = f"**{c.label}**" if c.backend.startswith("project-") else c.label
        line = f"| {c.scenario} | {name} | {c.per_request / 1000:,.1f}k | {ratio} |"
        if reference:
            b = base.get((c.scenario, c.backend))
            change = relative(c.per_request / b) if b else "-"
            line += f" {'(reference)' if c.variant == reference else change} |"
        lines.append(line)
    return "\n".join(lines) + "\n"
