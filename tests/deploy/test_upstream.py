"""Scale-out: three gateway instances behind one nginx upstream, as the recipes describe.

The instances are ``fcgi-gateway-flask@{1,2,3}.service`` (the template unit's ExecStart,
run with a NOTIFY_SOCKET each), nginx runs ``nginx-upstream.conf``; the recipes' ports
``900N`` become ``PN`` for a free prefix ``P``. wrk keeps GET /health (the Flask example:
``{"pid": <worker pid>, ...}``) going through nginx for ~10 s while an instance is killed
with SIGKILL (master and workers at once) and brought back, or while all three restart one
by one the way ``systemctl restart`` does (SIGTERM to the master, wait for its exit, start,
wait for READY=1). No request may fail, and the restarted instances' new workers must get
traffic again (their pids in the bodies).
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.deploy._procs import free_prefix, request, start_nginx
from tests.deploy._render import FLASK_DEPLOY, Rewriter, duration_s, listen_on, option
from tests.integration.nginx import free_port
from tests.process._load import Wrk, alive, children, wait_until

TEMPLATE = FLASK_DEPLOY / "fcgi-gateway-flask@.service"
UPSTREAM = FLASK_DEPLOY / "nginx-upstream.conf"
LOAD_S = 10.0


def pids_in(bodies: Counter[str]) -> Counter[int]:
    out: Counter[int] = Counter()
    for text, n in bodies.items():
        try:
            out[json.loads(text)["pid"]] += n
        except (ValueError, KeyError, TypeError):
            pass
    return out


@pytest.fixture
def pool(workdir: Path, unit_gateway, tmp_path: Path):
    """Three instances and nginx: ``(instances, start_instance(i), url, nginx)``."""
    prefix = free_prefix()
    rewrite = Rewriter.for_dir(workdir).add("127.0.0.1:900", f"127.0.0.1:{prefix}", first=True)
    port = free_port()
    env = {"FCGI_EXAMPLE_FLASK_DB": str(workdir / "lib" / "notes.sqlite3")}

    def start_instance(i: int):
        return unit_gateway(TEMPLATE, instance=str(i), rewrite=rewrite, env=env)

    instances = {i: start_instance(i) for i in (1, 2, 3)}
    http_body = listen_on(rewrite(UPSTREAM.read_text()), {8080: port})
    nginx = start_nginx(workdir / "nginx", http_body, [port])
    yield instances, start_instance, f"http://127.0.0.1:{port}", nginx
    nginx.stop()
    print(f"----- nginx error log -----\n{nginx.log_text()[-5000:]}")


def pids_now(url: str, n: int = 30) -> set[int]:
    """Worker pids answering ``n`` sequential GETs (round robin: every instance in rotation)."""
    return {request("GET", f"{url}/health").json()["pid"] for _ in range(n)}


def worker_pids(instance) -> set[int]:
    assert wait_until(lambda: len(children(instance.pid)) >= 2, timeout=10)
    return children(instance.pid)


def check_probes(url: str, expect: dict[int, int]) -> None:
    for i, status in expect.items():
        r = request("GET", f"{url}/ping/{i}")
        assert r.status == status, (i, r.status, r.body)
        if status == 200:
            assert r.body.strip() == b"pong"


@pytest.mark.slow
def test_kill_9_one_instance_under_load(pool, tmp_path: Path) -> None:
    instances, start_instance, url, _nginx = pool
    check_probes(url, {1: 200, 2: 200, 3: 200})
    old = worker_pids(instances[2])
    run = Wrk(tmp_path, f"{url}/health", duration=LOAD_S, connections=8, threads=2).start()
    time.sleep(2.5)
    instances[2].proc.kill9()
    assert wait_until(lambda: not any(alive(p) for p in old), timeout=5)
    time.sleep(0.5)
    check_probes(url, {2: 502})
    assert request("GET", f"{url}/ping").body.strip() == b"pong"  # the pool probe still answers
    instances[2] = start_instance(2)  # what Restart=on-failure does
    new = worker_pids(instances[2])
    back_at = time.monotonic() - run.started
    result = run.result()
    print(f"kill -9 under load: {result.summary()}; instance 2 back after {back_at:.1f}s")
    assert result.requests > 1000
    served = pids_in(result.bodies)
    assert old & set(served), "instance 2 served nothing before the kill"
    served_after = set(served) | pids_now(url)  # a slow machine may have restarted it late in the run
    assert new & served_after, f"no traffic returned to instance 2 ({new}) after its restart: {served}"
    check_probes(url, {1: 200, 2: 200, 3: 200})
    assert result.failed == 0, result.output
    check_probes(url, {1: 200, 2: 200, 3: 200})


def rolling_pause_s() -> float:
    """The pause of the documented rolling restart (``sleep N`` in the template's comment),
    checked to be longer than nginx-upstream.conf's fail_timeout."""
    pause = float(
        re.search(r"systemctl restart fcgi-gateway-flask@\$i; sleep (\d+)", TEMPLATE.read_text())[1]
    )
    fail_timeouts = {duration_s(v) for v in re.findall(r"fail_timeout=(\w+)", UPSTREAM.read_text())}
    assert fail_timeouts and pause > max(fail_timeouts), (pause, fail_timeouts)
    return pause


@pytest.mark.slow
def test_rolling_restart_under_load(pool, tmp_path: Path) -> None:
    """GETs: 0 failures. POSTs at the same time: at most 1 in 10,000 (a stopping gateway
    closes its listening sockets, so nginx retries refused connections, POSTs included; a
    rare race remains, see the assertion)."""
    instances, start_instance, url, _nginx = pool
    pause = rolling_pause_s()
    graceful = duration_s(option(instances[1].argv, "--graceful-timeout") or "30")
    assert duration_s(instances[1].unit.get("Service", "TimeoutStopSec") or "90") > graceful
    duration = 1 + 3 * (pause + 4)
    gets = Wrk(tmp_path, f"{url}/health", duration=duration, connections=6, threads=1).start()
    posts = Wrk(tmp_path, f"{url}/upload", duration=duration, connections=2, threads=1, method="POST",
                body=b"note=rolling").start()  # fmt: skip
    time.sleep(1.0)
    new_pids: dict[int, set[int]] = {}
    timings = []
    for i in (1, 2, 3):
        t0 = time.monotonic()
        instances[i].proc.proc.send_signal(signal.SIGTERM)  # systemctl restart: SIGTERM (KillMode=mixed)
        assert instances[i].proc.wait(graceful + 5) == 0, instances[i].proc.log_text()
        stopped = time.monotonic() - t0
        instances[i] = start_instance(i)  # ... then start it and wait for READY=1
        new_pids[i] = worker_pids(instances[i])
        timings.append(f"instance {i}: stopped in {stopped:.2f}s, ready after {time.monotonic() - t0:.2f}s")
        time.sleep(pause)
    left = duration - (time.monotonic() - gets.started)
    get_result, post_result = gets.result(), posts.result()
    print(f"rolling restart under load: GET {get_result.summary()}; POST {post_result.summary()}; "
          f"{'; '.join(timings)}; {left:.1f}s of load left")  # fmt: skip
    assert get_result.requests > 1000
    assert get_result.failed == 0, get_result.output
    served = set(pids_in(get_result.bodies)) | pids_now(url)
    for i, pids in new_pids.items():
        assert pids & served, f"restarted instance {i} got no traffic"
    assert post_result.ok > 100
    # GETs (what issue 8 asks) must all pass. POSTs are stricter than asked: nginx never
    # retries one it has sent; a rare race is left (1 of ~23k seen in CI) and is bounded here.
    assert post_result.failed * 10_000 <= post_result.requests, post_result.output
