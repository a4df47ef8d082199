"""--config FILE (TOML): the same keys as the long options; CLI > environment > file >
defaults; unknown keys are an error naming the key."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from gateway.cli import config_from_options, load_config_file, serve
from gateway.errors import ConfigError


def resolved(args: list[str], env: dict[str, str] | None = None):
    """The Config the serve command would build for ``args`` (parsed by click itself)."""
    ctx = serve.make_context("serve", list(args), default_map=None)
    return config_from_options(ctx.params.pop("app"), ctx.params)


def test_file_values_become_options(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        'app = "hello:app"\nworkers = 3\nbind = ["unix:/tmp/x.sock", "127.0.0.1:9100"]\n'
        'max-body-size = "10M"\ngraceful_timeout = "1m"\nstatus-path = "/status"\n'
    )
    c = resolved(["--config", str(cfg)])
    assert c.app == "hello:app"
    assert c.workers == 3
    assert c.binds == ("unix:/tmp/x.sock", "127.0.0.1:9100")
    assert c.max_body_bytes == 10 * 1024 * 1024
    assert c.graceful_timeout_s == 60.0
    assert c.status_path == "/status"


def test_precedence_cli_over_env_over_file(tmp_path, monkeypatch):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('app = "a:b"\nworkers = 3\nroot-path = "/file"\nbacklog = 100\n')
    monkeypatch.setenv("FCGI_GATEWAY_ROOT_PATH", "/env")
    monkeypatch.setenv("FCGI_GATEWAY_WORKERS", "5")
    c = resolved(["--config", str(cfg), "--workers", "7"])
    assert c.workers == 7  # command line
    assert c.root_path == "/env"  # environment beats the file
    assert c.backlog == 100  # file beats the default
    assert resolved(["--config", str(cfg), "x:y"]).app == "x:y"


def test_fcgi_gateway_table_is_accepted(tmp_path):
    cfg = tmp_path / "pyproject-like.toml"
    cfg.write_text('[fcgi-gateway]\napp = "a:b"\nworkers = 2\n')
    assert load_config_file(str(cfg)) == {"app": "a:b", "workers": 2}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('app = "a:b"\nwrokers = 2\n', "unknown key(s)"),
        ("app = [\n", "invalid TOML"),
    ],
)
def test_bad_files_are_errors(tmp_path, content, message):
    cfg = tmp_path / "gw.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config_file(str(cfg))


def test_cli_exits_2_naming_the_unknown_key(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('app = "a:b"\nmax-bodysize = "1M"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "max-bodysize" in proc.stderr


def test_invalid_value_in_file_is_rejected(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('app = "a:b"\nmax-body-size = "12XB"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "12XB" in proc.stderr
