"""The access log: one line per request with the documented fields, a custom format, and
reopening on SIGUSR1 (log rotation) without losing lines under load."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest

LINE = re.compile(
    r'^(?P<addr>\S+) - - \[[^\]]+\] "(?P<method>\S+) (?P<uri>\S+) (?P<proto>\S+)" (?P<status>\d{3}) '
    r"(?P<bytes>\d+) (?P<ms>[\d.]+)ms id=(?P<id>\S+) pid=(?P<pid>\d+)$"
)
APPS = {"sync": "wsgi_app:app", "async": "asgi_app:app"}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_one_line_per_request_with_the_documented_fields(served, tmp_path, kind):
    log = tmp_path / "access.log"
    s = served(APPS[kind], "--access-log", str(log))
    pid = s.get("/pid").text
    assert s.get("/cookies?x=1").status == 200
    assert s.get("/raise-before").status == 500
    assert s.get("/nope").status == 404
    deadline = time.monotonic() + 5
    while len(log.read_text().splitlines()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [LINE.match(line) for line in log.read_text().splitlines()]
    assert all(lines), log.read_text()
    rows = [(m["method"], m["uri"], m["status"]) for m in lines]
    assert rows == [
        ("GET", "/pid", "200"),
        ("GET", "/cookies?x=1", "200"),
        ("GET", "/raise-before", "500"),
        ("GET", "/nope", "404"),
    ]
    first = lines[0]
    assert first["addr"] == "127.0.0.1"
    assert first["proto"] == "HTTP/1.1"
    assert first["pid"] == pid
    assert int(first["bytes"]) == len(pid)
    assert lines[1]["bytes"] == "2"  # "ok"


def test_custom_format(served, tmp_path):
    log = tmp_path / "access.log"
    s = served(
        "wsgi_app:app", "--access-log", str(log), "--access-log-format", "%(status)s %(method)s %(uri)s"
    )
    s.get("/pid")
    deadline = time.monotonic() + 5
    while not log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_text().splitlines() == ["200 GET /pid"]


def test_unknown_field_in_format_is_a_config_error(gateway_factory):
    gw = gateway_factory("wsgi_app:app", "--access-log-format", "%(nope)s", wait=False)
    assert gw.wait(20) == 2
    assert "nope" in gw.log_text()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_usr1_reopen_loses_no_lines_under_load(served, tmp_path, kind):
    log = tmp_path / "access.log"
    s = served(APPS[kind], "-w", "2", "--access-log", str(log))
    sent = 0
    lock = threading.Lock()
    stop = threading.Event()

    def client():
        nonlocal sent
        while not stop.is_set():
            assert s.get("/pid").status == 200
            with lock:
                sent += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    rotated = []
    for i in range(3):
        time.sleep(0.5)
        moved = tmp_path / f"access.log.{i}"
        os.rename(log, moved)  # what logrotate does
        rotated.append(moved)
        s.gateway.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    time.sleep(0.5)
    total = sum(len(p.read_text().splitlines()) for p in [*rotated, log])
    assert total == sent
    assert log.exists() and log.read_text()  # writing to the new file
