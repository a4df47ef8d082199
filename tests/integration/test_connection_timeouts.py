"""Connections that send nothing, trickle a request forever, or sit idle are closed by
the worker (--read-timeout, --keepalive-timeout), with a log line; the worker serves on."""

from __future__ import annotations

import socket
import time

import pytest

from gateway.client import FastCGIClient
from gateway.protocol.records import encode_begin_request, encode_pairs, encode_record

APPS = {"sync": "wsgi_app:app", "async": "asgi_app:app"}


def _closed_within(sock: socket.socket, seconds: float) -> float:
    sock.settimeout(seconds)
    start = time.monotonic()
    assert sock.recv(1024) == b""  # EOF: the gateway closed it
    return time.monotonic() - start


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_silent_connection_is_closed_after_read_timeout(gateway_factory, kind):
    gw = gateway_factory(APPS[kind], "--read-timeout", "1")
    path = gw.socket_path
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(path)
    # A trickling client: BEGIN and part of PARAMS, then nothing more.
    trickle = socket.socket(socket.AF_UNIX)
    trickle.connect(path)
    partial_params = encode_record(4, 1, encode_pairs([(b"REQUEST_METHOD", b"GET")]))
    trickle.sendall(encode_begin_request(1) + partial_params)
    assert _closed_within(silent, 5) < 4
    assert _closed_within(trickle, 5) < 4
    gw.wait_for_log("closing connection that sent no complete request")
    assert FastCGIClient(gw.address).request("GET", "/pid").status == 200


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_idle_keepalive_connection_is_closed_after_keepalive_timeout(gateway_factory, kind):
    gw = gateway_factory(APPS[kind], "--keepalive-timeout", "1")
    client = FastCGIClient(gw.address, keep_conn=True)
    assert client.request("GET", "/pid").status == 200
    sock = client.sock  # the kept connection
    assert sock is not None
    assert _closed_within(sock, 5) < 4
    gw.wait_for_log("closing connection idle between requests")
