"""``--shutdown-delay`` with real processes (issue 18, part 1).

- Under load through nginx, SIGTERM with ``--shutdown-delay 4s``: every request sent during
  the delay is answered 200 (the socket stays, the workers keep accepting), the ping page
  answers ``503 draining`` from the first moment, then the server drains and exits 0 after
  the delay and within delay + graceful timeout.
- During the delay a second SIGTERM ends it and SIGQUIT skips it (a graceful stop at once);
  SIGINT is the quick stop.

Without the option the stop is unchanged: tests/process/test_proc_signals.py and
tests/integration/test_status_readiness.py.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from gateway.client import ping
from tests.process._load import wait_until

DRAINING = (False, "503 Service Unavailable: draining")


def test_shutdown_delay_serves_on_under_load_then_drains(served, wrk):
    delay, graceful = 4.0, 10.0
    s = served(
        "proc_apps:app", "-w", "2", "--worker", "sync", "--ping-path", "/ping",
        "--shutdown-delay", f"{delay:g}s", "--graceful-timeout", f"{graceful:g}s", keep_conn=True,
    )  # fmt: skip
    gw = s.gateway
    assert ping(gw.address) == (True, "200 OK")
    load = wrk(s.url + "/pid", duration=4, connections=8)  # goes on 3 s after the SIGTERM
    time.sleep(1.0)
    sent = time.monotonic()
    gw.send_signal(signal.SIGTERM)
    assert wait_until(lambda: ping(gw.address, timeout=2) == DRAINING, timeout=1.0), ping(gw.address)
    first_503 = time.monotonic() - sent
    checks = 0
    with gw.client(timeout=5) as client:
        while time.monotonic() - sent < delay - 0.3:
            assert os.path.exists(gw.socket_path), "the unix socket was removed during the delay"
            assert client.request("GET", "/pid").status == 200
            assert ping(gw.address, timeout=2) == DRAINING
            checks += 1
            time.sleep(0.05)
    result = load.result()
    status = gw.wait(timeout=delay + graceful + 5)
    took = time.monotonic() - sent
    print(f"503 after {first_503:.3f}s; {checks} checks in the delay; load: {result.summary()}; "
          f"exit {status} after {took:.2f}s")  # fmt: skip
    assert result.failed == 0 and result.ok > 50, result.summary()
    assert status == 0
    assert delay <= took < delay + graceful
    assert "shutdown delay over: graceful stop" in gw.log_text()
    assert not os.path.exists(gw.socket_path)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGQUIT, signal.SIGINT], ids=lambda s: s.name)
def test_a_second_signal_during_the_delay_stops_at_once(gateway_factory, second):
    gw = gateway_factory("proc_apps:app", "-w", "1", "--ping-path", "/ping", "--shutdown-delay", "60s")
    gw.wait_for_log("worker\\(s\\) ready")  # before that, no delay: nothing to keep serving
    gw.send_signal(signal.SIGTERM)
    assert wait_until(lambda: ping(gw.address, timeout=2) == DRAINING, timeout=2)
    gw.wait_for_log("serving on for the shutdown delay")
    time.sleep(0.3)
    with gw.client(timeout=5) as client:
        assert client.request("GET", "/pid").status == 200  # still serving
    sent = time.monotonic()
    gw.send_signal(second)
    assert gw.wait(timeout=10) == 0
    assert time.monotonic() - sent < 5
    expected = "quick stop" if second == signal.SIGINT else "graceful stop"
    assert f"master received {second.name}: {expected}" in gw.log_text()
