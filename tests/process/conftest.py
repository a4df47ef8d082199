"""Fixtures for the real-process tests: nginx (from tests/integration), wrk, app modules.

- ``nginx_factory`` and ``served`` are the integration fixtures, re-exported here.
- ``wrk(url, duration=..., ...)`` starts a background wrk run (see ``_load.Wrk``); it is
  killed at teardown if a test fails before reading its result.
- ``app_module(name, source)`` writes ``tmp_path/apps/<name>.py`` (for ``--app-dir``) and
  returns the directory; rewriting it is how the reload tests change the code on disk.
- ``spawn(cmd, **popen_kwargs)`` starts any other process (a gateway that needs pass_fds)
  in its own session, killed with its whole group at teardown.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import nginx_factory, served  # noqa: F401  (fixtures)
from tests.integration.nginx import kill_group, read_text
from tests.process._load import Wrk

#: Kept from the outer environment: the pure-Python pass of CI (gateway/speedups.py).
SPEEDUPS_VAR = "FCGI_GATEWAY_NO_SPEEDUPS"


@pytest.fixture
def wrk(tmp_path: Path) -> Iterator[Callable[..., Wrk]]:
    runs: list[Wrk] = []

    def make(url: str, **kwargs) -> Wrk:
        run = Wrk(tmp_path, url, **kwargs)
        runs.append(run)
        return run.start()

    yield make
    for run in runs:
        run.stop()


@pytest.fixture
def app_module(tmp_path: Path) -> Callable[[str, str], Path]:
    directory = tmp_path / "apps"
    directory.mkdir()

    def write(name: str, source: str) -> Path:
        target = directory / f"{name}.py"
        tmp = directory / f".{name}.py.tmp"
        tmp.write_text(source)
        os.replace(tmp, target)  # atomic: a worker importing now sees old or new, never half
        return directory

    return write


class Spawned:
    def __init__(self, proc: subprocess.Popen, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return read_text(self.log_path)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Spawned]]:
    started: list[Spawned] = []

    def make(cmd: list[str], **kwargs) -> Spawned:
        log_path = tmp_path / f"spawned-{len(started)}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FCGI_GATEWAY_") or k == SPEEDUPS_VAR}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(kwargs.pop("env", {}))
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                **kwargs,
            )
        spawned = Spawned(proc, log_path)
        started.append(spawned)
        return spawned

    yield make
    for s in reversed(started):
        status = kill_group(s.proc)
        print(f"----- {s.proc.args} (exit status {status}) -----\n{s.log_text()[-4000:]}")
