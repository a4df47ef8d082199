"""A WSGI app that leaks memory on purpose, for tests/isolation/test_iso_leaks.py. Each
request keeps about 2 MiB more, in a place chosen by the path:

- ``/objects``: ``LeakItem`` instances (an app class) appended to the list ``LEAKED``;
- ``/bytes``: 1 KiB ``bytes`` objects (not tracked by gc) appended to ``BLOBS``;
- ``/hidden``: ``str`` objects appended to the ``rows`` of a ``Store`` that only a
  closure reaches (not a module-level name);
- any other path keeps nothing.

The body is ``<pid> <RSS in bytes>``.
"""

from __future__ import annotations

import os


class LeakItem:
    def __init__(self, n: int) -> None:
        self.n = n
        self.payload = bytes(256)


LEAKED: list[LeakItem] = []
BLOBS: list[bytes] = []


class Store:
    def __init__(self) -> None:
        self.rows: list[str] = []


def _make_remember():
    store = Store()

    def remember(row: str) -> None:
        store.rows.append(row)

    return remember


remember = _make_remember()


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def leak(path: str) -> None:
    if path == "/objects":
        LEAKED.extend(LeakItem(i) for i in range(6000))
    elif path == "/bytes":
        BLOBS.extend(bytes(1024) for _ in range(2048))
    elif path == "/hidden":
        for i in range(2048):
            remember(f"{i:08d}" * 125)


def app(environ, start_response):
    leak(environ["PATH_INFO"])
    body = f"{os.getpid()} {rss()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
