"""For tests/isolation/test_iso_leaks.py: iso_django's ``plain_wsgi`` (the ORM used
outside Django's request cycle, so with ``ISO_DJANGO_DEBUG=1`` each request adds one query
to the connection's query log) that also keeps 4 MiB more per request, to reach
``--max-memory`` in a few requests."""

from __future__ import annotations

from iso_django import plain_wsgi

KEPT: list[bytes] = []


def app(environ, start_response):
    KEPT.append(b"\x01" * (4 << 20))  # filled, so that its pages are resident
    return plain_wsgi(environ, start_response)
