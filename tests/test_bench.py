"""The benchmark harness (bench/bench.py) still runs: a --tiny run against the gateway.

No timing thresholds: the test asserts that the run finished, that its JSON has a row for
each gateway scenario with req/s > 0 and no errors. It installs nothing (--no-install):
the harness uses this interpreter, measures only the servers installed in it (in CI, the
gateway alone; uWSGI too where it is installed) and wrk when installed, else its Python
client (also exercised on its own below, so the fallback cannot rot where wrk exists).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.nginx import NGINX

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench" / "bench.py"
PROJECT_ROWS = ("project-wsgi", "project-asgi", "project-wsgi-bridge")

pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")


def _load_bench():
    spec = importlib.util.spec_from_file_location("fcgi_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fcgi_bench"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


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
            assert row["rss_idle_mib"] > 0 and row["rss_after_mib"] > 0 and row["processes"] >= 2, row
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
def test_python_client_fallback(tmp_path: Path) -> None:
    data = _run(tmp_path, "--client", "python", "--scenarios", "hello", "--only", "project-wsgi,project-asgi")
    _check_rows(data, ("hello",), ("project-wsgi", "project-asgi"))
    assert "python" in data["meta"]["client"]


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
    sample = _load_bench().parse_wrk(WRK_OUTPUT)
    assert sample.rps == 15228.0
    assert sample.requests == 60912
    assert sample.p50_ms == pytest.approx(0.812)
    assert sample.p99_ms == pytest.approx(1200.0)
    assert sample.non2xx == 7
    assert sample.socket_errors == 6


def test_nginx_config_has_one_server_per_row(tmp_path: Path) -> None:
    bench = _load_bench()
    rows = [bench.BACKEND[n] for n in ("project-wsgi", "uwsgi", "gunicorn")]
    plan = []
    for i, backend in enumerate(rows):
        for scenario in (bench.SCENARIO["hello"], bench.SCENARIO["hello-keepconn"]):
            inst = bench.Instance(backend, "hello:wsgi_app", 1, f"/tmp/x/{i}.sock", [], tmp_path / "log")
            plan.append((40000 + len(plan), scenario, inst))
    conf = bench.nginx_config(tmp_path, plan)
    assert conf.count("listen 127.0.0.1:") == len(plan)
    assert conf.count("worker_processes 1;") == 1
    assert "fastcgi_pass unix:/tmp/x/0.sock;" in conf  # keep_conn off: a connection per request
    assert conf.count("fastcgi_keep_conn on;") == 2  # hello-keepconn of project-wsgi and uwsgi
    assert "proxy_http_version 1.1;" in conf and 'proxy_set_header Connection "";' in conf
