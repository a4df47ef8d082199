"""The global-state and thread-local guards in process, on modules written to tmp_path:
what counts as an app module, rebinding/adding/deleting, growth of containers at module,
class and instance level, repair, the allowlists, lazily imported modules, and which
thread-locals are reset (and which never are)."""

from __future__ import annotations

import importlib
import itertools
import json
import sys
import textwrap
import threading

import pytest

from gateway.isolation import RequestInfo
from gateway.isolation.appmodules import is_app_module
from gateway.isolation.globals import GlobalsChecker
from gateway.isolation.threadlocals import ThreadLocalChecker, track

_seq = itertools.count()

APP = """
import threading
from collections import deque
from json import dumps

USER = None
SEEN = []
QUEUE = deque()
LIMIT = 10
LOCAL = threading.local()
SHARED = dumps  # a library function: code, not state

class Registry:
    items = {}

class Init(threading.local):
    def __init__(self):
        self.user = "nobody"

INIT = Init()

class Cache:
    def __init__(self):
        self.entries = {}

CACHE = Cache()

def handler():
    return USER
"""


@pytest.fixture
def module(tmp_path, monkeypatch):
    """``module(source)`` writes and imports a fresh app module; returns it."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(source: str = APP, name: str | None = None):
        name = name or f"isoapp{next(_seq)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return importlib.import_module(name)

    yield make
    for name in [n for n in sys.modules if n.startswith("isoapp")]:
        del sys.modules[name]


def req() -> RequestInfo:
    return RequestInfo("GET", "/", "r", "sync", "wsgi")


def kinds(findings):
    """(kind, place) of each finding, the module's name left out of the place."""
    return [(f.kind, f.details.get("name", "").split(":", 1)[-1]) for f in findings]


def test_app_modules_are_those_outside_the_libraries(module):
    mod = module()
    assert is_app_module(mod.__name__, mod)
    for name in ("json", "threading", "django", "gateway.isolation.base"):  # django: site-packages
        assert not is_app_module(name, importlib.import_module(name))


def test_rebinding_adding_deleting_and_repair(module):
    mod = module()
    checker = GlobalsChecker(warmup=0)
    checker.after_load(None)
    assert checker.thread_exit(req()) == []
    mod.USER = "alice"
    mod.EXTRA = [1]
    del mod.LIMIT
    found = checker.thread_exit(req())
    assert sorted(kinds(found)) == [("global-rebound", "EXTRA"), ("global-rebound", "LIMIT"),
                                    ("global-rebound", "USER")]  # fmt: skip
    messages = " | ".join(f.message for f in found)
    assert f"module global {mod.__name__}:USER rebound during the request (NoneType -> str)" in messages
    assert "EXTRA added during the request ((unbound) -> list)" in messages
    assert "LIMIT deleted during the request (int -> (unbound))" in messages
    assert "alice" not in messages
    assert checker.thread_exit(req()) == []  # each change is reported once
    for finding in found:
        assert checker.repair(finding)
    assert (mod.USER, hasattr(mod, "EXTRA"), mod.LIMIT) == (None, False, 10)
    assert checker.thread_exit(req()) == []


def test_code_names_are_not_state(module):
    mod = module()
    checker = GlobalsChecker(warmup=0)
    checker.after_load(None)
    mod.SHARED = json.loads  # monkeypatching a function: not reported
    mod.handler = lambda: None
    assert checker.thread_exit(req()) == []


def test_container_growth_at_module_class_and_instance_level(module):
    mod = module()
    checker = GlobalsChecker(warmup=0)
    checker.after_load(None)
    mod.SEEN.append(1)
    mod.QUEUE.append(1)
    mod.Registry.items["k"] = 1
    mod.CACHE.entries["k"] = 1
    found = checker.thread_exit(req())
    assert sorted(f.message for f in found if f.kind == "global-growth") == [
        f"{mod.__name__}:{label} grew from 0 to 1 items during the request" for label in ("QUEUE", "SEEN")
    ]
    assert sorted(f.message for f in found if f.kind == "global-entry") == [  # dict keys are named
        f"entry {mod.__name__}:{label}['k'] set during the request ((unbound) -> int)"
        for label in ("CACHE.entries", "Registry.items")
    ]
    assert not any(checker.repair(f) for f in found if f.kind == "global-growth")  # only reported
    mod.SEEN.clear()
    assert checker.thread_exit(req()) == []  # shrinking is fine


def test_warm_up_and_lazily_imported_modules(module):
    first = module()
    checker = GlobalsChecker(warmup=1)
    checker.after_load(None)
    first.USER = "set during warm-up"  # lazy initialisation: becomes the baseline
    assert checker.thread_exit(req()) == []
    assert checker.thread_exit(req()) == []
    later = module()  # imported by a request
    assert checker.thread_exit(req()) == []
    later.USER = "bob"
    assert kinds(checker.thread_exit(req())) == [("global-rebound", "USER")]


def test_allowlists(module, monkeypatch):
    mod = module(APP + "\n__isolation_allow__ = ('SEEN',)\n")
    monkeypatch.setenv("FCGI_GATEWAY_ISOLATION_ALLOW", f"{mod.__name__}:US*,{mod.__name__}:Registry.items")
    checker = GlobalsChecker(warmup=0)
    checker.after_load(None)
    mod.USER = "alice"
    mod.SEEN.append(1)
    mod.Registry.items["k"] = 1
    mod.QUEUE.append(1)
    assert kinds(checker.thread_exit(req())) == [("global-growth", "QUEUE")]


def test_whole_module_allowed(module, monkeypatch):
    mod = module()
    monkeypatch.setenv("FCGI_GATEWAY_ISOLATION_ALLOW", mod.__name__)
    checker = GlobalsChecker(warmup=0)
    checker.after_load(None)
    mod.USER, mod.SEEN[:] = "alice", [1, 2]
    assert checker.thread_exit(req()) == []


def in_thread(fn, *args):
    out = []
    t = threading.Thread(target=lambda: out.append(fn(*args)), name="other")
    t.start()
    t.join()
    return out[0]


def test_thread_locals_reset_per_thread(module):
    mod = module()
    checker = ThreadLocalChecker()
    checker.after_load(None)
    labels = sorted(label for label, _ in checker.locals if label.startswith(mod.__name__))
    assert labels == [f"{mod.__name__}.INIT", f"{mod.__name__}.LOCAL"]

    def request(value):
        checker.thread_enter(req())
        seen = (getattr(mod.LOCAL, "value", "unset"), mod.INIT.user)
        mod.LOCAL.value = value
        mod.INIT.user = value
        return seen, checker.thread_exit(req())

    seen, found = request("alice")
    assert seen == ("unset", "nobody")
    assert sorted((f.details["name"], f.details["attributes"]) for f in found) == [
        (f"{mod.__name__}.INIT", ["user"]),
        (f"{mod.__name__}.LOCAL", ["value"]),
    ]
    assert request("bob")[0] == ("unset", "nobody")  # the subclass's __init__ state is kept
    seen, found = in_thread(request, "carol")
    assert seen == ("unset", "nobody") and len(found) == 2
    assert "(thread other)" in found[0].message


def test_library_thread_locals_are_never_tracked(module):
    library_local = threading.local()
    holder = module("import threading\n")
    sys.modules["json"].isolation_test_local = library_local  # a library binds it too
    try:
        holder.BORROWED = library_local
        checker = ThreadLocalChecker()
        checker.after_load(None)
        assert not any(obj is library_local for _, obj in checker.locals)
        assert not any(label.startswith(holder.__name__) for label, _ in checker.locals)
    finally:
        del sys.modules["json"].isolation_test_local


def test_track_and_overlapping_requests_on_one_thread():
    local = track(threading.local(), "my local")
    checker = ThreadLocalChecker()
    checker.after_load(None)
    assert "my local" in [label for label, _ in checker.locals]
    checker.thread_enter(req())  # request 1 (event loop thread)
    local.value = 1
    checker.thread_enter(req())  # request 2 starts while 1 runs
    assert checker.thread_exit(req()) == []  # 1 ends: 2 still running, nothing reset yet
    assert local.value == 1
    [found] = [f for f in checker.thread_exit(req()) if f.details["name"] == "my local"]
    assert found.details["attributes"] == ["value"]
    assert not hasattr(local, "value")


SQLA = """
import os
from sqlalchemy import create_engine, text
from sqlalchemy.orm import scoped_session, sessionmaker

engine = create_engine("sqlite:///" + os.environ["ISO_UNIT_DB"])
SCOPE = ["none"]
Scoped = scoped_session(sessionmaker(engine), scopefunc=lambda: SCOPE[0])
"""


@pytest.fixture
def sqla(module, tmp_path, monkeypatch):
    from sqlalchemy import event
    from sqlalchemy.orm import Session
    from sqlalchemy.pool import Pool

    from gateway.isolation.sqlalchemy import SQLAlchemyChecker

    monkeypatch.setenv("ISO_UNIT_DB", str(tmp_path / "unit.sqlite3"))
    mod = module(SQLA)
    checker = SQLAlchemyChecker()
    checker.after_load(None)
    yield mod, checker
    listeners = [
        (Session, "after_begin", checker._on_begin),
        (Session, "transient_to_pending", checker._on_pending),
        (Pool, "checkout", checker._on_checkout),
        (Pool, "checkin", checker._on_checkin),
    ]
    for target, name, fn in listeners:
        event.remove(target, name, fn)


def test_sqlalchemy_scopefunc_registry_left_behind(sqla):
    from sqlalchemy import text

    mod, checker = sqla
    assert [label for label, _ in checker.scoped] == [f"{mod.__name__}.Scoped"]
    mod.SCOPE[0] = "request-1"
    mod.Scoped.execute(text("SELECT 1"))  # the request's scope ends without remove()
    found = checker.thread_exit(req())
    assert [f.kind for f in found] == ["sqlalchemy-scoped-session", "sqlalchemy-connection-checked-out"]
    assert all(checker.repair(f) for f in found)
    assert mod.Scoped.registry.registry == {}
    assert mod.engine.pool.checkedout() == 0
    mod.SCOPE[0] = "request-2"
    mod.Scoped.execute(text("SELECT 1"))
    mod.Scoped.remove()
    assert checker.thread_exit(req()) == []


def test_sqlalchemy_connection_not_closed(sqla):
    from sqlalchemy import text

    mod, checker = sqla
    conn = mod.engine.connect()
    conn.execute(text("SELECT 1"))
    [found] = checker.thread_exit(req())
    assert found.kind == "sqlalchemy-connection-checked-out"
    assert "(pool checkedout(): 1)" in found.message
    assert checker.repair(found)
    assert mod.engine.pool.checkedout() == 0
    with mod.engine.connect() as fine:
        fine.execute(text("SELECT 1"))
    assert checker.thread_exit(req()) == []
