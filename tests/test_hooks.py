"""gateway/hooks.py in process: loading and checking a hooks module, the argument objects,
how a raising hook is handled, and ``fcgi-gateway check --hooks``. The calls from real
masters and workers, in order, are tests/process/test_proc_hooks.py's."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.arbiter import WORKER_BOOT_ERROR, Worker
from gateway.config import Config
from gateway.errors import AppLoadError, ConfigError, GatewayError
from gateway.hooks import FILE_MODULE, HOOKS, Hooks, Server, WorkerInfo, exit_reason, load_hooks
from tests.test_cli import run_cli


def write(tmp_path: Path, source: str, name: str = "my_hooks.py") -> str:
    path = tmp_path / name
    path.write_text(source)
    return str(path)


@pytest.fixture(autouse=True)
def _forget_modules():
    yield
    for name in (FILE_MODULE, "named_hooks"):
        sys.modules.pop(name, None)


def master(**changes) -> SimpleNamespace:
    fields = {"pid": 10, "config": Config(app="a:b"), "generation": 3, "num_workers": 2, "stopping": False}
    return SimpleNamespace(**{**fields, **changes})


def test_every_hook_is_found_by_file_path_and_by_module_name(tmp_path):
    source = "".join(f"def {name}({', '.join(args)}):\n    pass\n\n\n" for name, args in HOOKS.items())
    hooks = load_hooks(write(tmp_path, source))
    assert list(hooks.functions) == list(HOOKS)
    write(tmp_path, "def on_exit(server):\n    pass\n", name="named_hooks.py")
    by_name = load_hooks("named_hooks", app_dir=str(tmp_path))  # --app-dir first on sys.path
    assert by_name.describe() == "named_hooks (on_exit)"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("raise RuntimeError('no settings')\n", "error while importing"),
        ("when_ready = 'soon'\n", "when_ready is not callable (it is a str)"),
        ("def post_fork(server):\n    pass\n", "post_fork must take (server, worker), not post_fork(server)"),
        ("def on_exit():\n    pass\n", "on_exit must take (server)"),
    ],
)
def test_a_module_that_cannot_serve_is_a_config_error(tmp_path, source, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_hooks(write(tmp_path, source))


def test_an_import_error_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "\n\nraise RuntimeError('no settings')\n")
    with pytest.raises(ConfigError) as info:
        load_hooks(path)
    assert f"RuntimeError: no settings ({path}:3)" in str(info.value)


def test_missing_module_and_file(tmp_path):
    with pytest.raises(ConfigError, match="could not import module 'no_such_hooks_here'"):
        load_hooks("no_such_hooks_here", app_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="no such file"):
        load_hooks(str(tmp_path / "missing.py"))


def test_names_that_look_like_hooks_are_warned_about(tmp_path, caplog):
    source = (
        "from os.path import join as on_start_helper\n"  # imported: not the module's own
        "def on_start(server): pass\n"
        "def postfork(server, worker): pass\n"
        "def pre_request(worker, req): pass\n"
        "def helper(): pass\n"
        "def _private(): pass\n"
        "def when_ready(server): pass\n"
    )
    with caplog.at_level(logging.WARNING, logger="gateway.error"):
        hooks = load_hooks(write(tmp_path, source))
    assert list(hooks.functions) == ["when_ready"]
    warnings = [r.getMessage() for r in caplog.records]
    assert any("on_start is not a hook name (did you mean on_starting?)" in w for w in warnings)
    assert any("postfork is not a hook name (did you mean post_fork?)" in w for w in warnings)
    assert any("pre_request is a gunicorn hook that fcgi-gateway does not call" in w for w in warnings)
    assert len(warnings) == 3, warnings


def test_a_module_without_hooks_is_warned_about(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="gateway.error"):
        load_hooks(write(tmp_path, "X = 1\n"))
    assert "defines none of the hooks" in caplog.text


def test_the_arguments(tmp_path):
    seen: dict[str, tuple] = {}
    hooks = Hooks("test", {name: (lambda *a, name=name: seen.__setitem__(name, a)) for name in HOOKS})
    m = master()
    worker = Worker(21, 3, slot=4)
    hooks.call("child_exit", m, worker, exit_code=-signal.SIGKILL)
    hooks.call("worker_exit", m, worker, exit_code=0)
    hooks.call("on_reload", m)
    hooks.boot("post_worker_init", m, worker)
    server, info = seen["child_exit"]
    assert (server.pid, server.generation, server.workers, server.config.app) == (10, 3, 2, "a:b")
    assert info == WorkerInfo(21, 3, 4, exit_code=-9, reason="crash")
    assert seen["worker_exit"][1] == WorkerInfo(21, 3, 4, exit_code=0)
    assert seen["post_worker_init"] == (WorkerInfo(21, 3, 4),)
    m.generation = 4  # the view reads the master when used
    assert seen["on_reload"][0].generation == 4
    with pytest.raises(AttributeError):
        server.pid = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        info.pid = 1  # type: ignore[misc]
    assert repr(Server(master())) == "<Server pid=10 generation=3 workers=2>"


def test_on_starting_sees_this_process_as_the_server(tmp_path):
    seen = []
    Hooks("test", {"on_starting": seen.append}).starting(Config(app="a:b", workers=3))
    assert (seen[0].generation, seen[0].workers) == (1, 3)


@pytest.mark.parametrize(
    ("changes", "worker", "code", "reason"),
    [
        ({"stopping": True}, {}, 0, "stop"),
        ({}, {"retiring": True}, WORKER_BOOT_ERROR, "boot-error"),
        ({}, {"recycle": "max-requests", "retiring": True}, 0, "recycle"),
        ({}, {"replace_soon": "max-requests"}, 0, "recycle"),
        ({}, {"retiring": True}, 0, "retired"),
        ({}, {}, 7, "crash"),
    ],
)
def test_exit_reasons(changes, worker, code, reason):
    assert exit_reason(master(**changes), Worker(1, 1, **worker), code) == reason


def test_a_raising_hook_is_logged_and_the_caller_goes_on(caplog):
    def boom(*args):
        raise RuntimeError("boom")

    hooks = Hooks("my_hooks", dict.fromkeys(HOOKS, boom))
    with caplog.at_level(logging.ERROR, logger="gateway.error"):
        hooks.call("when_ready", master())
    assert "--hooks my_hooks: when_ready raised; going on" in caplog.text
    assert "RuntimeError: boom" in caplog.text  # the traceback
    with pytest.raises(AppLoadError, match="post_worker_init raised RuntimeError: boom"):
        hooks.boot("post_worker_init", master(), Worker(1, 1))
    with pytest.raises(GatewayError, match="on_starting raised RuntimeError: boom") as info:
        hooks.starting(Config(app="a:b"))
    assert type(info.value) is GatewayError  # exit status 1, not a configuration error


def test_check_imports_and_describes_the_hooks_module(tmp_path):
    hooks = write(tmp_path, "def when_ready(server):\n    raise SystemExit(9)\n")
    status, out = run_cli("check", "--hooks", hooks, "wsgi_app:app")
    assert status == 0, out
    assert f"hooks: {hooks} (when_ready)" in " ".join(out.split())  # and not called
    status, out = run_cli("check", "--hooks", write(tmp_path, "post_fork = 1\n", "bad.py"), "wsgi_app:app")
    assert status == 2
    assert "configuration error: --hooks" in out and "post_fork is not callable" in out
