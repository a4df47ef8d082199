"""--max-body-size behind nginx, for bodies with and without Content-Length, on both
workers: 413, the worker serves on, and nginx sees no reset (no 502)."""

from __future__ import annotations

import os

import pytest

APPS = {"sync": "wsgi_app:app", "async": "asgi_app:app"}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_body_over_limit_with_content_length_gets_413(served, kind):
    s = served(APPS[kind], "--max-body-size", "1M")
    for _ in range(3):
        r = s.request("POST", "/echo", body=os.urandom(3 * 1024 * 1024))
        assert r.status == 413
    assert s.request("POST", "/echo", body=b"small").body == b"small"
    assert "reset" not in s.nginx.error_log_text()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_chunked_body_over_limit_gets_413(served, kind):
    s = served(APPS[kind], "--max-body-size", "1M", fastcgi_request_buffering=False)
    chunks = [os.urandom(256 * 1024) for _ in range(12)]
    r = s.request("POST", "/echo", body=iter(chunks))
    assert r.status == 413
    s.gateway.wait_for_log("max-body-size")
    assert s.request("POST", "/echo", body=b"small").body == b"small"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_keep_conn_413_then_more_requests(served, kind):
    s = served(APPS[kind], "--max-body-size", "100K", keep_conn=True)
    for i in range(20):
        big = s.request("POST", "/echo", body=os.urandom(300 * 1024))
        assert big.status == 413, i
        ok = s.request("POST", "/echo", body=b"x" * 1000)
        assert ok.status == 200 and ok.body == b"x" * 1000
    assert "502" not in s.nginx.access_log_text()
