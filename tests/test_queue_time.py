"""Queue time and histograms without processes: X-Request-Start parsing (the unit told by
magnitude), the worker's Queueing stage, the access log field, and the scoreboard's
histograms summed over workers and kept when a worker retires, rendered as OpenMetrics
that prometheus_client's strict parser accepts."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from gateway.config import Config
from gateway.errors import ConfigError
from gateway.log import AccessLog, check_access_format
from gateway.queueing import SHED_RESPONSE, Queueing, make_queueing, parse_request_start, queue_time
from gateway.scoreboard import BUCKETS, Scoreboard, WorkerSlot
from gateway.status import render_status, snapshot

NOW = 1_700_000_000.25


@pytest.mark.parametrize(
    "value",
    [
        "1700000000.25",  # seconds (nginx's ${msec} without t=)
        "t=1700000000.250",  # nginx: fastcgi_param HTTP_X_REQUEST_START "t=${msec}"
        "1700000000250",  # milliseconds (Heroku)
        "t=1700000000250",
        "1700000000250000",  # microseconds (Apache's %t)
        "t=1700000000250000",
        " t=1700000000.25 ",
        b"t=1700000000.25",
        "T=1700000000250",
    ],
)
def test_units_are_told_by_magnitude(value):
    assert parse_request_start(value) == pytest.approx(NOW)


@pytest.mark.parametrize(
    "value",
    ["", "t=", "abc", "t=abc", "1700000000.25ms", "nan", "inf", "t=-inf", "-1700000000", "0", "12", "123456",
     "t=1e400", "1,5", "t=1700000000 t=1700000001"],
)  # fmt: skip
def test_garbage_is_ignored(value):
    assert parse_request_start(value) is None
    assert queue_time(value, NOW) is None


def test_queue_time_is_the_wait_and_a_stamp_from_the_future_counts_as_zero():
    assert queue_time("t=1700000000.000", NOW) == pytest.approx(0.25)
    assert queue_time("1699999995250", NOW) == pytest.approx(5.0)
    assert queue_time("t=1700000010.0", NOW) == 0.0  # clock skew: never shed


def test_queueing_reads_either_header_and_sheds_above_the_limit(monkeypatch):
    monkeypatch.setattr("gateway.queueing.time.time", lambda: NOW)
    q = Queueing(1.0, None)
    assert q.environ({"HTTP_X_REQUEST_START": "t=1700000000.0"}) == pytest.approx(0.25)
    assert q.environ({"HTTP_X_QUEUE_START": "t=1699999990.25"}) == pytest.approx(10.0)
    assert q.environ({"HTTP_HOST": "x"}) is None
    params = [(b"HTTP_X_QUEUE_START", b"1"), (b"HTTP_X_REQUEST_START", b"t=1699999995.25")]
    assert q.params(params) == pytest.approx(5.0)
    assert q.params([(b"HTTP_X_QUEUE_START", b"t=1700000000.0")]) == pytest.approx(0.25)
    assert q.params([(b"HTTP_X_REQUEST_START", b"junk")]) is None
    assert q.limit_s == 1.0 and Queueing(0.0, None).limit_s == math.inf
    reply = q.shed(5.0, None, {}, "-")
    assert reply == SHED_RESPONSE
    head = reply.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert b"Status: 503 Service Unavailable" in head and b"Retry-After: 1" in head


def test_queueing_is_made_only_when_something_reads_it():
    off = Config(app="x:y")
    access = SimpleNamespace(wants_queue=False)
    assert make_queueing(off, None, None) is None
    assert make_queueing(off, None, access) is None
    assert make_queueing(off, None, SimpleNamespace(wants_queue=True)) is not None
    assert make_queueing(off, object(), None) is not None  # the status page's histogram
    assert make_queueing(off.replace(max_queue_time_s=1.0), None, None).limit_s == 1.0


def test_access_log_queue_ms_is_text(caplog):
    check_access_format("%(queue_ms)s")
    with pytest.raises(ConfigError):
        check_access_format("%(queue_ms).1f")  # "-" without a stamp
    log = AccessLog("%(status)s q=%(queue_ms)s")
    assert log.wants_queue and not AccessLog().wants_queue
    with caplog.at_level("INFO", logger="gateway.access"):
        log.logger.propagate = True
        try:
            log.log("", "GET", "/", "HTTP/1.1", 200, 2, 0.001, "-", 1.23456)
            log.log("", "GET", "/", "HTTP/1.1", 503, 2, 0.0, "-")
        finally:
            log.logger.propagate = False
    assert [r.getMessage() for r in caplog.records] == ["200 q=1234.6", "503 q=-"]


def _om(board: Scoreboard, query: str = "openmetrics") -> dict:
    summary, rows = snapshot(board, "www", [])
    _, body = render_status(summary, rows, query, board.histograms)
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def _buckets(family, **labels) -> list[tuple[float, float]]:
    return [
        (float(s.labels["le"]), s.value)
        for s in family.samples
        if s.name.endswith("_bucket") and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def test_histograms_are_summed_over_workers_and_kept_when_one_retires(monkeypatch):
    board = Scoreboard(4)
    a, b = WorkerSlot(board, board.claim(1, 1)), WorkerSlot(board, board.claim(2, 1))
    clock = iter([100.0, 100.003, 200.0, 200.3, 300.0, 302.0, 400.0, 400.0])
    with monkeypatch.context() as patch:
        patch.setattr("gateway.scoreboard.time.time", lambda: next(clock))
        a.start("GET", "/", 0, 0.02)
        a.finish(200)  # 3 ms
        b.start("GET", "/", 0, None)
        b.finish(200)  # 300 ms
        b.start("GET", "/", 0, 4.0)
        b.finish(404)  # 2 s
        a.start("GET", "/", 0)
        a.finish(0)  # no status sent: "other"
    b.shed(30.0)
    fams = _om(board)
    duration = fams["fcgi_gateway_request_duration_seconds"]
    assert _buckets(duration, code="2xx") == [
        (bound, 1 if bound < 0.3 else 2) for bound in (*BUCKETS, math.inf)
    ]
    counts = {s.labels["code"]: s.value for s in duration.samples if s.name.endswith("_count")}
    assert counts == {"2xx": 2, "4xx": 1, "other": 1}
    sums = {s.labels["code"]: s.value for s in duration.samples if s.name.endswith("_sum")}
    assert sums["2xx"] == pytest.approx(0.303) and sums["4xx"] == pytest.approx(2.0)
    queue = fams["fcgi_gateway_queue_time_seconds"]
    assert [v for _, v in _buckets(queue)] == [0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3]
    assert fams["fcgi_gateway_shed_requests"].samples[0].value == 1
    assert fams["fcgi_gateway_requests"].samples[0].value == 4
    board.release(1)  # b retires: its counts stay, a new worker starts from zero
    WorkerSlot(board, board.claim(3, 2))
    assert _om(board)["fcgi_gateway_request_duration_seconds"].samples == duration.samples
    assert _om(board)["fcgi_gateway_shed_requests"].samples[0].value == 1


def test_in_flight_counts_concurrent_requests_on_one_slot():
    board = Scoreboard(2)
    slot = WorkerSlot(board, board.claim(1, 1))
    slot.set_capacity(4)
    for _ in range(3):
        slot.start("GET", "/sleep", 0)
    summary, rows = snapshot(board, "www", [])
    assert summary["in flight requests"] == 3 and rows[0]["state"] == "Running"
    assert summary["busy ratio"] == rows[0]["busy ratio"] == 0.75
    slot.finish(200)
    slot.finish(200)
    assert board.read()[0].in_flight == 1 and board.read()[0].state == 2  # still running
    slot.finish(200)
    summary, rows = snapshot(board, "www", [])
    assert summary["in flight requests"] == 0 and rows[0]["state"] == "Idle"
    fams = _om(board, "openmetrics&full")
    assert fams["fcgi_gateway_in_flight_requests"].type == "gauge"
    assert "fcgi_gateway_process_in_flight_requests" in fams
    assert "fcgi_gateway_process_request_queue_time" in fams
