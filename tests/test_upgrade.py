"""gateway/upgrade.py in process: the new master's command line, the pid file, the
hand-over variables, the unix socket files changing owner (the real upgrade:
tests/process/test_proc_upgrade.py)."""

from __future__ import annotations

import os
import socket

import pytest

from gateway import upgrade
from gateway.sockets import (
    BindSpec,
    bind_socket,
    cleanup_unix_sockets,
    owned_socket_files,
    set_socket_files_owned,
)


@pytest.mark.parametrize(
    ("orig_argv", "expected"),
    [
        # python -m gateway: the interpreter's options are kept
        (
            ["python3", "-X", "dev", "-m", "gateway", "app:app"],
            ["/venv/bin/python", "-X", "dev", "-m", "gateway", "app:app"],
        ),
        # the console script: its shebang started the venv's interpreter on the script's path
        (
            ["/venv/bin/python", "/venv/bin/fcgi-gateway", "--bind", "unix:/run/a.sock", "app:app"],
            ["/venv/bin/python", "/venv/bin/fcgi-gateway", "--bind", "unix:/run/a.sock", "app:app"],
        ),
    ],
)
def test_the_new_master_runs_the_same_command_with_this_interpreter(orig_argv, expected):
    assert upgrade.command(orig_argv, "/venv/bin/python") == expected


def test_the_pid_file_is_removed_only_while_it_names_this_process(tmp_path):
    pid_file = tmp_path / "gateway.pid"
    pid_file.write_text("1\n")  # a new master's by now
    upgrade.remove_pid_file(str(pid_file))
    assert pid_file.exists()
    upgrade.write_pid_file(str(pid_file))
    assert pid_file.read_text() == f"{os.getpid()}\n"
    upgrade.remove_pid_file(str(pid_file))
    assert not pid_file.exists()
    upgrade.remove_pid_file(str(pid_file))  # gone already: nothing to do


def test_handover_variables_naming_another_parent_are_ignored(monkeypatch):
    monkeypatch.setattr(upgrade, "_read_env", False)
    monkeypatch.setattr(upgrade, "_handoff", None)
    monkeypatch.setenv(upgrade.PID_VAR, str(os.getppid() + 1))
    monkeypatch.setenv(upgrade.FDS_VAR, "3")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    assert upgrade.handoff() is None
    assert upgrade.inherited_sockets("listen") == []
    assert upgrade.PID_VAR not in os.environ and upgrade.FDS_VAR not in os.environ  # taken out
    assert os.environ["NOTIFY_SOCKET"] == "/run/systemd/notify"


def test_handover_variables_from_the_parent_are_read_once(monkeypatch):
    monkeypatch.setattr(upgrade, "_read_env", False)
    monkeypatch.setattr(upgrade, "_handoff", None)
    monkeypatch.setenv(upgrade.PID_VAR, str(os.getppid()))
    monkeypatch.setenv(upgrade.FDS_VAR, "3,4")
    monkeypatch.setenv(upgrade.STATUS_FDS_VAR, "")
    monkeypatch.setenv(upgrade.OWNED_VAR, "4")
    monkeypatch.setenv(upgrade.PIPE_VAR, "7")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    h = upgrade.handoff()
    assert h is not None and (h.old_pid, h.pipe) == (os.getppid(), 7)
    assert (h.listen, h.status, h.owned) == ([3, 4], [], {4})
    assert h.notify_socket == "/run/systemd/notify" and "NOTIFY_SOCKET" not in os.environ  # until it serves
    assert upgrade.handoff() is h


def test_socket_files_change_owner(tmp_path):
    path = str(tmp_path / "a.sock")
    sock = bind_socket(BindSpec("unix", path=path))
    try:
        assert owned_socket_files([sock]) == [sock]
        set_socket_files_owned([sock], owned=False)  # handed over: left on disk at exit
        assert owned_socket_files([sock]) == []
        cleanup_unix_sockets([sock])
        assert os.path.exists(path)
        set_socket_files_owned([sock], owned=True)  # taken over: removed at exit
        cleanup_unix_sockets([sock])
        assert not os.path.exists(path)
    finally:
        sock.close()
    other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with other:
        set_socket_files_owned([other], owned=True)  # not a unix socket: nothing to own
        assert owned_socket_files([other]) == []
