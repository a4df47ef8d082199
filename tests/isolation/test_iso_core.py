"""Scenarios 4, 9, 10 and 12 behind nginx: the always-on per-request context reset, a
fire-and-forget asyncio task, a cache growing 8 MiB per request under ``--max-memory``,
and a user-registered checker whose findings reach the log and the status page."""

from __future__ import annotations

import pytest
from conftest import OFF, findings, no_isolation_lines, wait_for_finding

CONTEXT_SETUPS = {
    "sync": ("iso_wsgi:app",),
    "bridge": ("iso_wsgi:app", "--worker", "async", "--bridge-threads", "1"),
    "asgi": ("iso_asgi:app",),
}


@pytest.mark.parametrize("layer", ["off", "on"])
@pytest.mark.parametrize("setup", CONTEXT_SETUPS)
def test_contextvar_never_visible_in_the_next_request(iso, setup, layer):
    s = iso(*CONTEXT_SETUPS[setup], *(OFF if layer == "off" else ("--isolation-checkers", "all")))
    for value in ("first", "second", "third"):
        assert s.get(f"/ctx-set?v={value}").text == "unset"
        assert s.get("/ctx-get").text == "unset"


@pytest.mark.parametrize("layer", ["off", "on"])
def test_fire_and_forget_task_reported(iso, layer):
    s = iso("iso_asgi:app", *(OFF if layer == "off" else ("--isolation-checkers", "tasks")))
    assert s.get("/fire").text == "fired"
    assert s.get("/").text == "ok"
    if layer == "off":
        assert no_isolation_lines(s.gateway)
    else:
        [line] = wait_for_finding(s.gateway, "task-leak")
        assert "1 task(s) started by the request still running" in line
        assert "_forgotten" in line and "after GET /fire" in line


@pytest.mark.parametrize("worker", ["sync", "async"])
def test_growing_cache_recycles_the_worker_without_failed_requests(iso, worker):
    s = iso("iso_wsgi:app", "--worker", worker, "--max-memory", "120M", "--isolation-checkers", "memory",
            "--status-path", "/status")  # fmt: skip
    first = s.get("/pid").text
    statuses, pids = [], set()
    for _ in range(24):  # 8 MiB each: ~190 MiB in total, over the limit more than once
        statuses.append(s.get("/grow").status)
        pids.add(s.get("/pid").text)
    assert statuses == [200] * 24  # 0 failed requests
    assert len(pids | {first}) >= 2  # the worker was replaced
    s.gateway.wait_for_log(r"asks to be recycled \(max-memory\)")
    growth = findings(s.gateway, "memory-growth")
    assert growth and "RSS grew by" in growth[0]
    counts = s.get("/status?json").json()["isolation findings"]
    assert counts.get("memory-limit", 0) >= 1
    assert counts.get("memory-growth", 0) >= 1


def test_user_checker_reaches_the_log_and_the_counters(iso):
    s = iso("iso_wsgi:app", "--isolation-checkers", "none", "--isolation-checker", "iso_checkers:make",
            "--status-path", "/status")  # fmt: skip
    assert s.get("/").status == 200
    assert s.get("/status?json").json()["isolation findings"] == {}
    for _ in range(3):
        assert s.get("/custom").status == 200
    lines = wait_for_finding(s.gateway, "custom-leak", count=3)
    assert len(lines) == 3
    assert "isolation: custom checker saw GET /custom [custom-leak] after GET /custom" in lines[0]
    assert s.get("/status?json").json()["isolation findings"] == {"custom-leak": 3}


def test_user_checker_fail_policy(iso):
    s = iso("iso_asgi:app", "--isolation-checkers", "none", "--isolation-checker", "iso_checkers:make",
            "--isolation-default-policy", "fail")  # fmt: skip
    assert s.get("/").text == "ok"
    r = s.get("/custom")
    assert r.status == 500
    assert "[custom-leak] custom checker saw GET /custom" in r.text
