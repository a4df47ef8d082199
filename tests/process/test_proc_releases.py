"""Release-directory deploys (issue 17): ``releases/N`` and a ``current`` symlink flipped
atomically, then SIGHUP; real processes behind a real nginx, under bounded wrk load.

Each release holds ``release_app.py``, answering its release's name, the worker pid and the
worker's working directory. The gateway is started either with ``--chdir <current>`` or,
as systemd's ``WorkingDirectory=`` does, with its working directory set through the link
(``PWD`` naming the link) and no ``--chdir``. Before the fix both kept serving r1 after the
flip and the reload (the master had resolved its directory once, at start).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.process._load import children, wait_until

WORKERS = 2

RELEASE_APP = '''"""Written by tests/process: answers the name of the release it was imported from."""
import os

RELEASE = os.path.basename(os.path.dirname(os.path.abspath(__file__)))


def app(environ, start_response):
    body = f"{RELEASE} {os.getpid()} {os.getcwd()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def make_releases(root: Path, names: tuple[str, ...] = ("r1", "r2")) -> Path:
    """``root/releases/<name>/release_app.py`` for each name, and ``root/current`` -> the first."""
    for name in names:
        release = root / "releases" / name
        release.mkdir(parents=True)
        (release / "release_app.py").write_text(RELEASE_APP)
    current = root / "current"
    current.symlink_to(root / "releases" / names[0])
    return current


def flip(current: Path, release: Path) -> None:
    """Point ``current`` at ``release`` atomically (a new link under a temporary name, then
    rename(2) over the old one), as Capistrano and Deployer do."""
    tmp = current.with_name(current.name + ".new")
    os.symlink(release, tmp)
    os.replace(tmp, current)


def start(served, tmp_path: Path, mode: str):
    current = make_releases(tmp_path)
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    if mode == "chdir":
        s = served("release_app:app", "-w", str(WORKERS), "--chdir", str(current), env=env)
    else:  # systemd's WorkingDirectory=<link>: the cwd is entered through the link, PWD names it
        s = served("release_app:app", "-w", str(WORKERS), cwd=current, env={**env, "PWD": str(current)})
    # The socket accepts once one worker does; a SIGHUP before all are ready is ignored.
    s.gateway.wait_for_log(rf"{WORKERS} worker\(s\) ready")
    return s, current


def release_of(response) -> str:
    assert response.status == 200, response.text
    return response.text.split()[0]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["chdir", "pwd"])
def test_flip_and_reload_serves_the_new_release_without_a_failed_request(served, wrk, tmp_path, mode):
    s, current = start(served, tmp_path, mode)
    master = s.gateway.pid
    assert release_of(s.get("/")) == "r1"
    load = wrk(s.url + "/", duration=6, connections=8)
    time.sleep(2)
    flip(current, tmp_path / "releases" / "r2")
    s.gateway.send_signal(signal.SIGHUP)
    s.gateway.wait_for_log(r"reload complete: generation 2 serving", timeout=15)
    result = load.result()
    releases = {body.split()[0]: n for body, n in result.bodies.items()}
    print(f"flip + HUP ({mode}) under load: {result.summary()}; per release {releases}")
    assert result.failed == 0, result.summary() + "\n" + result.output
    assert set(releases) == {"r1", "r2"}, releases
    # only r2 from now on, from workers whose working directory is the r2 release
    answers = {s.get("/").text for _ in range(10)}
    assert {a.split()[0] for a in answers} == {"r2"}
    assert {a.split()[2] for a in answers} == {str((tmp_path / "releases" / "r2").resolve())}
    assert s.gateway.pid == master and wait_until(lambda: len(children(master)) == WORKERS)
    log = s.gateway.log_text()
    assert f"{current} now resolves to {(tmp_path / 'releases' / 'r2').resolve()}" in log
    assert "[ERROR]" not in log, log[-3000:]


@pytest.mark.parametrize("mode", ["chdir", "pwd"])
def test_codewatch_reports_workers_whose_release_moved(served, tmp_path, mode):
    """A flip without a reload: no file the workers imported changed, but the link now names
    another release; the master logs each worker of the serving generation as stale."""
    s, current = start(served, tmp_path, mode)
    workers = children(s.gateway.pid)
    flip(current, tmp_path / "releases" / "r2")
    r2 = (tmp_path / "releases" / "r2").resolve()
    for pid in workers:
        s.gateway.wait_for_log(rf"worker {pid} serves a stale release \S+ now resolves to {r2}", timeout=10)
    assert release_of(s.get("/")) == "r1"  # still serving r1: stale, and now it says so
    # after the reload the new generation is current: no more stale reports
    s.gateway.send_signal(signal.SIGHUP)
    s.gateway.wait_for_log(r"reload complete: generation 2 serving", timeout=15)
    mark = len(s.gateway.log_text())
    time.sleep(2.5)  # two heartbeats of the new workers
    assert "stale" not in s.gateway.log_text()[mark:]
    assert release_of(s.get("/")) == "r2"


def test_a_link_to_a_removed_release_keeps_the_serving_one(served, tmp_path):
    """``current`` flipped to a directory that does not exist: the reload keeps the
    release it has (logged), and the workers still answer."""
    s, current = start(served, tmp_path, "chdir")
    flip(current, tmp_path / "releases" / "missing")
    s.gateway.send_signal(signal.SIGHUP)
    s.gateway.wait_for_log(r"reload: cannot enter .*current", timeout=10)
    s.gateway.wait_for_log(r"reload complete: generation 2 serving", timeout=15)
    assert release_of(s.get("/")) == "r1"
