"""gateway/releases.py in-process: which directory a generation runs in, and when a worker's
release has moved (the process-level tests are in tests/process/test_proc_releases.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from gateway import releases
from gateway.codewatch import StaleCodeDetector
from gateway.errors import ConfigError
from gateway.releases import ReleaseDirs, logical_cwd


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("r1", "r2"):
        (tmp_path / "releases" / name / "pkg").mkdir(parents=True)
    (tmp_path / "current").symlink_to(tmp_path / "releases" / "r1")
    monkeypatch.chdir(tmp_path)  # restored afterwards: ReleaseDirs changes directory
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(releases, "_worker", None)
    return tmp_path


def flip(current: Path, target: Path) -> None:
    tmp = current.with_name("current.new")
    os.symlink(target, tmp)
    os.replace(tmp, current)


def test_logical_cwd_is_pwd_only_when_it_names_the_working_directory(layout):
    current = layout / "current"
    os.chdir(current)
    assert os.getcwd() == str((layout / "releases" / "r1").resolve())
    assert logical_cwd({"PWD": str(current)}) == str(current)
    assert logical_cwd({"PWD": str(layout / "releases" / "r2")}) is None  # stale PWD
    assert logical_cwd({"PWD": "relative/path"}) is None
    assert logical_cwd({}) is None


@pytest.mark.parametrize("how", ["chdir", "pwd"])
def test_follow_enters_the_link_again(layout, how):
    current = layout / "current"
    r1, r2 = (layout / "releases" / "r1").resolve(), (layout / "releases" / "r2").resolve()
    if how == "chdir":
        dirs = ReleaseDirs(str(current), ".", environ={})
    else:
        os.chdir(current)
        dirs = ReleaseDirs(None, ".", environ={"PWD": str(current)})
    assert dirs.current == releases.Resolved(str(r1), str(r1))
    assert dirs.follow() is False  # nothing moved
    flip(current, layout / "releases" / "r2")
    assert os.getcwd() == str(r1)  # a flip alone changes nothing
    assert dirs.follow() is True
    assert dirs.current == releases.Resolved(str(r2), str(r2))
    assert os.getcwd() == str(r2)


def test_app_dir_resolves_relative_to_the_release(layout):
    dirs = ReleaseDirs(str(layout / "current"), "pkg", environ={})
    assert dirs.current.app_dir == str((layout / "releases" / "r1" / "pkg").resolve())
    flip(layout / "current", layout / "releases" / "r2")
    dirs.follow()
    assert dirs.current.app_dir == str((layout / "releases" / "r2" / "pkg").resolve())


def test_a_working_directory_without_a_link_never_moves(layout):
    os.chdir(layout / "releases" / "r1")
    dirs = ReleaseDirs(None, ".", environ={})
    dirs.pin_worker()
    flip(layout / "current", layout / "releases" / "r2")
    assert releases.moved() is None


def test_a_link_that_cannot_be_entered_keeps_the_release(layout, caplog):
    dirs = ReleaseDirs(str(layout / "current"), ".", environ={})
    flip(layout / "current", layout / "releases" / "gone")
    assert dirs.follow() is False
    assert dirs.current.cwd == str((layout / "releases" / "r1").resolve())
    assert os.getcwd() == dirs.current.cwd
    assert "cannot enter" in caplog.text


def test_a_missing_chdir_at_start_is_a_config_error(layout):
    with pytest.raises(ConfigError, match="cannot enter --chdir"):
        ReleaseDirs(str(layout / "nowhere"), ".", environ={})


def test_codewatch_reports_a_worker_whose_release_moved(layout):
    """The worker side of the ``stale release ...`` message: no imported file changed, but
    the given path now resolves to another release."""
    current = layout / "current"
    dirs = ReleaseDirs(str(current), ".", environ={})
    sys.path.insert(0, dirs.current.app_dir)
    dirs.pin_worker()
    detector = StaleCodeDetector()
    assert detector.check() is None
    flip(current, layout / "releases" / "r2")
    report = detector.check()
    r1, r2 = (layout / "releases" / "r1").resolve(), (layout / "releases" / "r2").resolve()
    assert report == f"release {current} now resolves to {r2} (this worker imported {r1})"
    assert detector.check() is None  # reported once


def test_a_worker_of_the_next_release_drops_the_earlier_one_from_sys_path(layout):
    dirs = ReleaseDirs(str(layout / "current"), ".", environ={})
    r1 = dirs.current.cwd
    sys.path.insert(0, r1)  # python -m puts the start directory there
    flip(layout / "current", layout / "releases" / "r2")
    dirs.follow()
    dirs.pin_worker()
    assert r1 not in sys.path
