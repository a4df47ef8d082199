"""The sync worker's optional thread pool (--threads) and the request timeout / slow log,
behind a real nginx."""

from __future__ import annotations

import threading
import time


def _parallel(served_app, path: str, n: int) -> list[int]:
    statuses: list[int] = []
    lock = threading.Lock()

    def one():
        r = served_app.get(path)
        with lock:
            statuses.append(r.status)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def test_threads_serve_slow_requests_concurrently(served):
    s = served("wsgi_app:app", "--threads", "4")
    assert s.get("/environ").json()["wsgi.multithread"] is True
    start = time.monotonic()
    statuses = _parallel(s, "/sleep?s=1", 8)
    elapsed = time.monotonic() - start
    assert statuses == [200] * 8
    # 8 one-second requests on 4 threads of one process: two rounds, not eight.
    assert elapsed < 4.5, elapsed


def test_single_thread_is_not_multithreaded(served):
    s = served("wsgi_app:app")
    assert s.get("/environ").json()["wsgi.multithread"] is False


def test_request_timeout_answers_504_and_recycles_sync_worker(served):
    s = served("wsgi_app:app", "--request-timeout", "1", "--graceful-timeout", "2")
    pid = s.get("/pid").text
    start = time.monotonic()
    r = s.get("/sleep?s=4")
    assert r.status == 504
    assert time.monotonic() - start < 3
    s.gateway.wait_for_log(r"request timeout \(1\.\ds\): GET /sleep\?s=4")
    s.gateway.wait_for_log(r"asks to be recycled \(timeout\)")
    deadline = time.monotonic() + 10
    while s.get("/pid").text == pid:
        assert time.monotonic() < deadline, "the timed-out worker was not replaced"
        time.sleep(0.2)


def test_request_timeout_answers_504_on_async_worker(served):
    s = served("asgi_app:app", "--request-timeout", "1")
    r = s.get("/sleep?s=4")
    assert r.status == 504
    s.gateway.wait_for_log(r"request timeout .*GET /sleep\?s=4")
    assert s.get("/pid").status == 200


def test_slow_log_has_the_request_stack(served, tmp_path):
    slow_log = tmp_path / "slow.log"
    for app in ("wsgi_app:app", "asgi_app:app"):
        s = served(app, "--slow-request-timeout", "0.3", "--slow-log", str(slow_log))
        assert s.get("/sleep?s=1").status == 200
        deadline = time.monotonic() + 5
        while "/sleep?s=1" not in (slow_log.read_text() if slow_log.exists() else ""):
            assert time.monotonic() < deadline, "no slow log entry"
            time.sleep(0.05)
        text = slow_log.read_text()
        assert "slow request" in text
        assert "wsgi_app.py" in text or "asgi_app.py" in text
        slow_log.write_text("")
