"""Shared test setup: import paths, short socket dirs, free ports, and the gateway process.

- The repo root and ``tests/apps`` (when it exists) go on ``sys.path`` and are exported in
  ``PYTHONPATH``, so ``python -m gateway tests_app:app`` subprocesses can import test apps
  and ``from tests.integration.nginx import ...`` works however pytest is started.
- ``FCGI_GATEWAY_*`` variables from the outer environment are dropped (but the speedups
  switch, ``FCGI_GATEWAY_NO_SPEEDUPS``, for CI's pure-Python pass): the CLI reads them
  (auto_envvar_prefix) and a stray one would change every server the tests start; so
  would ``WEB_CONCURRENCY`` (the default of ``--workers``), dropped too.
- ``sock_dir``: unix socket paths must fit in 108 bytes, and pytest's ``tmp_path`` can be
  longer than that for parametrized tests, so sockets go in a short ``/tmp/fcgw-*`` dir.
- ``gateway_factory`` (here, not in tests/integration/, so tests/process/ can use it too)
  runs ``python -m gateway --bind unix:SOCK *args APP`` in its own process group, output
  in a log file; teardown kills the whole group and prints the log's tail (shown when a
  test fails).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

#: Kept from the outer environment: the pure-Python pass of CI (gateway/speedups.py).
SPEEDUPS_VAR = "FCGI_GATEWAY_NO_SPEEDUPS"


REPO_ROOT = Path(__file__).resolve().parent.parent
APPS_DIR = REPO_ROOT / "tests" / "apps"


def _setup_paths() -> None:
    paths = [str(REPO_ROOT)] + ([str(APPS_DIR)] if APPS_DIR.is_dir() else [])
    for p in reversed(paths):
        if p not in sys.path:
            sys.path.insert(0, p)
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in paths]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + current)
    for name in [k for k in os.environ if k.startswith("FCGI_GATEWAY_") and k != SPEEDUPS_VAR]:
        del os.environ[name]
    os.environ.pop("WEB_CONCURRENCY", None)  # a platform's worker count (Heroku sets it)


_setup_paths()

from tests.integration import nginx as _nginx  # noqa: E402
from tests.integration.nginx import can_connect, kill_group, read_text  # noqa: E402

_seq = itertools.count(1)


class Gateway:
    """``python -m gateway --bind ADDRESS *args APP`` in its own process group."""

    def __init__(
        self,
        workdir: Path,
        sock_dir: Path,
        app: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        bind: str | None = None,
    ) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.address = bind or f"unix:{sock_dir}/gw{next(_seq)}.sock"
        self.socket_path = self.address.removeprefix("unix:") if self.address.startswith("unix:") else None
        self.cmd = [sys.executable, "-m", "gateway", "--bind", self.address, *args, app]
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith("FCGI_GATEWAY_") or k == SPEEDUPS_VAR
        }
        self.env["PYTHONUNBUFFERED"] = "1"
        if env:
            extra = dict(env)
            if "PYTHONPATH" in extra:  # keep the repo root and tests/apps importable
                extra["PYTHONPATH"] = os.pathsep.join(
                    filter(None, [extra["PYTHONPATH"], self.env.get("PYTHONPATH")])
                )
            self.env.update(extra)
        self.cwd = str(cwd) if cwd is not None else str(self.dir)
        self.log_path = self.dir / "gateway.log"
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait: bool = True, timeout: float = 15.0) -> Gateway:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Until the bind address accepts a connection; fails with the captured log."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log_text()}")
            if can_connect(self.address):
                return
            time.sleep(0.02)
        raise RuntimeError(f"gateway not accepting on {self.address} after {timeout}s:\n{self.log_text()}")

    def log_text(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return read_text(self.log_path)

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until regex ``pattern`` appears in the log."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.log_text())
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{pattern!r} not in the gateway log after {timeout}s:\n{self.log_text()}"
                )
            time.sleep(0.05)

    def send_signal(self, sig: int) -> None:
        """Signal the master process only (not its workers)."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 5.0) -> int | None:
        """Kill the whole process group (TERM, wait, KILL); returns the master's status."""
        return kill_group(self.proc, timeout) if self.proc is not None else None

    def client(self, **kwargs: Any) -> Any:
        from gateway.client import FastCGIClient

        return FastCGIClient(self.address, **kwargs)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short, private temp dir for unix sockets (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="fcgw-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind may still race)."""
    return _nginx.free_port()


@pytest.fixture
def gateway_factory(
    tmp_path_factory: pytest.TempPathFactory, sock_dir: Path
) -> Iterator[Callable[..., Gateway]]:
    """``gateway_factory(app, *args, env=None, cwd=None, bind=None, wait=True, timeout=15.0)``
    starts ``python -m gateway --bind unix:SOCK *args app`` and, with ``wait``, returns once
    the socket accepts connections (raising with the log if the process exits first)."""
    started: list[Gateway] = []

    def make(
        app: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        bind: str | None = None,
        wait: bool = True,
        timeout: float = 15.0,
    ) -> Gateway:
        gw = Gateway(tmp_path_factory.mktemp("gateway"), sock_dir, app, *args, env=env, cwd=cwd, bind=bind)
        started.append(gw)
        return gw.start(wait=wait, timeout=timeout)

    yield make
    for gw in reversed(started):
        status = gw.stop()
        print(f"----- gateway {gw.address} (exit status {status}) -----\n{gw.log_text()[-6000:]}")
