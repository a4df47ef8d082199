"""PHP-FPM exporters and ``cgi-fcgi`` health checks against a real gateway: they send
``SCRIPT_NAME=/status``, ``SCRIPT_FILENAME=/status`` and ``QUERY_STRING=json&full`` and no
``REQUEST_URI``, straight to the worker socket or to ``--status-bind``; they must get the
JSON page with ``processes``. The format comes from QUERY_STRING, else from REQUEST_URI's
query, and the two agree when nginx sends both."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from gateway.client import FastCGIClient, Response, build_params, encode_request, parse_cgi_response, ping
from tests.integration.test_status import PHP_FPM_KEYS, PROCESS_KEYS

#: The params each client sends, as their sources write them (Go's fcgi_client adds
#: REQUEST_METHOD and CONTENT_LENGTH in its Get).
EXPORTERS = {
    "hipages/php-fpm_exporter": {
        "SCRIPT_FILENAME": "/status",
        "SCRIPT_NAME": "/status",
        "SERVER_SOFTWARE": "go / php-fpm_exporter",
        "REMOTE_ADDR": "127.0.0.1",
        "QUERY_STRING": "json&full",
        "REQUEST_METHOD": "GET",
        "CONTENT_LENGTH": "0",
    },
    "bakins/php-fpm-exporter": {
        "SCRIPT_FILENAME": "/status",
        "SCRIPT_NAME": "/status",
        "SERVER_SOFTWARE": "go / php-fpm-exporter",
        "QUERY_STRING": "json&full",
        "REQUEST_METHOD": "GET",
        "CONTENT_LENGTH": "0",
    },
    "bare": {"SCRIPT_NAME": "/status", "SCRIPT_FILENAME": "/status", "QUERY_STRING": "json&full"},
}
CGI_FCGI_ENV = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "/status",
    "SCRIPT_FILENAME": "/status",
    "QUERY_STRING": "json&full",
}
APPS = {"sync": "wsgi_app:app", "async": "asgi_app:app"}


@pytest.fixture(params=["sync", "async"])
def gateway(request, gateway_factory, sock_dir):
    status = f"unix:{sock_dir}/status.sock"
    pages = ("--status-path", "/status", "--ping-path", "/ping", "--status-bind", status)
    gw = gateway_factory(APPS[request.param], "--workers", "2", *pages)
    gw.status_address = status
    wait_until_ready(gw.status_address)
    return gw


def wait_until_ready(status_address: str, timeout: float = 15.0) -> None:
    """Until the master's ping says a worker is ready (it answers 503 before)."""
    deadline = time.monotonic() + timeout
    reason = ""
    while time.monotonic() < deadline:
        ok, reason = ping(status_address, timeout=2)
        if ok:
            return
        time.sleep(0.05)
    raise AssertionError(f"no worker ready after {timeout}s: {reason}")


def raw_request(address: str, params: dict[str, str] | list[tuple[bytes, bytes]]) -> Response:
    """One request with exactly ``params`` (nothing added), as the exporters send it."""
    pairs = [(k.encode(), v.encode()) for k, v in params.items()] if isinstance(params, dict) else params
    with FastCGIClient(address, timeout=5) as client:
        client.send_raw(encode_request(1, pairs))
        return Response.from_records(client.recv_records(1))


def check_json_full(resp: Response, workers: int = 2) -> dict:
    assert resp.status == 200, (resp.status, resp.body[:300])
    assert resp.header("Content-Type") == "application/json"
    data = json.loads(resp.body)
    assert [k for k in PHP_FPM_KEYS if k not in data] == []
    assert len(data["processes"]) == workers
    for proc in data["processes"]:
        assert [k for k in PROCESS_KEYS if k not in proc] == []
    return data


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("where", ["worker socket", "status bind"])
def test_exporter_params_get_the_json_page_with_processes(gateway, exporter, where):
    address = gateway.address if where == "worker socket" else gateway.status_address
    data = check_json_full(raw_request(address, EXPORTERS[exporter]))
    assert data["pool"] == "www"


@pytest.mark.parametrize("where", ["worker socket", "status bind"])
def test_exporter_shaped_ping(gateway, where):
    address = gateway.address if where == "worker socket" else gateway.status_address
    resp = raw_request(address, {"SCRIPT_NAME": "/ping", "SCRIPT_FILENAME": "/ping", "REQUEST_METHOD": "GET"})
    assert (resp.status, resp.body) == (200, b"pong")


def test_every_format_from_query_string(gateway):
    def get(query: str) -> Response:
        return raw_request(gateway.address, {"SCRIPT_NAME": "/status", "QUERY_STRING": query})

    text = get("")
    assert text.header("Content-Type").startswith("text/plain") and b"pool:" in text.body
    assert b"************************" not in text.body
    assert get("full").body.count(b"************************") == 2
    assert "processes" not in json.loads(get("json").body)
    families = {f.name for f in text_string_to_metric_families(get("openmetrics").body.decode())}
    assert "fcgi_gateway_total_processes" in families
    families = {f.name for f in text_string_to_metric_families(get("openmetrics&full").body.decode())}
    assert "fcgi_gateway_process_requests" in families
    check_json_full(get("full&json"))  # the order of the flags does not matter


def test_query_string_and_request_uri_agree(gateway):
    """nginx sends both; a rewritten REQUEST_URI without the query (``fastcgi_param
    REQUEST_URI /status``) still takes the format from QUERY_STRING."""
    cases = [
        build_params("GET", "/status?json&full"),  # as nginx sends it: both carry the query
        build_params("GET", "/status?json&full", params={"QUERY_STRING": None}),  # REQUEST_URI only
        build_params("GET", "/status", params={"QUERY_STRING": "json&full"}),  # rewritten URI
        build_params("GET", "/elsewhere", params={"REQUEST_URI": "/status?json&full"}),
    ]
    for params in cases:
        check_json_full(raw_request(gateway.address, params))
        check_json_full(raw_request(gateway.status_address, params))
    # another path in REQUEST_URI wins over SCRIPT_NAME=/status: the application answers
    resp = raw_request(gateway.address, build_params("GET", "/pid", params={"SCRIPT_NAME": "/status"}))
    assert resp.status == 200 and resp.body.isdigit()


cgi_fcgi = shutil.which("cgi-fcgi")


@pytest.mark.skipif(cgi_fcgi is None, reason="cgi-fcgi (Debian libfcgi-bin) not installed")
@pytest.mark.parametrize("where", ["worker socket", "status bind"])
def test_cgi_fcgi_health_check(gateway, where):
    """``env -i REQUEST_METHOD=GET SCRIPT_NAME=/status ... cgi-fcgi -bind -connect SOCKET``."""
    address = gateway.address if where == "worker socket" else gateway.status_address

    def run(env: dict[str, str]) -> Response:
        proc = subprocess.run(
            [cgi_fcgi, "-bind", "-connect", address.removeprefix("unix:")],
            env=env,
            capture_output=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stderr
        return parse_cgi_response(proc.stdout)

    resp = run(CGI_FCGI_ENV)
    # cgi-fcgi passes its environment as the params: PATH and the like come along
    resp_with_env = run({**CGI_FCGI_ENV, "PATH": os.environ.get("PATH", "/usr/bin")})
    for r in (resp, resp_with_env):
        check_json_full(r)
    ping = run({**CGI_FCGI_ENV, "SCRIPT_NAME": "/ping", "SCRIPT_FILENAME": "/ping", "QUERY_STRING": ""})
    assert (ping.status, ping.body) == (200, b"pong")
