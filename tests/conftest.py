"""Shared test setup: import paths for the repo and test apps, short socket dirs, free ports.

- The repo root and ``tests/apps`` (when it exists) go on ``sys.path`` and are exported in
  ``PYTHONPATH``, so ``python -m gateway tests_app:app`` subprocesses can import test apps
  and ``from tests.integration.nginx import ...`` works however pytest is started.
- ``FCGI_GATEWAY_*`` variables from the outer environment are dropped: the CLI reads them
  (auto_envvar_prefix) and a stray one would change every server the tests start.
- ``sock_dir``: unix socket paths must fit in 108 bytes, and pytest's ``tmp_path`` can be
  longer than that for parametrized tests, so sockets go in a short ``/tmp/fcgw-*`` dir.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = REPO_ROOT / "tests"
APPS_DIR = TESTS_DIR / "apps"


def _setup_paths() -> None:
    paths = [str(REPO_ROOT)] + ([str(APPS_DIR)] if APPS_DIR.is_dir() else [])
    for p in reversed(paths):
        if p not in sys.path:
            sys.path.insert(0, p)
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in paths]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + current)
    for name in [k for k in os.environ if k.startswith("FCGI_GATEWAY_")]:
        del os.environ[name]


_setup_paths()

from tests.integration.nginx import free_port as _free_port  # noqa: E402


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
    return _free_port()
