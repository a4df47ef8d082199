"""The command line as a user runs it: ``python -m gateway ...`` in a subprocess.

Covers --version/--help, the option defaults (those of Config, shown by --help in the
options' units), the default command (``fcgi-gateway APP`` = ``fcgi-gateway serve
APP``), app loading options (--factory, --chdir, --app-dir, --interface), options from
FCGI_GATEWAY_* environment variables and their precedence, and the exit codes that only
gateway.cli decides: 0 on SIGTERM/SIGINT, 2 for invalid options, 3 when the address cannot
be bound, 4 when the app cannot be loaded, 5 when lifespan startup fails.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import __version__
from gateway.cli import SERVE_OPTIONS, config_from_options, serve
from gateway.client import FastCGIClient
from gateway.config import Config
from tests.integration.nginx import can_connect, kill_group

EXIT_CONFIG, EXIT_BIND, EXIT_APP_LOAD, EXIT_LIFESPAN = 2, 3, 4, 5


#: Kept from the outer environment: the pure-Python pass of CI (gateway/speedups.py).
SPEEDUPS_VAR = "FCGI_GATEWAY_NO_SPEEDUPS"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCGI_GATEWAY_") or k == SPEEDUPS_VAR}
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None, timeout: float = 30
):
    """Run to completion; (exit status, stdout + stderr)."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=env or clean_env(),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    return out.returncode, out.stdout


def fails_to_start(gateway_factory, app: str, *args: str, timeout: float = 30, **kwargs) -> tuple[int, str]:
    """Start a gateway that must exit on its own; (exit status, log)."""
    gw = gateway_factory(app, *args, wait=False, **kwargs)
    status = gw.wait(timeout)
    return status, gw.log_text()


@pytest.fixture
def spawn(tmp_path):
    """``spawn(*args, env=...)``: a gateway started with exactly these arguments (no --bind
    added); returns (Popen, log path). Killed (whole group) at teardown."""
    procs: list[subprocess.Popen] = []

    def start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"gateway{len(procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", *args],
                env=env or clean_env(),
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        procs.append(proc)
        return proc, log

    yield start
    for proc in procs:
        kill_group(proc)


def get(address: str, path: str = "/x", timeout: float = 15.0):
    """One request once ``address`` accepts (the app may still be loading)."""
    with FastCGIClient(address, timeout=timeout) as client:
        return client.request("GET", path)


def wait_accepting(proc: subprocess.Popen, address: str, log: Path, timeout: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not can_connect(address):
        assert proc.poll() is None, f"gateway exited with {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{address} not accepting:\n{log.read_text()}"
        time.sleep(0.02)


# -- version, help, commands -------------------------------------------------------------------


def test_version():
    status, out = run_cli("--version")
    assert status == 0
    assert out.strip() == f"fcgi-gateway, version {__version__}"


def test_help_lists_options_and_environment_variables():
    status, out = run_cli("--help")
    assert status == 0
    for text in ("--bind", "--max-body-size", "--graceful-timeout", "--lifespan", "--interface"):
        assert text in out, f"{text} missing from --help"
    for var in ("FCGI_GATEWAY_BIND", "FCGI_GATEWAY_ROOT_PATH", "FCGI_GATEWAY_MAX_BODY_SIZE"):
        assert var in out, f"{var} missing from --help"
    status, serve_help = run_cli("serve", "--help")
    assert status == 0 and "FCGI_GATEWAY_BIND" in serve_help


def test_every_option_default_is_the_config_default(monkeypatch):
    """The defaults are written once, in Config: serve with no options builds Config()."""
    monkeypatch.delenv("FCGI_WEB_SERVER_ADDRS", raising=False)
    ctx = serve.make_context("serve", ["mod:app"])
    built = config_from_options(ctx.params.pop("app"), ctx.params)
    expected = Config(app="mod:app")
    differ = {
        name: (getattr(built, name), getattr(expected, name))
        for name in Config.field_names() - {"extra"}
        if getattr(built, name) != getattr(expected, name)
    }
    assert not differ, differ
    assert built.extra == {"allow_world_writable_socket": False}  # --allow-world-writable
    assert {opt.field for opt in SERVE_OPTIONS} - Config.field_names() == {"allow_world_writable"}


def test_help_shows_the_defaults_in_the_options_units():
    status, out = run_cli("--help")
    assert status == 0
    text = " ".join(out.split())  # help lines are wrapped anywhere
    for default in ("127.0.0.1:9000", "0660", "256K", "30s", "75s", "auto", "info"):
        assert f"default: {default}" in text, f"default {default} not shown"
    assert "default: 262144" not in text and "default: 432" not in text


def readme_options() -> set[str]:
    """The options named in the first column of README.md's CLI reference table."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## CLI reference") :]
    section = section[: section.index("\n## ")]
    table = re.search(r"\| option \| default \| meaning \|\n((?:\|.*\n)+)", section)
    assert table, "no option table in README.md's CLI reference"
    names: set[str] = set()
    for row in table.group(1).splitlines()[1:]:
        first = row.split("|")[1]
        names.update(re.findall(r"--[a-z][a-z-]*", first))
        names.update(base + suffix for base, suffix in re.findall(r"`(--[a-z-]+)` \(\+`(-[a-z]+)`\)", first))
    return names


def test_readme_table_lists_exactly_the_options_of_help():
    status, out = run_cli("--help")
    assert status == 0
    in_help = set(re.findall(r"(?m)^\s+(?:-\w, )?(--[a-z][a-z-]*)", out))
    in_readme = readme_options()
    assert in_help - in_readme == set(), "options missing from README.md's table"
    assert in_readme - in_help == set(), "README.md's table names options --help does not have"


def test_default_command_and_explicit_serve_both_serve(spawn, sock_dir):
    for i, prefix in enumerate([(), ("serve",)]):
        address = f"unix:{sock_dir}/cmd{i}.sock"
        proc, log = spawn(*prefix, "--bind", address, "loading_apps:wsgi_app")
        wait_accepting(proc, address, log)
        assert get(address, "/hello").body == b"wsgi /hello script_name="


def test_missing_app_argument_is_a_usage_error():
    status, out = run_cli()
    assert status == EXIT_CONFIG
    assert "missing APP" in out


# -- loading the application ---------------------------------------------------------------------


def test_missing_module_exits_4_naming_it(gateway_factory):
    status, log = fails_to_start(gateway_factory, "fcgw_no_such_module:app")
    assert status == EXIT_APP_LOAD
    assert "fcgw_no_such_module" in log and "no module named" in log.lower()
    assert "Traceback" not in log


def test_import_error_inside_the_module_exits_4_with_the_real_error(gateway_factory):
    status, log = fails_to_start(gateway_factory, "broken_importerror_app:app")
    assert status == EXIT_APP_LOAD
    assert "this_name_does_not_exist" in log
    assert "could not import module" not in log
    status, log = fails_to_start(gateway_factory, "broken_dependency_app:app")
    assert status == EXIT_APP_LOAD
    assert "fcgw_test_dependency_that_is_not_installed" in log
    assert "could not import module 'broken_dependency_app'" not in log


def test_missing_attribute_exits_4_naming_it(gateway_factory):
    status, log = fails_to_start(gateway_factory, "loading_apps:no_such_attribute")
    assert status == EXIT_APP_LOAD
    assert "no_such_attribute" in log and "loading_apps" in log


def test_factory_option(gateway_factory):
    gw = gateway_factory("loading_apps:create_app", "--factory")
    assert get(gw.address, "/made").body == b"asgi /made root_path="
    status, log = fails_to_start(gateway_factory, "loading_apps:create_app_failing", "--factory")
    assert status == EXIT_APP_LOAD
    assert "factory could not read its configuration" in log


def test_chdir_and_app_dir(gateway_factory, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "fcgw_site_app.py").write_text(
        "import os\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [os.getcwd().encode()]\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    gw = gateway_factory("fcgw_site_app:app", "--chdir", str(project), cwd=elsewhere)
    assert get(gw.address).body == str(project).encode()
    gw = gateway_factory("fcgw_site_app:app", "--app-dir", str(project), cwd=elsewhere)
    assert get(gw.address).body == str(elsewhere).encode()
    status, log = fails_to_start(gateway_factory, "fcgw_site_app:app", cwd=elsewhere)
    assert status == EXIT_APP_LOAD
    assert "fcgw_site_app" in log and "--chdir" in log
    status, out = run_cli("--chdir", str(tmp_path / "missing"), "fcgw_site_app:app")
    assert status == EXIT_CONFIG and "does not exist" in out


def test_interface_option_overrides_detection(gateway_factory):
    gw = gateway_factory("loading_apps:generic")
    assert get(gw.address, "/guessed").body == b"generic wsgi /guessed"
    gw.wait_for_log(r"detected WSGI: generic is a plain callable .*; pass --interface to override")
    gw = gateway_factory("loading_apps:generic", "--interface", "wsgi")
    assert get(gw.address, "/forced").body == b"generic wsgi /forced"
    gw.wait_for_log(r"loading_apps:generic loaded \(wsgi, sync worker\)")
    assert "detected WSGI" not in gw.log_text()


def test_undetectable_app_exits_4_naming_interface_and_factory(gateway_factory):
    status, log = fails_to_start(gateway_factory, "loading_apps:create_app")  # --factory missing
    assert status == EXIT_APP_LOAD
    assert "pass --factory" in log and "--interface" in log


# -- environment variables -------------------------------------------------------------------------


def test_options_from_environment_and_cli_precedence(gateway_factory):
    gw = gateway_factory("loading_apps:asgi_app", env={"FCGI_GATEWAY_ROOT_PATH": "/from-env"})
    assert get(gw.address, "/from-env/x").body == b"asgi /from-env/x root_path=/from-env"
    gw = gateway_factory(
        "loading_apps:asgi_app", "--root-path", "/from-cli", env={"FCGI_GATEWAY_ROOT_PATH": "/from-env"}
    )
    assert get(gw.address, "/from-cli/x").body == b"asgi /from-cli/x root_path=/from-cli"


def test_bind_and_app_from_environment(spawn, sock_dir):
    env_address = f"unix:{sock_dir}/env.sock"
    proc, log = spawn(env=clean_env(FCGI_GATEWAY_BIND=env_address, FCGI_GATEWAY_APP="loading_apps:wsgi_app"))
    wait_accepting(proc, env_address, log)
    assert get(env_address, "/env").body == b"wsgi /env script_name="
    cli_address = f"unix:{sock_dir}/cli.sock"
    other_env = f"{sock_dir}/ignored.sock"
    proc, log = spawn(
        "--bind", cli_address, "loading_apps:wsgi_app", env=clean_env(FCGI_GATEWAY_BIND=other_env)
    )
    wait_accepting(proc, cli_address, log)
    assert get(cli_address, "/cli").status == 200
    assert not os.path.exists(other_env)


def test_invalid_environment_value_is_a_usage_error():
    status, out = run_cli("loading_apps:asgi_app", env=clean_env(FCGI_GATEWAY_MAX_BODY_SIZE="12XB"))
    assert status == EXIT_CONFIG
    assert "FCGI_GATEWAY_MAX_BODY_SIZE" in out and "12XB" in out


# -- invalid options: exit 2 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--max-body-size", "12XB"), "invalid size '12XB'"),
        (("--max-params-size", "-1"), "invalid size '-1'"),
        (("--graceful-timeout", "soon"), "invalid duration 'soon'"),
        (("--graceful-timeout", "1h30"), "invalid duration '1h30'"),
        (("--socket-mode", "0999"), "not an octal mode"),
        (("--socket-mode", "0666"), "world-writable"),
        (("--bind", "localhost:http"), "invalid port"),
        (("--interface", "cgi"), "'cgi' is not one of"),
        (("--no-such-option",), "No such option"),
    ],
)
def test_invalid_options_exit_2(args, message, sock_dir):
    status, out = run_cli(*args, "loading_apps:asgi_app")
    assert status == EXIT_CONFIG, out
    assert message in out
    assert "Traceback" not in out


def test_world_writable_socket_when_allowed(gateway_factory):
    gw = gateway_factory("loading_apps:asgi_app", "--socket-mode", "0666", "--allow-world-writable")
    assert os.stat(gw.socket_path).st_mode & 0o777 == 0o666
    gw = gateway_factory("loading_apps:asgi_app", "--socket-mode", "0600")
    assert os.stat(gw.socket_path).st_mode & 0o777 == 0o600


# -- lifespan: exit 5 ------------------------------------------------------------------------------

# A LifespanError raised in a prefork worker is treated by the arbiter as a worker crash
# (restarted with backoff) instead of a boot failure, so the master never exits with 5.
# Remove this marker when gateway/arbiter.py reports it like an AppLoadError.


def test_lifespan_on_with_an_app_without_lifespan_exits_5(gateway_factory):
    status, log = fails_to_start(gateway_factory, "lifespan_apps:no_lifespan", "--lifespan", "on", timeout=10)
    assert status == EXIT_LIFESPAN
    assert "does not support the ASGI lifespan protocol" in log


def test_lifespan_startup_failed_exits_5_with_the_message(gateway_factory):
    status, log = fails_to_start(gateway_factory, "lifespan_apps:startup_failed", timeout=10)
    assert status == EXIT_LIFESPAN
    assert "database at db.invalid unreachable" in log


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_app_without_lifespan_serves_with_lifespan_auto_or_off(gateway_factory, mode):
    gw = gateway_factory("lifespan_apps:no_lifespan", "--lifespan", mode, "--log-level", "debug")
    assert get(gw.address).body == b"no lifespan here"
    assert "[ERROR]" not in gw.log_text()
    if mode == "auto":
        gw.wait_for_log(r"\[DEBUG\] ASGI lifespan unsupported by the application")


# -- binding: exit 3 -----------------------------------------------------------------------------


def test_tcp_port_in_use_exits_3(gateway_factory):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        status, log = fails_to_start(gateway_factory, "loading_apps:asgi_app", bind=f"127.0.0.1:{port}")
    assert status == EXIT_BIND
    assert f"127.0.0.1:{port}" in log and "Address already in use" in log


def test_tcp_bind_serves(gateway_factory, free_port):
    gw = gateway_factory("loading_apps:wsgi_app", bind=f"127.0.0.1:{free_port}")
    assert get(gw.address, "/tcp").body == b"wsgi /tcp script_name="


# -- signals: exit 0 -----------------------------------------------------------------------------


@pytest.mark.parametrize("app", ["loading_apps:asgi_app", "loading_apps:wsgi_app"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_exit_0(gateway_factory, app, sig):
    gw = gateway_factory(app)
    assert get(gw.address).status == 200
    gw.wait_for_log(r"serving (ASGI|WSGI) on")
    gw.send_signal(sig)
    assert gw.wait(15) == 0
    assert sig.name in gw.log_text()  # the stop is logged with the signal's name
    assert not os.path.exists(gw.socket_path), "the unix socket file is removed on exit"
