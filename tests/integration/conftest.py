"""Fixtures for tests behind a real nginx: ``nginx_factory`` and ``served`` (gateway + nginx).

Both are factories: call them as often as a test needs; everything started is stopped
(the whole process group) at teardown, and the tail of each log is printed then, so a
failing test shows nginx's error log and the gateway's output. ``gateway_factory`` is in
``tests/conftest.py``; the nginx helper in ``nginx.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.nginx import Nginx, http_request

_TAIL = 6000


def _tail(title: str, text: str) -> None:
    print(f"----- {title} (last {_TAIL} chars) -----\n{text[-_TAIL:]}")


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


@dataclass
class Served:
    gateway: Any  # tests/conftest.py's Gateway
    nginx: Nginx

    @property
    def url(self) -> str:
        return self.nginx.url

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return http_request(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return http_request("GET", self.url + path, **kwargs)


@pytest.fixture
def served(gateway_factory: Callable[..., Any], nginx_factory: Callable[..., Nginx]) -> Callable[..., Served]:
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
