"""The globals checker in process: state written in place — dict entries, list and set
items, attributes of app classes and of module-level instances — reported by place (never
by value), restored under ``repair``; big containers watched by size and ends; nothing
reported when nothing changed."""

from __future__ import annotations

import logging

from test_iso_checkers import kinds, req
from test_iso_checkers import module as module  # a fixture (re-exported: pytest finds it here)

from gateway.isolation.globals import GlobalsChecker

SOURCE = """
STATE = {"user": None, "lang": "en"}
ITEMS = ["a", "b"]
TAGS = {"x", "y"}
BIG = {i: str(i) for i in range(100_000)}
BIG_LIST = list(range(5000))

class Registry:
    current = None
    count = 0

    def method(self):
        return self.current

    @property
    def prop(self):
        return 1

class Tenant:
    def __init__(self):
        self.name = "default"
        self.prefs = {"theme": "light"}

TENANT = Tenant()
"""


def checker_for(mod, **kwargs) -> GlobalsChecker:
    checker = GlobalsChecker(warmup=0, **kwargs)
    checker.after_load(None)
    assert checker.thread_exit(req()) == []
    return checker


def test_the_three_writes_in_place_are_reported_by_place(module):
    mod = module(SOURCE)
    checker = checker_for(mod)
    mod.STATE["user"] = "alice"  # a module-level dict entry
    mod.Registry.current = "alice"  # an attribute of an app class
    mod.TENANT.name = "alice"  # an attribute of a module-level instance
    found = checker.thread_exit(req())
    assert sorted(kinds(found)) == [
        ("global-attribute", "Registry.current"),
        ("global-attribute", "TENANT.name"),
        ("global-entry", "STATE"),
    ]
    messages = sorted(f.message for f in found)
    name = mod.__name__
    assert messages == [
        f"class attribute {name}:Registry.current assigned during the request (NoneType -> str)",
        f"entry {name}:STATE['user'] replaced during the request (NoneType -> str)",
        f"instance attribute {name}:TENANT.name assigned during the request (str -> str)",
    ]
    assert "alice" not in " ".join(messages)
    assert checker.thread_exit(req()) == []  # each change once
    assert all(checker.repair(f) for f in found)
    assert (mod.STATE["user"], mod.Registry.current, mod.TENANT.name) == (None, None, "default")
    assert checker.thread_exit(req()) == []  # the repair is not a change


def test_entries_added_and_deleted_and_attributes_added(module):
    mod = module(SOURCE)
    checker = checker_for(mod)
    mod.STATE["token"] = "t"
    del mod.STATE["lang"]
    mod.TENANT.prefs["theme"] = "dark"  # a dict held by a module-level instance
    mod.Registry.extra = [1]
    mod.TENANT.session = object()
    found = checker.thread_exit(req())
    name = mod.__name__
    assert sorted(f.message for f in found) == [
        f"class attribute {name}:Registry.extra added during the request ((unbound) -> list)",
        f"entry {name}:STATE['lang'] deleted during the request (str -> (unbound))",
        f"entry {name}:STATE['token'] set during the request ((unbound) -> str)",
        f"entry {name}:TENANT.prefs['theme'] replaced during the request (str -> str)",
        f"instance attribute {name}:TENANT.session added during the request ((unbound) -> object)",
    ]
    for finding in found:
        assert checker.repair(finding), finding.message
    assert mod.STATE == {"user": None, "lang": "en"} and mod.TENANT.prefs == {"theme": "light"}
    assert not hasattr(mod.Registry, "extra") and "session" not in vars(mod.TENANT)
    assert checker.thread_exit(req()) == []


def test_non_str_keys_are_named_by_type(module):
    mod = module(SOURCE)
    checker = checker_for(mod)
    mod.STATE[42] = "alice"
    [finding] = checker.thread_exit(req())
    assert f"{mod.__name__}:STATE[<int>] set" in finding.message and "42" not in finding.message


def test_list_and_set_items_replaced(module):
    mod = module(SOURCE)
    checker = checker_for(mod)
    mod.ITEMS[1] = "alice"
    mod.TAGS.discard("y")
    mod.TAGS.add("alice")
    found = checker.thread_exit(req())
    assert sorted(f.message for f in found) == [
        f"1 items of {mod.__name__}:TAGS replaced during the request",
        f"items {mod.__name__}:ITEMS[1] replaced during the request",
    ]
    assert sorted(checker.repair(f) for f in found) == [False, True]  # list items: restored
    assert mod.ITEMS == ["a", "b"]


def test_many_changes_make_one_finding(module):
    mod = module(SOURCE)
    checker = checker_for(mod)
    for i in range(20):
        mod.STATE[f"k{i}"] = i
    [finding] = checker.thread_exit(req())
    assert finding.message.startswith(f"20 entries of {mod.__name__}:STATE set, replaced or deleted")
    assert checker.repair(finding) and mod.STATE == {"user": None, "lang": "en"}


def test_code_in_classes_is_not_state(module):
    mod = module(SOURCE)
    checker = checker_for(mod)
    mod.Registry.method = lambda self: "patched"  # monkeypatching: not request data
    mod.Registry.prop = property(lambda self: 2)
    assert checker.thread_exit(req()) == []


def test_a_request_that_changes_nothing(module):
    mod = module(SOURCE)
    checker = checker_for(mod)
    for _ in range(3):
        _ = mod.STATE["user"], mod.Registry.current, mod.TENANT.name, len(mod.BIG)
        mod.STATE["user"] = mod.STATE["user"]  # the same object written back
        assert checker.thread_exit(req()) == []


def test_a_big_container_is_watched_by_size_and_ends(module, caplog):
    mod = module(SOURCE)
    with caplog.at_level(logging.INFO, logger="gateway.isolation"):
        checker = checker_for(mod)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"{mod.__name__}:BIG holds 100000 items, more than 1000" in logged
    assert f"{mod.__name__}:BIG_LIST holds 5000 items" in logged
    assert f"{mod.__name__}:STATE" not in logged
    mod.BIG["session"] = "alice"  # added: at the end, so named
    [finding] = checker.thread_exit(req())
    assert finding.message == f"entry {mod.__name__}:BIG['session'] set during the request ((unbound) -> str)"
    mod.BIG[99_999] = "alice"  # the last entries are compared
    [finding] = checker.thread_exit(req())
    assert finding.kind == "global-entry" and "BIG[<int>] replaced" in finding.message
    assert checker.repair(finding) and mod.BIG[99_999] == "99999"
    mod.BIG_LIST.append("alice")
    [finding] = checker.thread_exit(req())
    assert finding.message == f"{mod.__name__}:BIG_LIST grew from 5000 to 5001 items during the request"
    mod.BIG_LIST[-1] = "bob"
    [finding] = checker.thread_exit(req())
    assert finding.message == f"items at the ends of {mod.__name__}:BIG_LIST replaced during the request"
    assert checker.thread_exit(req()) == []


def test_a_lower_tracking_limit(module, monkeypatch):
    mod = module(SOURCE)
    monkeypatch.setenv("FCGI_GATEWAY_ISOLATION_TRACK_MAX", "1")
    checker = checker_for(mod)
    sampled = {p.label for p in checker.places.values() if type(p).__name__ == "Sampled"}
    assert f"{mod.__name__}:STATE" in sampled
    mod.STATE["user"] = "alice"  # two entries: both are ends
    assert kinds(checker.thread_exit(req())) == [("global-entry", "STATE")]


def test_allowlisted_attributes_and_entries(module, monkeypatch):
    mod = module(SOURCE + "\n__isolation_allow__ = ('TENANT',)\n")
    monkeypatch.setenv("FCGI_GATEWAY_ISOLATION_ALLOW", f"{mod.__name__}:Registry.count,{mod.__name__}:STATE")
    checker = checker_for(mod)
    mod.Registry.count += 1
    mod.STATE["user"] = "alice"
    mod.TENANT.name = "alice"
    mod.TENANT.prefs["theme"] = "dark"
    mod.Registry.current = "alice"
    assert kinds(checker.thread_exit(req())) == [("global-attribute", "Registry.current")]


def test_an_eq_that_raises_does_not_hide_a_change(module):
    mod = module(SOURCE + "\nclass Angry:\n    def __eq__(self, other):\n        raise ValueError\n")
    checker = checker_for(mod)
    mod.STATE["user"] = mod.Angry()
    assert kinds(checker.thread_exit(req())) == [("global-entry", "STATE")]
    mod.STATE["user"] = mod.Angry()
    assert kinds(checker.thread_exit(req())) == [("global-entry", "STATE")]


def test_a_rebound_container_is_watched_anew(module):
    mod = module(SOURCE)
    checker = checker_for(mod)
    old = mod.STATE
    mod.STATE = {"user": None}
    assert kinds(checker.thread_exit(req())) == [("global-rebound", "STATE")]
    mod.STATE["user"] = "alice"
    assert kinds(checker.thread_exit(req())) == [("global-entry", "STATE")]
    old["user"] = "bob"  # no longer bound: not the app's state
    assert checker.thread_exit(req()) == []


def test_a_rebound_singleton_is_watched_anew(module):
    mod = module(SOURCE)
    checker = checker_for(mod)
    mod.TENANT = mod.Tenant()
    assert kinds(checker.thread_exit(req())) == [("global-rebound", "TENANT")]
    mod.TENANT.name = "alice"  # the new instance's attributes are watched too
    assert kinds(checker.thread_exit(req())) == [("global-attribute", "TENANT.name")]
