"""Fixtures for the deployment tests: a temp host root, and processes started from recipes.

- ``workdir``: a private dir under /tmp (short unix socket paths; mode 0755 so Apache's
  www-data workers can reach sockets and scripts in it) with ``run/``, ``lib/``, ``log/``
  and ``etc/``, where ``Rewriter.for_dir`` maps ``/run/fcgi-gateway`` etc.
- ``launch(argv, name, env=None, cwd=None, **popen)``: a ``Proc`` in its own process group, killed
  with its group at teardown (log tails printed then, shown when a test fails).
- ``unit_gateway(unit, instance=None, extra=(), env=None, rewrite=None)``: runs a systemd
  unit's ExecStart as systemd would (Environment=, WorkingDirectory=, a NOTIFY_SOCKET) and
  returns once the gateway sent READY=1. ``User=`` is not applied: tests run as one user.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy._procs import NotifySocket, Proc
from tests.deploy._render import Rewriter, Unit

_seq = itertools.count(1)


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fcgw-deploy-", dir="/tmp"))
    path.chmod(0o755)
    for sub in ("run", "lib", "log", "etc"):
        (path / sub).mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def launch(workdir: Path) -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def make(
        argv: list[str], name: str, env: Mapping[str, str] | None = None, cwd: Any = None, **popen: Any
    ) -> Proc:
        proc = Proc(argv, workdir / f"{name}-{next(_seq)}.log", env=env, cwd=cwd, **popen)
        started.append(proc)
        return proc

    yield make
    for proc in reversed(started):
        status = proc.stop()
        print(f"----- {proc.argv[:3]} (exit {status}) {proc.log} -----\n{proc.log_text()[-5000:]}")


@dataclass
class UnitGateway:
    proc: Proc
    notify: NotifySocket
    argv: list[str]
    unit: Unit

    @property
    def pid(self) -> int:
        return self.proc.pid


@pytest.fixture
def unit_gateway(workdir: Path, launch: Callable[..., Proc]) -> Iterator[Callable[..., UnitGateway]]:
    sockets: list[NotifySocket] = []

    def start(
        unit_path: Path,
        instance: str | None = None,
        extra: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        rewrite: Rewriter | None = None,
        wait: bool = True,
    ) -> UnitGateway:
        rewrite = rewrite or Rewriter.for_dir(workdir)
        unit = Unit.load(unit_path, instance)
        unit.make_directories(rewrite)
        argv = unit.command("ExecStart", rewrite)
        argv = [*argv[:-1], *extra, argv[-1]]  # options go before APP
        notify = NotifySocket(workdir / f"notify-{next(_seq)}.sock")
        sockets.append(notify)
        full_env = {**unit.environment(rewrite), **(env or {}), "NOTIFY_SOCKET": notify.path}
        cwd = rewrite(unit.get("Service", "WorkingDirectory") or str(workdir))
        name = unit_path.stem.replace("@", "-") + (instance or "")
        gw = UnitGateway(launch(argv, name, env=full_env, cwd=cwd), notify, argv, unit)
        if wait:
            notify.wait_for("READY", proc=gw.proc)
        return gw

    yield start
    for notify in sockets:
        notify.close()
