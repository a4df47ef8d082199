"""Lifecycle hooks (``--hooks``, gateway/hooks.py) with real processes.

A hooks module written into ``tmp_path`` appends one line per call, ``"<hook> <pid>
<generation>"`` (the worker's pid and generation for the hooks that take a worker, the
master's otherwise; ``child_exit`` adds the exit code and the reason), to a file named by
``HOOKS_LOG``: every process appends with one ``write`` on an ``O_APPEND`` descriptor, so
the file's order is the order of the calls. The tests go through boot, a recycle
(``--max-requests``), a reload (SIGHUP) and a stop (SIGTERM), and assert the order; then a
hook that raises (logged, the server serves on), the boot failures of ``on_starting`` and
``post_worker_init``, and the modules refused at start (exit 2). Requests go straight to
the gateway with the project's FastCGI client; every wait is bounded.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from gateway.client import ClientError
from tests.conftest import REPO_ROOT
from tests.process._load import children, wait_until

RECORDER = '''"""Written by tests/process/test_proc_hooks.py: records each hook call."""
import os

LOG = os.environ["HOOKS_LOG"]


def _line(*fields):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(map(str, fields)) + "\\n").encode())
    finally:
        os.close(fd)


def on_starting(server):
    _line("on_starting", server.pid, server.generation)


def when_ready(server):
    _line("when_ready", server.pid, server.generation)


def post_fork(server, worker):
    assert server.pid == os.getppid() and worker.pid == os.getpid()
    _line("post_fork", worker.pid, worker.generation)


def post_worker_init(worker):
    _line("post_worker_init", worker.pid, worker.generation)


def worker_exit(server, worker):
    _line("worker_exit", worker.pid, worker.generation, worker.exit_code)


def child_exit(server, worker):
    _line("child_exit", worker.pid, worker.generation, worker.exit_code, worker.reason)


def on_reload(server):
    _line("on_reload", server.pid, server.generation)


def on_exit(server):
    _line("on_exit", server.pid, server.generation)
'''


def read_calls(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def index(calls: list[list[str]], hook: str, pid: int | str) -> int:
    """Where the (one) call of ``hook`` for ``pid`` is in the file."""
    found = [i for i, c in enumerate(calls) if c[0] == hook and c[1] == str(pid)]
    assert len(found) == 1, (hook, pid, calls)
    return found[0]


def workers_of(calls: list[list[str]], hook: str, generation: int) -> list[str]:
    return [c[1] for c in calls if c[0] == hook and c[2] == str(generation)]


@pytest.fixture
def hooks_file(tmp_path: Path) -> tuple[Path, Path]:
    """(the hooks module, the file it writes)."""
    module = tmp_path / "recorder_hooks.py"
    module.write_text(RECORDER)
    return module, tmp_path / "calls.txt"


def test_hooks_order_through_boot_recycle_reload_and_stop(gateway_factory, hooks_file):
    module, calls_path = hooks_file
    # --max-requests 1: the one request sent recycles the worker that serves it, and only it
    gw = gateway_factory(
        "proc_apps:app",
        *("-w", "2", "--max-requests", "1", "--hooks", str(module)),
        env={"HOOKS_LOG": str(calls_path)},
    )
    master = str(gw.pid)
    assert wait_until(lambda: any(c[0] == "when_ready" for c in read_calls(calls_path)), timeout=15)

    # Boot: on_starting first; each worker's post_fork, then its post_worker_init; when_ready
    # once all of generation 1 are ready.
    calls = read_calls(calls_path)
    assert calls[0] == ["on_starting", master, "1"]
    booted = workers_of(calls, "post_fork", 1)
    assert len(booted) == 2, calls
    ready_at = index(calls, "when_ready", master)
    for pid in booted:
        assert 0 < index(calls, "post_fork", pid) < index(calls, "post_worker_init", pid) < ready_at

    # Recycle: the worker that served the request exits (worker_exit, then child_exit with
    # the reason "recycle"); its replacement, of generation 1 too, is forked and initialised.
    with gw.client() as c:
        gone = c.request("GET", "/pid").body.decode()
    assert gone in booted

    def replaced() -> bool:
        calls = read_calls(calls_path)
        forked = workers_of(calls, "post_fork", 1)
        return (
            ["child_exit", gone, "1", "0", "recycle"] in calls
            and len(forked) == 3
            and f"[{forked[2]}] [INFO] serving WSGI" in gw.log_text()  # ready (see sync_worker)
        )

    assert wait_until(replaced, timeout=10), read_calls(calls_path)
    calls = read_calls(calls_path)
    assert index(calls, "worker_exit", gone) < index(calls, "child_exit", gone)
    assert calls[index(calls, "worker_exit", gone)] == ["worker_exit", gone, "1", "0"]
    replacement = workers_of(calls, "post_fork", 1)[2]
    assert ready_at < index(calls, "post_fork", replacement) < index(calls, "post_worker_init", replacement)
    assert children(gw.pid) == {int(p) for p in booted if p != gone} | {int(replacement)}

    # Reload: on_reload (generation 2), then generation 2's workers; the old ones are retired
    # (worker_exit, then child_exit with the reason "retired").
    old = children(gw.pid)
    mark = len(calls)
    gw.send_signal(signal.SIGHUP)
    gw.wait_for_log(r"reload complete: generation 2 serving", timeout=15)
    calls = read_calls(calls_path)
    assert calls[mark] == ["on_reload", master, "2"], calls[mark:]
    new = workers_of(calls, "post_fork", 2)
    assert len(new) == 2 and {int(p) for p in new}.isdisjoint(old), calls[mark:]
    for pid in new:
        assert mark < index(calls, "post_fork", pid) < index(calls, "post_worker_init", pid)
    for pid in map(str, old):
        assert mark < index(calls, "worker_exit", pid) < index(calls, "child_exit", pid)
        assert calls[index(calls, "child_exit", pid)][3:] == ["0", "retired"]

    # Stop: each worker's worker_exit before its child_exit (reason "stop"), on_exit last.
    mark = len(calls)
    gw.send_signal(signal.SIGTERM)
    assert gw.wait(timeout=30) == 0
    calls = read_calls(calls_path)
    for pid in new:
        assert mark <= index(calls, "worker_exit", pid) < index(calls, "child_exit", pid)
        assert calls[index(calls, "child_exit", pid)][3:] == ["0", "stop"]
    assert calls[-1] == ["on_exit", master, "2"]
    assert [c[0] for c in calls].count("when_ready") == 1
    assert [c[0] for c in calls].count("on_starting") == 1
    log = gw.log_text()
    assert "[ERROR]" not in log, log[-3000:]


RAISING = '''"""Written by tests/process/test_proc_hooks.py: hooks that raise."""


def when_ready(server):
    raise RuntimeError("when_ready failed on purpose")


def post_fork(server, worker):
    raise RuntimeError("post_fork failed on purpose")


def child_exit(server, worker):
    raise RuntimeError("child_exit failed on purpose")


def on_start(server):  # a misspelled on_starting: a warning, never called
    raise AssertionError("never called")


def pre_request(worker, req):  # gunicorn's, not ours: a warning
    raise AssertionError("never called")
'''


def test_a_raising_hook_is_logged_and_the_server_serves_on(gateway_factory, tmp_path):
    module = tmp_path / "raising_hooks.py"
    module.write_text(RAISING)
    gw = gateway_factory("proc_apps:app", "-w", "2", "--hooks", str(module))
    gw.wait_for_log(r"when_ready raised; going on", timeout=15)
    with gw.client() as c, pytest.raises(ClientError, match=r"closed .* before END_REQUEST"):
        c.request("GET", "/exit?code=7")  # a crash: child_exit raises in the master
    gw.wait_for_log(r"child_exit raised; going on", timeout=10)
    assert wait_until(lambda: len(children(gw.pid)) == 2, timeout=10)
    with gw.client() as c:
        assert c.request("GET", "/pid").status == 200
    log = gw.log_text()
    for hook in ("when_ready", "post_fork", "child_exit"):
        assert f"RuntimeError: {hook} failed on purpose" in log  # the traceback is logged
    assert "on_start is not a hook name (did you mean on_starting?)" in log
    assert "pre_request is a gunicorn hook that fcgi-gateway does not call" in log
    gw.send_signal(signal.SIGTERM)
    assert gw.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("source", "status", "message"),
    [
        pytest.param(
            "def on_starting(server):\n    raise OSError('no metrics directory')\n",
            1,
            "on_starting raised OSError: no metrics directory",
            id="on_starting-raises",
        ),
        pytest.param(
            "def post_worker_init(worker):\n    raise KeyError('DATABASE_URL')\n",
            4,
            "post_worker_init raised KeyError: 'DATABASE_URL'",
            id="post_worker_init-raises",
        ),
        pytest.param(
            "import no_such_dependency_here\n",
            2,
            "error while importing",
            id="import-error",
        ),
        pytest.param("post_fork = 3\n", 2, "post_fork is not callable (it is a int)", id="not-callable"),
        pytest.param(
            "def child_exit(server):\n    pass\n",
            2,
            "child_exit must take (server, worker)",
            id="wrong-arguments",
        ),
    ],
)
def test_hooks_that_stop_the_start(gateway_factory, tmp_path, source, status, message):
    module = tmp_path / "bad_hooks.py"
    module.write_text(source)
    gw = gateway_factory("proc_apps:app", "-w", "2", "--hooks", str(module), wait=False)
    assert gw.wait(timeout=20) == status
    assert message in gw.log_text()


def test_a_missing_hooks_module_exits_2(gateway_factory):
    gw = gateway_factory("proc_apps:app", "--hooks", "no_such_hooks_module", wait=False)
    assert gw.wait(timeout=20) == 2
    log = gw.log_text()
    assert "configuration error: --hooks: could not import module 'no_such_hooks_module'" in log


# -- the Prometheus recipe of docs/hooks.md, as written -----------------------------------

METRICS_APP = '''"""Written by tests/process/test_proc_hooks.py: prometheus_client in multiprocess mode."""
import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client import multiprocess

REQUESTS = Counter("app_requests", "Requests served")
ALIVE = Gauge("app_workers_alive", "Workers alive", multiprocess_mode="livesum")
ALIVE.set(1)


def app(environ, start_response):
    if environ["PATH_INFO"] == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(data)))])
        return [data]
    REQUESTS.inc()
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def doc_recipe(name: str) -> str:
    """The Python block of docs/hooks.md marked ``<!-- recipe: NAME -->``."""
    text = (REPO_ROOT / "docs" / "hooks.md").read_text()
    found = re.findall(rf"<!-- recipe: {name} -->\n```python\n(.*?)```", text, re.DOTALL)
    assert len(found) == 1, f"docs/hooks.md has {len(found)} blocks marked <!-- recipe: {name} -->"
    return found[0]


def test_prometheus_multiprocess_recipe(gateway_factory, tmp_path):
    pytest.importorskip("prometheus_client")
    hooks = tmp_path / "hooks.py"
    hooks.write_text(doc_recipe("prometheus"))
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "metrics_app.py").write_text(METRICS_APP)
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    stale = metrics_dir / "gauge_livesum_999999.db"
    stale.write_bytes(b"a previous run")  # on_starting empties the directory
    gw = gateway_factory(
        "metrics_app:app",
        *("-w", "2", "--max-requests", "1", "--app-dir", str(app_dir), "--hooks", str(hooks)),
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    assert not stale.exists()
    served = set()
    for _ in range(5):  # each request recycles the worker that serves it
        with gw.client() as c:
            r = c.request("GET", "/work")
        assert r.status == 200
        served.add(int(r.body))

    def live_files() -> set[int]:
        return {int(p.stem.rsplit("_", 1)[1]) for p in metrics_dir.glob("gauge_livesum_*.db")}

    # child_exit removed each dead worker's live gauge; the replacements wrote theirs
    assert wait_until(lambda: len(children(gw.pid)) == 2 and live_files() == children(gw.pid), timeout=15), (
        live_files(),
        children(gw.pid),
    )
    assert len(served) == 5 and served.isdisjoint(children(gw.pid))
    with gw.client() as c:
        text = c.request("GET", "/metrics").body.decode()
    assert "app_requests_total 5.0" in text, text  # the recycled workers' counts kept
    assert "app_workers_alive 2.0" in text, text  # only the live workers
