"""Queue time, shedding and histograms with real processes behind a real nginx that stamps
each request (``fastcgi_param HTTP_X_REQUEST_START "t=${msec}";``, as docs/deployment.md
says): the time a request waited behind a slow one on a 1-worker gateway, in the access
log and on ``?full``; ``--max-queue-time`` answering 503 + Retry-After before the app runs
(the app records its calls), counted as shed; a stale stamp shed and a fresh one served on
every worker kind; ``?openmetrics`` histograms whose counts add up to the requests served;
the async worker's in-flight gauge above 1 while slow requests share one worker, and its
busy ratio (in flight over its --max-connections)."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.integration.test_status_readiness import wait_for

STAMP = 'fastcgi_param HTTP_X_REQUEST_START "t=${msec}";'
ACCESS_FORMAT = "%(uri)s %(status)s q=%(queue_ms)s"


@pytest.fixture
def queued_served(served, sock_dir, tmp_path):
    """``queued_served(app, *args)``: queue_apps behind nginx with the stamp, the status
    page on the master's --status-bind (answers while the one worker is busy) at
    /fpm-status, an access log with queue_ms; ``.calls()`` lists the app's calls."""

    def make(app: str, *args: str):
        calls = tmp_path / "calls.txt"
        calls.write_text("")
        access = tmp_path / "access.log"
        status_sock = sock_dir / "status.sock"
        s = served(
            f"queue_apps:{app}",
            "--status-path", "/status",
            "--status-bind", f"unix:{status_sock}",
            "--access-log", str(access),
            "--access-log-format", ACCESS_FORMAT,
            *args,
            env={"QUEUE_APP_CALLS": str(calls)},
            locations={
                "/": STAMP,
                "= /fpm-status": f"fastcgi_pass unix:{status_sock};\nfastcgi_param REQUEST_URI /status;",
            },
        )  # fmt: skip
        s.calls = lambda: calls.read_text().splitlines()
        s.access = lambda: access.read_text().splitlines() if access.exists() else []
        s.status = lambda query="json&full": s.get(f"/fpm-status?{query}")
        return s

    return make


def _in_background(s, path: str, results: list) -> threading.Thread:
    t = threading.Thread(target=lambda: results.append((path, s.get(path))))
    t.start()
    return t


def _families(s) -> dict:
    return {f.name: f for f in text_string_to_metric_families(s.status("openmetrics&full").text)}


def test_queue_time_of_a_request_waiting_behind_a_slow_one(queued_served):
    s = queued_served("app", "-w", "1", "--worker", "sync")
    results: list = []
    slow = _in_background(s, "/sleep?s=1.5", results)
    wait_for(lambda: s.status().json(), lambda d: d["active processes"] == 1, what="the worker busy")
    t0 = time.monotonic()
    waiting = s.get("/ok")
    waited = time.monotonic() - t0
    slow.join()
    assert waiting.status == 200 and results[0][1].status == 200
    [proc] = s.status().json()["processes"]
    assert 0.8 * waited * 1e6 <= proc["request queue time"] <= (waited + 0.5) * 1e6  # the /ok one
    lines = wait_for(s.access, lambda lines: len(lines) == 2, what="two access log lines")
    queue_ms = {line.split()[0]: float(line.split("q=")[1]) for line in lines}
    assert queue_ms["/sleep?s=1.5"] < 500
    assert 0.8 * waited * 1000 <= queue_ms["/ok"] <= (waited + 0.5) * 1000
    queue = _families(s)["fcgi_gateway_queue_time_seconds"]
    counts = [x.value for x in queue.samples if x.name.endswith("_bucket")]
    assert counts[-1] == 2 and counts[4] >= 1  # one within 100 ms, the other beyond 1 s
    assert counts[7] == 1  # le=1.0: the waiting one is above


def test_max_queue_time_sheds_before_the_app_runs(queued_served):
    s = queued_served("app", "-w", "1", "--worker", "sync", "--max-queue-time", "500ms")
    results: list = []
    slow = _in_background(s, "/sleep?s=1.5", results)
    wait_for(lambda: s.status().json(), lambda d: d["active processes"] == 1, what="the worker busy")
    shed = [_in_background(s, f"/ok?n={i}", results) for i in range(3)]
    for t in (slow, *shed):
        t.join()
    by_path = dict(results)
    assert by_path["/sleep?s=1.5"].status == 200
    for i in range(3):
        r = by_path[f"/ok?n={i}"]
        assert (r.status, r.header("Retry-After")) == (503, "1"), r
    assert s.calls() == ["/sleep?s=1.5"]  # the app never ran for a shed request
    data = s.status().json()
    assert (data["shed requests"], data["requests"]) == (3, 1)
    assert _families(s)["fcgi_gateway_shed_requests"].samples[0].value == 3
    fresh = s.get("/ok?n=fresh")
    assert fresh.status == 200 and s.calls()[-1] == "/ok?n=fresh"
    lines = wait_for(s.access, lambda lines: len(lines) == 5, what="five access log lines")
    assert sorted(line.split()[1] for line in lines) == ["200", "200", "503", "503", "503"]
    log = s.gateway.wait_for_log(r"shed (\d) request\(s\) that waited longer than --max-queue-time")
    assert log.group(1) == "1"  # the first at once; the others within the interval are counted later


def test_overload_through_nginx_sheds_a_share_and_never_runs_the_app_for_it(queued_served):
    """Eight clients keep one sync worker that needs 50 ms a request busy for 2 s: the
    requests that waited over 150 ms in the queue are shed, the share is on the status
    page, and the app ran exactly for the requests answered 200."""
    s = queued_served("app", "-w", "1", "--worker", "sync", "--max-queue-time", "150ms")
    counts = {200: 0, 503: 0}
    lock = threading.Lock()
    end = time.monotonic() + 2.0

    def client() -> None:
        while time.monotonic() < end:
            status = s.get("/sleep?s=0.05").status
            with lock:
                counts[status] = counts.get(status, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(counts) == {200, 503} and counts[200] > 0 and counts[503] > 0, counts
    expected = (counts[200], counts[503])  # counted by the worker just after its answer
    data = wait_for(lambda: s.status().json(), lambda d: (d["requests"], d["shed requests"]) == expected,
                    what=f"{expected} on the status page")  # fmt: skip
    assert len(s.calls()) == counts[200]  # the app never ran for a shed request
    share = data["shed requests"] / (data["shed requests"] + data["requests"])
    print(f"overload: {counts[200]} served, {counts[503]} shed ({share:.0%})")


@pytest.mark.parametrize(
    "app, worker", [("app", "sync"), ("asgi_app", "async"), ("app", "async")], ids=["sync", "asgi", "bridge"]
)
def test_a_stale_stamp_is_shed_and_a_fresh_one_served(queued_served, app, worker):
    s = queued_served(app, "-w", "1", "--worker", worker, "--max-queue-time", "1s")
    client = s.gateway.client()
    now = time.time()
    stale = client.request("GET", "/ok", headers=[("X-Request-Start", f"t={now - 5:.3f}")])
    assert (stale.status, stale.header("Retry-After")) == (503, "1")
    queue_start = client.request("GET", "/ok", headers=[("X-Queue-Start", str(int((now - 5) * 1e6)))])
    assert queue_start.status == 503  # microseconds, the other header
    for fresh in (f"t={time.time():.3f}", str(int(time.time() * 1000)), "garbage", f"t={now + 60:.3f}"):
        r = client.request("GET", "/ok", headers=[("X-Request-Start", fresh)])
        assert r.status == 200, fresh  # fresh, malformed or from the future: served
    assert s.get("/ok").status == 200  # through nginx, stamped now
    assert len(s.calls()) == 5
    # A worker counts a request once its response is sent: the last one may be counted a
    # moment after nginx passed the response on (the bridge's thread hand-off).
    wait_for(
        lambda: s.status().json(),
        lambda data: (data["shed requests"], data["requests"]) == (2, 5),
        what="2 shed and 5 served on the status page",
    )


@pytest.mark.parametrize("app, worker", [("app", "sync"), ("asgi_app", "async")])
def test_openmetrics_histograms_add_up_to_the_requests_served(queued_served, app, worker):
    s = queued_served(app, "-w", "2", "--worker", worker)
    for path in ["/ok"] * 6 + ["/missing"] * 3 + ["/sleep?s=0.3"]:
        s.get(path)
    fams = _families(s)
    served = fams["fcgi_gateway_requests"].samples[0].value
    assert served == 10
    duration = fams["fcgi_gateway_request_duration_seconds"]
    assert duration.type == "histogram"
    by_code: dict[str, list[float]] = {}
    for sample in duration.samples:
        if sample.name.endswith("_bucket"):
            by_code.setdefault(sample.labels["code"], []).append(sample.value)
    assert {code: b[-1] for code, b in by_code.items()} == {"2xx": 7, "4xx": 3}
    for buckets in by_code.values():
        assert buckets == sorted(buckets)  # cumulative
    assert sum(b[-1] for b in by_code.values()) == served
    assert by_code["2xx"][-1] - by_code["2xx"][5] == 1  # the 0.3 s request is above le=0.25
    queue = [x for x in fams["fcgi_gateway_queue_time_seconds"].samples if x.name.endswith("_count")]
    assert queue[0].value == served  # every request came stamped by nginx


def test_async_in_flight_gauge_counts_requests_sharing_one_worker(queued_served):
    s = queued_served("asgi_app", "-w", "1", "--worker", "async", "--max-connections", "8")
    results: list = []
    slow = [_in_background(s, f"/sleep?s=1.5&n={i}", results) for i in range(4)]
    data = wait_for(
        lambda: s.status().json(), lambda d: d["in flight requests"] >= 4, timeout=5, what="4 in flight"
    )
    assert data["processes"][0]["in flight requests"] == 4 and data["processes"][0]["state"] == "Running"
    gauge = _families(s)["fcgi_gateway_in_flight_requests"]
    assert gauge.samples[0].value == 4
    capacity = 8  # --max-connections: the async worker's requests at once
    assert data["busy ratio"] == data["processes"][0]["busy ratio"] == 4 / capacity
    assert _families(s)["fcgi_gateway_busy_ratio"].samples[0].value == 4 / capacity
    for t in slow:
        t.join()
    assert [r.status for _, r in results] == [200] * 4
    after = s.status().json()
    assert after["in flight requests"] == 0 and after["processes"][0]["state"] == "Idle"
    assert after["busy ratio"] == 0.0
