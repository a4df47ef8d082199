"""Status and ping pages behind a real nginx: PHP-FPM compatible keys, text/JSON/
OpenMetrics that agree, counters that move under load, per-worker rows, and an answer
within 100 ms from the master's --status-bind while every worker is stuck."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

PHP_FPM_KEYS = [
    "pool",
    "process manager",
    "start time",
    "start since",
    "accepted conn",
    "listen queue",
    "max listen queue",
    "listen queue len",
    "idle processes",
    "active processes",
    "total processes",
    "max active processes",
    "max children reached",
    "slow requests",
]
PROCESS_KEYS = [
    "pid",
    "state",
    "start time",
    "start since",
    "requests",
    "request duration",
    "request method",
    "request uri",
    "content length",
    "last request cpu",
    "last request memory",
]


def parse_text(text: str) -> dict[str, str]:
    out = {}
    for line in text.split("\n************************\n")[0].splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


@pytest.fixture(params=["sync", "async"])
def status_served(request, served, sock_dir):
    app = "wsgi_app:app" if request.param == "sync" else "asgi_app:app"
    status_sock = sock_dir / "status.sock"
    s = served(
        app,
        "-w",
        "2",
        "--status-path",
        "/status",
        "--ping-path",
        "/ping",
        "--status-bind",
        f"unix:{status_sock}",
        locations={
            "/": "",
            "= /fpm-status": (
                f"fastcgi_pass unix:{status_sock};\nfastcgi_param REQUEST_URI /status$is_args$args;"
            ),
        },
    )
    s.kind = request.param
    return s


def test_ping(status_served):
    r = status_served.get("/ping")
    assert (r.status, r.body) == (200, b"pong")


def test_status_formats_agree_and_parse(status_served):
    s = status_served
    for _ in range(5):
        assert s.get("/pid").status == 200
    text = parse_text(s.get("/status").text)
    assert [k for k in PHP_FPM_KEYS if k not in text] == []
    data = s.get("/status?json").json()
    assert [k for k in PHP_FPM_KEYS if k not in data] == []
    assert data["pool"] == text["pool"] == "www"
    assert data["process manager"] == "static"
    assert data["total processes"] == 2 == int(text["total processes"])
    metrics = {
        (sample.name, sample.labels.get("reason")): sample.value
        for family in text_string_to_metric_families(s.get("/status?openmetrics").text)
        for sample in family.samples
    }
    assert metrics[("fcgi_gateway_total_processes", None)] == 2
    assert metrics[("fcgi_gateway_respawns_total", "crash")] == 0
    # the three formats were fetched one after another: accepted conn only grows
    accepted_text = int(text["accepted conn"])
    accepted_json = data["accepted conn"]
    accepted_metrics = metrics[("fcgi_gateway_accepted_conn_total", None)]
    assert 6 <= accepted_text < accepted_json < accepted_metrics


def test_counters_move_under_load(status_served):
    s = status_served
    before = s.get("/status?json").json()
    for _ in range(50):
        assert s.get("/pid").status == 200
    after = s.get("/status?json").json()
    assert after["accepted conn"] - before["accepted conn"] >= 51
    assert after["requests"] - before["requests"] >= 50


def test_full_lists_each_worker(status_served):
    s = status_served
    pids = {int(s.get("/pid").text) for _ in range(40)}
    data = s.get("/status?json&full").json()
    procs = data["processes"]
    assert len(procs) == 2
    assert pids <= {p["pid"] for p in procs}
    for proc in procs:
        assert [k for k in PROCESS_KEYS if k not in proc] == []
        assert proc["state"] in ("Idle", "Running")
    text = s.get("/status?full").text
    assert text.count("************************") == 2


def test_status_answers_within_100ms_while_all_workers_are_busy(status_served):
    s = status_served
    stuck = [
        threading.Thread(target=s.get, args=("/sleep?s=3",)) for _ in range(2 if s.kind == "sync" else 4)
    ]
    for t in stuck:
        t.start()
    time.sleep(0.6)
    try:
        start = time.monotonic()
        r = s.get("/fpm-status?json&full")
        elapsed = time.monotonic() - start
        assert r.status == 200
        assert elapsed < 0.1, f"status took {elapsed * 1000:.0f} ms"
        data = r.json()
        if s.kind == "sync":
            assert data["active processes"] == 2
            assert {p["request uri"] for p in data["processes"]} == {"/sleep?s=3"}
        assert data["max active processes"] >= 1
    finally:
        for t in stuck:
            t.join()


def test_master_status_socket_serves_only_status_and_ping(status_served):
    s = status_served
    ping = s.get("/fpm-status")  # REQUEST_URI rewritten to /status
    assert ping.status == 200 and "pool:" in ping.text
