"""A memory recycle names its cause (issue 15, item 4). Behind nginx, one worker of
tests/apps/iso_leak_app.py recycled by ``--max-memory`` (sync worker and the a2wsgi
bridge) logs the app class whose instances grew and the module-level list holding them;
a list of ``bytes`` (not tracked by gc) and a list reached only through a closure are named
with their item types; ``--trace-memory`` adds allocation sites in the app's file;
Django's DEBUG query log is named with its length; the memory checker's first
``memory-growth`` explains itself once. In process: the warm-up census is taken once
(never per request) and the explanation computed once; logging handlers that keep
records and SQLAlchemy's echo are named."""

from __future__ import annotations

import logging
import logging.handlers
import re

import pytest
from conftest import wait_for_finding

from gateway.isolation import RequestInfo, leaks
from gateway.isolation.memory import MemoryChecker
from gateway.workers.base import Limits, WorkerControl

WORKERS = {"sync": (), "bridge": ("--worker", "async", "--bridge-threads", "1")}
#: reached after a few of the leak app's requests (each keeps about 2 MiB)
LIMIT = ("--max-memory", "48M")


def until_recycled(s, *paths: str, most: int = 60) -> list[str]:
    """Request ``paths`` in turn until the worker is over --max-memory; its report lines
    (all written before it asks the master to be recycled)."""
    for i in range(most):
        assert s.get(paths[i % len(paths)]).status == 200
        if "over --max-memory" in s.gateway.log_text():
            break
    pid = s.gateway.wait_for_log(r"memory: worker (\d+) over --max-memory").group(1)
    s.gateway.wait_for_log(rf"worker {pid} asks to be recycled \(max-memory\)")
    return [line for line in s.gateway.log_text().splitlines() if f"memory: worker {pid}" in line]


def line_with(lines: list[str], text: str) -> str:
    [line] = [x for x in lines if text in x]
    return line


@pytest.mark.parametrize("worker", WORKERS)
def test_max_memory_recycle_names_the_growing_type_and_list(iso, worker):
    s = iso("iso_leak_app:app", *WORKERS[worker], *LIMIT)
    lines = until_recycled(s, "/objects")
    head = line_with(lines, "over --max-memory")
    # the app's class first, with how many instances were added since the warm-up census
    # after the first request (6,000 a request; on the bridge the app may already be
    # running the next request when a census is taken)
    m = re.search(r"after (\d+) requests; grew most since warm-up: iso_leak_app\.LeakItem \+([\d,]*\d)", head)
    assert m, head
    served, grown = int(m.group(1)), int(m.group(2).replace(",", ""))
    assert 6000 * (served - 2) <= grown <= 6000 * served, head
    containers = line_with(lines, "containers grown most:")
    assert re.search(r"iso_leak_app:LEAKED \+[\d,]+ to [\d,]+ \(items: iso_leak_app\.LeakItem\)", containers)
    assert "allocated since warm-up" not in s.gateway.log_text()  # no tracing unless asked
    assert "[ERROR]" not in s.gateway.log_text()


def test_lists_of_untracked_items_are_named_with_their_item_type(iso):
    """``bytes`` and ``str`` are not tracked by gc: the type counts barely move, the
    containers holding them say what grew; a list reached only through a closure is named
    by what holds it (one gc.get_referrers pass)."""
    s = iso("iso_leak_app:app", *LIMIT)
    lines = until_recycled(s, "/bytes", "/hidden")
    assert "LeakItem" not in line_with(lines, "over --max-memory")
    containers = line_with(lines, "containers grown most:")
    assert re.search(r"iso_leak_app:BLOBS \+[\d,]+ to [\d,]+ \(items: bytes, ~[\d.]+ MiB\)", containers)
    hidden = r"attribute 'rows' of an instance of iso_leak_app\.Store \+[\d,]+ to [\d,]+ "
    assert re.search(hidden + r"\(items: str, ~[\d.]+ MiB\)", containers)


def test_trace_memory_logs_the_allocation_sites(iso):
    s = iso("iso_leak_app:app", *LIMIT, "--trace-memory", "5")
    text = "\n".join(until_recycled(s, "/objects"))
    sites = re.findall(r"allocated since warm-up at (\S+):(\d+): \+", text)
    assert sites and sites[0][0].endswith("iso_leak_app.py"), text  # the biggest first
    # with more than one frame, the call chain of the biggest growth, most recent first
    assert re.search(r"allocated from \S+iso_leak_app\.py:\d+ <- \S+iso_leak_app\.py:\d+", text), text


def test_trace_memory_alone_is_refused_with_a_warning(iso):
    s = iso("iso_leak_app:app", "--trace-memory", "5")
    assert s.get("/").status == 200
    assert "--trace-memory does nothing without --max-memory or the memory checker" in s.gateway.log_text()


def test_django_debug_query_log_is_named(iso, tmp_path):
    """The ORM used outside Django's request cycle with DEBUG on: one query logged per
    request and never reset (the Django checker, which would clear it, is off)."""
    env = {"ISO_DJANGO_DB": str(tmp_path / "db.sqlite3"), "ISO_DJANGO_DEBUG": "1"}
    s = iso("iso_leak_django:app", "--isolation-checkers", "none", "--max-memory", "96M", env=env)
    lines = until_recycled(s, "/", most=30)
    served = int(re.search(r"after (\d+) requests", line_with(lines, "over --max-memory")).group(1))
    culprit = line_with(lines, "known culprit: Django DEBUG=True")
    assert "query log per database connection (connection.queries_log, up to 9,000 queries" in culprit
    assert f"'default' holds {served + 1:,} queries" in culprit  # + the app's CREATE TABLE at import
    assert re.search(r"iso_leak_django:KEPT \+\d+ to \d+ \(items: bytes, ~\d+\.\d MiB\)", "\n".join(lines))


def test_memory_growth_finding_explains_itself_once(iso):
    s = iso("iso_leak_app:app", "--isolation-checkers", "memory", env={"FCGI_GATEWAY_MEMORY_GROWTH": "1M"})
    for _ in range(5):
        assert s.get("/bytes").status == 200
    assert len(wait_for_finding(s.gateway, "memory-growth", count=4)) >= 4
    log = s.gateway.log_text()
    [head] = re.findall(r"memory: worker \d+: RSS grew by [\d.]+ MiB during GET /bytes .*", log)
    assert "grew most since warm-up" in head
    [containers] = re.findall(r"containers grown most: .*", log)
    assert "iso_leak_app:BLOBS +2,048 to 4,096 (items: bytes" in containers  # the 2nd request's


# -- in process: when the census runs ------------------------------------------------------


@pytest.fixture
def censuses(monkeypatch):
    """A fresh tracker; returns the list of the censuses taken (``full`` at report time)."""
    monkeypatch.setattr(leaks, "_tracker", None)
    calls: list[bool] = []
    real = leaks.census

    def counted(full: bool) -> leaks.Census:
        calls.append(full)
        return real(full)

    monkeypatch.setattr(leaks, "census", counted)
    return calls


def test_census_once_after_warm_up_and_once_at_the_recycle(censuses):
    control = WorkerControl(limits=Limits(max_memory_bytes=1 << 50))
    assert not any(control.request_done() for _ in range(200))
    assert censuses == [False]  # the warm-up census, after the first request only
    control.limits = Limits(max_memory_bytes=1)
    assert all(control.request_done() for _ in range(5))  # over the limit from now on
    assert censuses == [False, True]  # explained once


def test_no_census_without_max_memory(censuses):
    control = WorkerControl()
    assert not any(control.request_done() for _ in range(50))
    assert censuses == []


def test_over_the_limit_at_the_first_request_has_no_warm_up_census(censuses, caplog):
    control = WorkerControl(limits=Limits(max_memory_bytes=1))
    with caplog.at_level(logging.WARNING, "gateway.isolation"):
        assert control.request_done()
    assert censuses == [True]
    assert "most numerous (no warm-up census)" in caplog.text


def test_memory_checker_census_once(censuses):
    checker = MemoryChecker(threshold=-(1 << 50))  # every request is "growth"
    checker.after_load(None)
    info = RequestInfo("GET", "/", "1", "sync", "wsgi")
    kinds = [f.kind for _ in range(20) for f in checker.after_request(info)]
    assert kinds == ["memory-growth"] * 20
    assert censuses == [False, True]


def test_buffering_handler_and_sqlalchemy_echo_are_named(censuses, caplog):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    app_log = logging.getLogger("tests.iso_leaks.buffered")
    handler = logging.handlers.MemoryHandler(capacity=10)  # no target: never emptied
    app_log.addHandler(handler)
    app_log.propagate = False
    engine = sqlalchemy.create_engine("sqlite://", echo=True)
    try:
        leaks.tracker().warm_up()
        for i in range(150):
            app_log.warning("record %d", i)
        with caplog.at_level(logging.WARNING, "gateway.isolation"):
            leaks.tracker().report("max-memory", "memory: test")
    finally:
        app_log.removeHandler(handler)
        engine.echo = False
        engine.dispose()
    assert (
        "known culprit: logging handler logging.handlers.MemoryHandler of logger 'tests.iso_leaks.buffered': "
        "150 items in .buffer (+150 since warm-up); a MemoryHandler without a target never empties its buffer"
    ) in caplog.text
    assert "known culprit: SQLAlchemy engine echo on (Engine(sqlite://))" in caplog.text
