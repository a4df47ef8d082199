"""The process manager modes (gateway/pool.py) with real workers behind a real nginx.

- ``dynamic``: a burst of slow requests grows the pool to ``--max-workers`` (the status
  page counts "max children reached" when more wait), idleness shrinks it back to
  ``--max-spare-workers``; under wrk, GET and POST on kept-alive connections, through
  growth and shrinking: no failed request.
- ``ondemand``: no worker after the idle timeout, the first request is answered, a burst
  is served without errors, and the pool empties again; a reload starts the new
  generation's probe worker and serves the new code.
- TTIN/TTOU move the ceiling in the adaptive modes.

Every wait is bounded; the gateway, nginx and wrk are killed at teardown by the fixtures.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.process._load import children

SLOW = "/sleep?s=2"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, log: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not seen within {timeout}s:\n{log()[-4000:]}")


def status(s) -> dict[str, Any]:
    r = s.get("/status?json")
    assert r.status == 200, r.text
    return r.json()


def burst(s, n: int, path: str) -> tuple[list[int], list[threading.Thread]]:
    """``n`` requests for ``path`` at once, in threads; their statuses land in the list."""
    codes: list[int] = []

    def one() -> None:
        codes.append(s.get(path, timeout=60).status)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    return codes, threads


def test_dynamic_grows_to_max_and_shrinks_to_max_spare(served):
    s = served(
        "wsgi_app:app",
        "--pm", "dynamic", "-w", "1", "--max-workers", "4",
        "--min-spare-workers", "1", "--max-spare-workers", "2",
        "--status-path", "/status",
    )  # fmt: skip
    gw = s.gateway
    assert status(s)["process manager"] == "dynamic"
    codes, threads = burst(s, 12, SLOW)  # three times the ceiling: some must wait
    seen: list[int] = []

    def grown() -> bool:
        seen.append(len(children(gw.pid)))
        return seen[-1] == 4

    wait_until(grown, 15, "the pool at --max-workers 4", gw.log_text)
    # the pool at its ceiling with no idle worker, in one of the manager's turns (once the
    # new workers are ready; they count as idle while they start)
    wait_until(lambda: status(s)["max children reached"] >= 1, 15, "max children reached", gw.log_text)
    for t in threads:
        t.join(60)
    assert codes == [200] * 12
    seen.append(len(children(gw.pid)))
    assert max(seen) == 4, seen  # never above the ceiling
    # idle now: one worker retired a second until --max-spare-workers (2) are left
    wait_until(lambda: len(children(gw.pid)) == 2, 15, "the pool back at 2 workers", gw.log_text)
    time.sleep(2.5)  # two more maintenance turns: it stays at the spare bound
    summary = status(s)
    assert summary["total processes"] == 2, summary
    assert summary["workers wanted"] == 2
    log = gw.log_text()
    assert "[ERROR]" not in log
    assert (
        len(
            re.findall(r"process manager: retiring worker \d+ \(\d+ idle, above --max-spare-workers 2\)", log)
        )
        == 2
    )
    assert "pool reached --max-workers (4)" in log


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "keep_conn"), [("GET", False), ("POST", True)], ids=["get", "post-keepconn"]
)
def test_dynamic_under_wrk_loses_nothing(served, wrk, method, keep_conn):
    """A steady light load for the whole run, and a heavy one of slow requests in its
    first part: the pool grows to the ceiling, then shrinks while the light load goes on."""
    s = served(
        "wsgi_app:app",
        "--pm", "dynamic", "-w", "1", "--max-workers", "4",
        "--min-spare-workers", "1", "--max-spare-workers", "1",
        keep_conn=keep_conn,
    )  # fmt: skip
    gw = s.gateway
    body = b"a=1&b=2" if method == "POST" else None
    light = wrk(s.url + "/pid", duration=14, connections=2, threads=1, method=method, body=body)
    heavy = wrk(s.url + "/sleep?s=0.2", duration=6, connections=8, threads=1, method=method, body=body)
    # 2 at first (-w 1, and 1 spare); more once slow requests keep them busy (with nginx's
    # kept-alive connections a new worker gets only the connections opened after it came)
    wait_until(lambda: len(children(gw.pid)) >= 3, 10, "the pool grown above 2", gw.log_text)
    heavy_result = heavy.result()
    wait_until(lambda: "retiring worker" in gw.log_text(), 8, "a worker retired", gw.log_text)
    light_result = light.result()
    log = gw.log_text()
    print(f"heavy: {heavy_result.summary()}\nlight: {light_result.summary()}")
    assert "[ERROR]" not in log
    for result in (heavy_result, light_result):
        assert result.requests > 0
        assert result.errors == 0, result.summary()
        assert result.ok == result.requests, result.summary() + "\n" + result.output
    assert re.search(r"retiring worker \d+ \(\d+ idle, above --max-spare-workers 1\)", log)


def test_ondemand_empties_serves_the_first_request_and_a_burst(served):
    s = served(
        "wsgi_app:app",
        "--pm", "ondemand", "--max-workers", "3", "--process-idle-timeout", "1",
        "--status-path", "/status",
    )  # fmt: skip
    gw = s.gateway
    # the probe worker (it proved the app loads) leaves after the idle timeout
    wait_until(lambda: not children(gw.pid), 10, "no worker", gw.log_text)
    r = s.get("/pid")
    assert r.status == 200 and r.text.isdigit()
    assert int(r.text) in children(gw.pid)
    wait_until(lambda: not children(gw.pid), 10, "no worker again", gw.log_text)
    codes, threads = burst(s, 6, "/sleep?s=1")
    wait_until(lambda: len(children(gw.pid)) == 3, 15, "3 workers for the burst", gw.log_text)
    for t in threads:
        t.join(60)
    assert codes == [200] * 6
    summary = status(s)
    assert summary["process manager"] == "ondemand"
    assert summary["max workers"] == 3
    assert summary["max children reached"] >= 1  # 6 requests, 3 workers at the most
    wait_until(lambda: not children(gw.pid), 10, "no worker after the burst", gw.log_text)
    log = gw.log_text()
    assert "[ERROR]" not in log
    assert re.search(r"retiring worker \d+ \(idle for \ds\)", log)


@pytest.mark.slow
def test_ondemand_burst_under_wrk(served, wrk):
    s = served("wsgi_app:app", "--pm", "ondemand", "--max-workers", "4", "--process-idle-timeout", "2")
    gw = s.gateway
    wait_until(lambda: not children(gw.pid), 10, "no worker", gw.log_text)
    result = wrk(s.url + "/sleep?s=0.05", duration=4, connections=8).result()
    print(result.summary())
    assert result.requests > 0
    assert result.errors == 0, result.summary()
    assert result.ok == result.requests, result.summary() + "\n" + result.output
    assert "[ERROR]" not in gw.log_text()
    wait_until(lambda: not children(gw.pid), 15, "no worker after the load", gw.log_text)


def test_ondemand_reload_serves_the_new_code(served, app_module):
    apps = app_module("pm_version", 'def app(e, sr):\n    sr("200 OK", [])\n    return [b"v1"]\n')
    s = served("pm_version:app", "--app-dir", str(apps), "--pm", "ondemand", "--process-idle-timeout", "1")
    gw = s.gateway
    assert s.get("/").text == "v1"
    wait_until(lambda: not children(gw.pid), 10, "no worker", gw.log_text)
    app_module("pm_version", 'def app(e, sr):\n    sr("200 OK", [])\n    return [b"v2"]\n')
    gw.send_signal(signal.SIGHUP)
    gw.wait_for_log(r"reload complete: generation 2 serving")
    assert s.get("/").text == "v2"
    wait_until(lambda: not children(gw.pid), 10, "no worker after the reload", gw.log_text)


def test_ttin_ttou_move_the_ceiling(served):
    s = served(
        "wsgi_app:app", "--pm", "dynamic", "--max-workers", "3", "--status-path", "/status"
    )  # fmt: skip
    gw = s.gateway
    gw.send_signal(signal.SIGTTIN)
    gw.wait_for_log(r"--max-workers: 4")
    wait_until(lambda: status(s)["max workers"] == 4, 5, "max workers 4 on the status page", gw.log_text)
    gw.send_signal(signal.SIGTTOU)
    gw.wait_for_log(r"--max-workers: 3")
    gw.send_signal(signal.SIGTTOU)  # one at a time: a signal pending twice is delivered once
    gw.wait_for_log(r"--max-workers: 2")
    wait_until(lambda: status(s)["max workers"] == 2, 5, "max workers 2 on the status page", gw.log_text)


def test_ondemand_with_an_app_that_cannot_load_exits_4(gateway_factory):
    """The worker started with the first generation proves the app loads: a broken app is
    a boot failure at start (exit 4), not a failing first request later."""
    gw = gateway_factory("broken_importerror_app:app", "--pm", "ondemand", wait=False)
    assert gw.wait(timeout=30) == 4
    assert "cannot load the application" in gw.log_text()


def test_status_openmetrics_reports_the_pool_bounds(served):
    s = served("wsgi_app:app", "--pm", "ondemand", "--max-workers", "3", "--status-path", "/status")
    text = s.get("/status?openmetrics").text
    assert 'fcgi_gateway_max_workers{pool="www"} 3' in text
    assert re.search(r'fcgi_gateway_workers_wanted\{pool="www"\} [01]\n', text)
    assert "fcgi_gateway_max_children_reached_total" in text


@pytest.mark.slow
def test_dynamic_recycles_under_wrk(served, wrk):
    """--max-requests in dynamic: each recycled worker is replaced one for one; nothing fails."""
    s = served(
        "wsgi_app:app",
        "--pm", "dynamic", "-w", "2", "--max-workers", "4",
        "--max-requests", "40", "--max-requests-jitter", "10",
    )  # fmt: skip
    gw = s.gateway
    result = wrk(s.url + "/pid", duration=5, connections=4, threads=1).result()
    log = gw.log_text()
    print(result.summary())
    assert result.errors == 0, result.summary()
    assert result.ok == result.requests > 0, result.summary()
    assert len(re.findall(r"asks to be recycled \(max-requests\)", log)) >= 5
    assert "[ERROR]" not in log
