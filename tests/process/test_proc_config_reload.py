"""``--config`` read again on SIGHUP (issue 17, part 2), with real processes.

- a changed ``workers`` and ``max-requests`` in the file reach the new generation (one
  log line each), while an option given on the command line keeps its value;
- a file broken on HUP (invalid TOML, an unknown key, an impossible combination) keeps the
  running configuration and generation: no reload, the same workers keep serving, the log
  says why;
- a changed bind is refused (logged, the running socket kept) and the rest is applied.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from gateway.client import FastCGIClient
from tests.conftest import APPS_DIR
from tests.integration.nginx import can_connect
from tests.process._load import children, wait_until


def pid_of(address: str) -> int:
    with FastCGIClient(address, timeout=10) as client:
        r = client.request("GET", "/pid")
    assert r.status == 200, r.body
    return int(r.body)


def write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # as editors and config management do: never half a file


def test_hup_applies_changed_options_and_keeps_the_command_line(gateway_factory, tmp_path):
    cfg = tmp_path / "gateway.toml"
    write(cfg, 'workers = 1\ngraceful-timeout = "5s"\n')
    gw = gateway_factory("proc_apps:app", "--config", str(cfg), "--graceful-timeout", "7s")
    gw.wait_for_log(r"1 worker\(s\) ready")  # a SIGHUP before that is ignored
    master = gw.pid
    assert wait_until(lambda: len(children(master)) == 1)
    first = pid_of(gw.address)
    assert {pid_of(gw.address) for _ in range(5)} == {first}  # no max-requests yet

    write(cfg, 'workers = 2\nmax-requests = 3\ngraceful-timeout = "9s"\n')
    gw.send_signal(signal.SIGHUP)
    gw.wait_for_log(r"reload complete: generation 2 serving")
    log = gw.log_text()
    assert "reload: max-requests 0 -> 3" in log
    assert "reload: workers 1 -> 2" in log
    assert "graceful-timeout" not in log  # the command line's 7s wins over the file, as at start
    assert wait_until(lambda: len(children(master)) == 2), children(master)
    pids = [pid_of(gw.address) for _ in range(12)]
    assert first not in pids
    # max-requests 3 (no jitter) with two workers: 12 requests need at least 4 workers
    assert len(set(pids)) >= 4, pids
    gw.wait_for_log(r"recycled \(max-requests\)")


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("workers = [\n", "invalid TOML"),
        ("workers = 2\nmax-requets = 5\n", "unknown key(s)"),
        ("max-requests-jitter = 5\n", "--max-requests-jitter needs --max-requests"),
        ('workers = "many"\n', "not a count from 1 to 512 or auto"),
    ],
)
def test_a_broken_file_on_hup_keeps_the_running_generation(gateway_factory, tmp_path, content, why):
    cfg = tmp_path / "gateway.toml"
    write(cfg, "workers = 1\n")
    gw = gateway_factory("proc_apps:app", "--config", str(cfg))
    gw.wait_for_log(r"1 worker\(s\) ready")
    before = pid_of(gw.address)
    write(cfg, content)
    gw.send_signal(signal.SIGHUP)
    line = gw.wait_for_log(r"reload refused: .*").group(0)
    assert str(cfg) in line and why in line, line
    assert "the running configuration and generation are kept" in line
    time.sleep(0.5)
    assert "reloading: starting generation" not in gw.log_text()
    assert {pid_of(gw.address) for _ in range(5)} == {before}
    assert children(gw.pid) == {before}
    # fixed, the next HUP reloads
    write(cfg, "workers = 1\n")
    gw.send_signal(signal.SIGHUP)
    gw.wait_for_log(r"reload complete: generation 2 serving")
    assert pid_of(gw.address) != before


def test_a_changed_bind_is_refused_and_the_rest_applied(spawn, tmp_path, sock_dir):
    first, second = f"unix:{sock_dir}/first.sock", f"unix:{sock_dir}/second.sock"
    cfg = tmp_path / "gateway.toml"
    write(cfg, f'app = "proc_apps:app"\nbind = ["{first}"]\n')
    gw = spawn([sys.executable, "-m", "gateway", "--config", str(cfg)], cwd=APPS_DIR)
    assert wait_until(lambda: "1 worker(s) ready" in gw.log_text(), timeout=15), gw.log_text()
    before = pid_of(first)

    write(cfg, f'app = "proc_apps:app"\nbind = ["{second}"]\nmax-requests = 2\n')
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "reload complete: generation 2" in gw.log_text()), gw.log_text()
    log = gw.log_text()
    assert f"reload: bind {first} -> {second} refused, needs a restart (the sockets are bound once)" in log
    assert f"keeping {first}" in log
    assert "reload: max-requests 0 -> 2" in log
    assert not can_connect(second)
    assert pid_of(first) != before  # the new generation serves on the running socket
