"""Fixtures for tests against real processes: ``gateway_factory``, ``nginx_factory``, ``served``.

Each is a factory: call it as often as a test needs; everything it started is stopped
(the whole process group) at teardown, and the tail of every log is printed then, so a
failing test shows the gateway's output and nginx's error log. See ``nginx.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.integration.nginx import Gateway, Nginx, Served

_TAIL = 6000


def _tail(title: str, text: str) -> None:
    print(f"----- {title} (last {_TAIL} chars) -----\n{text[-_TAIL:]}")


@pytest.fixture
def gateway_factory(
    tmp_path_factory: pytest.TempPathFactory, sock_dir: Path
) -> Iterator[Callable[..., Gateway]]:
    """``gateway_factory(app, *args, env=None, cwd=None, bind=None, wait=True, timeout=15.0)``
    starts ``python -m gateway --bind unix:SOCK *args app`` and, with ``wait``, returns once
    the socket accepts connections (raising with the log if the process exits first)."""
    started: list[Gateway] = []

    def make(
        app: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        bind: str | None = None,
        wait: bool = True,
        timeout: float = 15.0,
    ) -> Gateway:
        gw = Gateway(tmp_path_factory.mktemp("gateway"), sock_dir, app, *args, env=env, cwd=cwd, bind=bind)
        started.append(gw)
        return gw.start(wait=wait, timeout=timeout)

    yield make
    for gw in reversed(started):
        status = gw.stop()
        _tail(f"gateway {gw.address} (exit status {status})", gw.log_text())


@pytest.fixture
def nginx_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Nginx]]:
    """``nginx_factory(upstream, *, keep_conn=False, extra_http="", extra_location="",
    locations=None, client_max_body_size="200m", fastcgi_request_buffering=True,
    static_alias=None, error_log_level="info")`` starts nginx on 127.0.0.1:<free port>
    passing to ``upstream`` (an address string or an object with ``.address``)."""
    started: list[Nginx] = []

    def make(
        upstream: Any,
        *,
        keep_conn: bool = False,
        extra_http: str = "",
        extra_location: str = "",
        locations: list[str] | Mapping[str, str] | None = None,
        client_max_body_size: str = "200m",
        fastcgi_request_buffering: bool = True,
        static_alias: str | Path | tuple[str, str | Path] | None = None,
        error_log_level: str = "info",
    ) -> Nginx:
        nginx = Nginx(
            tmp_path_factory.mktemp("nginx"),
            upstream,
            keep_conn=keep_conn,
            extra_http=extra_http,
            extra_location=extra_location,
            locations=locations,
            client_max_body_size=client_max_body_size,
            fastcgi_request_buffering=fastcgi_request_buffering,
            static_alias=static_alias,
            error_log_level=error_log_level,
        )
        started.append(nginx)
        return nginx.start()

    yield make
    for nginx in reversed(started):
        nginx.stop()
        _tail(f"nginx error log {nginx.error_log}", nginx.error_log_text())


@pytest.fixture
def served(
    gateway_factory: Callable[..., Gateway], nginx_factory: Callable[..., Nginx]
) -> Callable[..., Served]:
    """``served(app, *gw_args, env=None, cwd=None, bind=None, **nginx_kwargs)``: a gateway
    and an nginx in front of it; the result has ``.url``, ``.gateway``, ``.nginx``,
    ``.get(path, ...)`` and ``.request(method, path, ...)``."""

    def make(
        app: str,
        *gw_args: str,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        bind: str | None = None,
        **nginx_kwargs: Any,
    ) -> Served:
        gw = gateway_factory(app, *gw_args, env=env, cwd=cwd, bind=bind)
        return Served(gw, nginx_factory(gw, **nginx_kwargs))

    return make
