"""The rows of the benchmark: which servers are measured and how each one is started.

A :class:`Backend` is one server configuration (the gateway's three worker setups and the
peers); :func:`backend_command` is the command line that makes it serve one app on a unix
socket with a given number of worker processes. ``APPS_BY_FAMILY`` says which callable of
``bench/apps`` each interface serves, and what the app needs installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import APPS, BENCH_DIR


@dataclass(frozen=True)
class Backend:
    name: str
    protocol: str  # "fastcgi" or "http" (behind proxy_pass)
    interface: str  # "wsgi" or "asgi": which of the app's callables it serves
    requires: tuple[str, ...]  # importable modules, or "bin:NAME" for an executable beside python
    multiprocess: bool = True  # has a worker-count option
    description: str = ""


BACKENDS: tuple[Backend, ...] = (
    Backend("project-wsgi", "fastcgi", "wsgi", ("gateway",), description="fcgi-gateway, sync worker, WSGI"),
    Backend("project-asgi", "fastcgi", "asgi", ("gateway",), description="fcgi-gateway, async worker, ASGI"),
    Backend(
        "project-wsgi-bridge",
        "fastcgi",
        "wsgi",
        ("gateway",),
        description="fcgi-gateway, async worker, WSGI app through a2wsgi",
    ),
    Backend("uwsgi", "fastcgi", "wsgi", ("bin:uwsgi",), description="uWSGI --fastcgi-socket --master"),
    Backend("flup", "fastcgi", "wsgi", ("flup",), multiprocess=False, description="flup threaded WSGIServer"),
    Backend(
        "fcgisgi-wsgi",
        "fastcgi",
        "wsgi",
        ("fcgisgi",),
        multiprocess=False,
        description="fcgisgi, WSGI adapter",
    ),
    Backend(
        "fcgisgi-asgi",
        "fastcgi",
        "asgi",
        ("fcgisgi",),
        multiprocess=False,
        description="fcgisgi, ASGI adapter",
    ),
    Backend("gunicorn", "http", "wsgi", ("gunicorn",), description="gunicorn sync worker, proxy_pass"),
    Backend("uvicorn", "http", "asgi", ("uvicorn",), description="uvicorn, proxy_pass"),
)
BACKEND = {b.name: b for b in BACKENDS}
PROJECT_ROWS = ("project-wsgi", "project-asgi", "project-wsgi-bridge")
REFERENCE = "uwsgi"

ALL_ROWS = tuple(b.name for b in BACKENDS)
FASTCGI_ROWS = tuple(b.name for b in BACKENDS if b.protocol == "fastcgi")
MULTI_ROWS = tuple(b.name for b in BACKENDS if b.multiprocess)
CORE_ROWS = (*PROJECT_ROWS, "uwsgi", "gunicorn", "uvicorn")

#: The apps, by family: interface -> MODULE:ATTR (importable from bench/apps), and the
#: modules the family needs in the backend's interpreter.
APPS_BY_FAMILY = {
    "hello": ({"wsgi": "hello:wsgi_app", "asgi": "hello:asgi_app"}, ()),
    "flask": ({"wsgi": "flask_app:wsgi_app"}, ("flask",)),
    "django": ({"wsgi": "djangosite.wsgi:application", "asgi": "djangosite.asgi:application"}, ("django",)),
}


def backend_command(
    backend: Backend, python: str, sock: str, app: str, workers: int, gateway_args: tuple[str, ...] = ()
) -> list[str]:
    """The command line that serves ``app`` on unix socket ``sock`` with ``workers`` processes
    (``gateway_args``: extra options of the gateway rows)."""
    bindir = os.path.dirname(python)
    if backend.name.startswith("project-"):
        kind = "sync" if backend.name == "project-wsgi" else "async"
        return [
            python,
            "-m",
            "gateway",
            "--bind",
            f"unix:{sock}",
            "--workers",
            str(workers),
            "--worker",
            kind,
            "--app-dir",
            str(APPS),
            "--log-level",
            "warning",
            *gateway_args,
            app,
        ]
    if backend.name == "uwsgi":
        return [
            os.path.join(bindir, "uwsgi"),
            "--fastcgi-socket",
            sock,
            "--pythonpath",
            str(APPS),
            "--module",
            app,
            "--processes",
            str(workers),
            "--master",
            "--disable-logging",
            "--die-on-term",
            "--need-app",
        ]
    if backend.name in ("flup", "fcgisgi-wsgi", "fcgisgi-asgi"):
        return [python, str(BENCH_DIR / "peers.py"), backend.name, sock, str(APPS), app]
    if backend.name == "gunicorn":
        return [
            python,
            "-m",
            "gunicorn",
            "--workers",
            str(workers),
            "--bind",
            f"unix:{sock}",
            "--chdir",
            str(APPS),
            "--log-level",
            "warning",
            app,
        ]
    if backend.name == "uvicorn":
        extra = ["--workers", str(workers)] if workers > 1 else []
        return [
            python,
            "-m",
            "uvicorn",
            "--uds",
            sock,
            "--app-dir",
            str(APPS),
            "--no-access-log",
            "--log-level",
            "warning",
            *extra,
            app,
        ]
    raise ValueError(backend.name)
