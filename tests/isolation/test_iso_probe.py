"""The globals checker's lock-free probe (gateway/isolation/probe.py): unchanged only when
nothing it watches changed, for every kind of place; the layer hands it to the sync worker
only when it may skip the layer; and the sync worker calls the layer after a request only
when the probe saw a change."""

from __future__ import annotations

import os

from test_iso_checkers import kinds, req
from test_iso_checkers import module as module  # a fixture (re-exported: pytest finds it here)
from test_iso_inplace import SOURCE, checker_for
from test_iso_layer import Quiet

from gateway.isolation import appmodules
from gateway.isolation.base import IsolationLayer
from gateway.isolation.globals import GlobalsChecker
from gateway.isolation.probe import Probe, Snapshot
from tests.worker_rig import request_bytes, worker_rig


def test_before_the_first_snapshot_the_probe_always_sees_a_change():
    assert not Snapshot.never().unchanged()
    assert not Probe().unchanged()
    checker = GlobalsChecker(warmup=2)
    checker.after_load(None)
    assert not checker.probe.unchanged()  # the warm-up requests all reach the checker
    checker.thread_exit(req())
    assert not checker.probe.unchanged()
    checker.thread_exit(req())  # the snapshot
    assert checker.probe.unchanged()


def test_every_change_in_place_makes_the_probe_see_one(module):
    mod = module(SOURCE + "\nLIMITED = list(range(40))\n")
    checker = checker_for(mod, limit=30)  # LIMITED is sampled: its size and its ends
    probe = checker.probe
    changes = [
        lambda: mod.STATE.__setitem__("user", "alice"),  # a dict entry set
        lambda: mod.STATE.pop("lang"),  # a dict entry deleted
        lambda: mod.ITEMS.__setitem__(0, "z"),  # a list item replaced
        lambda: mod.TAGS.add("z"),  # a set grown
        lambda: setattr(mod.Registry, "current", "alice"),  # a class attribute
        lambda: setattr(mod.TENANT, "name", "alice"),  # an instance attribute
        lambda: mod.TENANT.prefs.__setitem__("theme", "dark"),  # a dict an instance holds
        lambda: mod.LIMITED.__setitem__(-1, "z"),  # the end of a sampled list
        lambda: mod.LIMITED.append(1),  # a sampled list grown
        lambda: setattr(mod, "NEW", 1),  # a global added
        lambda: delattr(mod, "ITEMS"),  # a global deleted
        lambda: setattr(mod, "STATE", {}),  # a global rebound
        lambda: mod.STATE.__setitem__("user", "bob"),  # an entry of the dict bound last
    ]
    for i, change in enumerate(changes):
        assert probe.unchanged(), f"before change {i}"
        change()
        assert not probe.unchanged(), f"change {i}"
        assert checker.thread_exit(req()), f"the checker names what the probe saw (change {i})"
    assert probe.unchanged()


ODD = """
STATE = {"user": None}

class Odd:
    def __eq__(self, other):
        raise ValueError
"""


def test_an_equal_object_is_not_a_change_and_a_raising_eq_is_checked_under_the_lock(module):
    mod = module(ODD)
    checker = checker_for(mod)
    mod.STATE["user"] = None  # the same object
    assert checker.probe.unchanged()
    mod.STATE["user"] = mod.Odd()
    assert not checker.probe.unchanged()  # the comparison raised: a change, for the checker
    assert kinds(checker.thread_exit(req())) == [("global-entry", "STATE")]


def test_the_layer_hands_the_probe_over_only_when_the_worker_may_skip_it():
    checker = GlobalsChecker(warmup=0)
    assert IsolationLayer([checker]).probe is checker.probe
    assert IsolationLayer([checker], {"global-entry": "fail"}).probe is None  # responses held back
    assert IsolationLayer([checker], default_policy="fail").probe is None
    assert IsolationLayer([checker, Quiet()]).probe is None  # another check runs after each request
    layer = IsolationLayer([checker])
    layer._disable(checker, "thread_exit")
    assert layer.probe is None


def app(environ, start_response):
    if environ["PATH_INFO"] == "/leak":
        STATE["user"] = environ["QUERY_STRING"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


STATE: dict[str, str] = {}


def test_the_sync_worker_calls_the_layer_only_when_the_probe_saw_a_change(tmp_path, monkeypatch):
    monkeypatch.setenv("FCGI_GATEWAY_ISOLATION_MODULES", __name__)  # this module only
    monkeypatch.setattr(appmodules, "_verdicts", {})  # decided anew, and put back afterwards
    checker = GlobalsChecker(warmup=1)
    layer = IsolationLayer([checker])
    layer.after_load(app)
    calls: list[str] = []
    after_sync = layer.after_sync

    def counted(describe, environ, seq):
        calls.append(environ["PATH_INFO"])
        return after_sync(describe, environ, seq)

    layer.after_sync = counted  # type: ignore[method-assign]
    path = os.path.join(tmp_path, "w.sock")
    with worker_rig(path, app) as rig:
        rig.worker.isolation = layer
        rig.client.connect(path)
        rig.worker._accept(rig.listener)
        conn = next(iter(rig.worker._conns.values()))
        for target in ("/warm", "/a", "/b", "/leak", "/c"):
            params = [(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", target.encode()), (b"QUERY_STRING", b"x")]
            rig.client.sendall(request_bytes(params, keep=True))
            rig.worker._readable(conn)
            assert b"ok" in rig.client.recv(1 << 16)
    assert calls == ["/warm", "/leak"]  # the warm-up, then only the request that wrote
    assert any("[global-entry]" in line and f"{__name__}:STATE" in line for _, line in rig.log)
