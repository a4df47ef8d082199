"""--reload (development) and stale-code detection (production), with real processes."""

from __future__ import annotations

import os
import time

import pytest

from gateway.client import FastCGIClient
from gateway.codewatch import SourceWatcher, StaleCodeDetector

APP = """
VERSION = b"{version}"


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [VERSION]
"""


def write_app(path, version: str) -> None:
    path.write_text(APP.format(version=version))
    # make sure the mtime moves even on coarse-grained file systems
    st = path.stat()
    os.utime(path, (st.st_atime + 2, st.st_mtime + 2))


def body(gw) -> bytes:
    return FastCGIClient(gw.address).request("GET", "/").body


def wait_for(fn, expected, timeout=10.0):
    deadline = time.monotonic() + timeout
    while (value := fn()) != expected:
        assert time.monotonic() < deadline, f"still {value!r}, expected {expected!r}"
        time.sleep(0.1)


@pytest.mark.parametrize("backend", ["watchfiles", "polling"])
def test_reload_restarts_workers_on_source_change(gateway_factory, tmp_path, backend):
    app_dir = tmp_path / f"src_{backend}"
    app_dir.mkdir()
    write_app(app_dir / f"rl_{backend}.py", "v1")
    gw = gateway_factory(
        f"rl_{backend}:app", "--reload", "--reload-backend", backend, "--app-dir", str(app_dir)
    )
    assert body(gw) == b"v1"
    gw.wait_for_log(rf"--reload: watching .* \({backend}\)")
    write_app(app_dir / f"rl_{backend}.py", "v2")
    wait_for(lambda: body(gw), b"v2")
    gw.wait_for_log("--reload: source changed")
    gw.wait_for_log("reload complete: generation 2 serving")


def test_stale_code_is_logged_once(gateway_factory, tmp_path):
    app_dir = tmp_path / "stale_src"
    app_dir.mkdir()
    write_app(app_dir / "stale_app.py", "v1")
    gw = gateway_factory("stale_app:app", "--app-dir", str(app_dir))
    assert body(gw) == b"v1"
    write_app(app_dir / "stale_app.py", "v2")
    gw.wait_for_log(r"stale code: .*stale_app\.py changed on disk", timeout=10)
    assert body(gw) == b"v1"  # still the old code: that is what the warning is about
    time.sleep(2.5)
    assert gw.log_text().count("stale code:") == 1


def test_source_watcher_polling_unit(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    watcher = SourceWatcher([str(tmp_path)], interval=0, backend="polling")
    assert watcher.backend == "polling"
    assert not watcher.changed()
    write_app(tmp_path / "a.py", "v2")
    assert watcher.changed()
    assert not watcher.changed()


def test_stale_detector_unit(tmp_path, monkeypatch):
    mod = tmp_path / "stale_unit_mod.py"
    mod.write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("stale_unit_mod")
    detector = StaleCodeDetector(batch=100000)
    assert detector.check() is None
    write_app(mod, "v2")
    assert detector.check() == str(mod)
    assert detector.check() is None  # reported once


def test_watchfiles_catches_a_change_made_while_its_watches_are_set_up(tmp_path):
    """A file changed between start-up and the moment inotify watches it is not missed
    (the first yield of the watcher compares against the snapshot taken at start-up)."""
    pytest.importorskip("watchfiles")
    write_app(tmp_path / "early.py", "v1")
    watcher = SourceWatcher([str(tmp_path)], backend="watchfiles")
    write_app(tmp_path / "early.py", "v2")  # before start(): no watch can see this one
    watcher.start()
    try:
        deadline = time.monotonic() + 10
        while not watcher.changed():
            assert time.monotonic() < deadline, "the change made before the watches was missed"
            time.sleep(0.05)
    finally:
        watcher.stop()
