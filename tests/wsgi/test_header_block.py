"""gateway.response.wsgi_header_block: the CGI header block of a WSGI start_response,
refused (InvalidResponse) whenever it cannot be sent as it is."""

from __future__ import annotations

import pytest

from gateway.response import InvalidResponse, wsgi_header_block


def test_the_block_is_the_status_then_each_header_then_a_blank_line():
    block = wsgi_header_block("200 OK", [("Content-Type", "text/plain"), ("Set-Cookie", "a=1")])
    assert block == b"Status: 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\n\r\n"
    assert wsgi_header_block("204", []) == b"Status: 204\r\n\r\n"
    assert wsgi_header_block("200 OK", [("X-Name", "caf\xe9")]).endswith(b"caf\xe9\r\n\r\n")


@pytest.mark.parametrize(
    "status, headers",
    [
        ("200 OK", [("X-A", "a\r\nSet-Cookie: b=1")]),  # header injection
        ("200 OK", [("X-A", "a\nb")]),
        ("200 OK", [("X-A", "a\rb")]),
        ("200 OK", [("X-A\r\nX-B", "b")]),
        ("200 OK", [("X-A", "a\0b")]),
        ("200 OK\r\nX-B: 1", []),  # in the status line
        ("200 OK", [("X-A", "snow \u2603")]),  # not latin-1
        ("200 OK", [("X-A", b"bytes")]),
        ("200 OK", [(b"X-A", "a")]),
        ("200 OK", [("X-A", 1)]),
        ("200 OK", [("X-A",)]),
        ("OK", []),
        ("2000 OK", []),
        (200, []),
    ],
)
def test_what_cannot_be_sent_is_refused(status, headers):
    with pytest.raises(InvalidResponse):
        wsgi_header_block(status, headers)
