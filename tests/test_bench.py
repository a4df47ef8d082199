"""The benchmark harness (bench/bench.py + bench/harness/) still runs and reports.

No timing or size thresholds. The --tiny runs assert that the run finished, that its JSON
has a row for each gateway scenario with req/s > 0, no errors and the memory fields (the
total over the backend's processes and its largest worker). They install nothing
(--no-install): the harness uses this interpreter, measures only the servers installed in
it (in CI, the gateway alone; uWSGI too where it is installed) and wrk when installed, else
its Python client (also exercised on its own below, so the fallback cannot rot where wrk
exists). The memory scenarios (100 MiB upload and download) run once, on the gateway rows.
The rest is cheap: wrk parsing, the nginx config, the report on synthetic rows, the RSS
readings on a small process tree, and the hello app's streaming route.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench" / "bench.py"
HARNESS = REPO / "bench" / "harness"
PROJECT_ROWS = ("project-wsgi", "project-asgi", "project-wsgi-bridge")
WORKER_FIELDS = ("rss_worker_idle_mib", "rss_worker_after_mib", "rss_worker_peak_mib")


def harness(module: str) -> ModuleType:
    """``bench/harness/<module>.py``, imported as ``fcgi_bench_harness.<module>`` (the package
    uses relative imports; dataclasses look their module up in sys.modules)."""
    if "fcgi_bench_harness" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "fcgi_bench_harness", HARNESS / "__init__.py", submodule_search_locations=[str(HARNESS)]
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules["fcgi_bench_harness"] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"fcgi_bench_harness.{module}")


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(BENCH), "--tiny", "--no-install", "--json", str(out), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    print(done.stdout[-6000:], done.stderr[-6000:], sep="\n")
    assert done.returncode == 0, f"bench exited with {done.returncode}"
    return json.loads(out.read_text())


def _check_rows(data: dict, scenarios: tuple[str, ...], backends: tuple[str, ...]) -> None:
    rows = {(r["scenario"], r["backend"]): r for r in data["results"]}
    for scenario in scenarios:
        for backend in backends:
            row = rows.get((scenario, backend))
            assert row is not None, f"no row for {scenario}/{backend}: {sorted(rows)}"
            assert row["status"] == "ok", row
            assert row["rps"] > 0, row
            assert row["samples"] and all(s["requests"] > 0 for s in row["samples"]), row
            assert row["errors"] == 0 and row["non2xx"] == 0 and row["socket_errors"] == 0, row
            assert row["rss_total_idle_mib"] > 0 and row["rss_total_after_mib"] > 0, row
            assert row["processes"] >= 2, row  # the gateway: master + worker
            assert all(row[f] > 0 for f in WORKER_FIELDS), row
            assert row["rss_worker_idle_mib"] < row["rss_total_idle_mib"], row  # a worker, not the sum
            assert row["rss_worker_growth_mib"] is not None, row
            assert row["cpu_us_per_request"] is not None and row["spread_pct"] is not None, row
    assert {r["backend"] for r in data["results"]} <= {*PROJECT_ROWS, "uwsgi"}  # --tiny: gateway (+ uWSGI)


@pytest.mark.slow
def test_tiny_run_measures_every_gateway_row(tmp_path: Path) -> None:
    data = _run(tmp_path)
    _check_rows(data, ("hello", "hello-keepconn"), PROJECT_ROWS)
    meta = data["meta"]
    assert meta["rounds"] == 1 and meta["seconds"] == 1
    assert meta["nproc"] >= 1 and meta["nginx"]


@pytest.mark.slow
def test_fresh_rounds_run_on_new_processes(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(BENCH), "--no-install", "--json", str(out), "--fresh", "--rounds", "3"]
    cmd += ["--seconds", "1", "--warmup", "0.5", "--scenarios", "hello", "--only", "project-wsgi"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    print(done.stdout[-6000:], done.stderr[-6000:], sep="\n")
    assert done.returncode == 0, f"bench exited with {done.returncode}"
    assert done.stdout.count("new processes: project-wsgi") == 2  # before rounds 2 and 3
    [row] = json.loads(out.read_text())["results"]
    assert row["status"] == "ok" and len(row["samples"]) == 3, row
    assert all(s["requests"] > 0 and s["cpu_s"] > 0 for s in row["samples"]), row


@pytest.mark.slow
def test_python_client_fallback(tmp_path: Path) -> None:
    data = _run(tmp_path, "--client", "python", "--scenarios", "hello", "--only", "project-wsgi,project-asgi")
    _check_rows(data, ("hello",), ("project-wsgi", "project-asgi"))
    assert "python" in data["meta"]["client"]


@pytest.mark.slow
def test_tiny_memory_scenarios(tmp_path: Path) -> None:
    scenarios = ("mem-upload", "mem-download")
    data = _run(tmp_path, "--scenarios", ",".join(scenarios), "--only", "project-wsgi,project-asgi")
    _check_rows(data, scenarios, ("project-wsgi", "project-asgi"))
    assert all(len(r["samples"]) == 1 for r in data["results"])  # --tiny: one request per row
    assert data["meta"]["memory_requests"] == 1 and data["meta"]["memory_bytes"] == 100 * 1024 * 1024


@pytest.mark.slow
def test_instructions_run(tmp_path: Path) -> None:
    """``--instructions`` (Valgrind, installed by scripts/setup-env) gives a count per row."""
    out = tmp_path / "instructions.json"
    cmd = [sys.executable, str(BENCH), "--no-install", "--instructions", "20", "--scenarios", "hello"]
    cmd += ["--only", "project-wsgi,project-asgi", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    print(done.stdout[-6000:], done.stderr[-6000:], sep="\n")
    assert done.returncode == 0, f"bench exited with {done.returncode}"
    counts = json.loads(out.read_text())
    assert [(c["scenario"], c["backend"]) for c in counts] == [
        ("hello", "project-wsgi"),
        ("hello", "project-asgi"),
    ]
    assert all(c["per_request"] > 1000 and not c["error"] for c in counts)  # a request is thousands
    assert "| hello | **project-wsgi** |" in done.stdout


def test_instructions_pick_the_process_that_served() -> None:
    """The worker is the process whose total grew with the extra requests, not the largest
    (a gateway's master can have run more instructions than a worker at start-up)."""
    per_request = harness("instructions").per_request
    assert per_request([377_000, 310_000, 300_000], [377_100, 310_050, 320_000], 100) == 200.0
    with pytest.raises(RuntimeError):
        per_request([1, 2], [1, 2, 3], 10)


def test_instructions_requests_are_what_nginx_sends() -> None:
    """The FastCGI request --instructions sends: one whole request with the stock params."""
    from gateway.protocol import FastCGIConnection, RequestReceived, StdinEnded

    events = FastCGIConnection().feed(harness("instructions").fastcgi_request("/x"))
    assert [type(e) for e in events] == [RequestReceived, StdinEnded]
    params = dict(events[0].params)
    assert params[b"REQUEST_URI"] == params[b"SCRIPT_NAME"] == b"/x" and params[b"REQUEST_METHOD"] == b"GET"
    assert not events[0].keep_conn
    kept = FastCGIConnection().feed(harness("instructions").fastcgi_request("/x", keep_conn=True))
    assert [type(e) for e in kept] == [RequestReceived, StdinEnded] and kept[0].keep_conn


WRK_OUTPUT = """\
Running 4s test @ http://127.0.0.1:40000/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.05ms  30.12ms   90.00%
    Req/Sec    15.30k     1.20k   17.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    2.50ms
     90%    3.10ms
     99%    1.20s
  60912 requests in 4.00s, 9.12MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  15228.00
Transfer/sec:      2.28MB
"""


def test_parse_wrk_output() -> None:
    sample = harness("load").parse_wrk(WRK_OUTPUT)
    assert sample.rps == 15228.0
    assert sample.requests == 60912
    assert sample.p50_ms == pytest.approx(0.812)
    assert sample.p99_ms == pytest.approx(1200.0)
    assert sample.non2xx == 7
    assert sample.socket_errors == 6


def test_nginx_config_has_one_server_per_row(tmp_path: Path) -> None:
    backends, scenarios = harness("backends"), harness("scenarios")
    procs, nginx = harness("procs"), harness("nginx")
    rows = [backends.BACKEND[n] for n in ("project-wsgi", "uwsgi", "gunicorn")]
    plan = []
    for i, backend in enumerate(rows):
        for scenario in (scenarios.SCENARIO["hello"], scenarios.SCENARIO["hello-keepconn"]):
            inst = procs.Instance(backend, "hello:wsgi_app", 1, f"/tmp/x/{i}.sock", [], tmp_path / "log")
            plan.append((40000 + len(plan), scenario, inst))
    conf = nginx.nginx_config(tmp_path, plan)
    assert conf.count("listen 127.0.0.1:") == len(plan)
    assert conf.count("worker_processes 1;") == 1
    assert "fastcgi_pass unix:/tmp/x/0.sock;" in conf  # keep_conn off: a connection per request
    assert conf.count("fastcgi_keep_conn on;") == 2  # hello-keepconn of project-wsgi and uwsgi
    assert "proxy_http_version 1.1;" in conf and 'proxy_set_header Connection "";' in conf
    assert "client_max_body_size 128m;" in conf  # the 100 MiB upload of mem-upload fits


def _row(scenario: str, backend: str, rps: float, **memory: float) -> object:
    results = harness("results")
    row = results.Row(scenario, backend, "fastcgi", "wsgi", 1, False, "hello:wsgi_app", processes=2, **memory)
    row.samples = [results.Sample(rps, 100, 1.5, 9.0, 0, 0, cpu_s=0.004)]
    row.summarize()
    return row


def test_report_shows_worker_and_total_rss(tmp_path: Path) -> None:
    report = harness("report")
    memory = {
        "rss_total_idle_mib": 44.2,
        "rss_total_after_mib": 45.0,
        "rss_worker_idle_mib": 19.94,
        "rss_worker_after_mib": 20.2,
        "rss_worker_peak_mib": 23.5,
        "rss_worker_growth_mib": 3.56,
    }
    rows = [_row("hello", "project-wsgi", 9000.0, **memory), _row("mem-upload", "uwsgi", 2.5, **memory)]
    cells = dict(zip(report.COLUMNS, report.table_cells(rows[0]), strict=True))
    assert cells["worker RSS idle"] == "19.9M" and cells["worker RSS after"] == "20.2M"
    assert cells["worker RSS growth"] == "+3.6M"
    assert cells["procs"] == "2" and cells["RSS sum idle"] == "44M" and cells["RSS sum after"] == "45M"
    assert report.table_cells(rows[1])[2] == "2.50"  # a memory row's req/s: one big request at a time
    md = report.markdown_table(rows).splitlines()
    assert "| worker RSS idle | worker RSS after | worker RSS growth | procs | RSS sum idle |" in md[0]
    assert md[2].startswith("| hello | **project-wsgi** | 9000 |") and md[3].startswith(
        "| mem-upload | uwsgi |"
    )

    class Args:  # what write_json reads of the command line
        command, rounds, seconds, conns, warmup, meta = "bench/run", 1, 1.0, 32, 0.5, {"nproc": 2}

    out = tmp_path / "bench.json"
    report.write_json(rows, str(out), Args)
    saved = json.loads(out.read_text())["results"][0]
    assert {k: saved[k] for k in memory} == memory and saved["processes"] == 2
    again, meta = report.load_json(str(out))
    assert again[0].rss_worker_growth_mib == 3.56 and again[0].processes == 2
    assert meta["nproc"] == 2 and meta["command"] == "bench/run"


def test_report_reads_a_json_of_an_earlier_version(tmp_path: Path) -> None:
    """Before the worker columns the total RSS was ``rss_idle_mib``/``rss_after_mib``."""
    old = json.loads((REPO / "bench" / "results" / "latest.json").read_text())
    item = dict(old["results"][0])
    item = {k: v for k, v in item.items() if not k.startswith("rss_")} | {
        "rss_idle_mib": 47.0,
        "rss_after_mib": 48.0,
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"meta": old["meta"], "results": [item]}))
    [row], _ = harness("report").load_json(str(path))
    assert (row.rss_total_idle_mib, row.rss_total_after_mib, row.rss_worker_idle_mib) == (47.0, 48.0, None)
    assert harness("report").table_cells(row)[-6:] == ["-", "-", "-", "2", "47M", "48M"]


PREFORK = textwrap.dedent(
    """
    import os, sys, time
    if os.fork() == 0:  # the worker: waits for a line, then holds 64 MiB for a moment
        sys.stdin.readline()
        block = bytearray(64 * 1024 * 1024)
        time.sleep(0.3)
        del block
        time.sleep(60)
    else:
        print("ready", flush=True)
        time.sleep(60)
    """
)


def test_rss_readings_tell_the_worker_from_the_master() -> None:
    procs = harness("procs")
    master = subprocess.Popen(
        [sys.executable, "-c", PREFORK],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the worker dies with the group
    )
    try:
        assert master.stdout is not None and master.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 10
        while len(procs.process_tree(master.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        idle = procs.rss_reading(master.pid)
        assert idle.processes == 2 and idle.worker_pid != master.pid
        assert idle.worker_mib is not None and 0 < idle.worker_mib < idle.total_mib
        peak = procs.PeakWatch(master.pid)
        with procs.RssSampler(master.pid, interval=0.01) as sampler:
            assert master.stdin is not None
            master.stdin.write("go\n")
            master.stdin.flush()
            time.sleep(1.0)
        peak_mib = peak.peak_mib()
        assert peak_mib is not None and peak_mib - idle.worker_mib > 32  # the 64 MiB block, gone by now
        assert sampler.peak_mib is not None and sampler.peak_mib - idle.worker_mib > 32
        assert procs.rss_reading(master.pid).worker_mib < peak_mib
    finally:
        os.killpg(master.pid, signal.SIGKILL)
        master.wait()


def test_hello_app_streams_the_size_asked_for() -> None:
    sys.path.insert(0, str(REPO / "bench" / "apps"))
    try:
        hello = importlib.import_module("hello")
    finally:
        sys.path.remove(str(REPO / "bench" / "apps"))
    size = 3 * hello.CHUNK + 5
    seen: list[tuple[str, list]] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/stream", "QUERY_STRING": f"bytes={size}"}
    chunks = list(hello.wsgi_app(environ, lambda status, headers: seen.append((status, headers))))
    assert len(chunks) == 4 and sum(map(len, chunks)) == size
    assert seen == [("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(size))])]

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/stream", "query_string": f"bytes={size}".encode()}
    asyncio.run(hello.asgi_app(scope, None, send))
    assert sent[0]["status"] == 200 and (b"content-length", str(size).encode()) in sent[0]["headers"]
    assert sum(len(m.get("body", b"")) for m in sent[1:]) == size and not sent[-1].get("more_body")
