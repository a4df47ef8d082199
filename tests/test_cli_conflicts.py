"""Impossible option combinations (issue 17, part 7): a ConfigError naming both options,
exit status 2 from the command line, whichever source (options, environment, file) set them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gateway.cli import config_from_options, serve
from gateway.config import Config
from gateway.conflicts import conflicts
from gateway.errors import ConfigError


def build(*args: str) -> Config:
    ctx = serve.make_context("serve", [*args, "mod:app"])
    return config_from_options(ctx.params.pop("app"), ctx.params)


CASES = [
    (("--max-requests-jitter", "10"), ("--max-requests-jitter", "--max-requests")),
    (("--max-lifetime-jitter", "1m"), ("--max-lifetime-jitter", "--max-lifetime")),
    (("--worker", "sync", "--interface", "asgi"), ("--worker sync", "--interface asgi")),
    (("--worker", "async", "--threads", "4"), ("--threads", "--worker async")),
    (("--interface", "asgi", "--threads", "4"), ("--threads", "--interface asgi")),
    (("--worker", "sync", "--bridge-threads", "4"), ("--bridge-threads", "--worker sync")),
    (("--interface", "asgi", "--bridge-threads", "4"), ("--bridge-threads", "--interface asgi")),
    (("--worker", "sync", "--loop", "asyncio"), ("--loop", "--worker sync")),
    (("--reload", "--preload"), ("--reload", "--preload")),
    (("--reload-dir", "/tmp"), ("--reload-dir", "--reload")),
    (("--reload-backend", "polling"), ("--reload-backend", "--reload")),
    (("--slow-log", "/tmp/slow.log"), ("--slow-log", "--slow-request-timeout")),
    (("--ping-response", "ok"), ("--ping-response", "--ping-path")),
    # the process manager (gateway/pool.py)
    (("--max-workers", "4"), ("--max-workers", "--pm")),
    (("--min-spare-workers", "2"), ("--min-spare-workers", "--pm")),
    (("--max-spare-workers", "2"), ("--max-spare-workers", "--pm")),
    (("--process-idle-timeout", "5s"), ("--process-idle-timeout", "--pm")),
    (("--max-spawn-rate", "4"), ("--max-spawn-rate", "--pm")),
    (("--pm", "dynamic", "--min-spare-workers", "4", "--max-spare-workers", "2"),
     ("--min-spare-workers 4", "--max-spare-workers 2")),
    (("--pm", "dynamic", "-w", "6", "--max-workers", "4"), ("--workers 6", "--max-workers 4")),
    (("--pm", "dynamic", "--max-spare-workers", "6", "--max-workers", "4"),
     ("--max-spare-workers 6", "--max-workers 4")),
    (("--pm", "ondemand", "-w", "4"), ("--workers", "--pm ondemand")),
    (("--pm", "ondemand", "--min-spare-workers", "2"), ("--min-spare-workers", "--pm ondemand")),
    (("--pm", "dynamic", "--process-idle-timeout", "5s"), ("--process-idle-timeout", "--pm dynamic")),
]  # fmt: skip


@pytest.mark.parametrize(("args", "names"), CASES)
def test_each_impossible_combination_names_both_options(args, names):
    with pytest.raises(ConfigError) as info:
        build(*args)
    for name in names:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "args",
    [
        ("--max-requests", "100", "--max-requests-jitter", "10"),
        ("--max-lifetime", "1h", "--max-lifetime-jitter", "1m"),
        ("--worker", "sync", "--threads", "4"),
        ("--worker", "async", "--bridge-threads", "4", "--loop", "asyncio"),
        ("--reload", "--reload-dir", "/tmp", "--reload-backend", "polling"),
        ("--slow-request-timeout", "1s", "--slow-log", "/tmp/slow.log"),
        ("--ping-path", "/ping", "--ping-response", "ok"),
        ("--status-bind", "127.0.0.1:9001", "--ping-response", "ok"),
        ("--threads", "4",),  # worker auto: the sync worker for a WSGI app
        ("--pm", "dynamic", "-w", "2", "--max-workers", "8", "--min-spare-workers", "2",
         "--max-spare-workers", "4", "--max-spawn-rate", "8"),
        ("--pm", "dynamic", "--max-workers", "2"),  # the default spare bound (3) is clamped
        ("--pm", "ondemand", "--max-workers", "8", "--process-idle-timeout", "30s", "--preload"),
    ],
)  # fmt: skip
def test_the_working_combinations_pass(args):
    build(*args)


def test_defaults_have_no_conflict():
    assert conflicts(Config()) == []


def test_several_conflicts_are_reported_together():
    c = Config(max_requests_jitter=1, max_lifetime_jitter_s=1.0)
    assert len(conflicts(c)) == 2


def test_cli_exits_2_naming_both_options_from_any_source(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('app = "mod:app"\nmax-requests-jitter = 50\n')
    env = {"PATH": os.environ["PATH"], "FCGI_GATEWAY_WORKER": "async"}
    for args, names in (
        (["--config", str(cfg)], ("--max-requests-jitter", "--max-requests")),  # from the file
        (["--threads", "2", "mod:app"], ("--threads", "--worker async")),  # option + environment
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=30, env=env
        )
        assert proc.returncode == 2, proc.stderr
        assert all(name in proc.stderr for name in names), proc.stderr
