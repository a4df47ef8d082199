"""The supervisord recipes (examples/*/deploy/supervisord.conf) run by a real supervisord.

The ``[program:]`` block goes into a minimal supervisord.conf in the temp dir (its own
control socket, logs and pid file; ``nodaemon``), host paths rewritten; ``user=`` is
dropped because the test runs as one user. The program must reach RUNNING and serve, and
``supervisorctl stop`` must end it gracefully (exit status 0, i.e. not SIGKILLed after
``stopwaitsecs``, which must exceed the gateway's ``--graceful-timeout``); ``supervisorctl
signal HUP`` must reload the code. Skipped when
supervisord is not installed (``scripts/setup-env`` installs it).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from gateway.client import FastCGIClient
from tests.deploy._render import DJANGO_DEPLOY, FLASK_DEPLOY, PROGRAMS, Rewriter, duration_s, option
from tests.process._load import wait_until

SUPERVISORD = shutil.which("supervisord")
SUPERVISORCTL = shutil.which("supervisorctl")
RECIPES = [FLASK_DEPLOY / "supervisord.conf", DJANGO_DEPLOY / "supervisord.conf"]


def program_block(path: Path, rewrite: Rewriter) -> tuple[str, str, list[str]]:
    """(program name, block ready to run here, command argv) of a recipe."""
    text = path.read_text()
    name = re.search(r"^\[program:([^\]]+)\]", text, re.M)[1]
    command = re.search(r"^command=(.*)$", text, re.M)[1]
    program, *args = shlex.split(command)
    argv = [*PROGRAMS.get(program, [program]), *(rewrite(a) for a in args)]
    text = rewrite(text.replace(f"command={command}", "command=" + shlex.join(argv)))
    text = re.sub(r"^user=.*\n", "", text, flags=re.M)  # one user here
    return name, text, argv


@pytest.mark.skipif(SUPERVISORD is None, reason="supervisord is not installed (apt-get install supervisor)")
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.parent.parent.name)
def test_supervisord_program(recipe: Path, workdir: Path, launch) -> None:
    rewrite = Rewriter.for_dir(workdir)
    name, block, argv = program_block(recipe, rewrite)  # supervisord's environment passes PYTHONPATH
    stopwait = duration_s(re.search(r"^stopwaitsecs=(\d+)", block, re.M)[1])
    assert stopwait > duration_s(option(argv, "--graceful-timeout") or "30")
    assert re.search(r"^stopsignal=TERM$", block, re.M)
    conf = workdir / "supervisord.conf"
    conf.write_text(
        f"""[supervisord]
nodaemon=true
logfile={workdir}/log/supervisord.log
pidfile={workdir}/supervisord.pid
childlogdir={workdir}/log
[unix_http_server]
file={workdir}/supervisor.sock
[supervisorctl]
serverurl=unix://{workdir}/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
{block}
"""
    )
    sup = launch([SUPERVISORD, "-n", "-c", str(conf)], "supervisord")
    ctl = [SUPERVISORCTL, "-c", str(conf)]

    def status() -> str:
        return subprocess.run([*ctl, "status", name], capture_output=True, text=True, timeout=10).stdout

    assert wait_until(lambda: "RUNNING" in status(), timeout=30, interval=0.2), status() + sup.log_text()
    address = option(argv, "--bind")
    assert address is not None
    assert wait_until(lambda: Path(address.removeprefix("unix:")).exists(), timeout=30)
    deadline = time.monotonic() + 30
    while True:  # the workers may still be importing the app
        try:
            with FastCGIClient(address, timeout=10) as client:
                r = client.request("GET", "/health", headers={"Host": "localhost"})
            if r.status == 200:
                break
        except Exception:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)
    # `supervisorctl signal HUP` reloads the code (a new generation of workers).
    subprocess.run([*ctl, "signal", "HUP", name], check=True, capture_output=True, timeout=10)
    log_path = workdir / "log" / f"{name}.log"
    assert wait_until(lambda: "reload complete" in log_path.read_text(), timeout=30), log_path.read_text()
    out = subprocess.run([*ctl, "stop", name], capture_output=True, text=True, timeout=stopwait + 10).stdout
    assert "stopped" in out, out
    log = (workdir / "log" / "supervisord.log").read_text()
    assert re.search(rf"stopped: {re.escape(name)} \(exit status 0\)", log), log
