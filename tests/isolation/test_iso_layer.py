"""The layer in process: hook dispatch per worker model, thread findings repaired in the
thread that made them, policies, failing checkers disabled, inactive checkers dropped,
the bridge's thread hooks, and ``build_layer``'s checker lists."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading

import pytest

from gateway.errors import ConfigError
from gateway.isolation import Checker, Finding, IsolationLayer, RequestInfo
from gateway.isolation.base import current_request
from gateway.isolation.setup import build_layer, checker_names
from gateway.wsgi.bridge import bridge_wsgi


class Recorder(Checker):
    """Reports ``kind`` from ``thread_exit`` and notes which thread did what."""

    name = "recorder"

    def __init__(self, kind: str = "thing-leak") -> None:
        self.kind = kind
        self.calls: list[tuple[str, str]] = []

    def _note(self, what: str) -> None:
        self.calls.append((what, threading.current_thread().name))

    def thread_enter(self, info):
        self._note("enter")

    def thread_exit(self, info):
        self._note("exit")
        return [Finding(self.kind, "left a thing", {}, self.name)]

    def repair(self, finding):
        self._note("repair")
        return True


def info(worker="sync", interface="wsgi") -> RequestInfo:
    return RequestInfo("GET", "/x", "r1", worker, interface)


def test_thread_hooks_run_in_place_on_the_sync_worker():
    rec = Recorder()
    layer = IsolationLayer([rec], {"thing-leak": "repair"})
    req = info()
    layer.before_request(req)
    assert layer.after_request(req) == []
    me = threading.current_thread().name
    assert rec.calls == [("enter", me), ("exit", me), ("repair", me)]
    assert layer.counts == {"thing-leak": 1}


def test_thread_findings_from_another_thread_are_repaired_there():
    rec = Recorder()
    layer = IsolationLayer([rec], {"thing-leak": "repair"})
    req = info("async", "wsgi")  # WSGI on the async worker: the bridge runs the hooks
    layer.before_request(req)
    assert rec.calls == []
    worker = threading.Thread(target=layer.thread_exit, args=(req,), name="pool-1")
    worker.start()
    worker.join()
    assert rec.calls == [("exit", "pool-1"), ("repair", "pool-1")]
    layer.after_request(req)
    assert rec.calls[-1] == ("repair", "pool-1")  # not repaired twice
    assert layer.counts == {"thing-leak": 1}


@pytest.mark.parametrize("policy", ["log", "recycle", "fail"])
def test_policies(policy):
    recycled = []
    layer = IsolationLayer([Recorder()], default_policy=policy, on_recycle=recycled.append)
    req = info("async", "asgi")
    layer.before_request(req)
    failing = layer.after_request(req)
    assert [f.kind for f in failing] == (["thing-leak"] if policy == "fail" else [])
    assert recycled == (["leak"] if policy == "recycle" else [])
    assert layer.buffering == (policy == "fail")


class Defaults(Recorder):
    """A checker with its own default policies: ``safe-leak`` is repaired, ``poison`` is
    repaired too and recycles the worker when the repair fails, ``other`` is logged."""

    name = "defaults"
    kinds = ("safe-leak", "poison", "other")
    default_policies = {"safe-leak": "repair", "poison": "repair"}
    recycle_unrepaired = frozenset({"poison"})

    def __init__(self, kind: str, repairs: bool = True) -> None:
        super().__init__(kind)
        self.repairs = repairs

    def repair(self, finding):
        self._note("repair")
        if self.repairs is None:
            raise RuntimeError("repair failed")
        return self.repairs


@pytest.mark.parametrize(
    ("kind", "repairs", "repaired", "recycled", "suffix"),
    [
        ("safe-leak", True, True, False, " - repaired"),
        ("poison", True, True, False, " - repaired"),
        ("poison", False, True, True, " - could not repair; recycling"),
        ("poison", None, True, True, " - could not repair; recycling"),  # the repair raised
        ("safe-leak", False, True, False, " - could not repair"),
        ("safe-leak", None, True, True, " - could not repair; recycling"),  # raised: state unknown
        ("other", True, False, False, "(request r1)"),  # logged only
    ],
)
def test_default_policies_per_kind(caplog, kind, repairs, repaired, recycled, suffix):
    recycled_for: list[str] = []
    checker = Defaults(kind, repairs)
    layer = IsolationLayer([checker], on_recycle=recycled_for.append)  # default policy: auto
    assert layer.effective_policies() == {"safe-leak": "repair", "poison": "repair", "other": "log"}
    req = info()
    layer.before_request(req)
    assert layer.after_request(req) == []
    assert (("repair", threading.current_thread().name) in checker.calls) == repaired
    assert recycled_for == (["leak"] if recycled else [])
    [line] = [r.getMessage() for r in caplog.records if f"[{kind}]" in r.getMessage()]
    assert line.endswith(suffix)
    if repairs is None:  # logged with its traceback and counted; the response is unaffected
        [error] = [r for r in caplog.records if "failed in repair" in r.getMessage()]
        assert error.exc_info is not None and "repair failed" in caplog.text
        assert layer.counts["checker-error"] == 1 and layer.checkers == []


def test_explicit_policies_override_the_kinds_defaults():
    checker = Defaults("poison", False)
    layer = IsolationLayer([checker], {"poison": "log"})
    assert layer.policy_for("poison") == "log" and layer.policy_for("safe-leak") == "repair"
    layer = IsolationLayer([checker], default_policy="log")
    assert set(layer.effective_policies().values()) == {"log"}


@pytest.mark.parametrize(
    ("kind", "repairs", "recycled", "suffix"),
    [
        ("safe-leak", True, False, " - repaired"),
        ("other", True, False, " - repaired"),  # a kind logged under auto is repaired
        ("other", False, True, " - could not repair; recycling"),  # and recycles if it cannot be
        ("safe-leak", False, True, " - could not repair; recycling"),
    ],
)
def test_strict_repairs_every_kind_or_recycles(caplog, kind, repairs, recycled, suffix):
    recycled_for: list[str] = []
    layer = IsolationLayer([Defaults(kind, repairs)], default_policy="strict", on_recycle=recycled_for.append)
    assert set(layer.effective_policies().values()) == {"repair"}
    req = info()
    layer.before_request(req)
    assert layer.after_request(req) == []
    assert recycled_for == (["leak"] if recycled else [])
    [line] = [r.getMessage() for r in caplog.records if f"[{kind}]" in r.getMessage()]
    assert line.endswith(suffix)
    layer = IsolationLayer([Defaults(kind, False)], {kind: "log"}, "strict", on_recycle=recycled_for.append)
    assert layer.policy_for(kind) == "log"  # an explicit policy still wins


def test_failing_checker_is_disabled_and_requests_go_on(caplog):
    class Broken(Checker):
        name = "broken"

        def thread_exit(self, info):
            raise RuntimeError("boom")

    rec = Recorder()
    layer = IsolationLayer([Broken(), rec])
    for _ in range(2):
        req = info()
        layer.before_request(req)
        layer.after_request(req)
    assert [c.name for c in layer.checkers] == ["recorder"]
    assert "isolation checker broken failed in thread_exit; disabling it" in caplog.text
    assert layer.counts["checker-error"] == 1  # counted once: the checker is dropped


def test_inactive_checkers_are_dropped_and_idle_hooks_never_called():
    class Idle(Checker):
        def after_load(self, app):
            self.active = False
            return []

    layer = IsolationLayer([Idle()])
    layer.after_load(object())
    assert not layer.enabled
    rec = Recorder()
    layer = IsolationLayer([rec])
    assert layer._before_request == [] and layer._after_request == []
    assert layer._thread_enter == [rec] == layer._thread_exit


def test_bridge_runs_the_thread_hooks_in_its_pool_thread():
    def app(environ, start_response):
        assert current_request() is not None
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hi"]

    def broken(environ, start_response):
        raise ValueError("app bug")

    async def serve(asgi, layer):
        req = info("async", "wsgi")
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/x", "query_string": b"", "root_path": "",
                 "headers": [], "http_version": "1.1", "scheme": "http"}  # fmt: skip

        async def request():
            layer.before_request(req)
            try:
                await asgi(scope, receive, send)
            except ValueError:
                pass
            layer.after_request(req)

        await asyncio.get_running_loop().create_task(request(), context=contextvars.Context())
        return sent

    for target in (app, broken):
        rec = Recorder()
        layer = IsolationLayer([rec], {"thing-leak": "repair"})
        sent = asyncio.run(serve(bridge_wsgi(target, threads=1), layer))
        assert [what for what, _ in rec.calls] == ["enter", "exit", "repair"]
        assert {thread for _, thread in rec.calls} != {threading.current_thread().name}
        assert layer.counts == {"thing-leak": 1}
        if target is app:
            assert b"hi" in [m.get("body") for m in sent]


def test_checker_names():
    assert checker_names("none") == []
    assert checker_names("all") == ["globals", "threadlocals", "tasks", "django", "sqlalchemy", "memory"]
    assert checker_names("globals, memory") == ["globals", "memory"]
    auto = checker_names("auto")  # globals, and the framework checkers when the app uses them
    assert [n for n in auto if n not in ("django", "sqlalchemy")] == ["globals"]
    assert ("django" in auto) == ("django" in sys.modules)
    assert ("sqlalchemy" in auto) == ("sqlalchemy" in sys.modules)
    with pytest.raises(ConfigError, match="unknown isolation checker"):
        checker_names("globals,nope")


def test_build_layer_with_a_user_checker():
    layer = build_layer("none", ("iso_checkers:make",), {}, "log", worker="sync")
    assert [c.name for c in layer.checkers] == ["custom"]
    with pytest.raises(ConfigError, match=r"did not return a gateway\.isolation\.Checker"):
        build_layer("none", ("iso_wsgi:REQUEST_VAR.get",), {}, "log", worker="sync")
    with pytest.raises(ConfigError, match="iso_wsgi:app could not make an isolation checker"):
        build_layer("none", ("iso_wsgi:app",), {}, "log", worker="sync")


def test_request_info_is_made_lean():
    """The request id is formatted only when read, and ``extra`` made only when used."""
    import os

    info = RequestInfo("GET", "/", None, "sync", "wsgi", 7)
    assert info.request_id == f"{os.getpid()}-7"
    assert RequestInfo("GET", "/", "abc", "sync", "wsgi", 7).request_id == "abc"
    calls = []
    lazy = RequestInfo("GET", "/", lambda: calls.append(1) or "made", "async", "asgi")
    assert calls == [] and lazy.request_id == "made" and calls == [1]
    assert "extra" not in dir(info) or info.extra == {}
    info.extra["k"] = 1
    assert info.extra == {"k": 1}
    with pytest.raises(AttributeError):
        info.nope  # noqa: B018


class Quiet(Checker):
    """A thread_exit checker that reads no RequestInfo: finds ``kind`` when ``leak`` is set."""

    name = "quiet"
    kinds = ("quiet-leak",)
    uses_info = False

    def __init__(self) -> None:
        self.leak = False

    def thread_exit(self, info):
        assert info is None  # the light path passes none
        return [Finding("quiet-leak", "left something", {}, self.name)] if self.leak else []


def test_a_light_layer_describes_the_request_only_for_a_finding(caplog):
    checker = Quiet()
    recycled: list[str] = []
    layer = IsolationLayer([checker], {"quiet-leak": "recycle"}, on_recycle=recycled.append)
    assert layer.light and not layer.needs_before
    described: list[int] = []

    def describe(path: str, seq: int) -> RequestInfo:
        described.append(seq)
        return RequestInfo("GET", path, None, "sync", "wsgi", seq)

    assert layer.after_sync(describe, "/light", 3) == [] and described == []
    checker.leak = True
    assert layer.after_sync(describe, "/light", 3) == [] and described == [3]
    [line] = [r.getMessage() for r in caplog.records if "[quiet-leak]" in r.getMessage()]
    assert "after GET /light" in line and line.endswith(" - recycling") and recycled == ["leak"]
    assert layer.counts["quiet-leak"] == 1
    assert not IsolationLayer([checker, Recorder()]).light  # Recorder reads its info


def test_a_light_layer_runs_every_check_after_a_finding():
    first, second = Quiet(), Quiet()
    first.leak = second.leak = True
    layer = IsolationLayer([first, second], {"quiet-leak": "log"})
    made: list[int] = []
    layer.after_sync(lambda: made.append(1) or RequestInfo("GET", "/", None, "sync", "wsgi"))
    assert made == [1]  # described once, for both findings
    assert layer.counts["quiet-leak"] == 2
