"""Nothing of a request may follow its END_REQUEST on the connection.

A WSGI app whose iterable yields a ``str`` gets a 500 (the response is ended there); if its
``close()`` or a generator's ``finally`` then calls ``write()``, those bytes must go
nowhere: with FCGI_KEEP_CONN, nginx would read them as the start of the next answer on the
connection. On the sync worker and through the a2wsgi bridge on the async worker, with and
without keep-conn, against a real gateway process; the worker keeps serving.
"""

from __future__ import annotations

import socket
import time

import pytest

from gateway.client import build_params, encode_request
from tests.worker_rig import parse_answer


def read_until_end(sock: socket.socket, quiet: float) -> bytes:
    """Everything the server sends until it closes, or until ``quiet`` seconds pass after
    the last END_REQUEST without another byte."""
    out = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ended = b"\x01\x03\x00\x01\x00\x08" in out
        sock.settimeout(quiet if ended else 10)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        out += chunk
    return out


@pytest.mark.parametrize("worker", ["sync", "async"])
@pytest.mark.parametrize("keep_conn", [False, True], ids=["close", "keep-conn"])
@pytest.mark.parametrize("path", ["/close", "/generator"])
def test_no_write_after_end_request(gateway_factory, worker, keep_conn, path):
    gw = gateway_factory("late_write_app:app", "--worker", worker)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.connect(gw.socket_path)
        sock.sendall(encode_request(1, build_params("GET", path), keep_conn=keep_conn))
        out = read_until_end(sock, quiet=0.5)
        answers, tail = parse_answer(out)
        assert [a.rid for a in answers] == [1]
        assert answers[0].stdout.startswith(b"Status: 500")
        assert tail == b"", f"bytes after END_REQUEST: {tail!r}"
        assert b"LATE" not in out
        if keep_conn:  # the same connection serves the next request
            sock.sendall(encode_request(1, build_params("GET", "/ok"), keep_conn=True))
            answers, tail = parse_answer(read_until_end(sock, quiet=0.3))
            assert len(answers) == 1 and b"ok /ok" in answers[0].stdout and tail == b""
    finally:
        sock.close()
    with gw.client(timeout=5) as c:  # and the worker serves new connections
        assert c.request("GET", "/ok").body == b"ok /ok"
    log = gw.log_text()
    errors = [line for line in log.splitlines() if "[ERROR]" in line]
    assert any(f"GET {path}" in line for line in errors)  # the app's error is logged, never sent
    if worker == "sync":  # the late write was refused (and logged with the close() error)
        assert "write() called after the response ended" in log
