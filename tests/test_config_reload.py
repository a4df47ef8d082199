"""gateway/reload_config.py in-process: which options a SIGHUP applies from a re-read
``--config``, which it refuses, what it logs, and the child parse itself (the real-process
tests are in tests/process/test_proc_config_reload.py)."""

from __future__ import annotations

import logging
import os

import pytest

from gateway.cli import SERVE_OPTIONS, ConfigOnly, serve
from gateway.config import Config
from gateway.errors import ConfigError
from gateway.reload_config import IGNORED, PRELOADED, RELOADABLE, RESTART, merge, reload_config, reread, show

NAMES = {opt.field: next(d for d in opt.decls if d.startswith("--"))[2:] for opt in SERVE_OPTIONS}


def test_every_field_is_reloadable_or_needs_a_restart():
    fields = Config.field_names() - IGNORED
    assert RELOADABLE.isdisjoint(RESTART)
    assert fields - RELOADABLE - RESTART.keys() == set(), "decide whether a reload may change these"
    assert (RELOADABLE | RESTART.keys()) - fields == set()
    assert PRELOADED <= RELOADABLE


def test_merge_applies_reloadable_changes_and_refuses_the_others():
    running = Config(app="a:b", max_requests=500, app_dir="/srv/releases/r1")
    new = Config(app="a:b", max_requests=1000, binds=("unix:/run/x.sock",), max_body_bytes=10 << 20)
    config, lines = merge(running, new, NAMES, given_app_dir=".")
    assert config.max_requests == 1000 and config.max_body_bytes == 10 << 20
    assert config.binds == running.binds and config.app_dir == "/srv/releases/r1"  # resolved, kept
    assert lines == [
        "reload: bind 127.0.0.1:9000 -> unix:/run/x.sock refused, needs a restart "
        "(the sockets are bound once); keeping 127.0.0.1:9000",
        "reload: max-body-size unset -> 10M",
        "reload: max-requests 500 -> 1000",
    ]


def test_merge_with_preload_keeps_what_loaded_the_app():
    running = Config(app="a:b", preload=True)
    config, lines = merge(running, Config(app="c:d", preload=True, threads=2), NAMES, ".")
    assert (config.app, config.threads) == ("a:b", 2)
    assert (
        "reload: app a:b -> c:d refused, needs a restart (the app was loaded in the master (--preload))"
        in lines[0]
    )


def test_merge_without_a_change_returns_the_running_config():
    running = Config(app="a:b")
    assert merge(running, Config(app="a:b"), NAMES, ".") == (running, [])


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("graceful_timeout_s", 30.0, "30s"),
        ("read_timeout_s", 0.5, "500ms"),
        ("max_body_bytes", None, "unset"),
        ("max_params_bytes", 256 * 1024, "256K"),
        ("socket_mode", 0o660, "0660"),
        ("binds", ("a", "b"), "a,b"),
        ("debug", True, "on"),
        ("workers", 4, "4"),
    ],
)
def test_values_are_shown_as_the_options_take_them(name, value, text):
    assert show(name, value) == text


def test_a_refused_file_logs_why_and_returns_none(caplog):
    def broken(config):
        raise ConfigError("invalid TOML in /etc/gw.toml: Expected '=' (line 2)")

    with caplog.at_level(logging.INFO, logger="gateway.error"):
        assert reload_config(Config(config_file="/etc/gw.toml"), ".", read=broken) is None
    assert caplog.messages == [
        "reload refused: invalid TOML in /etc/gw.toml: Expected '=' (line 2); "
        "the running configuration and generation are kept"
    ]


def started(args: list[str], cwd) -> Config:
    """The Config serve builds at start for ``args`` run in ``cwd`` (command line recorded)."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        handoff = ConfigOnly()  # logging left alone, as in a reload's parse
        serve.main(args=args, obj=handoff, standalone_mode=False)
        return handoff[0]
    finally:
        os.chdir(old)


def test_reread_parses_the_command_line_again_with_the_file_read_anew(tmp_path, monkeypatch):
    monkeypatch.delenv("PWD", raising=False)
    (tmp_path / "gw.toml").write_text('app = "a:b"\nmax-requests = 10\nbacklog = 100\n')
    running = started(["--config", "gw.toml", "--backlog", "50"], tmp_path)  # relative: start_dir
    assert running.config_file == str(tmp_path / "gw.toml") and running.start_dir == str(tmp_path)
    assert running.command_line == ("--config", "gw.toml", "--backlog", "50")
    assert (running.max_requests, running.backlog) == (10, 50)
    (tmp_path / "gw.toml").write_text('app = "a:b"\nmax-requests = 20\nbacklog = 200\n')
    new, names = reread(running)
    assert (new.max_requests, new.backlog) == (20, 50)  # the command line keeps precedence
    assert names["max_requests"] == "max-requests" and names["binds"] == "bind"
    (tmp_path / "gw.toml").write_text('app = "a:b"\nmax-requests = "x"\n')
    with pytest.raises(ConfigError, match=r"max-requests|'x'"):
        reread(running)
